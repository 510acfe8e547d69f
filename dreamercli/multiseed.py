"""Several seeds in one command: local 'spawn' worker processes, or Ray tasks.

Both report each seed's progress as messages to a callback (the CLI's progress rows):
("start", seed), ("progress", seed, step, last_eval, sps), ("done", seed, summary) and
("error", seed, message, traceback). A seed that finishes draws its curves.png where it trains.

With Ray, each task trains into a temporary folder on whichever node runs it and returns the
folder's files as {relative path: bytes}; the driver writes them into a hidden sibling folder
under --runs-dir and renames it into place, so a run folder appears whole or not at all and no
shared file system is needed.
"""

from __future__ import annotations

import os
import queue as queue_module
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import runs
from .config import Config, ConfigError, with_overrides

RAY_HINT = "--ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]')"
LOCAL_RAY = "local"  # what a bare --ray means: RAY_ADDRESS if set, else a new local instance
Show = Callable[[tuple], None]


def parse_seeds(text: str) -> list[int]:
    """Seeds from "0 1 2", "0,1,2", "0-9" or a mix ("0-2,7"); ranges include both ends."""
    seeds: list[int] = []
    for token in text.replace(",", " ").split():
        first, sep, last = token.partition("-")
        try:
            seeds += list(range(int(first), int(last) + 1)) if sep else [int(token)]
        except ValueError:
            raise ConfigError(f"--seeds: cannot read '{token}' (use e.g. '0 1 2', '0,1,2' or '0-9')") from None
        if sep and int(last) < int(first):
            raise ConfigError(f"--seeds: empty range '{token}'")
    if not seeds:
        raise ConfigError("--seeds: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is repeated in '{text}'")
    return seeds


def seeds_of(seeds: str | None, workers: int | None, ray: str | None, flags: dict[str, Any]) -> list[int]:
    """The seeds of --seeds, once --seed, --workers and --ray are known to go with them (and Ray imports)."""
    if seeds is None:
        raise ConfigError("--workers and --ray need --seeds")
    if "seed" in flags:
        raise ConfigError("give either --seed or --seeds, not both")
    if workers is not None and workers <= 0:
        raise ConfigError(f"--workers must be > 0, got {workers}")
    seed_list = parse_seeds(seeds)
    if ray is not None:
        import_ray()
    return seed_list


def plan(config: Config, seeds: list[int], runs_dir: Path, name: str | None,
         force: bool) -> list[tuple[Config, Path]]:
    """(config, run folder) per seed; --name gets '-s{seed}' appended; checks, creates nothing."""
    stamp = time.strftime("%Y%m%d-%H%M%S")  # one timestamp for all seeds of the command
    jobs = []
    for seed in seeds:
        cfg = with_overrides(config, {"seed": seed})
        # default_name ends in its own timestamp (15 characters): give every seed the same one
        run_name = f"{name}-s{seed}" if name else runs.default_name(cfg)[:-15] + stamp
        jobs.append((cfg, runs.prepare_run_dir(runs_dir, run_name, cfg, force)))
    return jobs


def _progress_message(seed: int, p) -> tuple:
    return ("progress", seed, p.step, p.last_eval, p.sps)


def _throttled(send: Callable[[tuple], None], seed: int, every: float = 0.25) -> Callable:
    """An on_progress callback that sends at most every `every` seconds, and the last step."""
    last = [0.0]

    def on_progress(p) -> None:
        now = time.monotonic()
        if now - last[0] >= every or p.step == p.total:
            last[0] = now
            send(_progress_message(seed, p))
    return on_progress


def _local_worker(config: Config, run_dir: str, messages) -> None:
    """Entry point of a spawned worker: train one seed, report progress, then done or error."""
    seed = config.train.seed
    # A session of its own: a Ctrl-C at the terminal reaches the parent alone, which passes it on
    # once to each worker (a worker that got it twice would stop at once, without a checkpoint).
    os.setsid()
    try:
        from .plotting import plot_finished
        from .training import train

        _, summary = train(config, Path(run_dir), on_progress=_throttled(messages.put, seed))
        plot_finished(Path(run_dir), summary)
        messages.put(("done", seed, summary))
    except BaseException as err:  # report everything, including KeyboardInterrupt, to the parent
        messages.put(("error", seed, f"{type(err).__name__}: {err}", traceback.format_exc()))


def _ignore(message: tuple) -> None:
    """The callback of a caller that shows no progress."""


