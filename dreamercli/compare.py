"""Tables across runs and seeds: grouping, IQM, bootstrap CI, AUC, steps to threshold; no torch.

Definitions (also in the README):

- group: runs with the same (env, algo, label). label is run.json's "label" (metadata, not config) when
  present, else the run folder's name without its `-s{seed}` / `-s{seed}-{YYYYmmdd-HHMMSS}` tail.
- final return: a run's last `eval/return_mean` row in metrics.jsonl.
- IQM: sort the n values, drop int(0.25 * n) from each end, average the rest (scipy's
  `trim_mean(x, 0.25)`, as rliable uses it; no interpolation, so n < 4 drops nothing).
- 95% CI: percentile bootstrap of the mean over seeds: 10,000 resamples of n seeds with
  replacement drawn by `numpy.random.default_rng(0)`, then the 2.5th and 97.5th percentiles.
- AUC: the trapezoid area under a run's eval return against env steps, divided by the step
  span (last eval step minus first): the mean return over training. One eval point: its value.
- steps (seconds) to threshold: the env steps (`time`) of a run's first eval row with
  `eval/return_mean >= threshold`; runs that never reach it are counted, not averaged.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import runs

RETURN_KEY = "eval/return_mean"
BOOTSTRAP_RESAMPLES = 10_000
_SUFFIX = re.compile(r"^(?P<label>.+?)-s\d+(-\d{8}-\d{6})?$")
Warn = Callable[[str], None]


@dataclass
class Run:
    """One run folder's identity, metrics rows and summary."""

    path: Path
    env: str
    algo: str
    seed: int
    label: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any] = field(repr=False, default_factory=dict)

    def series(self, key: str, x: str = "steps") -> tuple[np.ndarray, np.ndarray]:
        """(x, values) of the rows that carry key; x is env steps or wall seconds ('time')."""
        xkey = "step" if x == "steps" else "time"
        pairs = [(r[xkey], r[key]) for r in self.rows
                 if isinstance(r.get(key), (int, float)) and isinstance(r.get(xkey), (int, float))]
        return np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float)


