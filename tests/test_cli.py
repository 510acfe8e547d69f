"""The command line: flags to Config with a fake training loop; one real train, evaluate and imagine."""

import dataclasses
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import typer
from conftest import tiny
from rich.console import Console
from typer.testing import CliRunner

from dreamercli import display, plotting, training
from dreamercli.cli import app, with_settings
from dreamercli.config import SETTINGS, VERSION, Config, from_preset, settings_table, to_dict, with_overrides
from dreamercli.progress import Progress

runner = CliRunner()
OWN_OPTIONS = ("config", "runs_dir", "name", "force", "resume", "trust_env_code", "seeds", "workers", "ray")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def value_of(config: Config, name: str):
    section = SETTINGS[name].section
    return getattr(getattr(config, section) if section else config, name)


def other_value(name: str):
    """A valid value of the setting that is not its default."""
    s = SETTINGS[name]
    if name == "env":
        return "Pendulum-v1"
    if name == "model":
        return "rssm"  # pixels (on here) need the RSSM
    if name == "frame_size":
        return 64  # a power of two
    if s.choices:
        return next(c for c in s.choices if c != s.default)
    if s.kind == "int":
        return s.default + 1
    if s.kind == "bool":
        return not s.default
    if name == "stop_at_return":
        return 150.0  # given as text, read as a number
    return 1.5 if s.default is None else s.default / 2 if s.default else 0.5


def words(name: str, value) -> list[str]:
    """The command-line words that give a setting this value (a bool is a bare --flag or --no-flag)."""
    if isinstance(value, bool):
        return [flag(name) if value else "--no-" + flag(name)[2:]]
    return [flag(name), str(value)]


@pytest.fixture
def fake_train(monkeypatch):
    """The training loop replaced: each call's (config, run_dir) is kept, and the curves drawn."""
    calls, drawn = [], []

    def train(config, run_dir=None, on_progress=None):
        calls.append((config, run_dir))
        on_progress(Progress(config.train.steps, config.train.steps, 1, 10.0, {"wm/loss": 0.5}, 100.0))
        return None, {"env": config.env, "env_steps": config.train.steps, "final_eval": 10.0}

    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr(plotting, "plot_finished", lambda run_dir, summary: drawn.append(run_dir))
    return SimpleNamespace(calls=calls, drawn=drawn)


def test_every_setting_flag_reaches_its_config_field(fake_train, tmp_path):
    wanted = {name: other_value(name) for name, s in SETTINGS.items() if not s.file_only}
    args = [word for name, value in wanted.items() for word in words(name, value)]
    result = runner.invoke(app, ["train", *args, "--runs-dir", str(tmp_path), "--name", "r"])
    assert result.exit_code == 0, result.output
    [(config, run_dir)] = fake_train.calls
    for name, value in wanted.items():
        assert value != SETTINGS[name].default, name
        assert value_of(config, name) == value and type(value_of(config, name)) is type(value), name
    assert run_dir == tmp_path / "r" and fake_train.drawn == [run_dir]  # the CLI draws curves.png
    assert result.output.strip().splitlines()[-1] == str(run_dir)


def test_no_flags_give_the_default_config(fake_train, tmp_path):
    assert runner.invoke(app, ["train", "--runs-dir", str(tmp_path)]).exit_code == 0
    [(config, run_dir)] = fake_train.calls
    assert config == Config() and run_dir.parent == tmp_path and run_dir.name.startswith("CartPole-v1-belief-s0-")


