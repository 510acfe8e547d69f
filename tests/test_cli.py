import json
import os
import sys

import pytest
from typer.testing import CliRunner

from dreamercli.cli import app

runner = CliRunner()


def tiny_train(tmp_path, *extra):
    return runner.invoke(app, ["train", "--env", "CartPole-v1", "--preset", "tiny", "--steps", "120",
                               "--runs-dir", str(tmp_path), *extra])


def test_train_then_evaluate(tmp_path):
    result = tiny_train(tmp_path, "--name", "run", "--horizon", "4", "--latent-dim", "6", "--seed", "3")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert result.output.strip().splitlines()[-1] == str(run)
    config = json.loads((run / "config.json").read_text())
    assert config["actor_critic"]["horizon"] == 4
    assert config["world_model"]["latent_dim"] == 6
    assert config["train"]["seed"] == 3 and config["preset"] == "tiny"

    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "3", "--render"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval.json").read_text())
    assert report["episodes"] == 3 and len(report["returns"]) == 3
    assert report["return_mean"] == pytest.approx(sum(report["returns"]) / 3)
    assert f"{report['return_mean']:.2f}" in result.output
    assert (run / "videos" / "eval.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")


def test_config_file_then_flags(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"horizon": 3, "discount": 0.9, "train": {"steps": 100}}))
    result = tiny_train(tmp_path, "--name", "r", "--config", str(cfg), "--discount", "0.95")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["actor_critic"]["horizon"] == 3  # from the file
    assert config["actor_critic"]["discount"] == 0.95  # the flag wins
    assert config["train"]["steps"] == 120  # the flag wins over the file's section


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("x")
    result = tiny_train(tmp_path, "--name", "r")
    assert result.exit_code == 2 and "--force" in result.output
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("args,message", [
    (["train", "--env", "NoSuchEnv-v9"], "unknown environment"),
    (["train", "--env", "Blackjack-v1"], "unsupported observation space"),
    (["train", "--steps", "0"], "steps must be > 0"),
    (["train", "--steps", "-3"], "steps must be > 0"),
    (["train", "--horizon", "0"], "horizon must be > 0"),
    (["train", "--device", "tpu"], "tpu"),
    (["train", "--preset", "huge"], "huge"),
    (["train", "--config", "/no/such/file.json"], "not found"),
])
def test_bad_training_input_exits_2_and_creates_nothing(tmp_path, args, message):
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_bad_evaluate_input(tmp_path, cartpole_run):
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not found" in missing.output
    (tmp_path / "empty").mkdir()
    not_run = runner.invoke(app, ["evaluate", str(tmp_path / "empty")])
    assert not_run.exit_code == 2 and "not a dreamer run folder" in not_run.output
    assert list((tmp_path / "empty").iterdir()) == []
    zero = runner.invoke(app, ["evaluate", str(cartpole_run), "--episodes", "0"])
    assert zero.exit_code == 2 and "--episodes" in zero.output


def test_help_lists_every_hyperparameter():
    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ("--latent-dim", "--hidden-dim", "--horizon", "--batch-size", "--wm-lr", "--actor-lr",
                 "--critic-lr", "--discount", "--lam", "--entropy", "--buffer-size", "--train-ratio",
                 "--prefill", "--eval-every", "--eval-episodes", "--preset", "--config", "--device"):
        assert flag in result.output, flag


def test_evaluate_sets_the_runs_threads_or_the_option(cartpole_run):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = runner.invoke(app, ["evaluate", str(cartpole_run), "--episodes", "1"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1  # the run's config says 1
        result = runner.invoke(app, ["evaluate", str(cartpole_run), "--episodes", "1", "--threads", "3"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 3
        bad = runner.invoke(app, ["evaluate", str(cartpole_run), "--threads", "0"])
        assert bad.exit_code == 2 and "threads must be > 0" in bad.output
    finally:
        torch.set_num_threads(before)


def test_a_runs_config_json_sets_the_env_unless_a_flag_does(pendulum_run, tmp_path):
    result = runner.invoke(app, ["train", "--config", str(pendulum_run / "config.json"), "--steps", "120",
                                 "--runs-dir", str(tmp_path), "--name", "again"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "again" / "config.json").read_text())["env"] == "Pendulum-v1"
    result = tiny_train(tmp_path, "--config", str(pendulum_run / "config.json"), "--name", "flag")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "flag" / "config.json").read_text())["env"] == "CartPole-v1"


def test_evaluate_render_without_pygame_keeps_the_returns_and_says_why_there_is_no_gif(tmp_path, monkeypatch):
    assert tiny_train(tmp_path, "--name", "run").exit_code == 0
    monkeypatch.setitem(sys.modules, "pygame", None)  # as an install without gymnasium's classic-control extra
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--episodes", "2", "--render"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(report["returns"]) == 2 and "pygame" in report["gif_error"] and "gif" not in report
    assert "no eval.gif" in result.output and not (tmp_path / "run" / "videos" / "eval.gif").exists()


def test_force_replaces_the_old_run_folder_as_a_whole(tmp_path):
    assert tiny_train(tmp_path, "--name", "run").exit_code == 0
    assert runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--episodes", "1", "--render"]).exit_code == 0
    assert (tmp_path / "run" / "eval.json").is_file() and (tmp_path / "run" / "videos").is_dir()
    result = tiny_train(tmp_path, "--name", "run", "--force", "--seed", "4")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "eval.json").exists() and not (tmp_path / "run" / "videos").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["seed"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temp folder left beside it


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_read_only_folders_answer_in_one_line(cartpole_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    run.chmod(0o555)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = runner.invoke(app, ["evaluate", str(run), "--episodes", "1"])
        assert result.exit_code == 2 and "cannot write in" in result.output
        result = tiny_train(locked, "--name", "x")
        assert result.exit_code == 2 and "not writable" in result.output
    finally:
        run.chmod(0o755)
        locked.chmod(0o755)
