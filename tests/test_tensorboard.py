"""--tensorboard: event files that TensorBoard's own reader parses, holding metrics.jsonl's rows once each."""

import importlib.util
import json

import pytest
from conftest import tiny
from typer.testing import CliRunner

from dreamercli import runs
from dreamercli.cli import app
from dreamercli.config import ConfigError, build
from dreamercli.tensorboard_log import FOLDER
from dreamercli.training import check_learns, resume, train


class Crash(Exception):
    """Stands in for a kill between two env steps (test_checkpoint.py)."""


def read_events(run_dir):
    """Every scalar by tag as [(step, value)], and the config text, as TensorBoard reads them."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(run_dir / FOLDER), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    [text] = events.Tensors("config/text_summary")
    return scalars, text.tensor_proto.string_val[0].decode()


def from_metrics(run_dir):
    """The same, from metrics.jsonl: each key of each row at the row's step ('time' is the events' wall time)."""
    scalars = {}
    for row in runs.read_metrics(run_dir):
        for key, value in row.items():
            if key not in ("step", "time") and value is not None:
                scalars.setdefault(key, []).append((row["step"], value))
    return scalars


def same(events, metrics):
    """Equal tags, steps and values (event files hold float32)."""
    assert set(events) == set(metrics)
    for tag, points in metrics.items():
        assert [s for s, _ in events[tag]] == [s for s, _ in points], tag
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_event_files_hold_every_metrics_row_and_the_config(tmp_path):
    pytest.importorskip("tensorboard")
    config = tiny("CartPole-v1", tensorboard=True)
    train(config, tmp_path / "run")
    events, text = read_events(tmp_path / "run")
    metrics = from_metrics(tmp_path / "run")
    same(events, metrics)
    assert [s for s, _ in events["eval/return_mean"]] == [150, 300]  # eval returns, named as in metrics.jsonl
    assert json.loads("\n".join(line[4:] for line in text.splitlines())) == json.loads(
        (tmp_path / "run" / runs.CONFIG_FILE).read_text())


def test_a_resumed_run_continues_the_stream_without_a_duplicated_step(tmp_path):
    pytest.importorskip("tensorboard")
    config = tiny("CartPole-v1", tensorboard=True)
    run = tmp_path / "run"

    def crash(p):
        if p.step >= 230:  # the checkpoint is at 150: rows of 200 are in the event file, to be dropped
            raise Crash()

    with pytest.raises(Crash):
        train(config, run, on_progress=crash)
    assert max(s for s, _ in read_events(run)[0]["train/episodes"]) == 200
    trainer = resume(run)
    assert trainer.state.step == 150
    trainer.run()
    events, _ = read_events(run)
    for tag, points in events.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag} has a step twice: {steps}"
    same(events, from_metrics(run))
    assert [s for s, _ in events["eval/return_mean"]] == [150, 300]
    assert len(list((run / FOLDER).iterdir())) == 1  # one stream, rebuilt from metrics.jsonl, then appended to


def without_tensorboard(monkeypatch):
    """As if the tensorboard package were not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else find_spec(name, *a))


def test_without_the_package_the_run_is_refused_up_front_in_one_line(tmp_path, monkeypatch):
    without_tensorboard(monkeypatch)
    with pytest.raises(ConfigError, match=r"pip install 'dreamercli\[tensorboard\]'$"):
        check_learns(build({"tensorboard": True}))
    with pytest.raises(ConfigError, match="tensorboard package is not installed"):
        train(tiny("CartPole-v1", tensorboard=True), tmp_path / "api")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"tensorboard": True}))
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "dreamer: error: tensorboard is on, but the tensorboard package is not installed: "
        "pip install 'dreamercli[tensorboard]'"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "api").exists()
