"""The race: dreamer with default settings against tuned stable-baselines3, to a return threshold.

    python benchmarks/sample_efficiency.py                        # both envs, seeds 0-4, 2 jobs
    python benchmarks/sample_efficiency.py --envs CartPole-v1 --seeds 0 1 --budget ppo=30000
    python benchmarks/sample_efficiency.py --smoke --out /tmp/race # the whole pipeline in seconds

CartPole-v1 (threshold 475): dreamer, ppo, dqn. Pendulum-v1 (threshold -200): dreamer, sac, td3.
Every method is evaluated alike: every EVAL_EVERY env steps and at the end of its budget,
EVAL_EPISODES deterministic episodes on a separate env, episode i reset with seed + 10_000 + i.
Training seconds exclude evaluation time and building the model or agent.

SB3 hyperparameters (values transcribed in benchmarks/baselines.py) are rl-baselines3-zoo's,
DLR-RM/rl-baselines3-zoo at commit 22e3ff2450fd92033f7f032915e1f64894a09584:
hyperparams/ppo.yml and hyperparams/dqn.yml entry CartPole-v1, hyperparams/sac.yml and
hyperparams/td3.yml entry Pendulum-v1 (all four last changed in eec15dc22e1ec7167064aae0c1218eefccaf0ff4).

Each run is its own process with one torch thread, at most --jobs at once, started in the order
seed, env, method so machine noise falls on all methods alike. Writes sample_efficiency.json
(records and machine metadata), sample_efficiency.md (also printed) and sample_efficiency.png
to --out. Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # seed_stats and baselines, beside this file (also when imported by path)
from seed_stats import band, cell, reach, summarize  # noqa: E402

THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}
OURS = ("dreamer", "model-free", "mbpo", "hybrid", "belief")  # dreamer's --algo values, each with default settings
METHODS = {"CartPole-v1": (*OURS, "ppo", "dqn"), "Pendulum-v1": (*OURS, "sac", "td3")}
BUDGETS = {"CartPole-v1": {**dict.fromkeys(OURS, 6_000), "ppo": 50_000, "dqn": 50_000},
           "Pendulum-v1": {**dict.fromkeys(OURS, 5_000), "sac": 10_000, "td3": 20_000}}
SEEDS = [0, 1, 2, 3, 4]
EVAL_EVERY, EVAL_EPISODES = 500, 10
# --smoke: the pipeline end to end in seconds; nothing learns to threshold at these sizes.
# SAC and TD3 stay short: one of their updates takes tens of ms on a busy core.
SMOKE_BUDGETS = {**dict.fromkeys(OURS, 300), "ppo": 600, "dqn": 450, "sac": 200, "td3": 200}
SMOKE_EVAL_EVERY, SMOKE_EVAL_EPISODES = 150, 2


def dreamer_curve(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Eval rows of a dreamer metrics.jsonl as curve points, with evaluation time taken out."""
    curve, evals = [], 0.0
    for row in rows:
        if "eval/return_mean" not in row:
            continue
        # `time` is read after this evaluation finished, so it holds this one and all before it.
        evals += row["eval/seconds"]
        curve.append({"step": row["step"], "train_seconds": row["time"] - evals,
                      "return_mean": row["eval/return_mean"], "return_std": row["eval/return_std"],
                      "eval_seconds": row["eval/seconds"]})
    return curve