def run_local(jobs: list[tuple[Config, Path]], workers: int, show: Show = _ignore) -> dict[int, dict[str, Any]]:
    """Train the jobs in at most `workers` spawned processes; {seed: {run_dir, summary | error}}.

    SIGINT or SIGTERM: passed on to the running workers, which checkpoint and report an
    interrupted summary; seeds not yet started are left out.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
    messages = ctx.Queue()
    pending = list(jobs)
    running: dict[int, Any] = {}
    results: dict[int, dict[str, Any]] = {}

    def forward(signum: int, frame: Any) -> None:
        pending.clear()
        signal.signal(signum, previous[signum])  # a second one stops the parent at once
        for proc in running.values():
            if proc.is_alive():
                os.kill(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    dirs = {cfg.train.seed: run_dir for cfg, run_dir in jobs}
    try:
        while pending or running:
            while pending and len(running) < workers:
                cfg, run_dir = pending.pop(0)
                proc = ctx.Process(target=_local_worker, args=(cfg, str(run_dir), messages), daemon=True)
                proc.start()
                running[cfg.train.seed] = proc
                show(("start", cfg.train.seed))
            try:
                message = messages.get(timeout=0.5)
            except queue_module.Empty:
                for seed, proc in list(running.items()):  # a worker killed without a word
                    if not proc.is_alive() and seed not in results:
                        _record(("error", seed, f"worker exited with code {proc.exitcode}", ""), results, dirs, show)
                        running.pop(seed).join()
                continue
            _record(message, results, dirs, show)
            if message[0] in ("done", "error"):
                running.pop(message[1]).join()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return results


def _record(message: tuple, results: dict, dirs: dict, show: Show) -> None:
    """Apply one worker message to the results, and pass it on to show."""
    kind, seed = message[0], message[1]
    if kind == "done":
        results[seed] = {"run_dir": dirs[seed], "summary": message[2]}
    elif kind == "error":
        results[seed] = {"run_dir": dirs[seed], "error": message[2], "traceback": message[3]}
    show(message)


def train_to_files(config: Config, board=None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Train one seed into a temp folder; return its files as {relative path: bytes} and the summary."""
    from .training import train

    seed = config.train.seed
    send = (lambda message: board.report.remote(*message)) if board is not None else (lambda message: None)
    with tempfile.TemporaryDirectory(prefix="dreamer-ray-") as tmp:
        run_dir = Path(tmp) / "run"
        try:
            _, summary = train(config, run_dir, on_progress=_throttled(send, seed, every=1.0))
        except KeyboardInterrupt:
            # ray.cancel raises this anywhere in a step, so the step's state is not consistent:
            # the folder goes back as its last checkpoint left it, which --resume continues.
            if not (run_dir / runs.CHECKPOINT_FILE).is_file():
                raise
            summary = {"env": config.env, "algo": config.algo, "seed": seed, "interrupted": "SIGINT",
                       "env_steps": _checkpoint_step(run_dir)}
            runs.write_json(run_dir / runs.SUMMARY_FILE, summary)
        from .plotting import plot_finished

        plot_finished(run_dir, summary)
        files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    return files, summary


def _checkpoint_step(run_dir: Path) -> int:
    """The env step of a run folder's last checkpoint."""
    import json

    return int(json.loads(runs.load_tensors(run_dir / runs.CHECKPOINT_FILE)[1]["state"])["step"])


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a run folder from {relative path: bytes}: filled in a hidden sibling, then renamed into place."""
    def fill(folder: Path) -> None:
        for rel, data in files.items():
            target = (folder / rel).resolve()
            if folder.resolve() not in target.parents:
                raise runs.RunError(f"refusing to write {rel!r} outside the run folder")
            runs.atomic_write(target, data)

    runs.create_run_dir(Path(run_dir), fill)


def import_ray():
    """The ray module, or ConfigError with the install hint."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    return ray


def run_ray(jobs: list[tuple[Config, Path]], address: str = LOCAL_RAY,
            show: Show = _ignore) -> dict[int, dict[str, Any]]:
    """Train the jobs as Ray tasks (one CPU each); the driver writes every run folder."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == LOCAL_RAY else address, include_dashboard=False,
                 log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Board:
        """Latest progress message per seed, polled by the driver."""

        def __init__(self):
            self.latest: dict[int, tuple] = {}

        def report(self, *message) -> None:
            self.latest[message[1]] = message

        def snapshot(self) -> dict[int, tuple]:
            return self.latest

    task = ray.remote(num_cpus=1)(train_to_files)
    results: dict[int, dict[str, Any]] = {}
    waiting: list = []

    def cancel(signum: int, frame: Any) -> None:
        # Each task stops with the folder its last checkpoint left, which --resume continues.
        signal.signal(signum, previous[signum])
        for ref in waiting:
            ray.cancel(ref)

    previous = {s: signal.signal(s, cancel) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        board = Board.remote()
        refs = {task.remote(cfg, board): (cfg.train.seed, run_dir) for cfg, run_dir in jobs}
        dirs = {seed: run_dir for seed, run_dir in refs.values()}
        waiting[:] = list(refs)
        while waiting:
            done, waiting[:] = ray.wait(waiting, num_returns=1, timeout=0.5)
            for message in ray.get(board.snapshot.remote()).values():
                if message[1] not in results:
                    _record(message, results, dirs, show)
            for ref in done:
                seed, run_dir = refs[ref]
                try:
                    files, summary = ray.get(ref)
                    write_run_files(run_dir, files)
                    _record(("done", seed, summary), results, dirs, show)
                except Exception as err:
                    cause = getattr(err, "cause", None) or err  # RayTaskError wraps the worker's error
                    _record(("error", seed, f"{type(cause).__name__}: {cause}", traceback.format_exc()),
                            results, dirs, show)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if started:
            ray.shutdown()
    return results


def run(jobs: list[tuple[Config, Path]], workers: int | None, ray: str | None,
        show: Show = _ignore) -> dict[int, dict[str, Any]]:
    """Train the jobs as Ray tasks when ray names a cluster (or 'local'), else in local workers."""
    if ray is not None:
        return run_ray(jobs, ray, show)
    return run_local(jobs, workers or default_workers(len(jobs)), show)


def exit_code(results: dict[int, dict[str, Any]]) -> int:
    """0 when every seed finished; 130 / 143 when one was interrupted; else 1 when one failed."""
    from .training import EXIT_CODES

    stopped = [results[s]["summary"]["interrupted"] for s in sorted(results)
               if results[s].get("summary", {}).get("interrupted")]
    if stopped:
        return EXIT_CODES[stopped[-1]]
    return 1 if any("error" in r for r in results.values()) else 0


def default_workers(n_seeds: int) -> int:
    """One worker per core, capped by the number of seeds."""
    return max(1, min(os.cpu_count() or 1, n_seeds))