def test_preset_then_config_file_then_flags(fake_train, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"horizon": 3, "discount": 0.9, "train": {"steps": 100}}))
    result = runner.invoke(app, ["train", "--preset", "tiny", "--config", str(path), "--discount", "0.95",
                                 "--steps", "120", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = fake_train.calls[0][0]
    assert config.preset == "tiny" and config.world_model.latent_dim == 8  # the preset, where nothing else says
    assert config.actor_critic.horizon == 3  # the file over the preset
    assert config.actor_critic.discount == 0.95 and config.train.steps == 120  # the flags over the file


def test_a_runs_config_json_is_the_run_again_unless_a_flag_says_otherwise(fake_train, tmp_path):
    run_config = with_overrides(from_preset("tiny"), {"env": "Pendulum-v1", "algo": "hybrid", "seed": 7})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(to_dict(run_config)))
    for extra in ([], ["--env", "CartPole-v1"]):
        result = runner.invoke(app, ["train", "--config", str(path), "--runs-dir", str(tmp_path), *extra])
        assert result.exit_code == 0, result.output
    assert fake_train.calls[0][0] == run_config
    assert fake_train.calls[1][0] == with_overrides(run_config, {"env": "CartPole-v1"})


def test_force_is_needed_to_reuse_a_run_folder(fake_train, cartpole_run, tmp_path):
    shutil.copytree(cartpole_run, tmp_path / "run")
    refused = runner.invoke(app, ["train", "--runs-dir", str(tmp_path), "--name", "run"])
    assert refused.exit_code == 2 and "--force" in refused.output and not fake_train.calls
    forced = runner.invoke(app, ["train", "--runs-dir", str(tmp_path), "--name", "run", "--force"])
    assert forced.exit_code == 0, forced.output
    assert fake_train.calls[0][1] == tmp_path / "run"


def test_resume_takes_steps_draws_finished_curves_and_says_how_to_go_on(fake_train, cartpole_run, tmp_path,
                                                                         monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    summaries = [{"env_steps": 400}, {"env_steps": 350, "interrupted": "SIGINT"}]
    state = SimpleNamespace(step=300, updates=50, episode=12, last_eval=9.5)
    trainer = SimpleNamespace(state=state, buffer=[0] * 300, run=lambda: summaries.pop(0))
    asked = []
    monkeypatch.setattr(training, "resume", lambda run_dir, steps, on_progress: asked.append(steps) or trainer)
    done = runner.invoke(app, ["train", "--resume", str(run), "--steps", "400"])
    assert done.exit_code == 0, done.output
    assert "resumed" in done.output and "at env step 300 of 400" in done.output
    assert asked == [400] and fake_train.drawn == [run]
    stopped = runner.invoke(app, ["train", "--resume", str(run)])
    assert stopped.exit_code == 130 and f"resume with: dreamer train --resume {run}" in stopped.output
    assert fake_train.drawn == [run]  # an interrupted run's curves wait for the run that finishes it
    other = runner.invoke(app, ["train", "--resume", str(run), "--preset", "tiny"])
    assert other.exit_code == 2 and "remove --preset" in other.output


def rendered_rows(width: int, reports: list[Progress], steps: int = 20_000, pretrain: int = 200) -> list[str]:
    """The progress row as a terminal `width` columns wide shows it after each report."""
    console = Console(file=io.StringIO(), width=width)
    progress, show = display.run_progress("MountainCarContinuous-v0", steps, pretrain, console=console)
    rows = []
    for report in reports:
        show(report)
        screen = Console(file=io.StringIO(), width=width)
        screen.print(progress.get_renderable())
        rows.append(screen.file.getvalue().rstrip("\n"))
    return rows


LOSSES = {"wm/loss": 2.46, "ac/actor_loss": 0.516, "sac/q_loss": 41234.2}
REPORTS = [Progress(100, 20_000, 0, None, {}, 12345.0, "prefill"),
           Progress(250, 20_000, 1, None, {"wm/loss": 3.2}, 0.0, "pretrain", 37, 200),
           Progress(1250, 20_000, 6, -1234.5, LOSSES, 95.0, "train", 200, 200, 15.0),
           Progress(1500, 20_000, 7, -1234.5, LOSSES, 95.0, "eval", 200, 200, 11 * 3600.0),
           Progress(1500, 20_000, 7, -250.0, LOSSES, 95.0, "checkpoint", 200, 200, 11 * 3600.0)]


@pytest.mark.parametrize("width", [80, 120])
def test_the_progress_row_fits_keeps_its_shape_and_cuts_nothing(width):
    rows = rendered_rows(width, REPORTS)
    assert all("\n" not in row and len(row) == width for row in rows), rows  # one line, the same width
    assert "…" not in "".join(rows)
    assert "1250/20000" in rows[2] and "pretrain 37/200" in rows[1] and "0:00:15 left" in rows[2]
    assert "eval -1234.5" in rows[2] and "95 steps/s" in rows[2] and "11:00:00 left" in rows[3]
    # each field starts where it started before the losses appeared
    assert rows[0].index("/20000") == rows[2].index("/20000") and rows[0].index("left") == rows[2].index("left")
    if width >= 120:
        assert "wm 2.46" in rows[2] and "actor 0.516" in rows[2] and "ep 6" in rows[2]


def test_the_first_signal_says_a_stop_is_pending(monkeypatch, tmp_path):
    def train(config, run_dir=None, on_progress=None):
        for stopping in (None, "SIGINT", "SIGINT"):
            on_progress(Progress(5, config.train.steps, 0, None, {}, 10.0, "prefill", stopping=stopping))
        return None, {"env": config.env, "env_steps": 5, "interrupted": "SIGINT"}

    monkeypatch.setattr(training, "train", train)
    result = runner.invoke(app, ["train", "--runs-dir", str(tmp_path), "--name", "r"])
    assert result.exit_code == 130
    text = " ".join(result.output.split())
    assert text.count("dreamer: stopping after this env step, with a checkpoint to resume from; press Ctrl-C "
                      "again to stop now") == 1
    assert display.stop_pending("SIGTERM").endswith("send SIGTERM again to stop now")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_what_plot_and_compare_write_into_the_working_folder_is_ignored_by_git():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        pytest.skip("not a git checkout")
    for path in ("plot.png", "compare/compare.png"):  # `dreamer plot A B` and `dreamer compare` defaults
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0, path


def test_help_shows_every_flag_with_its_help_and_default():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    flagged = {name: s for name, s in SETTINGS.items() if not s.file_only}
    for name, s in flagged.items():
        assert flag(name) in text, name
        assert s.help in text, name
        if isinstance(s.default, bool):
            assert f"[default: {'' if s.default else 'no-'}{flag(name)[2:]}]" in text, name
        elif s.default is not None:
            assert f"[default: {s.default}]" in text, name
    for name in OWN_OPTIONS:
        assert flag(name) in text, name
    assert "(tiny preset: 300) [default: 10000]" in text  # --steps: a preset's own value is named
    command = typer.main.get_command(app).commands["train"]
    assert {p.name for p in command.params} == {*flagged, *OWN_OPTIONS}  # nothing else, nothing missing


def option_rows(help_text: str) -> dict[str, str]:
    """Each option's row of rich's help (its continuation lines joined), by its flag."""
    rows: dict[str, str] = {}
    flag_name = None
    for line in help_text.splitlines():
        match = re.match(r"^│\s+(--[\w-]+)", line)
        if match:
            flag_name = match[1]
            rows[flag_name] = line
        elif flag_name and line.startswith("│") and not re.match(r"^│\s*[*A-Z]", line):
            rows[flag_name] += " " + line
        else:
            flag_name = None
    return rows


@pytest.mark.parametrize("command", ["train", "evaluate", "imagine", "plot", "compare", "tune"])
def test_every_option_help_shows_its_default(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    rows = option_rows(result.output)
    params = typer.main.get_command(app).commands[command].params
    options = [p.opts[0] for p in params if p.param_type_name == "option" and p.opts[0] != "--help"]
    assert options and set(options) <= set(rows)
    for option in options:
        assert "[default: " in " ".join(rows[option].split()), rows[option]


def test_a_file_only_setting_gets_no_flag(monkeypatch):
    monkeypatch.setitem(SETTINGS, "sac_tau", dataclasses.replace(SETTINGS["sac_tau"], file_only="Set it with care."))

    def command(ctx: typer.Context, *, own: int = 0, **settings) -> None:
        """A command."""

    parameters = inspect.signature(with_settings(command)).parameters
    assert "sac_tau" not in parameters and "sac_alpha" in parameters and "own" in parameters
    assert "File only: Set it with care." in settings_table()


def test_version_and_a_fast_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dreamer {VERSION}"
    code = "import sys, dreamercli.cli; assert 'torch' not in sys.modules and 'gymnasium' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("args,message", [
    (["train", "--env", "NoSuchEnv-v9"], "unknown environment"),
    (["train", "--env", "Blackjack-v1"], "unsupported observation space"),
    (["train", "--steps", "0"], "steps must be > 0"),
    (["train", "--steps", "-3"], "steps must be > 0"),
    (["train", "--horizon", "0"], "horizon must be > 0"),
    (["train", "--sac-tau", "2"], "sac_tau must be in (0, 1], got 2.0"),
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


def test_train_evaluate_and_imagine_for_real(tmp_path):
    result = runner.invoke(app, ["train", "--env", "CartPole-v1", "--preset", "tiny", "--algo", "dreamer",
                                 "--steps", "120", "--runs-dir", str(tmp_path), "--name", "run", "--horizon", "4",
                                 "--latent-dim", "6", "--seed", "3"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert result.output.strip().splitlines()[-1] == str(run)
    config = json.loads((run / "config.json").read_text())
    assert config["actor_critic"]["horizon"] == 4 and config["world_model"]["latent_dim"] == 6
    assert config["train"]["seed"] == 3 and config["preset"] == "tiny"
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "3", "--render"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval.json").read_text())
    assert report["episodes"] == 3 and len(report["returns"]) == 3
    assert report["return_mean"] == pytest.approx(sum(report["returns"]) / 3)
    assert f"{report['return_mean']:.2f}" in result.output
    assert (run / "videos" / "eval.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")

    result = runner.invoke(app, ["imagine", str(run), "--horizon", "4", "--rollouts", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-3:] == [str(run / "imagine" / f) for f in
                                                       ("imagine.json", "imagine.png", "dream.gif")]


def test_bad_evaluate_input(tmp_path, cartpole_run):
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not found" in missing.output
    (tmp_path / "empty").mkdir()
    not_run = runner.invoke(app, ["evaluate", str(tmp_path / "empty")])
    assert not_run.exit_code == 2 and "not a dreamer run folder" in not_run.output
    assert list((tmp_path / "empty").iterdir()) == []
    zero = runner.invoke(app, ["evaluate", str(cartpole_run), "--episodes", "0"])
    assert zero.exit_code == 2 and "--episodes" in zero.output


def test_evaluate_notes_a_run_whose_checkpoint_precedes_any_update(tmp_path, cartpole_run):
    run = tmp_path / "fresh"
    trainer = training.Trainer(tiny("CartPole-v1"), run)
    trainer.start()  # the run folder as a run stopped at once leaves it: a step-0 checkpoint
    trainer.env.close()
    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "1"])
    assert result.exit_code == 0, result.output
    assert (f"dreamer: warning: {run} holds an untrained policy (its checkpoint is at env step 0, before any "
            f"update): these returns are of its initial weights; train it on with `dreamer train --resume {run}`"
            ) in " ".join(result.output.split())
    assert json.loads((run / "eval.json").read_text())["episodes"] == 1
    trained = runner.invoke(app, ["evaluate", str(cartpole_run), "--episodes", "1"])
    assert trained.exit_code == 0 and "untrained" not in trained.output


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


def test_evaluate_render_without_pygame_keeps_the_returns_and_says_why_there_is_no_gif(cartpole_run, tmp_path,
                                                                                       monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    monkeypatch.setitem(sys.modules, "pygame", None)  # as an install without gymnasium's classic-control extra
    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "2", "--render"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval.json").read_text())
    assert len(report["returns"]) == 2 and "pygame" in report["gif_error"] and "gif" not in report
    assert "no eval.gif" in result.output and not (run / "videos" / "eval.gif").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_read_only_folders_answer_in_one_line(cartpole_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    run.chmod(0o555)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        result = runner.invoke(app, ["evaluate", str(run), "--episodes", "1"])
        assert result.exit_code == 2 and "cannot write in" in result.output
        result = runner.invoke(app, ["train", "--preset", "tiny", "--runs-dir", str(locked), "--name", "x"])
        assert result.exit_code == 2 and "not writable" in result.output
    finally:
        run.chmod(0o755)
        locked.chmod(0o755)

