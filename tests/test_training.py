import math

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny

from dreamercli import checkpoint, runs
from dreamercli.agent import Agent
from dreamercli.config import ConfigError, build, from_preset, with_overrides
from dreamercli.envs import EnvError, make_env, spec_of
from dreamercli.evaluation import evaluate_policy
from dreamercli.training import Trainer, check_learns, resume, train


def metrics_without_timing(run_dir):
    """Metric rows minus the wall-clock fields, which differ between any two runs."""
    return [{k: v for k, v in row.items() if k not in ("time", "train/sps", "eval/seconds")}
            for row in runs.read_metrics(run_dir)]


def test_same_seed_same_metrics(tmp_path):
    config = tiny("CartPole-v1", steps=200, eval_every=100)
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    train(tiny("CartPole-v1", steps=200, eval_every=100, seed=1), tmp_path / "c")
    a, b, c = (metrics_without_timing(tmp_path / x) for x in "abc")
    assert a == b and len(a) > 3
    assert c != a


def test_pendulum_end_to_end_updates_and_evaluates(pendulum_run):
    summary = runs.read_json(pendulum_run / "summary.json")
    assert summary["updates"] > 0 and summary["threshold"] == -200.0
    assert -2000 < summary["final_eval"] <= 0


def test_custom_env_trains(tmp_path):
    _agent, summary = train(tiny("custom_env:Reach", steps=150), tmp_path / "reach")
    assert summary["threshold"] is None and summary["steps_to_threshold"] is None
    assert (tmp_path / "reach" / "weights.safetensors").is_file()


def test_evaluation_is_independent_of_batching():
    config = tiny("CartPole-v1")
    env = make_env("CartPole-v1")
    agent = Agent(config, spec_of(env))
    one = evaluate_policy(agent, "CartPole-v1", 5, seed=3, batch=1)
    many = evaluate_policy(agent, "CartPole-v1", 5, seed=3, batch=4)
    assert one.returns == many.returns and one.lengths == many.lengths


def test_recording_keeps_the_first_episodes_frames():
    config = tiny("CartPole-v1")
    agent = Agent(config, spec_of(make_env("CartPole-v1")))
    result = evaluate_policy(agent, "CartPole-v1", 2, seed=0, record=True)
    assert len(result.frames) == result.lengths[0] + 1
    assert result.frames[0].shape[-1] == 3 and result.frames[0].dtype == np.uint8


def test_pretraining_adds_model_only_updates(tmp_path):
    base = dict(steps=120, prefill=100, train_ratio=0.25, eval_every=0)
    _, without = train(tiny("CartPole-v1", pretrain=0, **base))
    _, with_pretrain = train(tiny("CartPole-v1", pretrain=7, **base))
    assert with_pretrain["updates"] == without["updates"] + 7
    assert without["updates"] == 5  # 21 steps from the prefill's end at 0.25 updates each


def test_progress_covers_every_phase_and_times_left_only_once_measured(tmp_path):
    reports = []
    train(tiny("CartPole-v1"), tmp_path / "run", on_progress=reports.append)  # prefill 100, pretrain 20
    phases = [p.phase for p in reports]
    # evaluations (and the checkpoints after them) at 150 and 300 report before they start
    assert phases == (["prefill"] * 99 + ["pretrain"] * 20 + ["train"] * 50 + ["eval", "checkpoint"]
                      + ["train"] * 150 + ["eval", "checkpoint", "train"])
    pretrain = [p for p in reports if p.phase == "pretrain"]
    assert [p.pretrained for p in pretrain] == list(range(1, 21))  # the display moves during pretraining
    assert all(p.step == 100 and p.pretrain == 20 and "wm/loss" in p.losses for p in pretrain)
    # No time left before ten learning steps were timed, from the prefill's last, at 100.
    assert [p.step for p in reports if p.eta is not None and p.phase == "train"] == list(range(109, 301))
    assert all(p.eta > 0 for p in reports[:-1] if p.eta is not None) and reports[-1].eta == 0
    # The rate shown is measured (its reset when learning starts: test_progress, with a fixed clock).
    assert all(p.sps > 0 for p in reports[1:] if p.phase != "pretrain")


