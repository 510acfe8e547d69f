import math

import numpy as np
import pytest
from conftest import tiny

from dreamercli import runs
from dreamercli.agent import Agent
from dreamercli.envs import make_env, spec_of
from dreamercli.evaluation import evaluate_policy
from dreamercli.training import Trainer, train


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


def test_progress_covers_pretraining_and_times_left_only_once_measured(tmp_path):
    reports = []
    train(tiny("CartPole-v1"), tmp_path / "run", on_progress=reports.append)  # prefill 100, pretrain 20
    phases = [p.phase for p in reports]
    assert phases == ["prefill"] * 99 + ["pretrain"] * 20 + ["train"] * 201
    pretrain = [p for p in reports if p.phase == "pretrain"]
    assert [p.pretrained for p in pretrain] == list(range(1, 21))  # the display moves during pretraining
    assert all(p.step == 100 and p.pretrain == 20 and "wm/loss" in p.losses for p in pretrain)
    # No time left before a full update was timed (train ratio 0.25: the first one at step 103).
    assert [p.step for p in reports if p.eta is not None] == list(range(103, 301))
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
def test_the_time_left_counts_the_updates_the_agent_makes(tmp_path, algo, expected):
    # tiny: train_ratio 0.25 world-model updates per env step; sac_ratio 4 here.
    config = tiny("CartPole-v1", algo=algo, steps=120, eval_every=0, sac_batch=16, sac_hidden=16, sac_ratio=4)
    trainer = Trainer(config)
    assert trainer.costs.train_ratio == expected
    assert trainer.costs.pretrain == (0 if algo == "model-free" else config.train.pretrain)
    trainer.start()
    summary = trainer.run()
    learned = config.train.steps - config.train.prefill + 1  # env steps with updates
    assert summary["updates"] == math.floor(expected * learned) + trainer.costs.pretrain
