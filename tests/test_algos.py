"""Every --algo trains end to end on a discrete, a continuous and a module:Class env, and every
command reads its run folder (imagine only where a world model exists)."""

import json

import pytest
from typer.testing import CliRunner

from dreamercli import runs
from dreamercli.cli import app

runner = CliRunner()
# Past the prefill (100) for 30 env steps, at 2 SAC updates each: every part runs, briefly.
SHORT = ["--preset", "tiny", "--steps", "130", "--eval-every", "65", "--sac-batch", "32", "--sac-hidden", "32",
         "--sac-ratio", "2"]


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1", "custom_env:Reach"])
@pytest.mark.parametrize("algo", ["model-free", "mbpo", "hybrid"])
def test_each_algo_trains_and_evaluates(tmp_path, env, algo):
    result = runner.invoke(app, ["train", "--env", env, "--algo", algo, *SHORT, "--runs-dir", str(tmp_path),
                                 "--name", "run"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["algo"] == algo
    rows = list(runs.read_metrics(run))
    assert any("sac/q_loss" in r for r in rows)
    assert any("hybrid/real_share" in r for r in rows) == (algo != "model-free")
    extra = ["--env", env] if ":" in env else []
    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "2", *extra])
    assert result.exit_code == 0, result.output


def test_commands_read_every_algo_and_name_runs_by_algo(tmp_path):
    for algo in ("dreamer", "model-free", "mbpo", "hybrid"):
        result = runner.invoke(app, ["train", "--algo", algo, *SHORT, "--runs-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
    folders = sorted(tmp_path.iterdir())
    for algo in ("dreamer", "model-free", "mbpo", "hybrid"):  # {env}-{algo}-s{seed}-{time}
        assert sum(p.name.startswith(f"CartPole-v1-{algo}-s0-") for p in folders) == 1, folders
    for run in folders:
        model_free = "model-free" in run.name
        result = runner.invoke(app, ["imagine", str(run), "--horizon", "3", "--rollouts", "2"])
        if model_free:
            assert result.exit_code == 2 and "no world model" in result.output
        else:
            assert result.exit_code == 0, result.output
        assert runner.invoke(app, ["plot", str(run)]).exit_code == 0
    result = runner.invoke(app, ["compare", *map(str, folders), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert all(f"| {algo} |" in table for algo in ("dreamer", "model-free", "mbpo", "hybrid"))
