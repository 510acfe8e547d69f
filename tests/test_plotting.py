"""plotting.py and curves.py: one run's sections of panels, group overlays with bands, metric choice."""

import re

import numpy as np
import pytest
from PIL import Image
from test_compare import make_run
from typer.testing import CliRunner

from dreamercli import curves, plotting, runs
from dreamercli.cli import app
from dreamercli.compare import load_runs

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def three_seeds(root, label, values_per_seed):
    return [make_run(root, f"{label}-s{seed}", seed, list(zip([100, 200, 300], values, strict=True)))
            for seed, values in enumerate(values_per_seed)]


def test_plot_run_writes_curves_png_with_returns_first(tmp_path):
    (run,) = three_seeds(tmp_path, "a", [[1, 2, 3]])
    out = plotting.plot_run(run)
    assert out == run / "curves.png" and out.read_bytes()[:8] == PNG
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "curves.png", "metrics.jsonl", "run.json",
                                                     "summary.json"]  # runs.write_figure left no temp file
    width, height = Image.open(out).size
    assert width > 1000 and height > 400
    keys = curves.available_keys(load_runs([run]))
    assert curves.panel_groups(keys) == [
        ("Episode return", ["eval/return_mean", "eval/return_std"]),
        ("Total loss and the prior's NLL", ["wm/loss"]),
        ("Speed", ["train/sps"])]


# What each key measures, written here independently of plotting.py: a panel compares things of one kind.
KIND = {"wm/loss": "loss", "wm/prior_nll": "loss", "wm/consistency": "loss", "wm/recon": "loss",
        "wm/recon_open_loop": "loss", "wm/reward_loss": "loss", "wm/cont_loss": "loss", "wm/kl_rep": "loss",
        "wm/kl": "loss", "wm/prior_std": "model spread and error", "wm/open_loop_obs_err": "model spread and error",
        "ac/actor_loss": "loss", "ac/critic_loss": "loss", "ac/entropy": "entropy",
        "ac/imagined_return": "return", "ac/return_scale": "return", "ac/imagined_reward": "return",
        "sac/q_loss": "loss", "sac/actor_loss": "Q", "sac/alpha": "temperature", "sac/entropy": "entropy",
        "sac/q_mean": "Q", "hybrid/err_1": "relative error", "hybrid/err_k": "relative error",
        "hybrid/err_end": "relative error",
        "hybrid/branch_length": "share", "hybrid/imag_weight": "share", "hybrid/real_share": "share",
        "eval/length_mean": "length", "eval/seconds": "counter", "train/episodes": "counter",
        "train/skipped_updates": "counter", "train/sps": "speed"}
RETURN_KEYS = ["eval/return_mean", "eval/return_std", "eval/return_min", "eval/return_max", "eval/episodes",
               "train/episode_return"]
SECTIONS = ["Policy: returns, episode length and entropy", "World model", "Actor-critic trained in imagination",
            "Off-policy learner (SAC)", "Model use: how far the model is trusted, how much the learner reads it", "Run"]


