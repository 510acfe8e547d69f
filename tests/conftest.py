"""Shared fixtures: a tiny config and small trained run folders (built once per session)."""

import dataclasses

import pytest

from dreamercli.config import from_preset, with_overrides


def tiny(env: str, **overrides):
    """The tiny preset on env, with a few overrides; algo dreamer unless one is given, since most tests
    here exercise the world model (the default algo, model-free, has none; test_algos.py covers it)."""
    return with_overrides(from_preset("tiny"), {"env": env, "algo": "dreamer", **overrides})


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory):
    """A tiny CartPole-v1 dreamer run folder written by the real training code."""
    from dreamercli.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
    train(tiny("CartPole-v1"), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def pendulum_run(tmp_path_factory):
    """A tiny Pendulum-v1 dreamer run folder written by the real training code."""
    from dreamercli.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "pendulum"
    train(tiny("Pendulum-v1"), run_dir)
    return run_dir


__all__ = ["dataclasses", "tiny"]