def label_of(name: str, config: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    """run.json's "label" (or a schema-1 config.json's), else the folder name without its seed and timestamp tail."""
    for source in (meta or {}, config):
        if source.get("label"):
            return str(source["label"])
    match = _SUFFIX.match(name)
    return match["label"] if match else name


def load_run(run_dir: Path, warn: Warn | None = None) -> Run:
    """Read a run folder; broken metrics lines are skipped and reported through warn."""
    run_dir = runs.check_run_dir(Path(run_dir))
    # read_json rather than load_config: a "label" field is not a config field, and plotting
    # needs only env, algo and seed from a config that may come from another version.
    config = runs.read_json(run_dir / runs.CONFIG_FILE)
    if not isinstance(config, dict) or "env" not in config:
        raise runs.RunError(f"{run_dir / runs.CONFIG_FILE} is not a valid dreamer config")
    seed = (config.get("train") or {}).get("seed", 0)
    rows = list(runs.read_metrics(run_dir, warn=warn))
    summary = runs.read_json(run_dir / runs.SUMMARY_FILE) or {}
    meta = runs.read_json(run_dir / runs.RUN_FILE)
    return Run(run_dir, config["env"], config.get("algo", "dreamer"), seed,
               label_of(run_dir.resolve().name, config, meta if isinstance(meta, dict) else None),
               rows, summary, config)


def load_runs(paths: list[Path], warn: Warn | None = None) -> list[Run]:
    """Load every run folder, in the order given; raise RunError for one that is not a run."""
    return [load_run(p, warn) for p in paths]


def group_runs(run_list: list[Run], warn: Warn | None = None) -> dict[tuple[str, str, str], list[Run]]:
    """Runs keyed by (env, algo, label), sorted by key, each group's runs sorted by seed."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in run_list:
        groups.setdefault((run.env, run.algo, run.label), []).append(run)
    for key, members in groups.items():
        members.sort(key=lambda r: (r.seed, str(r.path)))
        differing = _config_differences(members)
        if differing and warn is not None:
            warn(f"group {key[2]} mixes runs whose configs differ in {', '.join(differing)}; "
                 "give them different --name (or a \"label\" in config.json) to compare them")
    return dict(sorted(groups.items()))


def _config_differences(members: list[Run]) -> list[str]:
    """Config fields (other than seed) whose values differ across a group's runs."""
    def flat(config: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in config.items():
            if isinstance(v, dict) and k != "env_spec":
                out.update({f"{kk}": vv for kk, vv in v.items()})
            elif k not in runs.META_KEYS and k != "label":
                out[k] = v
        out.pop("seed", None)
        return out

    flats = [flat(r.config) for r in members]
    keys = sorted(set().union(*flats))
    return [k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1]


def iqm(values: np.ndarray | list[float]) -> float:
    """Interquartile mean: drop int(0.25 * n) sorted values from each end, average the rest."""
    x = np.sort(np.asarray(values, float))
    k = int(0.25 * len(x))
    return float(x[k:len(x) - k].mean())


def bootstrap_ci(values: np.ndarray | list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile bootstrap CI of the mean over axis 0 (seeds); rng default_rng(seed)."""
    x = np.asarray(values, float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    means = x[idx].mean(axis=1)  # (resamples, ...)
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    return lo, hi


def auc(steps: np.ndarray, values: np.ndarray) -> float | None:
    """Trapezoid area under values against steps over the step span: a mean return."""
    if len(steps) == 0:
        return None
    if len(steps) == 1 or steps[-1] == steps[0]:
        return float(values[-1])
    area = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


def threshold_of(run: Run, override: float | None) -> float | None:
    """--threshold when given, else the threshold in the run's summary.json."""
    return override if override is not None else run.summary.get("threshold")


def time_to_threshold(run: Run, threshold: float | None) -> tuple[float | None, float | None]:
    """(env steps, wall seconds) of the first eval row whose return reaches threshold."""
    if threshold is None:
        return None, None
    for row in run.rows:
        value = row.get(RETURN_KEY)
        if isinstance(value, (int, float)) and value >= threshold:
            return row["step"], row.get("time")
    return None, None


def summarize_group(key: tuple[str, str, str], members: list[Run], threshold: float | None) -> dict[str, Any]:
    """One table row: seeds, final return stats, steps/seconds to threshold, AUC."""
    env, algo, label = key
    finals, aucs, steps_hit, secs_hit, thresholds = [], [], [], [], set()
    per_run = []
    for run in members:
        steps, values = run.series(RETURN_KEY)
        final = float(values[-1]) if len(values) else None
        area = auc(steps, values)
        thr = threshold_of(run, threshold)
        thresholds.add(thr)
        hit_steps, hit_secs = time_to_threshold(run, thr)
        per_run.append({"run": str(run.path), "seed": run.seed, "final_return": final, "auc": area,
                        "threshold": thr, "steps_to_threshold": hit_steps, "seconds_to_threshold": hit_secs})
        if final is not None:
            finals.append(final)
            aucs.append(area)
        if hit_steps is not None:
            steps_hit.append(hit_steps)
            secs_hit.append(hit_secs)
    row: dict[str, Any] = {"env": env, "algo": algo, "label": label, "seeds": len(members),
                           "evaluated": len(finals)}
    if finals:
        lo, hi = bootstrap_ci(finals)
        row.update(final_mean=float(np.mean(finals)), final_iqm=iqm(finals),
                   final_ci_low=float(lo), final_ci_high=float(hi), auc_mean=float(np.mean(aucs)))
    else:
        row.update(final_mean=None, final_iqm=None, final_ci_low=None, final_ci_high=None, auc_mean=None)
    thr_values = sorted(t for t in thresholds if t is not None)
    row["threshold"] = thr_values[0] if len(thr_values) == 1 else None
    row["reached"] = len(steps_hit)
    for name, hits in (("steps", steps_hit), ("seconds", [s for s in secs_hit if s is not None])):
        row[f"{name}_median"] = float(np.median(hits)) if hits else None
        row[f"{name}_min"] = float(np.min(hits)) if hits else None
        row[f"{name}_max"] = float(np.max(hits)) if hits else None
    row["runs"] = per_run
    return row


def compare(run_list: list[Run], threshold: float | None = None,
            warn: Warn | None = None) -> dict[str, list[dict[str, Any]]]:
    """Group rows per env (never averaged across envs), with the steps ratio to the best group."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for key, members in group_runs(run_list, warn).items():
        tables.setdefault(key[0], []).append(summarize_group(key, members, threshold))
    for rows in tables.values():
        medians = [r["steps_median"] for r in rows if r["steps_median"] is not None]
        best = min(medians) if medians else None
        for r in rows:
            r["steps_ratio"] = (r["steps_median"] / best if best and r["steps_median"] is not None
                                else None)
    return tables


COLUMNS = [  # (key in a row, header)
    ("algo", "algo"), ("label", "label"), ("seeds", "seeds"), ("final_mean", "final mean"),
    ("final_iqm", "IQM"), ("final_ci", "95% CI"), ("auc_mean", "AUC"), ("reached", "reached"),
    ("steps", "steps to thr."), ("seconds", "seconds to thr."), ("steps_ratio", "steps vs best"),
]
CAPTION = ("final: last eval return per seed; IQM: interquartile mean; 95% CI: bootstrap of the mean "
           "over seeds; AUC: mean eval return over training; to thr.: median [min, max] over the runs "
           "that reached the threshold; steps vs best: median steps over the fewest of any group")


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def cells(row: dict[str, Any]) -> list[str]:
    """A group row as display strings, in COLUMNS order."""
    def span(name: str, digits: int) -> str:
        if row[f"{name}_median"] is None:
            return "-"
        return (f"{_num(row[f'{name}_median'], digits)} [{_num(row[f'{name}_min'], digits)}, "
                f"{_num(row[f'{name}_max'], digits)}]")

    ci = ("-" if row["final_ci_low"] is None
          else f"[{_num(row['final_ci_low'], 1)}, {_num(row['final_ci_high'], 1)}]")
    thr = "" if row["threshold"] is None else f" (>= {row['threshold']:g})"
    values = {**row, "final_ci": ci, "steps": span("steps", 0), "seconds": span("seconds", 1),
              "reached": f"{row['reached']}/{row['seeds']}{thr}",
              "steps_ratio": "-" if row["steps_ratio"] is None else f"{row['steps_ratio']:.2f}x"}
    return [_num(values[k]) for k, _ in COLUMNS]


def to_markdown(tables: dict[str, list[dict[str, Any]]]) -> str:
    """One markdown table per env."""
    out = []
    for env, rows in tables.items():
        out += [f"## {env}", "", "| " + " | ".join(h for _, h in COLUMNS) + " |",
                "|" + "---|" * len(COLUMNS)]
        out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
        out.append("")
    return "\n".join([*out, CAPTION, ""])


CSV_FIELDS = ["env", "algo", "label", "seeds", "evaluated", "final_mean", "final_iqm", "final_ci_low",
              "final_ci_high", "auc_mean", "threshold", "reached", "steps_median", "steps_min", "steps_max",
              "seconds_median", "seconds_min", "seconds_max", "steps_ratio"]


def to_csv(tables: dict[str, list[dict[str, Any]]]) -> str:
    """A row per group (all envs), full-precision numbers, empty cells for none."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rows in tables.values():
        for r in rows:
            writer.writerow({k: "" if r[k] is None else r[k] for k in CSV_FIELDS})
    return buf.getvalue()


def write_outputs(tables: dict[str, list[dict[str, Any]]], out_dir: Path) -> list[Path]:
    """compare.md, compare.csv and compare.json in out_dir (plotting draws compare.png); their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"compare.{ext}" for ext in ("md", "csv", "json")]
    runs.write_json(paths[2], tables)
    for path, text in ((paths[0], to_markdown(tables)), (paths[1], to_csv(tables))):
        runs.write_text(path, text)
    return paths
