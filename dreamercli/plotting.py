"""PNG figures of runs' metrics with matplotlib's Agg backend; never imports torch."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from . import runs
from .compare import RETURN_KEY, Run, Warn, bootstrap_ci, load_run

LOSS_KEYS = ("wm/loss", "wm/recon_open_loop", "wm/reward_loss", "wm/kl",
             "ac/actor_loss", "ac/critic_loss")
X_LABELS = {"steps": "env steps", "seconds": "wall-clock seconds since training started"}
UNITS = {"eval/return_mean": "episode return", "eval/return_std": "episode return",
         "eval/length_mean": "episode length (env steps)", "train/episode_return": "episode return",
         "train/episodes": "episodes finished",
         "train/sps": "env steps per second over each log window"}
# Drawn on a log axis: random-action prefill runs about 1000x faster than training.
LOG_KEYS = {"train/sps"}
# Keys drawn in the returns panel of a single run, so not repeated in the "other" panels.
_RETURN_PANEL = {"eval/return_mean", "eval/return_std", "eval/return_min", "eval/return_max",
                 "eval/episodes", "train/episode_return"}
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


def available_keys(run_list: list[Run]) -> list[str]:
    """Every metric key (other than step and time) that some run logged, sorted."""
    keys = set().union(*(r.keys() for run in run_list for r in run.rows)) if run_list else set()
    return sorted(k for k in keys if k not in ("step", "time"))


def check_metrics(run_list: list[Run], metrics: list[str]) -> None:
    """Raise ValueError naming the available keys when a requested key was never logged."""
    keys = available_keys(run_list)
    unknown = [m for m in metrics if m not in keys]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}; available: {', '.join(keys) or 'none'}")


def _panels(n: int, ncols: int = 2):
    """A figure with n axes in a grid of ncols columns; surplus axes are hidden."""
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig, out: Path) -> Path:
    """tight_layout, then write the PNG atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def _finish(ax, x: str, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _returns_panel(ax, run: Run, x: str) -> None:
    steps, mean = run.series(RETURN_KEY, x)
    if len(steps):
        _, std = run.series("eval/return_std", x)
        ax.plot(steps, mean, marker="o", label="eval return (deterministic policy)")
        if len(std) == len(mean):
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2, label="eval ± 1 std over episodes")
    tsteps, tret = run.series("train/episode_return", x)
    if len(tsteps):
        ax.plot(tsteps, tret, alpha=0.6, label="training episode return (mean per log row)")
    if run.summary.get("threshold") is not None:
        ax.axhline(run.summary["threshold"], color="grey", ls="--",
                   label=f"threshold {run.summary['threshold']:g}")
    _finish(ax, x, "episode return", f"{run.path.name}: returns")


def _lines_panel(ax, run: Run, keys: list[str], x: str, title: str) -> None:
    for key in keys:
        xs, values = run.series(key, x)
        ax.plot(xs, values, label=key, marker="." if len(xs) < 30 else None)
    units = {unit_of(k) for k in keys}
    if units == {"loss"} and any(v <= 0 for k in keys for v in run.series(k, x)[1]):
        ax.set_yscale("symlog", linthresh=1e-2)  # some losses go negative: log would drop them
    elif units == {"loss"} or (set(keys) <= LOG_KEYS and all(v > 0 for k in keys for v in run.series(k, x)[1])):
        ax.set_yscale("log")
    _finish(ax, x, " / ".join(sorted(units)), title)


def _run_panels(run: Run) -> list[tuple[str, list[str]]]:
    """(title, keys) of the panels after the returns panel: wm, ac, then other areas."""
    keys = [k for k in available_keys([run]) if k not in _RETURN_PANEL]
    areas: dict[str, list[str]] = {}
    for key in keys:
        area = key.split("/", 1)[0] if "/" in key else "other"
        areas.setdefault(area, []).append(key)
    panels = []
    for area, title in (("wm", "world-model losses"), ("ac", "actor-critic losses")):
        if area in areas:
            panels.append((title, areas.pop(area)))
    for area, area_keys in areas.items():
        if area in ("train", "eval", "other"):  # unrelated units: one panel per key
            panels += [(key, [key]) for key in area_keys]
        else:
            panels.append((f"{area} metrics", area_keys))
    return panels


def plot_run(run_dir: Path, out: Path | None = None, metrics: list[str] | None = None,
             x: str = "steps", warn: Warn | None = None) -> Path:
    """Write curves.png (or out): returns with threshold, losses, and every other metric area."""
    run = load_run(Path(run_dir), warn)
    if not run.rows:  # checked before drawing: an empty figure would replace a good curves.png
        raise runs.RunError(f"no metrics to plot in {run.path / runs.METRICS_FILE}")
    if metrics:
        check_metrics([run], metrics)
        panels = [(key, [key]) for key in metrics]
        fig, axes = _panels(len(panels))
    else:
        panels = _run_panels(run)
        fig, axes = _panels(1 + len(panels))
        _returns_panel(axes[0], run, x)
        axes = axes[1:]
    for ax, (title, keys) in zip(axes, panels, strict=True):
        _lines_panel(ax, run, keys, x, title)
    fig.suptitle(f"{run.path.name} ({run.env}, {run.algo}, seed {run.seed})", fontsize=11)
    return _save(fig, Path(out) if out is not None else run.path / runs.CURVES_FILE)


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


def plot_groups(groups: dict[tuple[str, str, str], list[Run]], out: Path, metrics: list[str] | None = None,
                x: str = "steps", threshold: float | None = None) -> Path:
    """Overlay groups: per env and metric a panel, a mean line over seeds with a 95% bootstrap band."""
    metrics = metrics or [RETURN_KEY]
    envs = sorted({key[0] for key in groups})
    fig, axes = _panels(len(envs) * len(metrics), ncols=min(2, len(envs) * len(metrics)))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (env, key) in enumerate((e, k) for e in envs for k in metrics):
        ax = axes[i]
        env_groups = [(g, m) for g, m in groups.items() if g[0] == env]
        for j, ((_, algo, label), members) in enumerate(env_groups):
            color = colors[j % len(colors)]
            for m in members:  # each seed faintly, so a reader sees the spread behind the band
                xs, vs = m.series(key, x)
                ax.plot(xs, vs, color=color, alpha=0.25, lw=0.8)
            result = band(members, key, x)
            if result is None:
                continue
            grid, mean, lo, hi = result
            seeds = ",".join(str(m.seed) for m in members)
            ax.plot(grid, mean, color=color, lw=2, label=f"{label} ({algo}): mean of {len(members)} "
                                                          f"seed{'s' if len(members) > 1 else ''} [{seeds}]")
            if len(members) > 1:
                ax.fill_between(grid, lo, hi, color=color, alpha=0.2, label=f"{label}: 95% bootstrap CI")
        if key == RETURN_KEY:
            thresholds = {threshold} if threshold is not None else {
                m.summary.get("threshold") for _, ms in env_groups for m in ms}
            if len(thresholds) == 1 and None not in thresholds:
                ax.axhline(thresholds.pop(), color="grey", ls="--", label="threshold")
        _finish(ax, x, f"{key} ({unit_of(key)})", f"{env}: {key}, mean over seeds")
    return _save(fig, out)
