"""Kill -9, SIGINT and SIGTERM during real training subprocesses; planted pickles never run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dreamercli import DreamerLite, runs
from dreamercli.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def start_training(runs_dir: Path, name: str, *extra: str) -> subprocess.Popen:
    """`dreamer train` on tiny CartPole in a real subprocess, with a checkpoint every 50 steps."""
    args = [sys.executable, "-m", "dreamercli", "train", "--preset", "tiny", "--runs-dir", str(runs_dir),
            "--checkpoint-every", "50", *extra]
    args += ["--name", name] if name else []
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(check, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll until check() holds or the process ends."""
    end = time.monotonic() + timeout
    while not check() and proc.poll() is None:
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def logged_step(run_dir: Path) -> int:
    steps = [r["step"] for r in runs.read_metrics(run_dir)] if run_dir.is_dir() else []
    return max(steps, default=0)


def kill_and_recover(tmp_path: Path, moment: float) -> None:
    """SIGKILL a run `moment` seconds after its folder appears; it must load, evaluate and resume."""
    run = tmp_path / "run"
    proc = start_training(tmp_path, "run")
    wait_for(run.is_dir, proc)
    try:
        proc.wait(timeout=moment)  # a run that ends sooner is not waited on for the rest of the moment
    except subprocess.TimeoutExpired:
        proc.kill()
    proc.wait()
    runs.load_config(run)
    result = runner.invoke(app, ["evaluate", str(run), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    finished = (run / runs.SUMMARY_FILE).is_file()  # the run ended before the kill: nothing to resume
    result = runner.invoke(app, ["train", "--resume", str(run)])
    if finished:
        assert result.exit_code == 2 and "already finished at 300 of 300 env steps" in result.output, result.output
    else:
        assert result.exit_code == 0, result.output
    summary = json.loads((run / runs.SUMMARY_FILE).read_text())
    assert summary["env_steps"] == 300 and "interrupted" not in summary
    assert not temp_files(tmp_path), temp_files(tmp_path)
    steps = [(r["step"], "eval/return_mean" in r) for r in runs.read_metrics(run)]
    assert len(steps) == len(set(steps)), "a metrics row was written twice"


# One moment in the README's test command, two more in CI's second step (-m bench): each costs a run.
MOMENTS = np.random.default_rng(0).uniform(0.0, 5.0, size=3).round(2).tolist()


@pytest.mark.parametrize("moment", [MOMENTS[0], *(pytest.param(m, marks=pytest.mark.bench) for m in MOMENTS[1:])])
def test_kill_9_at_a_random_moment_loses_nothing_but_the_last_steps(tmp_path, moment):
    kill_and_recover(tmp_path, moment)


@pytest.mark.slow
@pytest.mark.parametrize("moment", np.random.default_rng(1).uniform(0.0, 6.0, size=10).round(2).tolist())
def test_kill_9_at_ten_more_random_moments(tmp_path, moment):
    kill_and_recover(tmp_path, moment)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_and_exits_with_its_code(tmp_path, sig, code):
    run = tmp_path / "run"
    proc = start_training(tmp_path, "run", "--steps", "5000")
    wait_for(lambda: logged_step(run) >= 200, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    summary = json.loads((run / runs.SUMMARY_FILE).read_text())
    assert summary["interrupted"] == sig.name
    assert err.strip().splitlines()[-1].endswith(f"resume with: dreamer train --resume {run}")
    stopped = summary["env_steps"]
    result = runner.invoke(app, ["train", "--resume", str(run), "--steps", str(stopped + 50)])
    assert result.exit_code == 0, result.output
    assert f"at env step {stopped} of {stopped + 50}" in result.output
    assert json.loads((run / runs.SUMMARY_FILE).read_text())["env_steps"] == stopped + 50


@pytest.mark.bench  # two seed workers and their parent: CI's second step
def test_sigint_reaches_every_seed_worker(tmp_path):
    proc = start_training(tmp_path, "multi", "--steps", "5000", "--seeds", "0", "1", "--workers", "2")
    folders = [tmp_path / "multi-s0", tmp_path / "multi-s1"]
    wait_for(lambda: all(logged_step(f) >= 100 for f in folders), proc, timeout=240)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    for folder in folders:
        assert json.loads((folder / runs.SUMMARY_FILE).read_text())["interrupted"] == "SIGINT"
        assert f"resume with: dreamer train --resume {folder}" in err


class Payload:
    """Unpickling this calls Path.touch on the marker: the file proves code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_a_pickle_renamed_to_safetensors_is_never_unpickled(cartpole_run, tmp_path, kind):
    import pickle
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cartpole_run, run)
    marker = tmp_path / "pwned"
    for target in (runs.WEIGHTS_FILE, runs.CHECKPOINT_FILE):
        path = run / target
        if kind == "torch.save":
            torch.save(Payload(marker), path)
        else:
            path.write_bytes(pickle.dumps(Payload(marker)))
    for args in (["evaluate", str(run)], ["imagine", str(run)], ["train", "--resume", str(run)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "refusing to load" in result.output, (args, result.output)
    with pytest.raises(runs.RunError, match="refusing to load"):
        DreamerLite("CartPole-v1").load_models(run)
    assert not marker.exists()
    assert os.listdir(tmp_path) == ["run"]


def small_file_limit(limit: int):
    """For the child: files may not grow past `limit` bytes, as on a disk that is nearly full."""

    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--preset", "tiny", "--runs-dir", str(tmp_path), "--name", "run",
                               "--checkpoint-every", "50", "--algo", "model-free"]).exit_code == 0
    # The checkpoint grows with the replay (56 bytes a CartPole-v1 step, model-free): with 10 kB of room its first
    # writes after the resume fit, and one within about 180 steps fails part way.
    limit = (run / runs.CHECKPOINT_FILE).stat().st_size + 10_000
    proc = subprocess.run([sys.executable, "-m", "dreamercli", "train", "--resume", str(run), "--steps", "5000"],
                          cwd=ROOT, capture_output=True, text=True, preexec_fn=small_file_limit(limit), timeout=300)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dreamer: error: cannot write") and "checkpoint.safetensors" in last, last
    assert "Traceback" not in proc.stderr
    from dreamercli import checkpoint

    kept = checkpoint.read(run).state["step"]
    assert 300 < kept < 5000 and not temp_files(tmp_path)
    result = runner.invoke(app, ["train", "--resume", str(run), "--steps", str(kept + 50)])
    assert result.exit_code == 0, result.output


def test_an_env_that_raises_mid_run_answers_in_one_line_and_leaves_a_loadable_folder(tmp_path):
    result = runner.invoke(app, ["train", "--preset", "tiny", "--env", "faulty_envs:RaisesOnStep",
                                 "--runs-dir", str(tmp_path), "--name", "run"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "dreamer: error: environment 'faulty_envs:RaisesOnStep' raised at env step 50: RuntimeError: "
        "simulator crashed")
    config, _ = runs.load_config(tmp_path / "run")
    assert config.env == "faulty_envs:RaisesOnStep" and (tmp_path / "run" / runs.WEIGHTS_FILE).is_file()
