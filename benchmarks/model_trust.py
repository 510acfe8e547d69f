"""Never worse than model-free: hybrid against model-free where no world model can be trusted.

    python benchmarks/model_trust.py                 # 3 seeds, 3,000 env steps each, default settings
    python benchmarks/model_trust.py --steps 600 --seeds 0   # a quick look

The env is tests/faulty_envs.py's RandomObs: every observation is fresh uniform noise and the
reward depends only on the action taken (action 1 pays 1 per step, 50-step episodes, so 50 is
the best return). A world model can at best predict the mean of the noise, half the error of
the "nothing changes" reference, so the model-trust guard must keep hybrid on model-free
learning: branch length 0, imagination weight 0, real share 1. Both algos run with default
settings, the same seeds and the same budget; the script prints and writes
benchmarks/results/model_trust.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
ENV = "faulty_envs:RandomObs"
ALGOS = ("model-free", "hybrid")
GUARD_KEYS = ("hybrid/err_1", "hybrid/err_k", "hybrid/branch_length", "hybrid/imag_weight", "hybrid/real_share")


def run(algo: str, seed: int, steps: int, out: Path) -> dict[str, Any]:
    """Train one algo on one seed in this process; its evals and its last guard row."""
    sys.path.insert(0, str(TESTS))  # faulty_envs lives beside the tests
    import torch

    from dreamercli import config as cfg
    from dreamercli.runs import read_metrics
    from dreamercli.training import train

    torch.set_num_threads(1)
    config = cfg.validate(cfg.with_overrides(cfg.from_preset("default"), {
        "env": ENV, "algo": algo, "seed": seed, "steps": steps, "eval_every": 500, "eval_episodes": 10}))
    run_dir = out / "runs" / f"{algo}-s{seed}"
    _, summary = train(config, run_dir)
    rows = list(read_metrics(run_dir))
    evals = [(r["step"], r["eval/return_mean"]) for r in rows if "eval/return_mean" in r]
    guard = [{k: r.get(k) for k in ("step", *GUARD_KEYS)} for r in rows if "hybrid/real_share" in r]
    return {"algo": algo, "seed": seed, "evals": evals, "final": summary["final_eval"],
            "seconds": summary["wall_seconds"], "guard": guard}


def markdown(results: list[dict[str, Any]], steps: int) -> str:
    """Per algo: final evals per seed and their median; hybrid's guard at the end of each run."""
    lines = [f"# Model trust: {ENV}, default settings, {steps} env steps", "",
             "| algo | final eval per seed | median | seconds (median) |", "|---|---|---|---|"]
    for algo in ALGOS:
        mine = sorted((r for r in results if r["algo"] == algo), key=lambda r: r["seed"])
        finals = [r["final"] for r in mine]
        cells = ", ".join(f"s{r['seed']}: {r['final']:.1f}" for r in mine)
        lines.append(f"| {algo} | {cells} | "
                     f"{statistics.median(finals):.1f} | {statistics.median(r['seconds'] for r in mine):.0f} |")
    lines += ["", "hybrid's guard rows (last log row of each seed, and the most it ever allowed):", ""]
    for r in sorted((r for r in results if r["algo"] == "hybrid"), key=lambda r: r["seed"]):
        last = r["guard"][-1]
        most = {k: max(g[k] for g in r["guard"]) for k in ("hybrid/branch_length", "hybrid/imag_weight")}
        least = min(g["hybrid/real_share"] for g in r["guard"])
        lines.append(f"- seed {r['seed']}: err_1 {last['hybrid/err_1']:.2f}, err_k {last['hybrid/err_k']:.2f} "
                     "at the end; "
                     f"over the run, branch length at most {most['hybrid/branch_length']:.0f}, imagination weight "
                     f"at most {most['hybrid/imag_weight']:.2f}, real share at least {least:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both algos over the seeds, two processes at a time; write JSON and markdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run, algo, seed, args.steps, out) for seed in args.seeds for algo in ALGOS]
        results = [f.result() for f in futures]
    text = markdown(results, args.steps)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_trust.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "model_trust.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
