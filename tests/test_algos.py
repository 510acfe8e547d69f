"""Every --algo trains end to end on a discrete, a continuous and a module:Class env, and every
command reads its run folder (imagine only where a world model exists)."""

import json

import pytest
from typer.testing import CliRunner

from dreamercli import runs
from dreamercli.cli import app

runner = CliRunner()
ALGOS = ("dreamer", "model-free", "mbpo", "hybrid", "belief")
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
@pytest.mark.parametrize("algo", ["model-free", "mbpo", "hybrid", "belief"])
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


def test_dreamer_learns_in_the_rssm_too(tmp_path):
    # Imagination starts from the RSSM's posterior states [h, z], which the actor and critic read.
    train(tmp_path, "--env", "Pendulum-v1", "--algo", "dreamer", "--model", "rssm", "--name", "run")
    run = tmp_path / "run"
    check_run(run, "Pendulum-v1", "dreamer")
    assert json.loads((run / "config.json").read_text())["world_model"]["model"] == "rssm"
    assert any("ac/imagined_return" in r for r in runs.read_metrics(run))
    result = runner.invoke(app, ["imagine", str(run), "--horizon", "3", "--rollouts", "2"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("algo, model, said", [("mbpo", "rssm", "use --model latent"),
                                               ("belief", "latent", "has none"),
                                               ("model-free", "rssm", "learns no world model")])
def test_a_model_the_algo_cannot_use_is_refused_in_one_line(tmp_path, algo, model, said):
    result = runner.invoke(app, ["train", "--algo", algo, "--model", model, *SHORT, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and said in result.output and len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("algo", ["dreamer", "model-free"])
def test_a_run_folder_from_before_the_rssm_still_loads(tmp_path, algo):
    # Written by the code of 30e9c2e (no `model` field in its config.json): it evaluates, imagines
    # and plots as it did, and its world model is the latent one.
    import shutil
    from pathlib import Path

    from dreamercli.checkpoint import load_agent

    run = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / f"pre-rssm-{algo}", run)
    assert "model" not in json.loads((run / "config.json").read_text())["world_model"]
    agent, _ = load_agent(run, "cpu")
    assert (agent.world_model is None) == (algo == "model-free") and not agent.recurrent
    for command in (["evaluate", str(run), "--episodes", "2"], ["plot", str(run)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    if algo == "dreamer":
        result = runner.invoke(app, ["imagine", str(run), "--horizon", "3", "--rollouts", "2"])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["train", "--resume", str(run), "--steps", "140"])
        assert result.exit_code == 0, result.output