def test_logged_speed_is_per_window(tmp_path):
    train(tiny("CartPole-v1"), tmp_path / "run")
    rows = [r for r in runs.read_metrics(tmp_path / "run") if "train/sps" in r]
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
    # Each row's speed is its own window's (steps since the previous row over the seconds since
    # it), not the run's average: one clock reading gives both columns, so this holds exactly.
    previous = {"step": 0, "time": 0.0}
    for row in rows:
        window = (row["step"] - previous["step"]) / (row["time"] - previous["time"])
        assert row["train/sps"] == pytest.approx(window, rel=1e-6)
        previous = row
    averages = [r["step"] / r["time"] for r in rows]
    assert any(abs(r["train/sps"] / a - 1) > 1e-3 for r, a in zip(rows[1:], averages[1:], strict=True))


@pytest.mark.parametrize("share, actor_steps_per_env_step", [(1.0, 4), (0.25, 1), (0.5, 2)])
def test_the_actor_learns_in_its_share_of_the_sac_updates(tmp_path, share, actor_steps_per_env_step):
    config = tiny("CartPole-v1", algo="model-free", steps=120, eval_every=120, sac_batch=16, sac_hidden=16,
                  sac_ratio=4, sac_actor_share=share)
    agent, _ = train(config, tmp_path / "run")
    critic_steps = agent.sac.critic_opt.state["step"].item()
    learned = critic_steps / 4  # env steps with updates: from the one that ends the prefill on
    assert learned == config.train.steps - config.train.prefill + 1
    assert agent.actor_opt.state["step"].item() == actor_steps_per_env_step * learned
    assert agent.sac.alpha_opt.state["step"].item() == actor_steps_per_env_step * learned


@pytest.mark.parametrize("algo, expected", [("model-free", 4.0), ("dreamer", 0.25), ("hybrid", 4.25)])
def test_the_agent_makes_its_updates_per_step(tmp_path, algo, expected):
    # tiny: train_ratio 0.25 world-model updates per env step; sac_ratio 4 here.
    config = tiny("CartPole-v1", algo=algo, steps=120, eval_every=0, sac_batch=16, sac_hidden=16, sac_ratio=4)
    trainer = Trainer(config)
    assert trainer.costs.pretrain == (0 if algo == "model-free" else config.train.pretrain)
    trainer.start()
    summary = trainer.run()
    learned = config.train.steps - config.train.prefill + 1  # env steps with updates
    assert summary["updates"] == math.floor(expected * learned) + trainer.costs.pretrain


def eval_returns(run_dir):
    return [(r["step"], r["eval/return_mean"]) for r in runs.read_metrics(run_dir) if "eval/return_mean" in r]


def test_stop_at_return_ends_the_run_at_the_first_evaluation_at_or_above_it(tmp_path):
    base = dict(steps=300, eval_every=50, eval_episodes=2)
    train(tiny("CartPole-v1", **base), tmp_path / "whole")
    whole = eval_returns(tmp_path / "whole")
    goal = max(r for _, r in whole[1:-1])  # reached before the end: at the first eval with the most
    first = next(step for step, r in whole if r >= goal)
    _, summary = train(tiny("CartPole-v1", stop_at_return=goal, **base), tmp_path / "stopped")
    run = tmp_path / "stopped"
    assert eval_returns(run) == [(s, r) for s, r in whole if s <= first]
    assert summary["env_steps"] == first and "interrupted" not in summary
    assert summary["stopped"] == f"eval/return_mean {summary['final_eval']:.1f} >= {goal} at env step {first}"
    assert runs.read_json(run / "summary.json")["stop_at_return"] == goal
    assert checkpoint.read(run).state["step"] == first  # finished: its last checkpoint is where it stopped
    with pytest.raises(runs.RunError, match=r"already finished \(eval/return_mean .* at env step "):
        resume(run)