def every_area_run(root):
    """A run folder whose rows carry wm/, ac/, sac/, hybrid/, eval/ and train/ keys at realistic scales."""
    run_dir = make_run(root, "all-s0", 0, [(100, 10.0)], env="Pendulum-v1", threshold=-200.0)
    rng = np.random.default_rng(0)
    rows = []
    for i, step in enumerate(range(100, 3001, 100)):
        t = step / 3000
        decay = float(np.exp(-5 * t))
        row = {"step": step, "time": step / 50, "train/sps": 2000.0 if i == 0 else 60.0, "train/episodes": step // 200,
               "train/skipped_updates": 0, "train/episode_return": -1400 + 1200 * t,
               "wm/loss": 6 * decay - 2 * t, "wm/prior_nll": -2.5 * t, "wm/consistency": 4 * decay,
               "wm/recon": 0.5 * decay + 0.01, "wm/recon_open_loop": 0.6 * decay + 0.02,
               "wm/reward_loss": 0.1 * decay ** 3 + 1e-5, "wm/cont_loss": 0.3 * decay + 0.01, "wm/kl_rep": 0.05,
               "wm/kl": 4.0 - t, "wm/prior_std": 0.6 * decay + 0.05, "wm/open_loop_obs_err": 0.4 * decay + 0.05,
               "ac/actor_loss": float(rng.normal(0, 0.01)), "ac/critic_loss": 0.05 + 0.02 * t, "ac/entropy": 0.68,
               "ac/imagined_return": -300 + 250 * t, "ac/return_scale": 300 - 100 * t, "ac/imagined_reward": -6 + 5 * t,
               "sac/q_loss": 50 * decay + 0.5, "sac/actor_loss": 280 - 250 * t, "sac/alpha": 0.2 * decay,
               "sac/entropy": -0.5 - t, "sac/q_mean": -280 + 250 * t,
               # the guard logs NaN (null in metrics.jsonl) until its window has errors to compare
               "hybrid/err_1": None if i < 3 else 0.2 + 0.3 * decay,
               "hybrid/err_k": None if i < 3 else 0.6 + 1.5 * decay,
               "hybrid/err_end": None if i < 3 else 0.0 if i < 10 else 0.1 * decay,  # 0 until an episode ends
               "hybrid/branch_length": min(5, i // 3), "hybrid/imag_weight": min(1.0, 1.5 * t),
               "hybrid/real_share": max(0.5, 1 - t)}
        rows.append(row)
        if i % 5 == 4:
            rows.append({"step": step, "time": step / 50 + 1, "eval/return_mean": -1400 + 1200 * t,
                         "eval/return_std": 80.0, "eval/return_min": -1550 + 1200 * t,
                         "eval/return_max": -1280 + 1200 * t,
                         "eval/episodes": 5, "eval/length_mean": 200.0, "eval/seconds": 1.2})
    runs.write_metrics(run_dir, rows)
    return run_dir


def tick_values(axis) -> list[float]:
    """The values of the tick labels matplotlib drew on an axis (minus signs included)."""
    texts = [t.get_text().replace("\u2212", "-") for t in axis.get_ticklabels() if t.get_text()]
    return [float(t) for t in texts if re.fullmatch(r"-?[0-9.]+(e-?[0-9]+)?", t)]


def test_every_area_is_drawn_once_in_sections_of_related_panels(tmp_path):
    run_dir = every_area_run(tmp_path)
    run = load_runs([run_dir])[0]
    keys = curves.available_keys([run])
    assert set(keys) == set(KIND) | set(RETURN_KEYS)
    groups = curves.panel_groups(keys)
    shown = [k for _, panel_keys in groups for k in panel_keys]
    assert sorted(shown) == sorted(keys)  # every logged key exactly once
    assert groups[0] == ("Episode return", RETURN_KEYS)
    titles = [title for title, _ in groups]
    assert len(set(titles)) == len(titles) and len(groups) == 14  # 22 panels before sections
    panels = curves.layout(keys)
    assert list(dict.fromkeys(p.section for p in panels)) == SECTIONS
    for panel in panels[1:]:
        assert 1 <= len(panel.keys) <= curves.MAX_LINES, panel.title
        assert len({KIND[k] for k in panel.keys}) == 1, (panel.title, panel.keys)
        assert {KIND[k] for k in panel.said} <= {"counter"}, panel.title
        assert not re.match(r"^(wm|ac|sac|hybrid|eval|train)\b", panel.title), panel.title  # meaning, not prefix
    panel_of = {k: title for title, panel_keys in groups for k in panel_keys}
    assert panel_of["ac/imagined_return"] != panel_of["ac/actor_loss"]
    assert panel_of["sac/q_mean"] == panel_of["sac/actor_loss"] != panel_of["sac/q_loss"]
    assert panel_of["hybrid/err_1"] == panel_of["hybrid/err_k"] == panel_of["hybrid/err_end"]
    assert panel_of["hybrid/imag_weight"] == panel_of["hybrid/real_share"] == panel_of["hybrid/branch_length"]
    assert panel_of["train/episodes"] == panel_of["train/skipped_updates"] == panel_of["train/sps"]

    out = plotting.plot_run(run_dir)
    assert out.read_bytes()[:8] == PNG
    width, height = Image.open(out).size
    assert width <= 2000 and height <= 4000  # three columns, not one endless strip

    fig = curves.figure(run)
    try:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in axes] == titles
        assert [sub.get_suptitle() for sub in fig.subfigs] == SECTIONS
        assert {ax.get_xlim() for ax in axes} == {axes[0].get_xlim()}  # one x range: the panels line up
        fig.canvas.draw()
        for ax, (title, panel_keys) in zip(axes, groups, strict=True):
            lines = ax.get_lines()
            assert 1 <= len(lines) <= curves.MAX_LINES, title
            assert len({str(line.get_color()) for line in lines}) == len(lines), title  # a colour each
            legend = ax.get_legend()
            texts = [t.get_text() for t in legend.get_texts()]
            assert len(texts) == len(set(texts)) >= len(lines), title
            below = legend.get_window_extent().y1 <= ax.get_window_extent().y0
            assert below, title  # the legend is never over the data
            if ax is axes[0]:
                continue
            drawn = [k for k in panel_keys if k not in curves.COUNTERS]
            assert all(any(label.startswith(k) for label in texts) for k in drawn), title
            if ax.get_yscale() == "linear":  # one scale: no line lives far below the others
                peaks = [np.nanmax(np.abs(np.asarray(line.get_ydata(), float))) for line in lines]
                assert max(peaks) <= 100 * max(min(peaks), 1e-3), (title, peaks)
            if ax.get_yscale() in ("log", "symlog"):
                assert all(v >= 0 for v in tick_values(ax.yaxis)), (title, tick_values(ax.yaxis))
        by_title = dict(zip(titles, axes, strict=True))
        returns = by_title[groups[0][0]]
        threshold = [line for line in returns.get_lines() if line.get_label() == "threshold -200"]
        assert len(threshold) == 1 and threshold[0].get_ydata()[0] == -200
        trust = by_title[panel_of["hybrid/err_1"]]
        (reference,) = [line for line in trust.get_lines() if line.get_label().startswith("reference:")]
        assert list(reference.get_ydata()) == [1.0, 1.0] and reference.get_linestyle() == "--"
        assert trust.get_yscale() == "symlog" and trust.get_ylim()[0] == 0  # err_end is 0 at times
        values = sorted(tick_values(trust.yaxis))
        assert values == sorted(set(values)) and 0 in values and 1 in values  # 0, 0.1, 1, ...: no mirror
        use = by_title[panel_of["hybrid/real_share"]]
        lo, hi = use.get_ylim()
        assert lo <= 0 < 1 <= hi <= 1.1
        (branch,) = [line for line in use.get_lines() if line.get_label().startswith("hybrid/branch_length")]
        assert np.nanmax(branch.get_ydata()) == 1.0  # 5 steps, of the longest 5
        speed = by_title[panel_of["train/sps"]]
        said = " ".join(t.get_text() for t in speed.texts)
        assert "15 episodes finished" in said and "0 updates skipped" in said and "6 evaluations, 1.2 s each" in said
        for key in ("wm/reward_loss", "wm/consistency", "sac/q_loss", "sac/alpha", "train/sps"):
            assert by_title[panel_of[key]].get_yscale() == "log", key  # positive, spanning decades
        for key in ("wm/loss", "ac/actor_loss", "sac/actor_loss", "ac/imagined_return"):
            assert by_title[panel_of[key]].get_yscale() == "linear", key  # signs change or one decade
    finally:
        curves.plt.close(fig)


