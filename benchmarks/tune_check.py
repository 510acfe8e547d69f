"""A tuned config against the defaults, paired by seed, on the study's task and on others.

    python benchmarks/tune_check.py runs/pend/best_config.json --envs Pendulum-v1 CartPole-v1 Acrobot-v1

Takes the settings a `dreamer tune` study searched (the fields of best_config.json that differ from
the defaults), and trains each env with the defaults and with those settings on the same seeds, the
steps and evaluations of the study. Prints, per env and seed, the study's score (`tune.normalised`:
the mean eval return from random play, 0, to the threshold, 1) and the env steps to the threshold,
then medians; writes the table to benchmarks/results/tune/tune_check.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from dreamercli.config import from_dict, from_preset, to_dict, validate, with_overrides
from dreamercli.envs import threshold_of
from dreamercli.tune import normalised, random_return

RESULTS = Path(__file__).resolve().parent / "results"
KEEP = {"env", "steps", "seed", "eval_every", "eval_episodes", "threshold", "stop_at_return", "tensorboard"}


def tuned_fields(best: dict) -> dict:
    """The settings best_config.json changes from the defaults (task and schedule fields left out)."""
    flat_best = {k: v for section in to_dict(from_dict(best)).values() if isinstance(section, dict)
                 for k, v in section.items()}
    flat_default = {k: v for section in to_dict(from_preset("default")).values() if isinstance(section, dict)
                    for k, v in section.items()}
    return {k: v for k, v in flat_best.items() if v != flat_default[k] and k not in KEEP}


def run(job: tuple[str, dict, Path]) -> list[tuple[int, float]]:
    """Train one config into run_dir; its (step, eval return) pairs."""
    from dreamercli.runs import read_metrics
    from dreamercli.training import train

    env, overrides, run_dir = job
    train(validate(with_overrides(from_preset("default"), {"env": env, **overrides})), run_dir)
    return [(r["step"], r["eval/return_mean"]) for r in read_metrics(run_dir) if "eval/return_mean" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("best_config", type=Path)
    parser.add_argument("--envs", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "tune" / "tune_check.md")
    args = parser.parse_args()
    best = json.loads(args.best_config.read_text())
    tuned = tuned_fields(best)
    schedule = {"steps": best["train"]["steps"], "eval_every": best["train"]["eval_every"]}
    lines = [f"Tuned settings from {args.best_config}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float)
                                                                     else f"{k}={v}" for k, v in tuned.items()),
             f"Schedule: {schedule['steps']} env steps, an evaluation every {schedule['eval_every']}.", "",
             "| env | seed | score default | score tuned | steps to threshold default | tuned |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        keys = [(env, s, which) for env in args.envs for s in args.seeds for which in ("default", "tuned")]
        jobs = [(env, {**schedule, "seed": s, **(tuned if which == "tuned" else {})}, Path(tmp) / f"{env}-{which}-s{s}")
                for env, s, which in keys]
        curves = dict(zip(keys, pool.map(run, jobs), strict=True))
    summary = []
    for env in args.envs:
        config = validate(with_overrides(from_preset("default"), {"env": env}))
        low, target = random_return(config), threshold_of(env, None)
        scores = {"default": [], "tuned": []}
        for s in args.seeds:
            cells = []
            for which in ("default", "tuned"):
                curve = curves[(env, s, which)]
                scores[which].append(normalised([r for _, r in curve], low, target))
                reached = next((step for step, r in curve if target is not None and r >= target), None)
                cells.append((scores[which][-1], reached))
            lines.append(f"| {env} | {s} | {cells[0][0]:.3f} | {cells[1][0]:.3f} | {cells[0][1] or '-'} | "
                         f"{cells[1][1] or '-'} |")
        wins = sum(t > d for d, t in zip(scores["default"], scores["tuned"], strict=True))
        summary.append(f"- {env}: median score {statistics.median(scores['default']):.3f} (default) against "
                       f"{statistics.median(scores['tuned']):.3f} (tuned); tuned higher on {wins} of "
                       f"{len(args.seeds)} seeds.")
    text = "\n".join([*lines, "", *summary]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
