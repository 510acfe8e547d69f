"""PNG figures of runs' metrics with matplotlib's Agg backend: one run's curves.png (drawn by curves.py),
several runs overlaid by group with bands over seeds, compare.png; never imports torch."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from . import runs
from .compare import RETURN_KEY, Run, Warn, bootstrap_ci, group_runs, load_run
from .curves import LEGEND_LINE, X_LABELS, available_keys, figure

UNITS = {"eval/return_mean": "episode return", "eval/return_std": "episode return",
         "eval/length_mean": "episode length (env steps)", "train/episode_return": "episode return",
         "train/episodes": "episodes finished",
         "train/sps": "env steps per second over each log window"}
BAND_RESAMPLES = 2_000  # per grid point; the table's CIs use compare.BOOTSTRAP_RESAMPLES
MAX_GRID = 200


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that carry key."""
    pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def unit_of(key: str) -> str:
    """What a metric's values measure, for an axis label."""
    if key in UNITS:
        return UNITS[key]
    return "loss" if "loss" in key or key.startswith("wm/") else "value"


def check_metrics(run_list: list[Run], metrics: list[str]) -> None:
    """Raise ValueError naming the available keys when a requested key was never logged."""
    keys = available_keys(run_list)
    unknown = [m for m in metrics if m not in keys]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}; available: {', '.join(keys) or 'none'}")


def _panels(n: int, ncols: int = 2, row_height: float = 3.7):
    """A figure with n axes in a grid of ncols columns; surplus axes are hidden."""
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, row_height * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, out: Path) -> Path:
    """Lay out (tight, below the suptitle, unless the figure has its own layout), then write the PNG
    through runs' one atomic writer."""
    if fig.get_layout_engine() is None:  # curves.png lays itself out (constrained, by section)
        top = 1 - 0.45 / fig.get_figheight() if fig.get_suptitle() else 1  # the suptitle's 0.45 inch
        fig.tight_layout(rect=(0, 0, 1, top))
    return runs.write_figure(fig, Path(out))




def _finish(ax, x: str, ylabel: str, title: str | None = None, legend: str = "best") -> None:
    """Labels, grid and legend: "best" inside the axes, "below" under the x label (never over the data)."""
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if not ax.get_legend_handles_labels()[0]:
        return
    if legend == "below":
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    else:
        ax.legend(fontsize=8, loc=legend)


def plot_run(run_dir: Path, out: Path | None = None, metrics: list[str] | None = None,
             x: str = "steps", warn: Warn | None = None) -> Path:
    """Write curves.png (or out): returns with threshold, then every metric by kind, one scale per panel."""
    run = load_run(Path(run_dir), warn)
    if not run.rows:  # checked before drawing: an empty figure would replace a good curves.png
        raise runs.RunError(f"no metrics to plot in {run.path / runs.METRICS_FILE}")
    if metrics:
        check_metrics([run], metrics)
    return _save(figure(run, metrics, x), Path(out) if out is not None else run.path / runs.CURVES_FILE)


def plot_finished(run_dir: Path, summary: dict) -> Path | None:
    """curves.png of a run that finished; None for one that was interrupted (its resume draws them)."""
    return None if summary.get("interrupted") else plot_run(run_dir)


def band(members: list[Run], key: str, x: str = "steps"):
    """(grid, mean, ci_low, ci_high) over seeds on the x range all members cover, or None."""
    curves = [m.series(key, x) for m in members]
    curves = [(xs, vs) for xs, vs in curves if len(xs)]
    if not curves:
        return None
    start, end = max(xs[0] for xs, _ in curves), min(xs[-1] for xs, _ in curves)
    grid = np.unique(np.concatenate([xs for xs, _ in curves]))
    grid = grid[(grid >= start) & (grid <= end)]
    if len(grid) == 0:
        return None
    if len(grid) > MAX_GRID:
        grid = np.linspace(grid[0], grid[-1], MAX_GRID)
    values = np.stack([np.interp(grid, xs, vs) for xs, vs in curves])  # (seeds, T)
    lo, hi = bootstrap_ci(values, resamples=BAND_RESAMPLES)
    return grid, values.mean(axis=0), lo, hi


