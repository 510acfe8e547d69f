"""benchmarks/suite.py: the development suite end to end at smoke budgets (`-m bench`), and its task list."""

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
    for name, task in suite.TASKS.items():  # every baseline has settings, and a source or a reason
        key = (task["baseline"], name)
        assert key in baselines.HYPERPARAMS, key
        registered = make_env(name).spec
        if registered is not None and registered.reward_threshold is not None:
            assert task["threshold"] == registered.reward_threshold, name
        else:
            assert task.get("note"), f"{name}: a threshold of our own needs its reason"


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
    assert ours == "model-free"
    expected = {(name, m) for name, t in suite.TASKS.items() for m in (ours, t["baseline"])}
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
    assert "sac (not in zoo)" in text and "dqn (zoo)" in text
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
    assert "| dqn (zoo) | 0/1 |" in row or "| dqn (zoo) | 1/1 |" in row  # the reused baseline's cells


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
