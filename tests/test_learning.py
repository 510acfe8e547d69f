"""End-to-end learning checks with default settings (minutes each): `pytest -m slow`."""

import pytest

from dreamercli.config import from_preset, with_overrides
from dreamercli.evaluation import evaluate_policy
from dreamercli.training import train


@pytest.mark.slow
@pytest.mark.parametrize("env,steps,episodes", [("CartPole-v1", 10_000, 20), ("Pendulum-v1", 5_000, 10)])
def test_default_settings_solve(env, steps, episodes, tmp_path):
    config = with_overrides(from_preset("default"), {"env": env, "steps": steps, "seed": 0})
    agent, summary = train(config, tmp_path / "run")
    result = evaluate_policy(agent, env, episodes, seed=123)
    mean = sum(result.returns) / episodes
    assert mean >= summary["threshold"], (mean, summary)
