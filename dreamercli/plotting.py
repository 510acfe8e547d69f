"""PNG figures of a run's metrics with matplotlib's Agg backend; never imports torch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from . import runs

LOSS_KEYS = ("wm/loss", "wm/recon_open_loop", "wm/reward_loss", "wm/kl",
             "ac/actor_loss", "ac/critic_loss")


def series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that carry key."""
    pairs = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Write curves.png: eval return (with threshold) and train returns, then the main losses."""
    run_dir = Path(run_dir)
    rows = list(runs.read_metrics(run_dir))
    summary = runs.read_json(run_dir / runs.SUMMARY_FILE) or {}
    fig, (ax_ret, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps, mean = series(rows, "eval/return_mean")
    _, std = series(rows, "eval/return_std")
    if steps:
        ax_ret.plot(steps, mean, marker="o", label="eval return (deterministic)")
        ax_ret.fill_between(steps, [m - s for m, s in zip(mean, std, strict=True)],
                            [m + s for m, s in zip(mean, std, strict=True)], alpha=0.2, label="eval ± 1 std")
    tsteps, tret = series(rows, "train/episode_return")
    if tsteps:
        ax_ret.plot(tsteps, tret, alpha=0.6, label="training episode return")
    if summary.get("threshold") is not None:
        ax_ret.axhline(summary["threshold"], color="grey", ls="--",
                       label=f"threshold {summary['threshold']:g}")
    ax_ret.set_xlabel("env steps")
    ax_ret.set_ylabel("episode return")
    ax_ret.set_title(run_dir.name, fontsize=9)
    ax_ret.grid(alpha=0.3)
    ax_ret.legend(fontsize=8)
    for key in LOSS_KEYS:
        lsteps, values = series(rows, key)
        if lsteps:
            ax_loss.plot(lsteps, values, label=key)
    ax_loss.set_xlabel("env steps")
    ax_loss.set_ylabel("loss (per update, mean over log interval)")
    ax_loss.set_yscale("symlog", linthresh=1e-2)
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / runs.CURVES_FILE
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