@pytest.mark.parametrize("algo,before,after", [("hybrid", 24, 15), ("mbpo", 21, 13), ("dreamer", 15, 9),
                                               ("model-free", 13, 8)])
def test_each_algos_figure_has_few_panels_titled_by_meaning(tmp_path, algo, before, after):
    # The keys each algo logs (novelty too, as on a task without episode ends); before: panels before sections.
    areas = {"hybrid": ("wm", "ac", "sac", "hybrid"), "mbpo": ("wm", "sac", "hybrid"), "dreamer": ("wm", "ac"),
             "model-free": ("sac",)}[algo]
    keys = [*RETURN_KEYS, *(k for k in KIND if k.split("/")[0] in (*areas, "eval", "train"))]
    keys += [k for k in ("sac/novelty_error", "sac/novelty_scale") if "sac" in areas]
    panels = curves.layout(keys)
    assert len(panels) == after < before
    assert sorted(k for p in panels for k in (*p.keys, *p.said)) == sorted(keys)
    assert not any("hybrid" in f"{p.section} {p.title}" for p in panels)
    assert len({p.section for p in panels}) == len(areas) + 2  # policy, each area, run


def test_unknown_keys_are_grouped_by_area_and_kind_and_a_crowded_kind_is_split():
    keys = [f"new/{c}_loss" for c in "abcdefghi"] + ["new/real_fraction", "new/mystery", "hybrid/err_4",
                                                      "wm/new_loss"]
    groups = curves.panel_groups(keys)
    assert groups == [
        ("Episode return", []),
        ("wm: losses", ["wm/new_loss"]),
        ("Model error relative to a reference", ["hybrid/err_4"]),
        ("new/mystery", ["new/mystery"]),
        ("new: losses (1/2)", [f"new/{c}_loss" for c in "abcdefg"]),
        ("new: losses (2/2)", ["new/h_loss", "new/i_loss"]),
        ("new: shares in [0, 1]", ["new/real_fraction"])]
    assert [p.section for p in curves.layout(keys)] == [SECTIONS[0], SECTIONS[1], SECTIONS[4], *["Other metrics"] * 4]


