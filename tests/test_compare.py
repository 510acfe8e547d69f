"""compare.py on run folders with known metrics, written by the real run-folder code."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from dreamercli import compare, runs
from dreamercli.cli import app
from dreamercli.config import from_preset, with_overrides
from dreamercli.envs import EnvSpec

runner = CliRunner()
SPEC = EnvSpec(obs_dim=4, action_dim=2, discrete=True)


def make_run(root, name, seed, evals, env="CartPole-v1", threshold=25.0, label=None, **fields):
    """A run folder with eval rows (step, return), time = step / 10, and train rows between."""
    run_dir = root / name
    config = with_overrides(from_preset("tiny"), {"env": env, "seed": seed, "algo": "dreamer", **fields})
    runs.write_config(run_dir, config, SPEC)
    if label is not None:
        data = json.loads((run_dir / "config.json").read_text())
        runs.write_json(run_dir / "config.json", {**data, "label": label})
    rows = []
    for step, value in evals:
        rows.append({"step": step - 50, "time": (step - 50) / 10, "train/sps": 100.0, "wm/loss": 1.0 / step})
        rows.append({"step": step, "time": step / 10, "eval/return_mean": value, "eval/return_std": 1.0})
    runs.write_metrics(run_dir, rows)
    runs.write_json(run_dir / "summary.json", {"threshold": threshold, "final_eval": evals[-1][1]})
    return run_dir


# Group "slow": finals 10, 20, 30, 100; threshold 25 reached by seed 2 at 200 and seed 3 at 100.
SLOW = {0: [5, 10, 10], 1: [5, 20, 20], 2: [10, 30, 30], 3: [30, 60, 100]}
# Group "fast": both reach 25 at step 100; finals 50, 30.
FAST = {0: [30, 40, 50], 1: [26, 30, 30]}


@pytest.fixture
def run_set(tmp_path):
    root = tmp_path / "runs"
    paths = []
    for group, curves in (("slow", SLOW), ("fast", FAST)):
        for seed, values in curves.items():
            paths.append(make_run(root, f"{group}-s{seed}-20240101-120000", seed,
                                  list(zip([100, 200, 300], values, strict=True))))
    paths.append(make_run(root, "pend-s0", 0, [(100, -900.0), (200, -500.0)], env="Pendulum-v1",
                          threshold=-200.0))
    return paths


def test_iqm_trims_a_quarter_from_each_end():
    assert compare.iqm([1, 2, 3, 4, 100]) == 3.0  # int(1.25) = 1 dropped each end
    assert compare.iqm([8, 1, 2, 7, 3, 6, 5, 4]) == 4.5  # middle four of 1..8
    assert compare.iqm([10, 20, 100]) == pytest.approx(130 / 3)  # n < 4: nothing dropped


def test_auc_is_mean_return_over_the_step_span():
    assert compare.auc(np.array([0.0, 100, 300]), np.array([0.0, 10, 30])) == 15.0
    assert compare.auc(np.array([50.0]), np.array([7.0])) == 7.0
    assert compare.auc(np.array([]), np.array([])) is None


def test_bootstrap_ci_is_fixed_by_its_seed():
    x = np.array([10.0, 20.0, 30.0, 100.0])
    lo, hi = compare.bootstrap_ci(x)
    idx = np.random.default_rng(0).integers(0, 4, size=(10_000, 4))
    want = np.percentile(x[idx].mean(axis=1), [2.5, 97.5])
    assert (float(lo), float(hi)) == (want[0], want[1])
    assert 10 <= lo < 40 < hi <= 100
    assert compare.bootstrap_ci([5.0]) == (5.0, 5.0)


def test_labels_from_names_and_config():
    assert compare.label_of("CartPole-v1-dreamer-s3-20240101-120000", {}) == "CartPole-v1-dreamer"
    assert compare.label_of("h5-s12", {}) == "h5"
    assert compare.label_of("plain", {}) == "plain"
    assert compare.label_of("x-s1", {"label": "mine"}) == "mine"


def test_compare_numbers(run_set):
    tables = compare.compare(compare.load_runs(run_set))
    assert list(tables) == ["CartPole-v1", "Pendulum-v1"]  # envs never mixed
    fast, slow = tables["CartPole-v1"]
    assert (slow["label"], slow["seeds"], slow["final_mean"], slow["final_iqm"]) == ("slow", 4, 40.0, 25.0)
    assert slow["auc_mean"] == (8.75 + 16.25 + 25.0 + 62.5) / 4
    assert (slow["reached"], slow["steps_median"], slow["steps_min"], slow["steps_max"]) == (2, 150.0, 100.0, 200.0)
    assert (slow["seconds_median"], slow["seconds_min"], slow["seconds_max"]) == (15.0, 10.0, 20.0)
    assert slow["steps_ratio"] == 1.5 and fast["steps_ratio"] == 1.0
    assert (fast["final_mean"], fast["final_iqm"], fast["reached"], fast["steps_median"]) == (40.0, 40.0, 2, 100.0)
    lo, hi = compare.bootstrap_ci([10.0, 20.0, 30.0, 100.0])
    assert (slow["final_ci_low"], slow["final_ci_high"]) == (float(lo), float(hi))
    pend = tables["Pendulum-v1"][0]
    assert pend["final_mean"] == -500.0 and pend["reached"] == 0 and pend["steps_ratio"] is None
    # --threshold overrides summary.json
    over = compare.compare(compare.load_runs(run_set), threshold=55.0)["CartPole-v1"]
    assert over[1]["reached"] == 1 and over[1]["steps_median"] == 200.0 and over[0]["reached"] == 0


def test_cli_compare_writes_table_files(run_set, tmp_path):
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", *map(str, run_set), "--out", str(out)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "CartPole-v1" in result.output and "Pendulum-v1" in result.output
    assert "25.0" in result.output and "1.50x" in result.output and "2/4 (>= 25)" in result.output
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    slow = next(r for r in rows if r["label"] == "slow")
    assert float(slow["final_mean"]) == 40.0 and float(slow["final_iqm"]) == 25.0
    assert float(slow["steps_median"]) == 150.0 and float(slow["auc_mean"]) == 28.125
    assert float(slow["final_ci_low"]) == float(compare.bootstrap_ci([10.0, 20, 30, 100])[0])
    assert next(r for r in rows if r["env"] == "Pendulum-v1")["steps_median"] == ""
    data = json.loads((out / "compare.json").read_text())
    assert data["CartPole-v1"][1]["runs"][3]["steps_to_threshold"] == 100
    md = (out / "compare.md").read_text()
    assert "## Pendulum-v1" in md and "| dreamer | slow | 4 | 40.0 | 25.0 |" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_metrics_lines_are_skipped_with_a_warning(run_set, tmp_path):
    path = run_set[0] / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{broken", "[1, 2]", *lines[1:], '{"step": 400, "eval/ret'])
                    + "\n")
    result = runner.invoke(app, ["compare", *map(str, run_set), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert f"{path}:2: skipped a broken line" in result.output
    assert f"{path}:3: skipped" in result.output and f"{path}:9: skipped" in result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "c" / "compare.csv").read_text())))
    assert float(next(r for r in rows if r["label"] == "slow")["final_mean"]) == 40.0


def test_groups_that_mix_configs_are_flagged(tmp_path):
    a = make_run(tmp_path, "x-s0", 0, [(100, 1.0)], horizon=3)
    b = make_run(tmp_path, "x-s1", 1, [(100, 2.0)], horizon=4)
    c = make_run(tmp_path, "y-s1", 1, [(100, 2.0)], label="x")
    warnings = []
    groups = compare.group_runs(compare.load_runs([a, b, c]), warn=warnings.append)
    assert list(groups) == [("CartPole-v1", "dreamer", "x")] and len(groups["CartPole-v1", "dreamer", "x"]) == 3
    assert len(warnings) == 1 and "horizon" in warnings[0]


def test_bad_input_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (["compare", str(tmp_path / "nope")], ["compare", str(tmp_path / "empty")],
                 ["plot", str(tmp_path / "empty")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "dreamer: error:" in result.output and "Traceback" not in result.output


def test_plotting_and_compare_do_not_import_torch():
    code = ("import sys, dreamercli.plotting, dreamercli.compare; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("columns", ["80", "120"])
def test_the_terminal_table_keeps_its_caption_brackets_and_whole_labels(tmp_path, columns):
    label = "CartPole-v1-hybrid-with-a-rather-long-label-for-this-group"
    paths = [make_run(tmp_path / "runs", f"{label}-s{seed}", seed, [(100, 5.0), (200, 30.0)]) for seed in (0, 1)]
    result = runner.invoke(app, ["compare", *map(str, paths), "--out", str(tmp_path / "c")],
                           env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert "median [min, max] over the runs" in " ".join(result.output.split())
    label_column = "".join(line.split("│")[2].strip() for line in result.output.splitlines()
                           if line.startswith("│"))
    assert label in label_column
