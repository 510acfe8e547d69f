"""The world model's own random stream: model work never moves the learner's draws."""

import numpy as np
import pytest
import torch
from conftest import tiny

from dreamercli.streams import ModelStream
from dreamercli.training import train

SMALL = {"steps": 240, "eval_every": 120, "sac_batch": 32, "sac_hidden": 32, "sac_ratio": 2, "trust_window": 40}


def sac_rows(rows):
    """What the learner did, row by row: its losses and the evaluations."""
    return [{k: v for k, v in r.items() if k.startswith(("sac/", "eval/return"))} for r in rows]


@pytest.mark.parametrize("env, algo", [("CartPole-v1", "hybrid"), ("Pendulum-v1", "mbpo")])
def test_a_model_the_guard_never_trusts_leaves_the_learner_exactly_model_free(tmp_path, env, algo):
    # trust_threshold 1e-9: no model error is that small, so the guard allows no branch and no
    # imagination; the world model still trains (pretraining, 0.5 updates per env step).
    mf_agent, _ = train(tiny(env, algo="model-free", **SMALL), tmp_path / "mf")
    agent, _ = train(tiny(env, algo=algo, trust_threshold=1e-9, **SMALL), tmp_path / algo)
    rows = _rows(tmp_path / algo)
    assert any("wm/loss" in r for r in rows) and all(r.get("hybrid/branch_length", 0) == 0 for r in rows)
    assert all(r.get("hybrid/imag_weight", 0) == 0 for r in rows)
    mf_weights, weights = mf_agent.policy.state_dict(), agent.policy.state_dict()
    assert all(torch.equal(mf_weights[k], weights[k]) for k in mf_weights)
    assert sac_rows(rows) == sac_rows(_rows(tmp_path / "mf"))


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_behind_a_shut_memory_gate_the_default_learner_is_exactly_model_free(tmp_path, env):
    # The belief's model trains beside it (at its shut share) and its check never opens in 240 steps.
    mf_agent, _ = train(tiny(env, algo="model-free", **SMALL), tmp_path / "mf")
    agent, _ = train(tiny(env, algo="belief", **SMALL), tmp_path / "belief")
    rows = _rows(tmp_path / "belief")
    assert any("wm/loss" in r for r in rows) and not agent.gate.is_open
    mf_weights, weights = mf_agent.policy.state_dict(), agent.policy.state_dict()
    assert all(torch.equal(mf_weights[k], weights[k]) for k in mf_weights)
    assert sac_rows(rows) == sac_rows(_rows(tmp_path / "mf"))


def test_with_a_trusted_model_the_learner_does_follow_another_path(tmp_path):
    # The converse, so that the test above cannot pass by the model never running at all.
    mf_agent, _ = train(tiny("Pendulum-v1", algo="model-free", **SMALL), tmp_path / "mf")
    agent, _ = train(tiny("Pendulum-v1", algo="mbpo", trust_threshold=1.0, **SMALL), tmp_path / "mbpo")
    assert any(r.get("hybrid/branch_length", 0) > 0 for r in _rows(tmp_path / "mbpo"))
    mf_weights, weights = mf_agent.policy.state_dict(), agent.policy.state_dict()
    assert not all(torch.equal(mf_weights[k], weights[k]) for k in mf_weights)


def test_the_stream_is_its_own_and_leaves_the_global_one_where_it_was():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    stream = ModelStream(seed=3)
    with stream.active() as rng:
        inside = torch.rand(4), rng.random()
    assert torch.equal(torch.rand(4), expected)  # the global stream went on as if nothing ran
    with stream.active() as rng:
        after = torch.rand(4), rng.random()
    assert not torch.equal(inside[0], after[0]) and inside[1] != after[1]  # the stream moved on too
    again = ModelStream(seed=3)
    with again.active() as rng:
        assert torch.equal(torch.rand(4), inside[0]) and rng.random() == inside[1]
    with ModelStream(seed=4).active() as rng:
        assert not torch.equal(torch.rand(4), inside[0])


def test_the_stream_state_round_trips():
    stream = ModelStream(seed=0)
    with stream.active() as rng:
        torch.rand(5), rng.random(5)
    copy = ModelStream(seed=9)
    copy.load_state_tensors(stream.state_tensors())
    with stream.active() as a:
        first = torch.rand(3), a.random(3)
    with copy.active() as b:
        second = torch.rand(3), b.random(3)
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def _rows(run_dir):
    from dreamercli import runs

    return list(runs.read_metrics(run_dir))