def test_zero_losses_stay_in_sight_on_a_symlog_axis(tmp_path):
    (run,) = three_seeds(tmp_path, "a", [[1, 2, 3]])
    runs.write_metrics(run, [{"step": s, "time": s, "wm/reward_loss": v, "wm/cont_loss": 0.5}
                             for s, v in ((100, 0.1), (200, 0.0), (300, 1e-4))])
    fig = curves.figure(load_runs([run])[0])
    try:
        terms = next(ax for ax in fig.axes if ax.get_title() == "Loss terms")
        assert terms.get_yscale() == "symlog" and terms.get_ylim()[0] == 0
    finally:
        curves.plt.close(fig)


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


def test_plot_finished_draws_a_finished_run_only(tmp_path):
    [run] = three_seeds(tmp_path, "a", [[0, 10, 20]])
    assert plotting.plot_finished(run, {"interrupted": "SIGINT"}) is None
    assert not (run / "curves.png").exists()
    assert plotting.plot_finished(run, {"env_steps": 300}) == run / "curves.png"
    assert (run / "curves.png").read_bytes()[:8] == PNG


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


def test_a_group_whose_seeds_share_no_steps_is_drawn_seed_by_seed_with_a_warning(tmp_path):
    paths = [make_run(tmp_path, "apart-s0", 0, [(100, 1.0), (200, 2.0)]),
             make_run(tmp_path, "apart-s1", 1, [(400, 3.0), (500, 30.0)]),
             *three_seeds(tmp_path, "together", [[0, 10, 20], [10, 20, 30]])]
    warnings = []
    groups = plotting.group_runs(load_runs(paths))
    fig_path = plotting.plot_groups(groups, tmp_path / "o.png", warn=warnings.append)
    assert fig_path.read_bytes()[:8] == PNG
    assert warnings == ["CartPole-v1: group apart (dreamer): its seeds' eval/return_mean curves share no env steps "
                        "(seed 0: 100-200, seed 1: 400-500), so each seed is drawn alone, with no mean or band"]
    result = runner.invoke(app, ["plot", *map(str, paths), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and warnings[0] in " ".join(result.output.split())
    result = runner.invoke(app, ["compare", *map(str, paths), "--out", str(tmp_path / "c")])
    assert result.exit_code == 0 and warnings[0] in " ".join(result.output.split())


def test_every_group_has_a_line_and_a_legend_entry(tmp_path, monkeypatch):
    paths = [make_run(tmp_path, "apart-s0", 0, [(100, 1.0), (200, 2.0)]),
             make_run(tmp_path, "apart-s1", 1, [(400, 3.0), (500, 30.0)]),
             *three_seeds(tmp_path, "together", [[0, 10, 20], [10, 20, 30]])]
    figures = []
    monkeypatch.setattr(plotting, "_save", lambda fig, out: figures.append(fig) or out)
    plotting.plot_groups(plotting.group_runs(load_runs(paths)), tmp_path / "o.png")
    (ax,) = figures[0].axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "apart (dreamer): seed 0 alone" in legend and "apart (dreamer): seed 1 alone" in legend
    assert "together (dreamer): mean of 2 seeds [0,1]" in legend
    seed_1 = next(line for line in ax.get_lines() if line.get_label() == "apart (dreamer): seed 1 alone")
    assert list(seed_1.get_xdata()) == [400, 500] and list(seed_1.get_ydata()) == [3, 30]
    curves.plt.close(figures[0])
