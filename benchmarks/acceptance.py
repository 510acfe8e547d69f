"""Rerun the core acceptance checks: train with default settings, evaluate, record.

    python benchmarks/acceptance.py                       # CartPole-v1 and Pendulum-v1, seeds 0-4
    python benchmarks/acceptance.py --envs CartPole-v1 --seeds 0 1 2 --jobs 2
    python benchmarks/acceptance.py --jobs 2 --out benchmarks/results/acceptance-model-free -- --algo model-free

Each (env, seed) runs `dreamer train` then `dreamer evaluate RUN --episodes N` as a user
would, in its own process. Results go to <out>/<env>-s<seed>.json (`--out`, by default
benchmarks/results), and a markdown table of all results there so far to <out>/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Steps and final-evaluation episodes per env, as the acceptance criteria state them.
PLAN = {"CartPole-v1": (10_000, 100), "Pendulum-v1": (5_000, 20)}


def run_one(env: str, seed: int, runs_dir: Path, extra: list[str], out: Path = RESULTS) -> dict:
    """Train and evaluate one seed through the CLI; return the record."""
    steps, episodes = PLAN.get(env, (10_000, 20))
    name = f"bench-{env}-s{seed}"
    train_cmd = [sys.executable, "-m", "dreamercli", "train", "--env", env, "--seed", str(seed),
                 "--steps", str(steps), "--runs-dir", str(runs_dir), "--name", name, "--force", *extra]
    start = time.perf_counter()
    done = subprocess.run(train_cmd, capture_output=True, text=True)
    train_wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"env": env, "seed": seed, "error": done.stderr.strip().splitlines()[-1:]}
    run_dir = runs_dir / name
    eval_cmd = [sys.executable, "-m", "dreamercli", "evaluate", str(run_dir), "--episodes", str(episodes)]
    subprocess.run(eval_cmd, capture_output=True, text=True, check=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    report = json.loads((run_dir / "eval.json").read_text())
    record = {
        "env": env, "seed": seed, "env_steps": steps, "run_dir": str(run_dir),
        "steps_to_threshold": summary["steps_to_threshold"], "threshold": summary["threshold"],
        "final_eval_mean": report["return_mean"], "final_eval_std": report["return_std"],
        "final_eval_episodes": episodes, "train_wall_seconds": round(train_wall, 1),
        "train_loop_seconds": round(summary["wall_seconds"], 1),
        "env_steps_per_second": round(steps / summary["wall_seconds"], 1),
        "updates": summary["updates"], "extra_args": extra,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{env}-s{seed}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def table(records: list[dict]) -> str:
    """Markdown: one row per run, then medians per env."""
    lines = ["| env | seed | steps to threshold | final eval (episodes) | train wall s | env steps/s |",
             "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["env"], r["seed"])):
        if "error" in r:
            lines.append(f"| {r['env']} | {r['seed']} | error: {r['error']} | | | |")
            continue
        lines.append(f"| {r['env']} | {r['seed']} | {r['steps_to_threshold']} | "
                     f"{r['final_eval_mean']:.1f} ± {r['final_eval_std']:.1f} ({r['final_eval_episodes']}) | "
                     f"{r['train_wall_seconds']:.0f} | {r['env_steps_per_second']:.0f} |")
    lines += ["", "| env | seeds | median steps to threshold | reached | median final eval | "
              "median wall s | median env steps/s |", "|---|---|---|---|---|---|---|"]
    for env in sorted({r["env"] for r in records}):
        ok = [r for r in records if r["env"] == env and "error" not in r]
        if not ok:
            continue
        reached = [r["steps_to_threshold"] for r in ok if r["steps_to_threshold"] is not None]
        med = statistics.median(reached) if len(reached) == len(ok) else None
        lines.append(f"| {env} | {len(ok)} | {med if med is not None else 'not all reached'} | "
                     f"{len(reached)}/{len(ok)} | {statistics.median(r['final_eval_mean'] for r in ok):.1f} | "
                     f"{statistics.median(r['train_wall_seconds'] for r in ok):.0f} | "
                     f"{statistics.median(r['env_steps_per_second'] for r in ok):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(PLAN))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each uses one thread)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the per-run JSON and README.md")
    parser.add_argument("extra", nargs="*", help="extra `dreamer train` flags, after --")
    args = parser.parse_args()
    jobs = [(env, seed) for env in args.envs for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        for record in pool.map(lambda job: run_one(*job, args.runs_dir, args.extra, args.out), jobs):
            print(json.dumps(record), flush=True)
    records = [json.loads(p.read_text()) for p in sorted(args.out.glob("*-s*.json"))]
    header = (f"# Acceptance benchmark\n\nMachine: {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores; `--jobs {args.jobs}` runs at once, one torch thread each.\n"
              "Written by `python benchmarks/acceptance.py`; timings are noisy on shared cores.\n\n")
    (args.out / "README.md").write_text(header + table(records))
    print(table(records))


if __name__ == "__main__":
    main()