SEED_STYLES = ("-", "--", ":", "-.")


def _apart(ax, env: str, key: str, label: str, algo: str, members: list[Run], x: str, color: str,
           warn: Warn | None) -> None:
    """A group whose seeds share no x range: a line per seed, and a warning that says why."""
    drawn = [(m, *m.series(key, x)) for m in members]
    drawn = [(m, xs, vs) for m, xs, vs in drawn if len(xs)]
    for i, (m, xs, vs) in enumerate(drawn):
        ax.plot(xs, vs, color=color, lw=1.5, ls=SEED_STYLES[i % len(SEED_STYLES)],
                label=f"{label} ({algo}): seed {m.seed} alone")
    if warn is not None and drawn:
        spans = ", ".join(f"seed {m.seed}: {xs[0]:g}-{xs[-1]:g}" for m, xs, _ in drawn)
        warn(f"{env}: group {label} ({algo}): its seeds' {key} curves share no {X_LABELS[x].split(' since')[0]} "
             f"({spans}), so each seed is drawn alone, with no mean or band")


def plot_groups(groups: dict[tuple[str, str, str], list[Run]], out: Path, metrics: list[str] | None = None,
                x: str = "steps", threshold: float | None = None, warn: Warn | None = None) -> Path:
    """Overlay groups: per env and metric a panel, a mean line over seeds with a 95% bootstrap band.

    A group whose seeds share no x range (runs continued at different steps) gets a line per seed instead.
    """
    metrics = metrics or [RETURN_KEY]
    envs = sorted({key[0] for key in groups})
    # Legends go below the axes: room for each group's two entries (and seed lines) and a threshold.
    entries = max(sum(max(2, len(m)) for g, m in groups.items() if g[0] == env) + 1 for env in envs)
    fig, axes = _panels(len(envs) * len(metrics), ncols=min(2, len(envs) * len(metrics)),
                        row_height=3.7 + LEGEND_LINE * entries)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (env, key) in enumerate((e, k) for e in envs for k in metrics):
        ax = axes[i]
        env_groups = [(g, m) for g, m in groups.items() if g[0] == env]
        for j, ((_, algo, label), members) in enumerate(env_groups):
            color = colors[j % len(colors)]
            result = band(members, key, x)
            if result is None:
                _apart(ax, env, key, label, algo, members, x, color, warn)
                continue
            for m in members:  # each seed faintly, so a reader sees the spread behind the band
                xs, vs = m.series(key, x)
                ax.plot(xs, vs, color=color, alpha=0.25, lw=0.8)
            grid, mean, lo, hi = result
            present = [m for m in members if len(m.series(key, x)[0])]
            seeds = ",".join(str(m.seed) for m in present)
            ax.plot(grid, mean, color=color, lw=2, label=f"{label} ({algo}): mean of {len(present)} "
                                                          f"seed{'s' if len(present) > 1 else ''} [{seeds}]")
            if len(present) > 1:
                ax.fill_between(grid, lo, hi, color=color, alpha=0.2, label=f"{label}: 95% bootstrap CI")
        if key == RETURN_KEY:
            thresholds = {threshold} if threshold is not None else {
                m.summary.get("threshold") for _, ms in env_groups for m in ms}
            if len(thresholds) == 1 and None not in thresholds:
                ax.axhline(thresholds.pop(), color="grey", ls="--", label="threshold")
        _finish(ax, x, f"{key} ({unit_of(key)})", f"{env}: {key}, mean over seeds", legend="below")
    return _save(fig, out)


def plot_comparison(run_list: list[Run], out: Path, threshold: float | None = None, warn: Warn | None = None) -> Path:
    """compare.png: each group's eval return over seeds, a panel per env."""
    return plot_groups(group_runs(run_list), out, [RETURN_KEY], threshold=threshold, warn=warn)
