"""benchmarks/suite.py: the development suite end to end at smoke budgets (`-m bench`), its task lists,
and the baselines' settings and evaluation (benchmarks/baselines.py)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")  # the bench extra; the rest of the suite runs without it
pytest.importorskip("mujoco")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
spec = importlib.util.spec_from_file_location("suite", BENCHMARKS / "suite.py")
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
import baselines  # noqa: E402
import suite_envs  # noqa: E402

from dreamercli.envs import make_env, spec_of  # noqa: E402


def test_the_tasks_differ_as_the_suite_promises():
    specs = {name: spec_of(make_env(name)) for name in suite.TASKS}
    assert len(specs) >= 8
    discrete = [n for n, s in specs.items() if s.discrete]
    assert 2 <= len(discrete) <= len(specs) - 2  # both kinds of action space
    dims = sorted(s.obs_dim for s in specs.values())
    assert dims[0] <= 2 and dims[-1] >= 20
    assert sum("MuJoCo" in t["kind"] for t in suite.TASKS.values()) >= 2
    assert any(":" in name for name in suite.TASKS)  # a module:Class env of our own


@pytest.mark.parametrize("name", list(suite.ALL_TASKS))
def test_every_task_has_its_baselines_settings_and_a_source_for_its_threshold(name):
    task = suite.ALL_TASKS[name]
    for method in task["baselines"]:
        assert (method, name) in baselines.HYPERPARAMS, (method, name)
        baselines.prepare(method, name)  # schedules and dict(...) strings parse
    registered = make_env(name).spec
    if registered is not None and registered.reward_threshold is not None:
        assert task["threshold"] == registered.reward_threshold, name
    else:
        assert task.get("note"), f"{name}: a threshold of our own needs its reason"


def test_the_groups_pomdp_and_scaled_as_the_issue_asks():
    assert list(suite.GROUPS["full"]) == list(suite.TASKS) and len(suite.TASKS) == 8  # the default, unchanged
    assert set(suite.ALL_TASKS) == {*suite.TASKS, *suite.POMDP_TASKS, *suite.SCALED_TASKS}
    for name, task in suite.POMDP_TASKS.items():  # memory against none, within 10,000 env steps
        assert task["budget"] == 10_000 and "ppo_lstm" in task["baselines"] and len(task["baselines"]) == 2
        assert max(task["baselines"].values()) <= 50_000
        cls = getattr(suite_envs, name.split(":")[1])
        assert len(cls.hidden) == len(cls.hidden_names) >= 1
    thresholds = {name: task["threshold"] for name, task in suite.POMDP_TASKS.items()}
    assert thresholds == {"suite_envs:CartPoleNoVel": 475.0, "suite_envs:PendulumNoVel": -200.0,
                          "suite_envs:MountainCarContinuousNoVel": 90.0, "suite_envs:CueRecall": 9.0}
    for name, task in suite.SCALED_TASKS.items():  # the base task's budgets, its threshold scaled alike
        cls = getattr(suite_envs, name.split(":")[1])
        base = suite.TASKS[cls.base_id]
        assert task["threshold"] == pytest.approx(base["threshold"] * cls.scale)
        assert task["budget"] == base["budget"] and task["baselines"] == base["baselines"]
        assert list(task["baselines"]) == list(base["baselines"])
        for method in task["baselines"]:  # the same tuned settings, rewards unscaled
            assert baselines.HYPERPARAMS[(method, name)] == baselines.HYPERPARAMS[(method, cls.base_id)]
    assert {s.scale for s in (suite_envs.PendulumX100, suite_envs.CartPoleX001)} == {100.0, 0.01}


def test_zoo_policy_kwargs_parse_nested_dicts_and_activations_and_nothing_else():
    from torch import nn

    parsed = baselines.parse_kwargs(baselines.HYPERPARAMS[("ppo_lstm", "suite_envs:CartPoleNoVel")]["policy_kwargs"])
    assert parsed == {"ortho_init": False, "activation_fn": nn.ReLU, "lstm_hidden_size": 64,
                      "enable_critic_lstm": True, "net_arch": {"pi": [64], "vf": [64]}}
    for bad in ("dict(a=os.system)", "dict(a=nn.functional)", "dict(a=print('x'))", "[1, 2]"):
        with pytest.raises(ValueError):
            baselines.parse_kwargs(bad)
    # The record keeps the zoo's strings: JSON holds them, not the classes they parse into.
    described = baselines.describe("ppo_lstm", "suite_envs:CartPoleNoVel", smoke=False)
    assert described["policy_kwargs"].startswith("dict(") and described["learning_rate"] == "lin_0.001"
    json.dumps(described)


def test_recurrent_ppo_evaluation_carries_its_lstm_state_within_an_episode_and_resets_it_between():
    pytest.importorskip("sb3_contrib")

    def one_by_one(model, env_id, seed, carry=True):
        """Each episode alone, the state fed back (or reset at every step)."""
        norm, returns = model.get_vec_normalize_env(), []
        for i in range(3):
            env = make_env(env_id)
            obs, state, start, total, done = env.reset(seed=seed + i)[0], None, True, 0.0, False
            while not done:
                action, state = model.predict(norm.normalize_obs(obs[None]), state=state if carry else None,
                                              episode_start=np.array([start]), deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action[0])
                total, start, done = total + float(reward), not carry, terminated or truncated
            returns.append(total)
        return returns

    for env_id in ("suite_envs:PendulumNoVel", "suite_envs:CartPoleNoVel"):
        model, _ = baselines.build("ppo_lstm", env_id, seed=0)
        envs = [make_env(env_id) for _ in range(3)]
        batched = baselines.episode_returns(model, envs, 7)
        assert batched == pytest.approx(one_by_one(model, env_id, 7), rel=1e-4), env_id
        assert baselines.episode_returns(model, envs, 7) == batched  # each evaluation starts from zero state
        if env_id == "suite_envs:PendulumNoVel":  # the state matters: reset at every step, the actions differ
            assert batched != pytest.approx(one_by_one(model, env_id, 7, carry=False), rel=1e-3)
        else:  # episodes of different lengths: the lockstep batch shrinks as they end
            assert len(set(batched)) > 1


def test_beacon_reach_rewards_the_controller_and_not_chance():
    env = make_env("suite_envs:BeaconReach")
    assert env.observation_space.shape == (20,)

    def score(policy, episodes=5):
        returns = []
        for i in range(episodes):
            obs, _ = env.reset(seed=i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy(obs))
                total += reward
                done = terminated or truncated
            returns.append(total)
        return np.mean(returns)

    threshold = suite.TASKS["suite_envs:BeaconReach"]["threshold"]
    assert score(suite_envs.expert_action) > threshold
    assert score(lambda obs: env.action_space.sample()) < threshold / 4


@pytest.mark.bench  # every task and method at smoke budgets: the longest test here
def test_smoke_suite_runs_every_task_and_method_and_writes_the_scoreboard(tmp_path):
    assert suite.main(["--smoke", "--jobs", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "suite.json").read_text())
    records = data["records"]
    ours = suite.default_algo()
    assert ours == "belief"
    expected = {(name, m) for name, t in suite.TASKS.items() for m in (ours, *t["baselines"])}
    assert sorted((r["env"], r["method"]) for r in records) == sorted(expected)  # each once, seed 0
    for r in records:
        assert r["error"] is None, (r["env"], r["method"], r["error"])
        assert r["curve"] and r["curve"][-1]["step"] >= r["budget"]
        assert all(p["eval_seconds"] > 0 for p in r["curve"])
    # Ours ran with the defaults: the tiny preset's overlay and nothing keyed on the task.
    config = json.loads((tmp_path / "runs" / f"suite_envs.BeaconReach-{ours}-s0" / "config.json").read_text())
    assert config["env"] == "suite_envs:BeaconReach" and config["algo"] == ours
    text = (tmp_path / "suite.md").read_text()
    for name in suite.TASKS:
        assert f"| {name} |" in text
    # Smoke budgets are below the zoo's n_timesteps, and the scoreboard says so.
    assert "| sac (not in zoo, 300 of its 20,000 steps) |" in text
    assert "| dqn (zoo, 300 of its 50,000 steps) |" in text
    assert (tmp_path / "suite.png").stat().st_size > 20_000
    # An interrupted suite goes on with --reuse: finished runs are kept, not run again.
    (tmp_path / "logs" / f"Acrobot-v1-{ours}-s0.json").unlink()
    assert suite.main(["--smoke", "--out", str(tmp_path), "--reuse", "--tasks", "CartPole-v1", "Acrobot-v1"]) == 0
    again = json.loads((tmp_path / "suite.json").read_text())
    assert again["meta"]["reused"] == 3 and len(again["records"]) == 4
    for r in again["records"]:  # a reused record was read back from its file, not timed by a process
        rerun = (r["env"], r["method"]) == ("Acrobot-v1", ours)
        assert r["error"] is None and r["curve"] and (r["process_seconds"] is not None) == rerun
    # Another --algo on the same tasks, ours only, beside the baseline an earlier invocation ran.
    assert suite.main(["--smoke", "--out", str(tmp_path), "--reuse", "--tasks", "CartPole-v1",
                       "--algos", "dreamer", "--no-baselines"]) == 0
    third = json.loads((tmp_path / "suite.json").read_text())
    assert sorted(r["method"] for r in third["records"]) == ["dqn", "dreamer"]
    assert third["meta"]["reused"] == 1 and third["meta"]["algos"] == ["dreamer"]
    config = json.loads((tmp_path / "runs" / "CartPole-v1-dreamer-s0" / "config.json").read_text())
    assert config["algo"] == "dreamer"
    row = next(line for line in (tmp_path / "suite.md").read_text().splitlines() if line.startswith("| CartPole-v1 |"))
    assert "| dreamer | 0/1 |" in row or "| dreamer | 1/1 |" in row
    dqn = "| dqn (zoo, 300 of its 50,000 steps) |"
    assert f"{dqn} 0/1 |" in row or f"{dqn} 1/1 |" in row  # the reused baseline's cells


@pytest.mark.bench  # 16 runs at smoke budgets, RecurrentPPO's among them
def test_smoke_suite_runs_the_pomdp_and_scaled_groups_with_both_baselines(tmp_path):
    pytest.importorskip("sb3_contrib")
    assert suite.main(["--smoke", "--group", "pomdp", "--jobs", "2", "--out", str(tmp_path / "pomdp")]) == 0
    assert suite.main(["--smoke", "--group", "scaled", "--jobs", "2", "--out", str(tmp_path / "scaled")]) == 0
    ours = suite.default_algo()
    for group, tasks in (("pomdp", suite.POMDP_TASKS), ("scaled", suite.SCALED_TASKS)):
        data = json.loads((tmp_path / group / "suite.json").read_text())
        assert data["meta"]["group"] == group
        expected = {(name, m) for name, t in tasks.items() for m in (ours, *t["baselines"])}
        assert sorted((r["env"], r["method"]) for r in data["records"]) == sorted(expected)
        for r in data["records"]:
            assert r["error"] is None, (r["env"], r["method"], r["error"])
            assert r["curve"] and r["curve"][-1]["step"] >= r["budget"]
        text = (tmp_path / group / "suite.md").read_text()
        for name, task in tasks.items():  # one row per baseline
            rows = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
            assert len(rows) == len(task["baselines"]), name
    text = (tmp_path / "pomdp" / "suite.md").read_text()
    assert "| ppo_lstm (zoo, 300 of its 100,000 steps) |" in text  # CartPoleNoVel and PendulumNoVel
    assert "| ppo_lstm (not in zoo, 300 of its 100,000 steps) |" in text  # CueRecall
    settings = next(r["settings"] for r in json.loads((tmp_path / "pomdp" / "suite.json").read_text())["records"]
                    if r["method"] == "ppo_lstm" and r["env"] == "suite_envs:PendulumNoVel")
    assert settings["policy"] == "MlpLstmPolicy" and settings["normalize"] is True and settings["n_envs"] == 4


@pytest.mark.bench  # a local Ray instance and two fresh worker processes
def test_smoke_suite_as_ray_tasks_gives_the_records_local_workers_give(tmp_path):
    ray = pytest.importorskip("ray")
    try:
        assert suite.main(["--smoke", "--ray", "--jobs", "2", "--tasks", "CartPole-v1", "--out", str(tmp_path)]) == 0
    finally:
        ray.shutdown()
    records = json.loads((tmp_path / "suite.json").read_text())["records"]
    assert sorted(r["method"] for r in records) == sorted([suite.default_algo(), "dqn"])
    for r in records:  # each ran in a Ray worker's process and wrote its own curve
        assert r["error"] is None and r["curve"] and r["curve"][-1]["step"] >= r["budget"]
    assert json.loads((tmp_path / "suite.json").read_text())["meta"]["ray"] is True