def test_stop_at_return_registered_is_the_envs_threshold_and_is_refused_where_there_is_none():
    assert Trainer(tiny("CartPole-v1", stop_at_return="registered")).stop_at == 475.0
    assert build({"stop_at_return": "475"}).train.stop_at_return == 475.0  # a flag gives text
    with pytest.raises(ConfigError, match="'custom_env:Reach' registers no reward_threshold"):
        check_learns(build({"env": "custom_env:Reach", "stop_at_return": "registered"}))
    with pytest.raises(ConfigError, match="stop_at_return must be a finite number or 'registered', got 'soon'"):
        build({"stop_at_return": "soon"})


@pytest.mark.parametrize("overrides, message", [
    ({"steps": 100}, "steps 100 is not more than the prefill of 250 random-action steps"),
    ({"steps": 250}, "steps 250 is not more than the prefill of 250"),
    ({"sac_ratio": 0}, "sac_ratio 0 makes no update of belief's off-policy learner"),
    ({"algo": "model-free", "sac_ratio": 0}, "sac_ratio 0 makes no update of model-free's"),
    ({"algo": "mbpo", "sac_ratio": 0}, "sac_ratio 0 makes no update of mbpo's"),
    ({"algo": "hybrid", "sac_ratio": 0}, "sac_ratio 0 makes no update of hybrid's"),
])
def test_a_run_that_cannot_learn_is_refused_before_it_starts(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        check_learns(build(overrides))
    with pytest.raises(ConfigError, match=message):  # the Python API too
        train(with_overrides(from_preset("default"), overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    check_learns(build({"algo": "dreamer", "sac_ratio": 0}))  # dreamer has no off-policy learner: sac_ratio is not its
    check_learns(build({"steps": 251}))


class BadEnv(gym.Env):
    """CartPole-sized spaces; the observation or reward named by `bad` goes wrong at the 7th step (or reset)."""

    bad = ""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        obs = np.zeros(4, np.float32)
        return (np.full(4, np.nan, np.float32) if self.bad == "reset" else obs), {}

    def step(self, action):
        self.t += 1
        obs, reward = np.zeros(4, np.float32), 1.0
        if self.t == 7:
            obs = {"obs": np.array([0, np.inf, 0, 0], np.float32), "shape": np.zeros(3, np.float32)}.get(self.bad, obs)
            reward = float("nan") if self.bad == "reward" else reward
        return obs, reward, False, self.t >= 20, {}


@pytest.mark.parametrize("bad, message", [
    ("obs", "returned a non-finite observation at env step 7: [ 0. inf 0. 0.]"),
    ("reward", "returned a non-finite reward at env step 7: nan"),
    ("reset", "returned a non-finite observation at the first reset: [nan nan nan nan]"),
    ("shape", "returned an observation of shape (3,) at env step 7; its observation space says (4,)"),
])
def test_what_the_env_returns_wrong_is_named_where_it_enters(bad, message, tmp_path, monkeypatch):
    monkeypatch.setattr(BadEnv, "bad", bad)
    gym.register("dreamer-test/Bad-v0", entry_point=BadEnv)
    try:
        with pytest.raises(EnvError) as err:
            train(tiny("dreamer-test/Bad-v0", algo="model-free"), tmp_path / "run")
    finally:
        del gym.registry["dreamer-test/Bad-v0"]
    assert str(err.value) == f"environment 'dreamer-test/Bad-v0' {message}"


def test_evaluation_names_what_the_env_returns_wrong():
    agent = Agent(tiny("CartPole-v1", algo="model-free"), spec_of(make_env("CartPole-v1")))
    with pytest.raises(EnvError, match="environment 'faulty_envs:NanSoon' returned a non-finite reward during "
                                       "evaluation episode 0: nan"):
        evaluate_policy(agent, "faulty_envs:NanSoon", 1, seed=0)
