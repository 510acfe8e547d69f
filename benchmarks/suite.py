"""The development suite: dreamer's defaults on tasks nobody tuned them on, against tuned SB3.

    python benchmarks/suite.py                          # 8 tasks x 3 seeds, dreamer and its baseline, 2 jobs
    python benchmarks/suite.py --tasks Acrobot-v1 --seeds 0 --jobs 1
    python benchmarks/suite.py --ray --jobs 16          # runs as Ray tasks (ray.init(address="auto") if a
                                                        # cluster runs, else a local one of --jobs CPUs)
    python benchmarks/suite.py --smoke --out /tmp/suite # the whole pipeline in a minute
    python benchmarks/suite.py --algos model-free hybrid --no-baselines   # screen other --algo values
    python benchmarks/suite.py --group pomdp            # the partially observed tasks and the memory task
    python benchmarks/suite.py --group scaled           # the reward-scaled tasks (--group all: every group)

For every task and seed, in one invocation: dreamer with default settings (`dreamer train --env
TASK`: the default --algo, nothing keyed on the task) and the task's tuned stable-baselines3
baselines (one in the full group), each in its own process with one torch thread, interleaved by
seed and task. Every run is evaluated alike: EVAL_EPISODES deterministic episodes on a separate
env every `every` env steps (a twentieth of dreamer's budget, at least 500) and at the end;
training seconds leave evaluation out. `--algos` runs other --algo values too (each with
otherwise default settings), one scoreboard row per task, algo and baseline, to choose the
default by the suite. Writes suite.json (every run's curve), suite.md (the scoreboard, also
printed) and suite.png (every curve, normalised per task) to --out. Needs the bench extra:
pip install -e '.[bench]' (stable-baselines3, sb3-contrib and gymnasium's MuJoCo tasks).

The tasks (TASKS below, the group `full` and the default) differ on purpose: discrete and
continuous actions; early termination (CartPole, the two MuJoCo pendulums); sparse or deceptive
rewards (both MountainCars, whose reward for moving at all is negative until the flag is found,
and BeaconReach); 2 to 20 observation dimensions; two MuJoCo tasks; one module:Class env of our
own (suite_envs.py).
Thresholds are each env's registered reward_threshold except where a note says otherwise.

Two more groups, each task against each of its baselines (one scoreboard row per baseline):
`pomdp` (POMDP_TASKS), CartPole-v1, Pendulum-v1 and MountainCarContinuous-v0 with their velocities
removed and a memory task (CueRecall), 10,000 env steps each, against a memoryless SB3 learner
(the base task's zoo settings) and sb3-contrib's RecurrentPPO (the zoo's ppo_lstm); `scaled`
(SCALED_TASKS), Pendulum-v1 with rewards 100 times larger and CartPole-v1 with rewards 100 times
smaller, with their base task's budgets and thresholds scaled alike. The baselines' budgets are
capped (at most 50,000 env steps) to keep an invocation short; where that is below the zoo's
n_timesteps, the scoreboard says so beside the baseline. The tasks are suite_envs.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the race's machinery and suite_envs, beside this file
import sample_efficiency as race  # noqa: E402
from seed_stats import band, cell, summarize  # noqa: E402

# Baseline settings: baselines.HYPERPARAMS, each entry's source named there; baselines: {method: env steps}.
TASKS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"threshold": 475.0, "budget": 10_000, "baselines": {"dqn": 50_000},
                    "kind": "discrete, 4-d obs, early termination"},
    "Acrobot-v1": {"threshold": -100.0, "budget": 10_000, "baselines": {"dqn": 50_000},
                   "kind": "discrete, 6-d obs, -1 per step until the goal"},
    "MountainCar-v0": {"threshold": -110.0, "budget": 30_000, "baselines": {"dqn": 120_000},
                       "kind": "discrete, 2-d obs, sparse: -1 per step until the flag"},
    "Pendulum-v1": {"threshold": -200.0, "budget": 5_000, "baselines": {"sac": 10_000},
                    "kind": "continuous, 3-d obs, dense", "note": "no registered threshold; the race's"},
    "MountainCarContinuous-v0": {"threshold": 90.0, "budget": 20_000, "baselines": {"sac": 50_000},
                                 "kind": "continuous, 2-d obs, deceptive: moving costs until the flag pays 100"},
    "InvertedPendulum-v5": {"threshold": 950.0, "budget": 10_000, "baselines": {"sac": 20_000},
                            "kind": "MuJoCo, continuous, 4-d obs, early termination"},
    "InvertedDoublePendulum-v5": {"threshold": 9100.0, "budget": 20_000, "baselines": {"sac": 50_000},
                                  "kind": "MuJoCo, continuous, 9-d obs, early termination"},
    "suite_envs:BeaconReach": {"threshold": 120.0, "budget": 10_000, "baselines": {"sac": 20_000},
                               "kind": "module:Class, continuous, 20-d obs, sparse",
                               "note": "ours; threshold from a hand-written controller (suite_envs.py)"},
}
POMDP_TASKS: dict[str, dict[str, Any]] = {
    "suite_envs:CartPoleNoVel": {
        "threshold": 475.0, "budget": 10_000, "baselines": {"dqn": 50_000, "ppo_lstm": 50_000},
        "kind": "CartPole-v1 without velocities (the zoo's CartPoleNoVel-v1), discrete, 2-d obs"},
    "suite_envs:PendulumNoVel": {
        "threshold": -200.0, "budget": 10_000, "baselines": {"sac": 20_000, "ppo_lstm": 50_000},
        "kind": "Pendulum-v1 without velocity (the zoo's PendulumNoVel-v1), continuous, 2-d obs",
        "note": "no registered threshold; Pendulum-v1's"},
    "suite_envs:MountainCarContinuousNoVel": {
        "threshold": 90.0, "budget": 10_000, "baselines": {"sac": 50_000, "ppo_lstm": 50_000},
        "kind": "MountainCarContinuous-v0 without velocity (the zoo's ...NoVel-v0), continuous, 1-d obs"},
    "suite_envs:CueRecall": {
        "threshold": 9.0, "budget": 10_000, "baselines": {"ppo": 50_000, "ppo_lstm": 50_000},
        "kind": "memory: a cue seen at the start decides which answer pays 10 steps later, discrete, 3-d obs",
        "note": "ours: 10 with memory, 5 expected without (suite_envs.py)"},
}
SCALED_TASKS: dict[str, dict[str, Any]] = {
    "suite_envs:PendulumX100": {"threshold": -20_000.0, "budget": 5_000, "baselines": {"sac": 10_000},
                                "kind": "Pendulum-v1, rewards x100", "note": "Pendulum-v1's -200, times 100"},
    "suite_envs:CartPoleX001": {"threshold": 4.75, "budget": 10_000, "baselines": {"dqn": 50_000},
                                "kind": "CartPole-v1, rewards x0.01"},
}
GROUPS = {"full": TASKS, "pomdp": POMDP_TASKS, "scaled": SCALED_TASKS}
ALL_TASKS = {name: spec for group in GROUPS.values() for name, spec in group.items()}
SEEDS = [0, 1, 2]
EVAL_EPISODES = 10
SMOKE = {"budget": 300, "every": 150, "episodes": 2, "baseline_budget": 300}


def eval_every(budget: int) -> int:
    """A twentieth of dreamer's budget, at least 500 env steps, in whole hundreds."""
    return max(500, budget // 20 // 100 * 100)


def default_algo() -> str:
    """`dreamer train`'s default --algo (the config's)."""
    from dreamercli.config import Config

    return Config().algo


def plan(names: list[str], seeds: list[int], out: Path, smoke: bool, stop: bool,
         algos: list[str], baselines: bool = True) -> list[dict[str, Any]]:
    """The runs, interleaved by seed, then task, then method, as the race's worker reads them.

    algos: our --algo values to run; baselines: the SB3 runs too."""
    tasks = []
    for seed in seeds:
        for name in names:
            spec = ALL_TASKS[name]
            every = SMOKE["every"] if smoke else eval_every(spec["budget"])
            methods = [(algo, spec["budget"]) for algo in algos]
            if baselines:
                methods += list(spec["baselines"].items())
            for method, budget in methods:
                ours = method in algos
                if smoke:
                    budget = SMOKE["budget"] if ours else SMOKE["baseline_budget"]
                run = f"{name.replace(':', '.')}-{method}-s{seed}"
                tasks.append({"method": method, "env": name, "seed": seed, "threshold": spec["threshold"],
                              "budget": budget, "every": every,
                              "episodes": SMOKE["episodes"] if smoke else EVAL_EPISODES, "smoke": smoke,
                              "preset": "tiny" if smoke else "default", "stop": stop,
                              "run_dir": str(out / "runs" / run), "result": str(out / "logs" / f"{run}.json")})
    return tasks


def finished(task: dict[str, Any]) -> dict[str, Any] | None:
    """The record of a run an earlier invocation finished without error (its result file), else None."""
    path = Path(task["result"])
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if result.get("error") or not result.get("curve"):
        return None
    return race.make_record(task, result)


def run_all(tasks: list[dict[str, Any]], jobs: int, use_ray: bool, report) -> list[dict[str, Any]]:
    """Each task through race.launch (its own process, one thread), locally or as Ray tasks."""
    if not tasks:
        return []
    if not use_ray:
        return race.run_local(tasks, jobs, report)
    import ray

    if not ray.is_initialized():
        # Ray's workers import race.launch by module name: they need this folder on their path.
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
        runtime_env = {"env_vars": {"PYTHONPATH": path}}
        try:
            ray.init(address="auto", include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
        except ConnectionError:  # no cluster running: a local one
            ray.init(num_cpus=max(1, jobs), include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    # One CPU each: a worker process with one torch thread. The tasks name files under --out,
    # so the nodes must share it (one machine, or a shared filesystem).
    remote = ray.remote(num_cpus=1)(race.launch)
    pending = {remote.remote(task): i for i, task in enumerate(tasks)}
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(done[0])
        results[i] = ray.get(done[0])
        report(results[i])
    return results


def scoreboard(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Markdown: one row per task, algo of ours and baseline of the task, medians over seeds and ratios."""
    summary = summarize(records)
    algos = [a for a in race.OURS if any(r["method"] == a for r in records)]
    lines = ["# Development suite: dreamer's defaults against tuned stable-baselines3", "",
             f"{meta['date']}, commit {meta['git']['commit'][:10]}{' (dirty)' if meta['git']['dirty'] else ''}, "
             f"{meta['machine']['cpu_model']}, {meta['machine']['cores']} cores, {meta['jobs']} runs at once"
             f"{' (Ray)' if meta['ray'] else ''}; seeds {', '.join(map(str, meta['seeds']))}.",
             "Cells: median [min, max] over seeds; n.r. = not reached within the budget, counted as infinitely "
             "slow. Ratios: dreamer's median over the baseline's (below 1: dreamer needs fewer). algo: dreamer's "
             "--algo (the default unless the invocation named others). A baseline's budget below the zoo's "
             "n_timesteps (capped, to keep the invocation short) is given beside it.", "",
             "| task | kind | threshold | algo | dreamer reached | dreamer env steps | baseline | baseline reached "
             "| baseline env steps | steps ratio | dreamer s | baseline s | seconds ratio "
             "| final eval: dreamer / baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    none = {"steps": {"n": 0, "reached": 0, "median": None}, "seconds": {"n": 0, "median": None},
            "final": {"median": None}}  # a baseline this invocation did not run (--no-baselines)
    for name, spec in ALL_TASKS.items():
        for algo in algos:
            methods = summary.get(name, {})
            if algo not in methods:
                continue
            for baseline in spec["baselines"]:
                lines.append(_row(name, spec, algo, baseline, methods[algo], methods.get(baseline, none)))
    notes = [f"- {name}: {spec['note']}" for name, spec in ALL_TASKS.items() if spec.get("note") and name in summary]
    missing = [f"- {m} on {e}: {why}" for (m, e), why in race_baselines().NOT_IN_ZOO.items() if e in summary]
    return "\n".join([*lines, "", "Thresholds:", *notes, "", "Baselines the zoo does not tune:", *missing])


def _row(name: str, spec: dict[str, Any], algo: str, baseline: str, ours: dict[str, Any],
         base: dict[str, Any]) -> str:
    """One scoreboard row: one algo of ours on one task, beside one of the task's baselines."""
    settings = race_baselines()
    zoo = "not in zoo" if (baseline, name) in settings.NOT_IN_ZOO else "zoo"
    budget = base.get("budget", spec["baselines"][baseline])
    tuned = settings.HYPERPARAMS[(baseline, name)]["n_timesteps"]
    if budget < tuned:  # the budget the runs had (smoke's included), below what the zoo's schedules are for
        zoo += f", {budget:,} of its {int(tuned):,} steps"
    return (f"| {name} | {spec['kind']} | {spec['threshold']:g} | {algo} | {ours['steps']['reached']}/"
            f"{ours['steps']['n']} | {cell(ours['steps'], ',.0f')} | {baseline} ({zoo}) "
            f"| {base['steps']['reached']}/{base['steps']['n']} | {cell(base['steps'], ',.0f')} "
            f"| {_ratio(ours, base, 'steps')} | {cell(ours['seconds'], '.1f')} "
            f"| {cell(base['seconds'], '.1f')} | {_ratio(ours, base, 'seconds')} "
            f"| {_final(ours)} / {_final(base)} |")


def _ratio(ours: dict[str, Any], base: dict[str, Any], measure: str) -> str:
    a, b = ours[measure]["median"], base[measure]["median"]
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def _final(entry: dict[str, Any]) -> str:
    return "-" if entry["final"]["median"] is None else f"{entry['final']['median']:.1f}"


def race_baselines():
    """benchmarks/baselines.py (imported late: it needs gymnasium only, SB3 only when a run starts)."""
    import baselines

    return baselines


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """One panel per task: eval return against env steps, normalised so 0 is the task's lowest
    eval and 1 its threshold; a band over seeds per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ALL_TASKS if any(r["env"] == n and r["curve"] for r in records)]
    cols = min(4, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        runs = [r for r in records if r["env"] == name and r["curve"]]
        threshold = ALL_TASKS[name]["threshold"]
        low = min(p["return_mean"] for r in runs for p in r["curve"])
        scale = threshold - low if threshold > low else 1.0
        for i, method in enumerate(dict.fromkeys(r["method"] for r in runs)):
            curves = [r["curve"] for r in runs if r["method"] == method]
            xs = [[p["step"] for p in c] for c in curves]
            ys = [[(p["return_mean"] - low) / scale for p in c] for c in curves]
            grid, mid, lo, hi = band(xs, ys)
            ax.plot(grid, mid, color=f"C{i}", drawstyle="steps-post", label=f"{method} (n={len(curves)})")
            ax.fill_between(grid, lo, hi, step="post", color=f"C{i}", alpha=0.2, linewidth=0)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set(title=name, xlabel="env steps", ylabel="return, 0 = lowest, 1 = threshold")
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the suite, write suite.json, suite.md and suite.png; print the scoreboard."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", choices=[*GROUPS, "all"], default="full",
                        help="the tasks to run: full (the 8 fully observed ones), pomdp (partially observed and "
                             "memory), scaled (rewards x100 and x0.01) or all")
    parser.add_argument("--tasks", nargs="+", default=None, choices=list(ALL_TASKS),
                        help="these tasks instead of --group's")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (0 with --smoke)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (one core each)")
    parser.add_argument("--ray", action="store_true", help="run each run as a Ray task")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "suite")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: the pipeline end to end")
    parser.add_argument("--stop-at-threshold", action="store_true",
                        help="end every run, the baselines' too, at its first eval at the threshold (its final "
                             "eval is then that one); steps and seconds to the threshold are the same")
    parser.add_argument("--algos", nargs="+", choices=race.OURS, default=None,
                        help="dreamer's --algo values to run, each otherwise with default settings "
                             "(default: the default --algo only)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="run ours only (screening; the scoreboard's baseline cells stay empty unless --reuse "
                             "finds them)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs an interrupted invocation with the same --out finished; run the rest")
    args = parser.parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True)
    seeds = args.seeds if args.seeds is not None else ([0] if args.smoke else SEEDS)
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    algos = args.algos or [default_algo()]
    names = args.tasks or list(ALL_TASKS if args.group == "all" else GROUPS[args.group])
    tasks = plan(names, seeds, out, args.smoke, args.stop_at_threshold, algos, baselines=not args.no_baselines)
    if args.no_baselines and args.reuse:  # a baseline an earlier invocation ran still goes on the scoreboard
        tasks += [t for t in plan(names, seeds, out, args.smoke, args.stop_at_threshold, algos)
                  if t["method"] not in algos and finished(t) is not None]
    meta = {**race.provenance("suite.py", argv, args.jobs), "ray": args.ray, "seeds": seeds, "algos": algos,
            "smoke": args.smoke, "group": args.group, "tasks": {n: ALL_TASKS[n] for n in names}}
    kept = {i: record for i, task in enumerate(tasks) if args.reuse and (record := finished(task)) is not None}
    console.print(f"{len(tasks)} runs, {args.jobs} at once{' on Ray' if args.ray else ''} -> {out}"
                  + (f"; {len(kept)} finished earlier, reused" if kept else ""))
    count = iter(range(len(kept) + 1, len(tasks) + 1))

    def report(r: dict[str, Any]) -> None:
        console.print(f"[{next(count)}/{len(tasks)}] {race.status(r)}", highlight=False, markup=False)

    fresh = iter(run_all([t for i, t in enumerate(tasks) if i not in kept], args.jobs, args.ray, report))
    records = [kept[i] if i in kept else next(fresh) for i in range(len(tasks))]
    meta["reused"] = len(kept)
    meta["load_end"] = list(os.getloadavg())
    (out / "suite.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    text = scoreboard(records, meta)
    (out / "suite.md").write_text(text + "\n")
    plot(records, out / "suite.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
