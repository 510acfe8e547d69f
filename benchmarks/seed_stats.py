"""Statistics over the seeds of a benchmark: when each run reached its threshold, medians that
count a seed that never reached as infinitely slow, and step-wise bands of curves.

Shared by the race (sample_efficiency.py) and the suite (suite.py).
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def reach(curve: list[dict[str, float]], threshold: float) -> tuple[int | None, float | None]:
    """(env steps, training seconds) at the first evaluation at or above threshold, else (None, None)."""
    for point in curve:
        if point["return_mean"] >= threshold:
            return point["step"], point["train_seconds"]
    return None, None


def censored(values: list[float | None]) -> dict[str, Any]:
    """Median, min, max and reached k/n, counting a seed that never reached as infinitely slow.

    So the median is finite only when a majority of seeds reached; None stands for not reached.
    """
    xs = [math.inf if v is None else float(v) for v in values]
    if not xs:
        return {"median": None, "min": None, "max": None, "reached": 0, "n": 0}

    def finite(x: float) -> float | None:
        return None if math.isinf(x) else x

    return {"median": finite(statistics.median(xs)), "min": finite(min(xs)), "max": finite(max(xs)),
            "reached": sum(v is not None for v in values), "n": len(values)}


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per env and method: censored stats of steps and seconds to threshold, and final evals."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["env"], {}).setdefault(r["method"], {"runs": []})["runs"].append(r)
    for methods in out.values():
        for entry in methods.values():
            runs = entry.pop("runs")
            finals = [r["final_eval"] for r in runs if r["final_eval"] is not None]
            totals = [r["train_seconds"] for r in runs if r["train_seconds"] is not None]
            entry.update(budget=runs[0]["budget"], threshold=runs[0]["threshold"],
                         errors=sum(r["error"] is not None for r in runs),
                         steps=censored([r["steps_to_threshold"] for r in runs]),
                         seconds=censored([r["seconds_to_threshold"] for r in runs]),
                         final=censored(finals) if finals else censored([]),
                         train_seconds=statistics.median(totals) if totals else None)
    return out


def cell(stat: dict[str, Any], fmt: str) -> str:
    """Median [min, max] of censored() stats, n.r. for not reached; - when there are none."""

    def show(v: float | None) -> str:
        return "n.r." if v is None else format(v, fmt)

    return f"{show(stat['median'])} [{show(stat['min'])}, {show(stat['max'])}]" if stat["n"] else "-"


def band(xs: list[list[float]], ys: list[list[float]]):
    """Median, min and max over seeds, step-wise: each seed's last eval holds until its next one."""
    import numpy as np

    # From the first x at which every seed has an eval; a finished run holds its final value.
    grid = np.unique(np.concatenate([np.asarray(x, dtype=float) for x in xs]))
    grid = grid[grid >= max(x[0] for x in xs)]
    stack = np.stack([np.asarray(y)[np.searchsorted(x, grid, side="right") - 1] for x, y in zip(xs, ys, strict=True)])
    return grid, np.median(stack, axis=0), stack.min(axis=0), stack.max(axis=0)
