"""plotting.py: single-run panels, group overlays with bands, metric choice, broken lines."""

import re

import numpy as np
import pytest
from PIL import Image
from test_compare import make_run
from typer.testing import CliRunner

from dreamercli import plotting, runs
from dreamercli.cli import app
from dreamercli.compare import load_runs

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def three_seeds(root, label, values_per_seed):
    return [make_run(root, f"{label}-s{seed}", seed, list(zip([100, 200, 300], values, strict=True)))
            for seed, values in enumerate(values_per_seed)]


def test_plot_run_writes_curves_png_with_a_panel_per_area(tmp_path):
    (run,) = three_seeds(tmp_path, "a", [[1, 2, 3]])
    out = plotting.plot_run(run)
    assert out == run / "curves.png" and out.read_bytes()[:8] == PNG
    width, height = Image.open(out).size
    assert width > 1000 and height > 400
    # returns, the wm losses, then train/sps: one panel per key outside wm/ac
    panels = plotting._run_panels(load_runs([run])[0])
    assert panels == [("world-model losses", ["wm/loss"]), ("train/sps", ["train/sps"])]


def test_plot_run_survives_broken_lines_and_warns(tmp_path):
    (run,) = three_seeds(tmp_path, "a", [[1, 2, 3]])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 400, "eval/return_me\nnot json\n')
    warnings = []
    out = plotting.plot_run(run, tmp_path / "x.png", metrics=["eval/return_mean"], x="seconds",
                            warn=warnings.append)
    assert out.read_bytes()[:8] == PNG
    assert [w.split(" (")[0] for w in warnings] == [f"{run / 'metrics.jsonl'}:7: skipped a broken line",
                                                    f"{run / 'metrics.jsonl'}:8: skipped a broken line"]


def test_plot_run_without_metrics_refuses_and_keeps_curves_png(tmp_path):
    (run,) = three_seeds(tmp_path, "a", [[1, 2, 3]])
    metrics = run / "metrics.jsonl"
    (run / "curves.png").write_bytes(b"an earlier figure")
    for make_empty in (metrics.unlink, lambda: metrics.write_text(""), lambda: metrics.write_text("\n\n")):
        make_empty()
        with pytest.raises(runs.RunError, match=f"^no metrics to plot in {re.escape(str(metrics))}$"):
            plotting.plot_run(run)
        assert (run / "curves.png").read_bytes() == b"an earlier figure"
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 2
    assert result.output.strip() == f"dreamer: error: no metrics to plot in {metrics}"
    assert (run / "curves.png").read_bytes() == b"an earlier figure"


def test_band_is_the_mean_over_seeds_with_a_ci_around_it(tmp_path):
    runs_a = load_runs(three_seeds(tmp_path, "a", [[0, 10, 20], [10, 20, 30], [20, 30, 40]]))
    grid, mean, lo, hi = plotting.band(runs_a, "eval/return_mean")
    assert grid.tolist() == [100, 200, 300] and mean.tolist() == [10, 20, 30]
    assert np.all(lo <= mean) and np.all(mean <= hi) and np.all(hi - lo > 0)
    assert hi[0] <= 20 and lo[0] >= 0


def test_cli_plot_overlay_and_metric_errors(tmp_path):
    paths = three_seeds(tmp_path / "r", "a", [[0, 10, 20], [10, 20, 30]])
    paths += three_seeds(tmp_path / "r", "b", [[5, 5, 5], [6, 6, 6]])
    out = tmp_path / "o.png"
    result = runner.invoke(app, ["plot", *map(str, paths), "--out", str(out), "--metric", "eval/return_mean",
                                 "--metric", "wm/loss", "--x", "seconds"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(str(out)) and out.read_bytes()[:8] == PNG
    bad = runner.invoke(app, ["plot", *map(str, paths), "--metric", "eval/nope"])
    assert bad.exit_code == 2
    assert "unknown metric eval/nope; available: eval/return_mean, eval/return_std, train/sps, wm/loss" in bad.output
    one = runner.invoke(app, ["plot", str(paths[0]), "--metric", "wm/nope"])
    assert one.exit_code == 2 and "available:" in one.output
    refreshed = runner.invoke(app, ["plot", str(paths[0])])
    assert refreshed.exit_code == 0 and (paths[0] / "curves.png").read_bytes()[:8] == PNG
