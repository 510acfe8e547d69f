"""Screen one setting on one task and seed: default settings plus overrides, stopped at the threshold.

    python benchmarks/novelty_screen.py MountainCarContinuous-v0 --seed 0 --budget 20000 \
        --set sac_novelty=1.0 --out /tmp/mcc-s0

The same training loop as `dreamer train` (default --algo), evaluated every --eval-every env
steps (10 deterministic episodes), stopped at the first evaluation at or above the task's
threshold (the suite's, `suite.py`), so a screen of several seeds costs what reaching takes.
Prints one JSON line: the evaluations, the training episodes' returns and the seconds.
It screened `sac_novelty` (README, the suite section); the suite itself runs defaults only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # suite.py and suite_envs.py beside this file


class Solved(Exception):
    """The run reached the threshold."""


def main(argv: list[str] | None = None) -> int:
    """Train, stop at the threshold, print the result as one JSON line."""
    from suite import TASKS, eval_every

    from dreamercli import config as cfg
    from dreamercli.runs import read_metrics
    from dreamercli.training import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", help="a task of the suite (its threshold and budget), or any env with --threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=None, help="env steps (default: the suite's)")
    parser.add_argument("--threshold", type=float, default=None, help="default: the suite's")
    parser.add_argument("--eval-every", type=int, default=None, help="default: the suite's for the budget")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    args = parser.parse_args(argv)
    task = TASKS.get(args.env, {})
    threshold = args.threshold if args.threshold is not None else task.get("threshold")
    budget = args.budget or task.get("budget")
    if threshold is None or budget is None:
        parser.error(f"{args.env} is not a suite task: give --threshold and --budget")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = cfg.validate(cfg.with_overrides(cfg.from_preset("default"), {
        **overrides, "env": args.env, "seed": args.seed, "steps": budget,
        "eval_every": args.eval_every or eval_every(budget), "threads": 1}))

    def stop(p: object) -> None:
        if p.last_eval is not None and p.last_eval >= threshold:
            raise Solved()

    began = time.perf_counter()
    with contextlib.suppress(Solved):
        train(config, args.out, on_progress=stop)
    rows = list(read_metrics(args.out))
    print(json.dumps({"env": args.env, "seed": args.seed, "set": overrides, "threshold": threshold,
                      "evals": [(r["step"], round(r["eval/return_mean"], 1)) for r in rows if "eval/return_mean" in r],
                      "episodes": [round(r["train/episode_return"], 1) for r in rows
                                   if r.get("train/episode_return") is not None],
                      "seconds": round(time.perf_counter() - began)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
