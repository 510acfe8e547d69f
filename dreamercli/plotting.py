"""PNG figures of runs' metrics with matplotlib's Agg backend; never imports torch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogFormatter

from . import runs
from .compare import RETURN_KEY, Run, Warn, bootstrap_ci, group_runs, load_run

X_LABELS = {"steps": "env steps", "seconds": "wall-clock seconds since training started"}
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
    """tight_layout (below the suptitle, if any), then write the PNG through runs' one atomic writer."""
    top = 1 - 0.45 / fig.get_figheight() if fig.get_suptitle() else 1  # the suptitle's 0.45 inch
    fig.tight_layout(rect=(0, 0, 1, top))
    return runs.write_figure(fig, Path(out))


LEGEND_LINE = 0.19  # inches per legend entry at fontsize 8, to grow a figure whose legends sit below the axes


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


# -- one run's curves.png: panels of one kind and one scale each ----------------------------------


class Panel(NamedTuple):
    """One axes of curves.png: what it shows, its y label and scale, and the keys drawn in it.

    scale "linear"; "auto": log when the positive values span a decade and none is negative
    (losses, temperatures, speeds; symlog when some are exactly 0, so they stay in sight), else
    linear; "share": a [0, 1] axis. reference: (y, label) of a dashed horizontal line.
    """

    title: str
    ylabel: str
    keys: tuple[str, ...] = ()
    scale: str = "linear"
    reference: tuple[float, str] | None = None


MAX_LINES = 5  # lines per panel, so that every line has a colour of its own and the legend stays short
RETURNS = Panel("returns: evaluation and training episodes", "episode return",
                ("eval/return_mean", "eval/return_std", "eval/return_min", "eval/return_max", "eval/episodes",
                 "train/episode_return"))
TRUST = Panel("model trust: prediction errors relative to a reference", "model error / reference error",
              ("hybrid/err_1", "hybrid/err_k", "hybrid/err_end"), "auto",
              (1.0, "references: next obs = this obs; episodes never end"))
# In drawing order after RETURNS. A key is in at most one; keys found in none fall back to _fallback.
PANELS = (
    # wm/loss includes the prior's NLL, which goes negative: the positive terms get log axes of their own.
    Panel("world model: total loss and the prior's NLL", "loss (nats)", ("wm/loss", "wm/prior_nll")),
    Panel("world model: observation terms", "loss", ("wm/consistency", "wm/recon", "wm/recon_open_loop"), "auto"),
    Panel("world model: reward, continuation and KL terms", "loss (KL in nats)",
          ("wm/reward_loss", "wm/cont_loss", "wm/kl_rep", "wm/kl"), "auto"),
    Panel("world model: prior std", "latent std", ("wm/prior_std",), "auto"),
    Panel("world model: open-loop obs error at the last step", "mean |error| (env units)", ("wm/open_loop_obs_err",)),
    Panel("actor-critic: losses", "loss", ("ac/actor_loss", "ac/critic_loss"), "auto"),
    Panel("actor-critic: imagined return and return scale", "return (discounted, imagined)",
          ("ac/imagined_return", "ac/return_scale")),
    Panel("actor-critic: imagined reward per step", "reward", ("ac/imagined_reward",)),
    Panel("policy entropy", "nats", ("ac/entropy", "sac/entropy")),
    Panel("SAC: critic loss (squared TD error)", "loss", ("sac/q_loss",), "auto"),
    Panel(r"SAC: actor loss ($\alpha \log \pi - Q$, so about $-Q$)", "loss", ("sac/actor_loss",)),
    Panel("SAC: mean Q estimate", "Q (discounted return)", ("sac/q_mean",)),
    Panel(r"SAC: entropy temperature $\alpha$", r"$\alpha$", ("sac/alpha",), "auto"),
    TRUST,
    Panel("hybrid: branch length", "model steps per branch", ("hybrid/branch_length",)),
    Panel("hybrid: imagination weight and real-data share", "fraction", ("hybrid/imag_weight", "hybrid/real_share"),
          "share"),
    Panel("eval: episode length", "env steps", ("eval/length_mean",)),
    Panel("training: episodes finished", "episodes (cumulative)", ("train/episodes",)),
    Panel("training: skipped updates (NaN or inf)", "updates (cumulative)", ("train/skipped_updates",)),
    Panel("training: env steps per second", "env steps / second over each log window", ("train/sps",), "auto"),
    Panel("eval: wall seconds per evaluation", "seconds", ("eval/seconds",)),
)
LABELS = {"hybrid/err_1": "hybrid/err_1 (1 step ahead)", "hybrid/err_k": "hybrid/err_k (k steps ahead)",
          "hybrid/err_end": "hybrid/err_end (episode ends, 1 step ahead)",
          "ac/return_scale": "ac/return_scale (return normaliser)"}
# Keys of areas and kinds no panel names yet: (words in the name, kind, y label, scale), first match wins.
KINDS = ((("loss", "nll", "kl", "recon"), "losses", "loss", "auto"),
         (("share", "weight", "frac", "prob"), "shares in [0, 1]", "fraction", "share"),
         (("return", "value", "q_mean"), "returns and values", "return", "linear"),
         (("length", "episodes", "count", "updates"), "counts and lengths", "count", "linear"),
         (("err",), "errors", "error", "auto"))


def _fallback(key: str) -> Panel:
    """The panel of a key no panel names: its area and kind, or a panel of its own."""
    area, _, name = key.rpartition("/")
    for words, kind, ylabel, scale in KINDS:
        if any(w in name for w in words):
            return Panel(f"{area or 'other'}: {kind}", ylabel, (), scale)
    return Panel(key, "value", (), "auto")


