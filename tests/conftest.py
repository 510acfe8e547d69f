"""Shared fixtures: a tiny config and small trained run folders (built once per session)."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from dreamercli import runs
from dreamercli.config import from_preset, with_overrides

TIMING = {"time", "train/sps", "eval/seconds"}  # metrics that differ between two runs of one config


class Crash(Exception):
    """Stands in for a kill: the loop stops between two env steps, after its last checkpoint."""


def crash_at(step):
    """An on_progress callback that raises Crash once the loop reaches env step `step`."""
    def on_progress(p):
        if p.step >= step:
            raise Crash()
    return on_progress


def rows_without_timings(run_dir):
    """A run folder's metrics rows without the wall-clock ones."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runs.read_metrics(run_dir)]


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


def load_benchmark(name: str):
    """Import benchmarks/NAME.py as a module (benchmarks is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


__all__ = ["dataclasses", "tiny"]