def make_record(task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """One run's record: the task, its curve and what follows from the curve."""
    curve = result.get("curve") or []
    steps, seconds = reach(curve, task["threshold"])
    last = curve[-1] if curve else {}
    return {key: task[key] for key in ("method", "env", "seed", "threshold", "budget")} | {
        "steps_to_threshold": steps, "seconds_to_threshold": seconds,
        "final_eval": last.get("return_mean"), "final_eval_std": last.get("return_std"),
        "train_seconds": last.get("train_seconds"), "wall_seconds": result.get("wall_seconds"),
        "process_seconds": result.get("process_seconds"), "settings": result.get("settings"),
        "error": result.get("error"), "curve": curve}


def ratios(methods: dict[str, dict[str, Any]], algo: str = "dreamer") -> dict[str, dict[str, Any] | None]:
    """algo's median / the best baseline's (lowest median, reached on a majority), per measure."""
    out: dict[str, dict[str, Any] | None] = {}
    for measure in ("steps", "seconds"):
        ours = methods.get(algo, {}).get(measure, {}).get("median")
        rivals = {m: e[measure]["median"] for m, e in methods.items()
                  if m not in OURS and e[measure]["median"] is not None}
        if ours is None or not rivals:
            out[measure] = None
            continue
        best = min(rivals, key=rivals.get)
        out[measure] = {"baseline": best, "dreamer": ours, "best": rivals[best],
                        "ratio": ours / rivals[best] if rivals[best] > 0 else None}
    return out


def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The race's tables and ratios as markdown."""
    summary = summarize(records)
    lines = ["# Sample-efficiency race: dreamer vs tuned stable-baselines3", "",
             f"{meta['date']}, commit {meta['git']['commit'][:10]}{' (dirty)' if meta['git']['dirty'] else ''}, "
             f"{meta['machine']['cpu_model']}, {meta['machine']['cores']} cores, {meta['jobs']} jobs at once, "
             f"load average {meta['load_start'][0]:.2f} at start, {meta['load_end'][0]:.2f} at end.",
             f"Evaluation every {meta['eval_every']} env steps, {meta['eval_episodes']} deterministic episodes; "
             "training seconds exclude evaluation. Cells: median [min, max] over seeds; n.r. = not reached "
             "within the budget, counted as infinitely slow, so a median exists only when most seeds reached.", ""]
    if meta.get("set"):
        lines += ["Screening, not the race: dreamer's algos ran with "
                  + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in meta["set"].items()) + ".", ""]
    for env, methods in summary.items():
        lines += [f"## {env} (threshold {THRESHOLDS.get(env, '?')})", "",
                  "| method | budget | reached | env steps to threshold | training s to threshold "
                  "| final eval | training s (all) | errors |", "|---|---|---|---|---|---|---|---|"]
        for method, e in methods.items():
            total = "-" if e["train_seconds"] is None else f"{e['train_seconds']:.1f}"
            lines.append(f"| {method} | {e['budget']} | {e['steps']['reached']}/{e['steps']['n']} "
                         f"| {cell(e['steps'], '.0f')} | {cell(e['seconds'], '.1f')} "
                         f"| {cell(e['final'], '.1f')} | {total} | {e['errors']} |")
        lines.append("")
        for algo in (m for m in OURS if m in methods):
            for measure, label in (("steps", "env steps"), ("seconds", "training seconds")):
                r = ratios(methods, algo)[measure]
                if r is None or r["ratio"] is None:
                    lines.append(f"- {algo} / best baseline in {label}: n/a ({algo} or every baseline "
                                 "did not reach on most seeds)")
                else:
                    lines.append(f"- {algo} / best baseline in {label}: **{r['ratio']:.2f}** "
                                 f"({r['dreamer']:.4g} vs {r['baseline']} {r['best']:.4g}; below 1 favours {algo})")
        lines.append("")
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """2 x N grid: per env, eval return against env steps and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in records))
    fig, axes = plt.subplots(len(envs), 2, figsize=(12, 4.2 * len(envs)), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate((*OURS, "ppo", "dqn", "sac", "td3"))}
    for row, env in zip(axes, envs, strict=True):
        for col, (key, label) in enumerate((("step", "env steps"), ("train_seconds", "training seconds"))):
            ax = row[col]
            for method in dict.fromkeys(r["method"] for r in records if r["env"] == env):
                curves = [r["curve"] for r in records if r["env"] == env and r["method"] == method and r["curve"]]
                if not curves:
                    continue
                xs = [[p[key] for p in c] for c in curves]
                ys = [[p["return_mean"] for p in c] for c in curves]
                grid, mid, low, high = band(xs, ys)
                colour = colours.get(method)
                ax.plot(grid, mid, color=colour, drawstyle="steps-post", marker=".", markersize=3,
                        label=f"{method} (n={len(curves)})")
                ax.fill_between(grid, low, high, step="post", color=colour, alpha=0.2, linewidth=0)
            if env in THRESHOLDS:
                ax.axhline(THRESHOLDS[env], color="grey", linestyle="--", linewidth=1, label="threshold")
            if col == 1:
                ax.set_xscale("log")  # seconds span orders of magnitude across methods
            ax.set(title=f"{env}: return vs {label}", xlabel=label, ylabel="eval return (median, min-max)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info() -> dict[str, Any]:
    """CPU, core count and package versions (no hostname)."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                      if ln.startswith("model name")), "")
    versions = {}
    for package in ("torch", "stable-baselines3", "gymnasium", "numpy", "dreamercli"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu_model": model or platform.processor(), "processor": platform.processor(),
            "machine": platform.machine(), "system": platform.system(), "cores": os.cpu_count(),
            "python": platform.python_version(), "versions": versions}


