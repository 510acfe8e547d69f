"""train --seeds: seed parsing, local spawned workers (same metrics as one run), failures, Ray."""

import json

import pytest
from typer.testing import CliRunner

from dreamercli import display, multiseed, runs
from dreamercli.cli import app, join_seeds_argv
from dreamercli.config import ConfigError, from_preset, with_overrides

runner = CliRunner()
TINY = ["--env", "CartPole-v1", "--preset", "tiny", "--steps", "150", "--horizon", "4"]
VOLATILE = ("time", "train/sps", "eval/seconds")


def metrics(run_dir):
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in runs.read_metrics(run_dir)]


def test_parse_seeds():
    assert multiseed.parse_seeds("0 1 2") == [0, 1, 2]
    assert multiseed.parse_seeds("0,1,2") == [0, 1, 2]
    assert multiseed.parse_seeds("0-3, 7") == [0, 1, 2, 3, 7]
    for bad, message in (("", "no seeds"), ("a", "cannot read 'a'"), ("3-1", "empty range"),
                         ("1 1", "repeated"), ("1-x", "cannot read")):
        with pytest.raises(ConfigError, match=message):
            multiseed.parse_seeds(bad)


def test_argv_joins_seed_words_and_gives_bare_ray_a_value():
    assert join_seeds_argv(["train", "--seeds", "0", "1", "2", "--workers", "2"]) == \
        ["train", "--seeds", "0 1 2", "--workers", "2"]
    assert join_seeds_argv(["train", "--seeds", "0-9", "--ray"]) == ["train", "--seeds", "0-9", "--ray", "local"]
    assert join_seeds_argv(["train", "--ray", "head:6379", "--seeds", "1"]) == \
        ["train", "--ray", "head:6379", "--seeds", "1"]
    assert join_seeds_argv(["plot", "runs/a"]) == ["plot", "runs/a"]


def test_seed_input_errors_exit_2_and_create_nothing(tmp_path):
    for args, message in ((["--seeds", "x"], "cannot read"), (["--seeds", "1", "--seed", "2"], "not both"),
                          (["--workers", "2"], "need --seeds"), (["--seeds", "1", "--workers", "0"], "> 0")):
        result = runner.invoke(app, ["train", *TINY, "--runs-dir", str(tmp_path / "r"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_plan_names_folders_per_seed(tmp_path):
    config = from_preset("tiny")
    named = multiseed.plan(config, [0, 3], tmp_path, "exp", False)
    assert [(c.train.seed, p.name) for c, p in named] == [(0, "exp-s0"), (3, "exp-s3")]
    default = [p.name for _, p in multiseed.plan(config, [1, 2], tmp_path, None, False)]
    assert default[0].startswith("CartPole-v1-belief-s1-") and default[0][-15:] == default[1][-15:]
    (tmp_path / "exp-s3").mkdir()
    with pytest.raises(runs.RunError, match="--force"):
        multiseed.plan(config, [0, 3], tmp_path, "exp", False)


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """Seeds 0 and 1 through the CLI with two spawned workers."""
    root = tmp_path_factory.mktemp("local")
    result = runner.invoke(app, ["train", *TINY, "--seeds", "0,1", "--workers", "2", "--name", "t",
                                 "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    return root, result.output


def test_local_workers_write_a_folder_per_seed_like_single_runs(local_runs, tmp_path):
    from dreamercli.training import train

    root, output = local_runs
    assert output.strip().splitlines()[-2:] == [str(root / "t-s0"), str(root / "t-s1")]
    assert "seed 0" in output and "seed 1" in output
    for seed in (0, 1):
        names = {p.name for p in (root / f"t-s{seed}").iterdir()}
        assert {"config.json", "weights.safetensors", "metrics.jsonl", "summary.json", "curves.png"} <= names
    assert metrics(root / "t-s0") != metrics(root / "t-s1")
    config = with_overrides(from_preset("tiny"), {"steps": 150, "horizon": 4, "seed": 1})
    train(config, tmp_path / "single")
    assert metrics(tmp_path / "single") == metrics(root / "t-s1")
    assert runs.read_json(tmp_path / "single" / "config.json") == runs.read_json(root / "t-s1" / "config.json")


def test_a_failing_seed_does_not_stop_the_others(tmp_path, capsys):
    good = with_overrides(from_preset("tiny"), {"steps": 60, "prefill": 30, "eval_every": 0, "seed": 5})
    bad = with_overrides(good, {"env": "NoSuchEnv-v9", "seed": 6})
    shown = []
    results = multiseed.run_local([(good, tmp_path / "good"), (bad, tmp_path / "bad")], workers=2, show=shown.append)
    assert "summary" in results[5] and (tmp_path / "good" / "summary.json").is_file()
    assert (tmp_path / "good" / "curves.png").is_file()  # a finished seed draws its curves where it trained
    assert "NoSuchEnv-v9" in results[6]["error"] and results[6]["error"].startswith("EnvError")
    assert {m[:2] for m in shown} >= {("start", 5), ("start", 6), ("done", 5), ("error", 6)}
    assert multiseed.exit_code(results) == 1
    display.seeds_report(results)
    captured = capsys.readouterr()
    assert "seed 6 failed: EnvError" in captured.err and captured.out.strip() == str(tmp_path / "good")


def test_write_run_files_is_whole_and_stays_inside(tmp_path):
    multiseed.write_run_files(tmp_path / "r", {"a.json": b"{}", "videos/x.gif": b"GIF"})
    assert (tmp_path / "r" / "videos" / "x.gif").read_bytes() == b"GIF"
    with pytest.raises(runs.RunError, match="outside"):
        multiseed.write_run_files(tmp_path / "s", {"../evil": b"x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_ray_without_ray_installed_gives_a_hint(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # an import of ray now fails as if it were missing
    result = runner.invoke(app, ["train", *TINY, "--seeds", "0", "--ray", "local", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "pip install -e '.[ray]'" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.bench  # starts a local Ray instance
def test_ray_tasks_give_the_same_run_folders_as_local_workers(local_runs, tmp_path):
    ray = pytest.importorskip("ray")
    root, _ = local_runs
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = runner.invoke(app, ["train", *TINY, "--seeds", "0 1", "--ray", "local", "--name", "t",
                                     "--runs-dir", str(tmp_path)])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        ours, theirs = tmp_path / f"t-s{seed}", root / f"t-s{seed}"
        assert {p.name for p in ours.iterdir()} == {p.name for p in theirs.iterdir()}
        assert json.loads((ours / "config.json").read_text()) == json.loads((theirs / "config.json").read_text())
        assert metrics(ours) == metrics(theirs) and metrics(ours)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
