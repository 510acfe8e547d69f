"""Every kind of bad input: exit code 2, one line on stderr, no traceback, run folders untouched."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from dreamercli import cli, runs


def tree_hash(folder: Path) -> dict[str, str]:
    """Every file and folder under folder, by relative path, with its content's hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def notes_folder(root: Path) -> list[str]:
    """A folder of the user's own files where the run would go: --force must not delete it."""
    (root / "notes").mkdir()
    write(root / "notes" / "a.txt", "mine")
    return ["--runs-dir", str(root), "--name", "notes"]


# Each case: (command words, setup(root, run, other) -> extra words or None). `run` is a copy of a
# tiny CartPole run folder and `other` of a tiny Pendulum one, both under `root`.
CASES = {
    # -- train: flags --------------------------------------------------------------------------
    "train seed -1": (["train", "--seed", "-1"], None),
    "train wm-lr nan": (["train", "--wm-lr", "nan"], None),
    "train actor-lr inf": (["train", "--actor-lr", "inf"], None),
    "train train-ratio nan": (["train", "--train-ratio", "nan"], None),
    "train sac-actor-share 0": (["train", "--sac-actor-share", "0"], None),
    "train sac-actor-share above 1": (["train", "--sac-actor-share", "1.5"], None),
    "train threshold nan": (["train", "--threshold", "nan"], None),
    "train steps 0": (["train", "--steps", "0"], None),
    "train steps not a number": (["train", "--steps", "many"], None),
    "train unknown flag": (["train", "--stepz", "3"], None),
    "train bad enum": (["train", "--imag-noise", "loud"], None),
    "train unknown env": (["train", "--env", "NoSuchEnv-v9"], None),
    "train env module missing": (["train", "--env", "no_such_module_xyz:Env"], None),
    "train env class missing": (["train", "--env", "custom_env:Missing"], None),
    "train env constructor raises": (["train", "--env", "custom_env:BrokenInit"], None),
    "train image smaller than the encoder needs": (["train", "--env", "custom_env:ImageObs"], None),
    "train pixels from an env that cannot render": (["train", "--env", "custom_env:Reach", "--pixels"], None),
    "train frame size below 16": (["train", "--pixels", "--frame-size", "8"], None),
    "train frame size not a power of two": (["train", "--pixels", "--frame-size", "48"], None),
    "train pixels read raw by model-free": (["train", "--pixels", "--algo", "model-free"], None),
    "train pixels with the latent model": (["train", "--pixels", "--algo", "dreamer"], None),
    "train trust without resume": (["train", "--trust-env-code"], None),
    "train seeds and seed": (["train", "--seeds", "0", "1", "--seed", "2"], None),
    "train seeds garbage": (["train", "--seeds", "a-b"], None),
    "train workers 0": (["train", "--seeds", "0", "1", "--workers", "0"], None),
    # -- train: runs that cannot learn -------------------------------------------------------------
    "train sac-ratio 0": (["train", "--sac-ratio", "0"], None),
    "train mbpo sac-ratio 0": (["train", "--algo", "mbpo", "--sac-ratio", "0"], None),
    "train steps within the prefill": (["train", "--steps", "100"], None),
    "train seeds steps within the prefill": (["train", "--seeds", "0", "1", "--steps", "250"], None),
    "train stop-at-return word": (["train"], lambda root, run, other: [
        "--config", str(write(root / "c.json", '{"stop_at_return": "soon"}'))]),
    "train stop-at-return registered without one": (["train", "--env", "custom_env:Reach"], lambda root, run, other: [
        "--config", str(write(root / "c.json", '{"stop_at_return": "registered"}'))]),
    "train tensorboard not a bool": (["train"], lambda root, run, other: [
        "--config", str(write(root / "c.json", '{"tensorboard": "yes"}'))]),
    # -- train: files and folders ----------------------------------------------------------------
    "train config missing": (["train"], lambda root, run, other: ["--config", str(root / "nope.json")]),
    "train config is a folder": (["train"], lambda root, run, other: ["--config", str(run)]),
    "train config broken JSON": (["train"], lambda root, run, other: [
        "--config", str(write(root / "c.json", '{"steps": 3'))]),
    "train config bool for int": (["train"], lambda root, run, other: [
        "--config", str(write(root / "c.json", '{"steps": true}'))]),
    "train config env not a string": (["train"], lambda root, run, other: [
        "--config", str(write(root / "c.json", '{"env": 5}'))]),
    "train config unknown key": (["train"], lambda root, run, other: [
        "--config", str(write(root / "c.json", '{"stepz": 5}'))]),
    "train runs-dir is a file": (["train"], lambda root, run, other: [
        "--runs-dir", str(write(root / "file", "x"))]),
    "train name absolute": (["train"], lambda root, run, other: ["--runs-dir", str(root), "--name", "/tmp/x"]),
    "train name climbs out": (["train"], lambda root, run, other: ["--runs-dir", str(root), "--name", "../.."]),
    "train name exists": (["train"], lambda root, run, other: ["--runs-dir", str(root), "--name", "run"]),
    "train force on a non-run folder": (["train", "--force"], lambda root, run, other: notes_folder(root)),
    # -- train --resume --------------------------------------------------------------------------
    "resume with another flag": (["train"], lambda root, run, other: ["--resume", str(run), "--seed", "3"]),
    "resume with --force": (["train", "--force"], lambda root, run, other: ["--resume", str(run)]),
    "resume missing folder": (["train"], lambda root, run, other: ["--resume", str(root / "gone")]),
    "resume other env": (["train"], lambda root, run, other: ["--resume", str(run), "--env", "Pendulum-v1"]),
    "resume negative steps": (["train"], lambda root, run, other: ["--resume", str(run), "--steps", "-5"]),
    "resume fewer steps than done": (["train"], lambda root, run, other: ["--resume", str(run), "--steps", "10"]),
    "resume a finished run": (["train"], lambda root, run, other: ["--resume", str(run)]),
    "resume finished to its total": (["train", "--steps", "300"], lambda root, run, other: ["--resume", str(run)]),
    "resume truncated checkpoint": (["train"], lambda root, run, other: [
        "--resume", str(run)] if (run / runs.CHECKPOINT_FILE).write_bytes(
            (run / runs.CHECKPOINT_FILE).read_bytes()[:300]) else []),
    # -- evaluate: damaged folders ---------------------------------------------------------------
    "evaluate missing folder": (["evaluate"], lambda root, run, other: [str(root / "gone")]),
    "evaluate not a run folder": (["evaluate"], lambda root, run, other: [str(root)]),
    "evaluate truncated config": (["evaluate"], lambda root, run, other: [str(run)] if write(
        run / "config.json", (run / "config.json").read_text()[:40]) else []),
    "evaluate unknown config key": (["evaluate"], lambda root, run, other: [str(run)] if edit_json(
        run / "config.json", colour="blue") is None else []),
    "evaluate mistyped config value": (["evaluate"], lambda root, run, other: [str(run)] if edit_json(
        run / "config.json", train={**json.loads((run / "config.json").read_text())["train"], "seed": "zero"})
        is None else []),
    "evaluate newer schema": (["evaluate"], lambda root, run, other: [str(run)] if edit_json(
        run / "run.json", schema_version=99) is None else []),
    "evaluate damaged run.json": (["evaluate"], lambda root, run, other: [str(run)] if write(
        run / "run.json", "{") else []),
    "evaluate weights missing": (["evaluate"], lambda root, run, other: [str(run)] if (
        run / runs.WEIGHTS_FILE).unlink() is None else []),
    "evaluate weights truncated": (["evaluate"], lambda root, run, other: [str(run)] if (
        run / runs.WEIGHTS_FILE).write_bytes((run / runs.WEIGHTS_FILE).read_bytes()[:1000]) else []),
    "evaluate weights of another run": (["evaluate"], lambda root, run, other: [str(run)] if shutil.copy(
        other / runs.WEIGHTS_FILE, run / runs.WEIGHTS_FILE) else []),
    "evaluate weights are a pickle": (["evaluate"], lambda root, run, other: [str(run)] if torch.save(
        {"a": 1}, run / runs.WEIGHTS_FILE) is None else []),
    "evaluate episodes 0": (["evaluate", "--episodes", "0"], lambda root, run, other: [str(run)]),
    "evaluate seed -1": (["evaluate", "--seed", "-1"], lambda root, run, other: [str(run)]),
    "evaluate threads 0": (["evaluate", "--threads", "0"], lambda root, run, other: [str(run)]),
    "evaluate untrusted env code": (["evaluate"], lambda root, run, other: [str(run)] if edit_json(
        run / "config.json", env="custom_env:Reach") is None else []),
    "evaluate env module gone": (["evaluate", "--trust-env-code"], lambda root, run, other: [str(run)] if edit_json(
        run / "config.json", env="no_such_module_xyz:Env") is None else []),
    "evaluate other env named": (["evaluate", "--env", "Pendulum-v1"], lambda root, run, other: [str(run)]),
    # -- imagine, plot, compare --------------------------------------------------------------------
    "imagine horizon 0": (["imagine", "--horizon", "0"], lambda root, run, other: [str(run)]),
    "imagine rollouts 0": (["imagine", "--rollouts", "0"], lambda root, run, other: [str(run)]),
    "imagine seed -1": (["imagine", "--seed", "-1"], lambda root, run, other: [str(run)]),
    "imagine weights of another run": (["imagine"], lambda root, run, other: [str(run)] if shutil.copy(
        other / runs.WEIGHTS_FILE, run / runs.WEIGHTS_FILE) else []),
    "plot no metrics": (["plot"], lambda root, run, other: [str(run)] if write(run / "metrics.jsonl", "") == ""
                        else []),
    "plot not a run folder": (["plot"], lambda root, run, other: [str(root)]),
    "compare not a run folder": (["compare"], lambda root, run, other: [str(run), str(root / "gone")]),
}


@pytest.fixture
def folders(cartpole_run, pendulum_run, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    run, other = root / "run", root / "other"
    shutil.copytree(cartpole_run, run)
    shutil.copytree(pendulum_run, other)
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands where the hash sees it
    return tmp_path, root, run, other


def test_there_are_at_least_thirty_kinds():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_answers_in_one_line_with_exit_2(case, folders, monkeypatch, capsys):
    tmp_path, root, run, other = folders
    words, setup = CASES[case]
    extra = setup(root, run, other) if setup else []
    if case == "train unknown flag" or (case.startswith("train") and "--runs-dir" not in extra + words):
        extra = [*extra, "--runs-dir", str(root)]
    before = tree_hash(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dreamer", *words, *extra])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dreamer: error: "), err
    assert "Traceback" not in out + err
    assert tree_hash(tmp_path) == before, "a run folder (or the folder around it) changed"
