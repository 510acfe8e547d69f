"""Every --algo trains end to end on a discrete, a continuous and a module:Class env, and every
command reads its run folder (imagine only where a world model exists)."""

import json

import pytest
from typer.testing import CliRunner

from dreamercli import runs
from dreamercli.cli import app

runner = CliRunner()
ALGOS = ("dreamer", "model-free", "mbpo", "hybrid")
# Past the prefill (100) for 30 env steps, at 2 SAC updates each: every part runs, briefly.
SHORT = ["--preset", "tiny", "--steps", "130", "--eval-every", "65", "--sac-batch", "32", "--sac-hidden", "32",
         "--sac-ratio", "2"]


def train(runs_dir, *args):
    result = runner.invoke(app, ["train", *args, *SHORT, "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def cartpole_runs(tmp_path_factory):
    """One CartPole-v1 run folder per algo, named by default ({env}-{algo}-s{seed}-{time})."""
    root = tmp_path_factory.mktemp("algos")
    for algo in ALGOS:
        train(root, "--algo", algo)
    return root


def check_run(run, env, algo):
    assert json.loads((run / "config.json").read_text())["algo"] == algo
    rows = list(runs.read_metrics(run))
    assert any("sac/q_loss" in r for r in rows) == (algo != "dreamer")
    assert any("wm/loss" in r for r in rows) == (algo != "model-free")
    assert any("hybrid/real_share" in r for r in rows) == (algo in ("mbpo", "hybrid"))
    extra = ["--env", env] if ":" in env else []
    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "2", *extra])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("env", ["Pendulum-v1", "custom_env:Reach"])
@pytest.mark.parametrize("algo", ["model-free", "mbpo", "hybrid"])
def test_each_algo_trains_and_evaluates(tmp_path, env, algo):
    train(tmp_path, "--env", env, "--algo", algo, "--name", "run")
    check_run(tmp_path / "run", env, algo)


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algo_trains_and_evaluates_on_cartpole(cartpole_runs, algo):
    (run,) = [p for p in cartpole_runs.iterdir() if p.name.startswith(f"CartPole-v1-{algo}-s0-")]
    check_run(run, "CartPole-v1", algo)


def test_commands_read_every_algo(cartpole_runs, tmp_path):
    folders = sorted(cartpole_runs.iterdir())
    assert len(folders) == len(ALGOS)
    for run in folders:
        result = runner.invoke(app, ["imagine", str(run), "--horizon", "3", "--rollouts", "2"])
        if "model-free" in run.name:
            assert result.exit_code == 2 and "no world model" in result.output
        else:
            assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["plot", str(folders[0])]).exit_code == 0
    result = runner.invoke(app, ["compare", *map(str, folders), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert all(f"| {algo} |" in table for algo in ALGOS)