def git_state() -> dict[str, Any]:
    """The repository's commit and whether tracked files differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


class Solved(Exception):
    """--stop-at-threshold: the run reached the threshold, so its remaining budget is not spent."""


def run_dreamer(task: dict[str, Any]) -> dict[str, Any]:
    """Train one of dreamer's algos through the real training loop; its curve comes from metrics.jsonl."""
    from dreamercli import config as cfg
    from dreamercli.runs import read_metrics
    from dreamercli.training import train

    overrides = {**task.get("set", {}), "env": task["env"], "algo": task["method"], "seed": task["seed"],
                 "steps": task["budget"], "eval_every": task["every"], "eval_episodes": task["episodes"],
                 "threads": 1}
    config = cfg.validate(cfg.with_overrides(cfg.from_preset(task["preset"]), overrides))
    run_dir = Path(task["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)  # a stale metrics.jsonl must not leak in

    def stop_when_solved(p: Any) -> None:
        if task.get("stop") and p.last_eval is not None and p.last_eval >= task["threshold"]:
            raise Solved()

    began = time.perf_counter()
    with contextlib.suppress(Solved):
        train(config, run_dir, on_progress=stop_when_solved)
    return {"curve": dreamer_curve(list(read_metrics(run_dir))), "wall_seconds": time.perf_counter() - began,
            "settings": {"preset": task["preset"], **overrides, "run_dir": str(run_dir)}}


def worker(task_json: str) -> None:
    """Child process: run one task and write its result JSON, an error included."""
    task = json.loads(task_json)
    try:
        import torch

        torch.set_num_threads(1)
        if task["method"] in OURS:
            result = run_dreamer(task)
        else:
            from baselines import run_sb3  # beside this file, on sys.path when run as a script

            result = run_sb3(task["method"], task["env"], task["seed"], task["budget"], task["every"],
                             task["episodes"], smoke=task["smoke"],
                             stop_at=task["threshold"] if task.get("stop") else None)
            result["settings"] = result.pop("hyperparams")
    except Exception as err:  # a failed run is recorded, not fatal
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    Path(task["result"]).write_text(json.dumps(result))


def launch(task: dict[str, Any]) -> dict[str, Any]:
    """Run a task in a fresh Python process with one thread; return its record."""
    result_path = Path(task["result"])
    result_path.unlink(missing_ok=True)
    # Set before the child imports torch: thread pools are sized when torch loads.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    began = time.perf_counter()
    with open(result_path.with_suffix(".log"), "w") as log:
        done = subprocess.run([sys.executable, str(HERE / "sample_efficiency.py"), "--worker", json.dumps(task)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    result = json.loads(result_path.read_text()) if result_path.is_file() else {
        "error": f"worker exited with status {done.returncode}; see {result_path.with_suffix('.log')}"}
    result["process_seconds"] = time.perf_counter() - began
    return make_record(task, result)


def run_local(tasks: list[dict[str, Any]], jobs: int, report: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Launch the tasks, at most `jobs` at once; report each record as it ends; records in task order."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(launch, task) for task in tasks]
        for future in as_completed(futures):
            report(future.result())
    return [f.result() for f in futures]


def status(r: dict[str, Any]) -> str:
    """One line on how a run ended, for the progress printed while a benchmark runs."""
    if r["error"]:
        outcome = f"error: {r['error']}"
    elif r["steps_to_threshold"] is not None:
        outcome = f"reached at {r['steps_to_threshold']} steps, {r['seconds_to_threshold']:.1f} train s"
    else:
        outcome = f"not reached (final {r['final_eval']:.1f})"
    return f"{r['env']} {r['method']} s{r['seed']}: {outcome}, {r['process_seconds'] or 0:.0f} s"


def provenance(script: str, argv: list[str], jobs: int) -> dict[str, Any]:
    """When, by which command, at which commit, on which machine and load a benchmark ran."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(["python", f"benchmarks/{script}", *argv]), "git": git_state(),
            "machine": machine_info(), "load_start": list(os.getloadavg()), "jobs": jobs}


def parse_budgets(items: list[str], smoke: bool) -> dict[str, dict[str, int]]:
    """Budgets per env and method, with METHOD=STEPS or ENV:METHOD=STEPS overrides applied."""
    budgets = {env: {m: SMOKE_BUDGETS[m] if smoke else b for m, b in per.items()} for env, per in BUDGETS.items()}
    for item in items:
        key, _, steps = item.partition("=")
        env, _, method = key.rpartition(":")
        hits = [(e, method) for e in budgets if (not env or e == env) and method in budgets[e]]
        if not hits or not steps.isdigit():
            raise SystemExit(f"--budget {item!r}: expected METHOD=STEPS or ENV:METHOD=STEPS")
        for e, m in hits:
            budgets[e][m] = int(steps)
    return budgets


def parse_settings(items: list[str]) -> dict[str, Any]:
    """FIELD=VALUE config overrides (VALUE as JSON, else a string), checked against the config."""
    from dreamercli import config as cfg

    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    try:
        cfg.validate(cfg.with_overrides(cfg.from_preset("default"), settings))
    except cfg.ConfigError as err:
        raise SystemExit(f"--set: {err}") from None
    return settings


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the race, write JSON, markdown and PNG; print the markdown."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 3 4 (0 with --smoke)")
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods",
                        choices=sorted({m for methods in METHODS.values() for m in methods}))
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one core each)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--budget", action="append", default=[], metavar="[ENV:]METHOD=STEPS")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: the pipeline in seconds")
    parser.add_argument("--stop-at-threshold", action="store_true",
                        help="end every run, the baselines' too, at its first eval at the threshold (its final "
                             "eval is then that one); steps and seconds to the threshold are the same")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="screening: config overrides for dreamer's algos (JSON values); the race proper uses none")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0

    from rich.console import Console

    console = Console(stderr=True)
    seeds = args.seeds if args.seeds is not None else ([0] if args.smoke else SEEDS)
    every, episodes = (SMOKE_EVAL_EVERY, SMOKE_EVAL_EPISODES) if args.smoke else (EVAL_EVERY, EVAL_EPISODES)
    budgets = parse_budgets(args.budget, args.smoke)
    settings = parse_settings(args.set)
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    tasks = []
    for seed in seeds:  # interleaved, so a noisy minute falls on every method alike
        for env in args.envs:
            for method in METHODS[env]:
                if args.methods is None or method in args.methods:
                    name = f"{env}-{method}-s{seed}"
                    tasks.append({"method": method, "env": env, "seed": seed, "threshold": THRESHOLDS[env],
                                  "budget": budgets[env][method], "every": every, "episodes": episodes,
                                  "smoke": args.smoke, "preset": "tiny" if args.smoke else "default",
                                  "stop": args.stop_at_threshold, "set": settings,
                                  "run_dir": str(out / "runs" / name), "result": str(out / "logs" / f"{name}.json")})
    meta = {**provenance("sample_efficiency.py", argv, args.jobs), "seeds": seeds, "budgets": budgets,
            "eval_every": every, "eval_episodes": episodes, "smoke": args.smoke, "thresholds": THRESHOLDS,
            "set": settings}
    console.print(f"{len(tasks)} runs, {args.jobs} at once -> {out}")
    count = iter(range(1, len(tasks) + 1))
    records = run_local(tasks, args.jobs, lambda r: console.print(
        f"[{next(count)}/{len(tasks)}] {status(r)}", highlight=False, markup=False))
    meta["load_end"] = list(os.getloadavg())
    (out / "sample_efficiency.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    text = markdown(records, meta)
    (out / "sample_efficiency.md").write_text(text + "\n")
    plot(records, out / "sample_efficiency.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
