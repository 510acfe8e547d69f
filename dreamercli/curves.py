"""One run's curves.png: a section per area of the agent, related metrics together in each panel.

Sections: the policy (returns, episode length, entropy), the world model, the actor-critic trained
in imagination, the off-policy learner (SAC), the model-trust guard, and the run (speed, counters).
A key no panel names lands in its area's section, in a panel of its kind. Never imports torch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogFormatter
from matplotlib.transforms import offset_copy

from .compare import RETURN_KEY, Run

X_LABELS = {"steps": "env steps", "seconds": "wall-clock seconds since training started"}
LEGEND_LINE = 0.19  # inches per legend entry at fontsize 8, to grow a figure whose legends sit below the axes
LEGEND_GAP = 0.45  # inches from an axes' bottom to its legend: the tick labels and the x label
LEGEND_ONE_COLUMN = 4  # longer legends take two columns
ROW_HEIGHT, SECTION_TITLE = 3.1, 0.3  # inches: a row of panels with its title and x label; a section's title


def available_keys(run_list: list[Run]) -> list[str]:
    """Every metric key (other than step and time) that some run logged, sorted."""
    keys = set().union(*(r.keys() for run in run_list for r in run.rows)) if run_list else set()
    return sorted(k for k in keys if k not in ("step", "time"))


class Panel(NamedTuple):
    """One axes of curves.png: what it shows, its y label and scale, the keys drawn and those said in words.

    scale "linear"; "auto": log when the positive values span a decade and none is negative
    (symlog from 0 when some are exactly 0, so they stay in sight), else linear; "share": a [0, 1]
    axis. reference: (y, label) of a dashed horizontal line. said: counters written in the panel.
    """

    title: str
    ylabel: str
    keys: tuple[str, ...] = ()
    scale: str = "linear"
    reference: tuple[float, str] | None = None
    section: str = ""
    said: tuple[str, ...] = ()


class Section(NamedTuple):
    """A row (or rows) of curves.png: one area of the agent, titled by what it is."""

    title: str
    areas: tuple[str, ...]  # key prefixes whose keys no panel names land here
    panels: tuple[Panel, ...]


def _section(title: str, areas: tuple[str, ...], *panels: Panel) -> Section:
    return Section(title, areas, tuple(p._replace(section=title) for p in panels))


MAX_LINES = 7  # lines per panel: a colour each, and a legend that stays short
COLUMNS = 3
RETURNS = Panel("Episode return", "episode return",
                ("eval/return_mean", "eval/return_std", "eval/return_min", "eval/return_max", "eval/episodes",
                 "train/episode_return"))
TRUST = Panel("Model error relative to a reference", "model error / reference error",
              ("hybrid/err_1", "hybrid/err_k", "hybrid/err_end"), "auto",
              (1.0, "reference: next obs = this obs; episodes never end"))
COUNTERS = ("train/episodes", "train/skipped_updates", "eval/seconds")  # written in words in the Run panel
SECTIONS = (
    _section("Policy: returns, episode length and entropy", ("eval",),
             RETURNS, Panel("Evaluation episode length", "env steps", ("eval/length_mean",)),
             Panel("Policy entropy", "nats", ("ac/entropy", "sac/entropy"))),
    # wm/loss includes the prior's NLL, which goes negative: the positive terms get a log axis of their own.
    _section("World model", ("wm",),
             Panel("Total loss and the prior's NLL", "loss (nats)", ("wm/loss", "wm/prior_nll")),
             Panel("Loss terms", "loss (KL in nats)", ("wm/recon", "wm/recon_open_loop", "wm/consistency",
                                                       "wm/reward_loss", "wm/cont_loss", "wm/kl", "wm/kl_rep"), "auto"),
             Panel("Open-loop error and prior spread", "env units; latent std",
                   ("wm/open_loop_obs_err", "wm/prior_std"))),
    _section("Actor-critic trained in imagination", ("ac",),
             Panel("Losses", "loss", ("ac/actor_loss", "ac/critic_loss"), "auto"),
             Panel("Imagined return, its scale and reward per step", "return; reward per step",
                   ("ac/imagined_return", "ac/return_scale", "ac/imagined_reward", "ac/novelty"))),
    _section("Off-policy learner (SAC)", ("sac",),
             Panel("Critic loss (squared TD error)", "loss", ("sac/q_loss",), "auto"),
             Panel("Q estimate and actor loss", "Q (discounted return)", ("sac/q_mean", "sac/actor_loss")),
             Panel(r"Entropy temperature $\alpha$", r"$\alpha$", ("sac/alpha",), "auto"),
             Panel("Novelty bonus (random network distillation)", "value",
                   ("sac/novelty_error", "sac/novelty_scale"), "auto")),
    _section("Model use: how far the model is trusted, how much the learner reads it", ("hybrid",),
             TRUST, Panel("Model use", "share", ("hybrid/branch_length", "hybrid/imag_weight", "hybrid/real_share",
                                                 "hybrid/belief_share", "hybrid/memory_gate", "hybrid/recall_gain"),
                                 "share")),
    _section("Run", ("train",), Panel("Speed", "env steps / second over each log window", ("train/sps",), "auto",
                                      said=COUNTERS)),
)
RETURNS, TRUST = SECTIONS[0].panels[0], SECTIONS[4].panels[0]  # as placed: with their section's title
OTHER = "Other metrics"
LABELS = {"eval/length_mean": "eval/length_mean (deterministic policy)",
          "ac/entropy": "ac/entropy (actor in imagination)", "sac/entropy": "sac/entropy (SAC actor)",
          "wm/open_loop_obs_err": "wm/open_loop_obs_err (last step, env units)",
          "wm/prior_std": "wm/prior_std (latent std)",
          "ac/return_scale": "ac/return_scale (return normaliser)",
          "ac/imagined_reward": "ac/imagined_reward (per step)",
          "sac/q_mean": "sac/q_mean (mean Q)",
          "sac/actor_loss": r"sac/actor_loss ($\alpha \log \pi - Q$, about $-Q$)",
          "hybrid/err_1": "hybrid/err_1 (1 step ahead)", "hybrid/err_k": "hybrid/err_k (k steps ahead)",
          "hybrid/err_end": "hybrid/err_end (episode ends, 1 step ahead)",
          "hybrid/imag_weight": "hybrid/imag_weight (imagination's weight)",
          "hybrid/real_share": "hybrid/real_share (real share of SAC batches)",
          "hybrid/belief_share": "hybrid/belief_share (the critics' input from the belief)",
          "hybrid/memory_gate": "hybrid/memory_gate (1: the learner reads the belief)",
          "hybrid/recall_gain": "hybrid/recall_gain (what the belief adds, held out)"}
# Keys of areas and kinds no panel names yet: (words in the name, kind, y label, scale), first match wins.
KINDS = ((("loss", "nll", "kl", "recon"), "losses", "loss", "auto"),
         (("share", "weight", "frac", "prob"), "shares in [0, 1]", "fraction", "share"),
         (("return", "value", "q_mean"), "returns and values", "return", "linear"),
         (("length", "episodes", "count", "updates"), "counts and lengths", "count", "linear"),
         (("err",), "errors", "error", "auto"))


def _home(key: str) -> tuple[Section | None, Panel]:
    """The section and panel a key is drawn in (a new panel, by its kind, for a key no panel names)."""
    for section in SECTIONS:
        for panel in section.panels:
            if key in panel.keys or key in panel.said:
                return section, panel
    if key.startswith("hybrid/err_"):  # err_2, err_4 ... of a guard that logs more horizons
        return SECTIONS[4], SECTIONS[4].panels[0]
    area, _, name = key.rpartition("/")
    section = next((s for s in SECTIONS if area in s.areas), None)
    where = section.title if section else OTHER
    for words, kind, ylabel, scale in KINDS:
        if any(w in name for w in words):
            return section, Panel(f"{area or 'other'}: {kind}", ylabel, (), scale, section=where)
    return section, Panel(key, "value", (), "auto", section=where)


def _template(key: str) -> Panel:
    return _home(key)[1]


def layout(keys: list[str]) -> list[Panel]:
    """curves.png's panels for these metric keys, section by section, returns first.

    Every key is in exactly one panel (the Run panel writes COUNTERS in words); a panel other than
    returns holds at most MAX_LINES keys, so a crowded kind of unknown keys is split into parts.
    """
    found: dict[tuple[str, str], tuple[Panel, list[str], list[str]]] = {
        (RETURNS.section, RETURNS.title): (RETURNS, [], [])}  # returns, even before any episode
    for key in sorted(set(keys) - {"step", "time"}):
        _, template = _home(key)
        _, drawn, said = found.setdefault((template.section, template.title), (template, [], []))
        (said if key in template.said else drawn).append(key)
    named = [(p.section, p.title) for s in SECTIONS for p in s.panels]
    order = [*named, *sorted(k for k in found if k not in named and k[0] != OTHER),
             *sorted(k for k in found if k[0] == OTHER)]
    sections = [s.title for s in SECTIONS] + [OTHER]
    order.sort(key=lambda k: sections.index(k[0]))  # stable: named panels first within a section
    panels = []
    for where in (k for k in order if k in found):
        template, drawn, said = found[where]
        drawn.sort(key=lambda k: (template.keys.index(k) if k in template.keys else len(template.keys), k))
        said.sort(key=template.said.index)
        if template is RETURNS or len(drawn) <= MAX_LINES:
            panels.append(template._replace(keys=tuple(drawn), said=tuple(said)))
            continue
        parts = range(0, len(drawn), MAX_LINES)
        panels += [template._replace(title=f"{template.title} ({i + 1}/{len(parts)})",
                                     keys=tuple(drawn[s:s + MAX_LINES])) for i, s in enumerate(parts)]
    return panels


def panel_groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """(title, keys drawn and said) of each panel layout() gives: the shape of curves.png."""
    return [(p.title, [*p.keys, *p.said]) for p in layout(keys)]


def _legend_below(ax, entries: int) -> None:
    """The axes' legend under its x label, in two columns when long: never over the data."""
    if not ax.get_legend_handles_labels()[0]:
        return
    below = offset_copy(ax.transAxes, fig=ax.figure, y=-LEGEND_GAP, units="inches")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, frameon=False,
              ncols=2 if entries > LEGEND_ONE_COLUMN else 1, handlelength=1.6, columnspacing=1.0)