def _template(key: str) -> Panel:
    if key in RETURNS.keys:
        return RETURNS
    if key.startswith("hybrid/err_"):  # err_2, err_4 ... of a guard that logs more horizons
        return TRUST
    return next((p for p in PANELS if key in p.keys), None) or _fallback(key)


def layout(keys: list[str]) -> list[Panel]:
    """curves.png's panels for these metric keys: returns first, then one kind and scale per panel.

    Every key is in exactly one panel; a panel (other than returns, whose std and min/max are
    bands) holds at most MAX_LINES keys, so a crowded kind is split into numbered parts.
    """
    groups: dict[str, tuple[Panel, list[str]]] = {RETURNS.title: (RETURNS, [])}
    for key in sorted(set(keys) - {"step", "time"}):
        template = _template(key)
        groups.setdefault(template.title, (template, []))[1].append(key)
    order = [RETURNS.title] + [p.title for p in PANELS] + sorted(groups)
    panels = []
    for title in dict.fromkeys(t for t in order if t in groups):
        template, members = groups[title]
        members.sort(key=lambda k: (template.keys.index(k) if k in template.keys else len(template.keys), k))
        if template is RETURNS or len(members) <= MAX_LINES:
            panels.append(template._replace(keys=tuple(members)))
            continue
        parts = range(0, len(members), MAX_LINES)
        panels += [template._replace(title=f"{title} ({i + 1}/{len(parts)})", keys=tuple(members[s:s + MAX_LINES]))
                   for i, s in enumerate(parts)]
    return panels


def panel_groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """(title, keys) of each panel layout() gives: the shape of curves.png."""
    return [(p.title, list(p.keys)) for p in layout(keys)]


def _returns_panel(ax, run: Run, x: str) -> None:
    steps, mean = run.series(RETURN_KEY, x)
    if len(steps):
        _, n = run.series("eval/episodes", x)
        over = "" if not len(n) else f", {n.min():g}" + ("" if n.min() == n.max() else f"-{n.max():g}") + " episodes"
        ax.plot(steps, mean, color="C0", marker="o", label=f"eval return (deterministic policy{over})")
        bands = [("eval min to max", 0.1, run.series("eval/return_min", x)[1], run.series("eval/return_max", x)[1])]
        _, std = run.series("eval/return_std", x)
        if len(std) == len(mean):
            bands.append(("eval ± 1 std over episodes", 0.25, mean - std, mean + std))
        for label, alpha, lo, hi in bands:
            if len(lo) == len(hi) == len(mean):
                ax.fill_between(steps, lo, hi, color="C0", alpha=alpha, lw=0, label=label)
    tsteps, tret = run.series("train/episode_return", x)
    if len(tsteps):
        ax.plot(tsteps, tret, color="C1", alpha=0.7, label="training episode return (mean per log row)")
    if run.summary.get("threshold") is not None:
        ax.axhline(run.summary["threshold"], color="grey", ls="--", label=f"threshold {run.summary['threshold']:g}")
    if not (len(steps) or len(tsteps)):
        ax.text(0.5, 0.5, "no episode finished or evaluated yet", ha="center", va="center", transform=ax.transAxes)
    _finish(ax, x, RETURNS.ylabel, RETURNS.title)


class _PlainLog(LogFormatter):
    """Log-axis tick labels as plain numbers (0.02, 0.5, 3) rather than 2e-02 or 2x10^-2."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def _lines_panel(ax, run: Run, panel: Panel, x: str) -> None:
    """Each key in a colour of its own on the panel's one y scale, and its reference line."""
    everything = []
    for i, key in enumerate(panel.keys):
        xs, values = run.series(key, x)
        values[~np.isfinite(values)] = np.nan
        everything.append(values[np.isfinite(values)])
        label = LABELS.get(key, key) + ("" if everything[-1].size else " (no finite values)")
        ax.plot(xs, values, color=f"C{i}", label=label, marker="." if len(xs) < 30 else None)
    if panel.reference is not None:
        ax.axhline(panel.reference[0], color="black", ls="--", lw=1, label=panel.reference[1])
    values = np.concatenate(everything) if everything else np.array([])
    positive = values[values > 0]
    if panel.scale == "auto" and positive.size and values.min() >= 0 and positive.max() >= 10 * positive.min():
        if values.min() > 0:  # strictly positive and spanning decades: small terms stay visible
            ax.set_yscale("log")
        else:  # a log axis would drop the zeros; linear below the smallest positive value
            ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(positive.min())))
        ax.yaxis.set_major_formatter(_PlainLog())
        ax.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    elif panel.scale == "share":
        lo, hi = min(0.0, values.min(initial=0.0)), max(1.0, values.max(initial=1.0))
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    _finish(ax, x, panel.ylabel, panel.title)


def _panels_of_run(run: Run, metrics: list[str] | None) -> list[Panel]:
    if metrics:  # what the user named, one panel each, with the y label and scale of its kind
        return [_template(key)._replace(title=key, keys=(key,)) for key in metrics]
    return layout(available_keys([run]))


def figure(run: Run, metrics: list[str] | None = None, x: str = "steps"):
    """The matplotlib figure of one run: returns with threshold first, then layout()'s panels."""
    panels = _panels_of_run(run, metrics)
    fig, axes = _panels(len(panels), ncols=2 if len(panels) <= 4 else 3)
    for i, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        if i == 0 and not metrics:
            _returns_panel(ax, run, x)
        else:
            _lines_panel(ax, run, panel, x)
    fig.suptitle(f"{run.path.name} ({run.env}, {run.algo}, seed {run.seed})", fontsize=11,
                 y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


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
