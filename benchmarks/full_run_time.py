"""Seconds of a full default run, an older commit against the working tree, in one invocation.

    python benchmarks/full_run_time.py --ref d5dfb3e          # CartPole 10k and Pendulum 5k, seed 0
    python benchmarks/full_run_time.py --ref HEAD~3 --envs CartPole-v1 --seeds 0 1

For each (env, seed) the old commit (a temporary `git worktree`) and the working tree run
`dreamer train` with default settings side by side, one process each, one torch thread each,
so both share the machine's two cores alike. Reports the whole command's wall seconds (start-up,
training, evaluations and the run folder included) and the training loop's own seconds from
summary.json. Writes benchmarks/results/full_run_time.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = {"CartPole-v1": 10_000, "Pendulum-v1": 5_000}


def train_once(code_dir: Path, env: str, seed: int, runs_dir: Path, label: str) -> dict:
    """Run `dreamer train` from code_dir's package with default settings; return its timings."""
    child = {**os.environ, "PYTHONPATH": str(code_dir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    name = f"{label}-{env}-s{seed}"
    cmd = [sys.executable, "-m", "dreamercli", "train", "--env", env, "--seed", str(seed),
           "--steps", str(STEPS[env]), "--runs-dir", str(runs_dir), "--name", name, "--force"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=child, cwd=runs_dir)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"label": label, "env": env, "seed": seed, "error": done.stderr.strip().splitlines()[-3:]}
    summary = json.loads((runs_dir / name / "summary.json").read_text())
    return {"label": label, "env": env, "seed": seed, "command_seconds": round(wall, 1),
            "loop_seconds": round(summary["wall_seconds"], 1), "final_eval": summary["final_eval"],
            "steps_to_threshold": summary["steps_to_threshold"], "updates": summary["updates"]}


def main() -> None:
    """Time the old commit and the working tree side by side; print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", required=True, help="the older commit to compare against")
    parser.add_argument("--envs", nargs="+", default=list(STEPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    ref = subprocess.run(["git", "rev-parse", args.ref], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), ref], check=True, cwd=REPO,
                       capture_output=True)
        try:
            runs_dir = Path(tmp) / "runs"
            runs_dir.mkdir()
            for env in args.envs:
                for seed in args.seeds:
                    with ThreadPoolExecutor(2) as pool:  # old and new side by side, one core each
                        pair = [pool.submit(train_once, old, env, seed, runs_dir, "old"),
                                pool.submit(train_once, REPO, env, seed, runs_dir, "new")]
                        for job in pair:
                            records.append(job.result())
                            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
    lines = [f"| env | seed | {ref[:7]} command s | new command s | ratio | {ref[:7]} loop s | new loop s |",
             "|---|---|---|---|---|---|---|"]
    for env in args.envs:
        for seed in args.seeds:
            o, n = (next(r for r in records if r["label"] == lab and r["env"] == env and r["seed"] == seed)
                    for lab in ("old", "new"))
            if "error" in o or "error" in n:
                lines.append(f"| {env} | {seed} | {o.get('error', '')} | {n.get('error', '')} | | | |")
                continue
            ratio = n["command_seconds"] / o["command_seconds"]
            lines.append(f"| {env} | {seed} | {o['command_seconds']} | {n['command_seconds']} | {ratio:.2f} "
                         f"| {o['loop_seconds']} | {n['loop_seconds']} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "ref": ref,
            "load_average_end": os.getloadavg(), "command": " ".join(sys.argv)}
    (args.out / "full_run_time.json").write_text(json.dumps({**meta, "records": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