def _returns_panel(ax, run: Run, x: str) -> int:
    steps, mean = run.series(RETURN_KEY, x)
    if len(steps):
        _, n = run.series("eval/episodes", x)
        over = "" if not len(n) else f", {n.min():g}" + ("" if n.min() == n.max() else f"-{n.max():g}") + " episodes"
        ax.plot(steps, mean, color="C0", marker="o", ms=4, label=f"eval return (deterministic policy{over})")
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
    _axes(ax, x, RETURNS.ylabel, RETURNS.title)
    return len(ax.get_legend_handles_labels()[0])


class _PlainLog(LogFormatter):
    """Log-axis tick labels as plain numbers (0.02, 0.5, 3) rather than 2e-02 or 2x10^-2."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def _axes(ax, x: str, ylabel: str, title: str) -> None:
    """Title, labels, grid and the x axis's tick format (2k, 1.5M env steps)."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(X_LABELS[x], fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    if x == "steps":
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))


def _thousands(value: float, _: int = 0) -> str:
    """20000 as 20k and 1500000 as 1.5M, for an axis of env steps."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _longest_branch(run: Run, values: np.ndarray) -> float:
    """The configured longest branch (the guard picks 0 up to it), else the longest seen."""
    longest = (run.config.get("learner") or {}).get("branch_length")
    if isinstance(longest, (int, float)) and longest > 0:
        return float(longest)
    finite = values[np.isfinite(values)]
    return max(1.0, float(finite.max(initial=1.0)))


def _lines_panel(ax, run: Run, panel: Panel, x: str) -> int:
    """Each key in a colour of its own on the panel's one y scale, its reference line and counters in words."""
    everything = []
    for i, key in enumerate(panel.keys):
        xs, values = run.series(key, x)
        values[~np.isfinite(values)] = np.nan
        label = LABELS.get(key, key)
        if key == "hybrid/branch_length" and panel.scale == "share":  # steps, as a share of the longest
            longest = _longest_branch(run, values)
            values = values / longest
            label = f"hybrid/branch_length ÷ {longest:g} (its longest)"
        everything.append(values[np.isfinite(values)])
        label += "" if everything[-1].size else " (no finite values)"
        ax.plot(xs, values, color=f"C{i}", label=label, marker="." if len(xs) < 30 else None)
    if panel.reference is not None:
        ax.axhline(panel.reference[0], color="black", ls="--", lw=1, label=panel.reference[1])
    values = np.concatenate(everything) if everything else np.array([])
    positive = values[values > 0]
    if panel.scale == "auto" and positive.size and values.min() >= 0 and positive.max() >= 10 * positive.min():
        if values.min() > 0:  # strictly positive and spanning decades: small terms stay visible
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(_PlainLog())
            ax.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
        else:  # a log axis would drop the zeros; linear from 0 to the smallest positive value
            ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(positive.min())))
            top = max(positive.max(), panel.reference[0] if panel.reference else 0)
            ax.set_ylim(0, top * 1.5)  # nothing below 0 (no mirrored negative decades); room above the top
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    elif panel.scale == "share":
        lo, hi = min(0.0, values.min(initial=0.0)), max(1.0, values.max(initial=1.0))
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    if panel.said:
        ax.text(0.99, 0.97, _counters(run, panel.said), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
    if not panel.keys and not panel.said:
        ax.text(0.5, 0.5, "nothing logged yet", ha="center", va="center", transform=ax.transAxes)
    _axes(ax, x, panel.ylabel, panel.title)
    return len(ax.get_legend_handles_labels()[0])


def _counters(run: Run, keys: tuple[str, ...]) -> str:
    """The run's counters in words: episodes finished, skipped updates, seconds per evaluation."""
    lines = []
    for key in keys:
        _, values = run.series(key)
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        if key == "train/episodes":
            lines.append(f"{values[-1]:g} episode{'' if values[-1] == 1 else 's'} finished")
        elif key == "train/skipped_updates":
            lines.append(f"{values[-1]:g} updates skipped (NaN or inf)")
        elif key == "eval/seconds":
            spread = f"{values.min():.2g}-{values.max():.2g}" if values.min() != values.max() else f"{values[0]:.2g}"
            lines.append(f"{values.size} evaluations, {spread} s each")
        else:
            lines.append(f"{key}: {values[-1]:g}")
    return "\n".join(lines)


def _panels_of_run(run: Run, metrics: list[str] | None) -> list[Panel]:
    if metrics:  # what the user named, one panel each, with the y label and scale of its kind
        return [_template(key)._replace(title=key, keys=(key,), said=()) for key in metrics]
    return layout(available_keys([run]))


def _draw(ax, run: Run, panel: Panel, x: str) -> int:
    """Draw one panel; the number of its legend entries."""
    return _returns_panel(ax, run, x) if panel.title == RETURNS.title else _lines_panel(ax, run, panel, x)


def figure(run: Run, metrics: list[str] | None = None, x: str = "steps"):
    """The matplotlib figure of one run: a row of panels per section (returns first), legends below the axes.

    With metrics, one panel per metric in a plain grid.
    """
    panels = _panels_of_run(run, metrics)
    groups = [(None, panels)] if metrics else list(_by_section(panels).items())
    columns = min(COLUMNS, len(panels)) if metrics else COLUMNS
    rows = [math.ceil(len(ps) / columns) for _, ps in groups]
    legend = [max((_legend_rows(p) for p in ps), default=0) for _, ps in groups]
    heights = [r * (ROW_HEIGHT + LEGEND_LINE * n) + (SECTION_TITLE if title else 0)
               for (title, _), r, n in zip(groups, rows, legend, strict=True)]
    fig = plt.figure(figsize=(5.6 * columns, sum(heights) + 0.5), layout="constrained")
    span = _x_span(run, x)  # every panel over the run's whole x range, so that they line up
    subfigs = fig.subfigures(len(groups), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, (title, ps), nrows in zip(subfigs, groups, rows, strict=True):
        if title:
            sub.suptitle(title, x=0.005, ha="left", fontsize=11, fontweight="bold")
        axes = sub.subplots(nrows, columns, squeeze=False).flat
        for i, ax in enumerate(axes):
            if i >= len(ps):
                ax.set_visible(False)
                continue
            _legend_below(ax, _draw(ax, run, ps[i], x))
            ax.set_xlim(*span)
    fig.suptitle(f"{run.path.name} ({run.env}, {run.algo}, seed {run.seed})", fontsize=12)
    return fig


def _x_span(run: Run, x: str) -> tuple[float, float] | tuple[None, None]:
    """The x range of the run's rows, with a 3% margin each side; (None, None) for no rows."""
    xkey = "step" if x == "steps" else "time"
    xs = [r[xkey] for r in run.rows if isinstance(r.get(xkey), (int, float))]
    if not xs:
        return None, None
    lo, hi = min(xs), max(xs)
    pad = 0.03 * (hi - lo) or 1.0
    return lo - pad, hi + pad


def _by_section(panels: list[Panel]) -> dict[str, list[Panel]]:
    out: dict[str, list[Panel]] = {}
    for panel in panels:
        out.setdefault(panel.section, []).append(panel)
    return out


def _legend_rows(panel: Panel) -> int:
    """Lines of a panel's legend, at most: two columns past LEGEND_ONE_COLUMN entries."""
    entries = 6 if panel.title == RETURNS.title else len(panel.keys) + (panel.reference is not None)
    return entries if entries <= LEGEND_ONE_COLUMN else math.ceil(entries / 2)
