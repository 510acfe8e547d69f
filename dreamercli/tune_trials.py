"""Trials of a study: one trial (ask, train with the pruner watching its evaluations, tell), and where
trials run: one after another in this process, in spawned worker processes that share the study's
storage, or as Ray tasks whose run folders come back to the driver.

The runners return (the signal that stopped the study or None, worker errors). A signal ends the
running trials at their next env step, each abandoned (failed without an "error", its settings
queued to run first on resume), and starts no more.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ConfigError
from .tune import Setup, load, normalised, score, suggest, trial_config


class Pruned(Exception):
    """Raised from on_progress to stop a trial the pruner gave up on, at env step `step`."""

    def __init__(self, step: int):
        super().__init__(f"pruned at env step {step}")
        self.step = step


def run_trial(study, setup: Setup, send: Callable[[tuple], None], where: Path | None = None,
              training: list[bool] | None = None) -> str:
    """Ask for one trial, train it (into `where`, else its folder), tell the result; its end state.

    send gets ("start", n, total), ("progress", n, step, last_eval) and ("end", n, state, score, step);
    training[0], when given, holds whether the training loop runs (from its first step on).
    """
    from optuna.trial import TrialState

    from .plotting import plot_finished
    from .training import train

    training = [False] if training is None else training

    trial = study.ask()
    n, run_dir = trial.number, setup.folder / f"trial-{trial.number}"
    for key, value in (("host", socket.gethostname()), ("pid", os.getpid()), ("run_dir", str(run_dir))):
        trial.set_user_attr(key, value)
    try:
        params = suggest(trial, setup.space)
        config = trial_config(setup.base, params)
    except ConfigError as err:
        return _failed(study, trial, err, send)
    eval_every, returns, seen = config.train.eval_every, [], [0]
    send(("start", n, config.train.steps))

    def on_progress(p) -> None:
        training[0] = True
        send(("progress", n, p.step, p.last_eval))
        # Each env step ends with one report in phase prefill or train; at these steps it follows an evaluation.
        evaluated = p.step == p.total or (eval_every and p.step % eval_every == 0)
        if p.phase not in ("prefill", "train") or p.last_eval is None or not evaluated or p.step <= seen[0]:
            return
        seen[0] = p.step
        returns.append(p.last_eval)
        if p.step < p.total:
            running = normalised(returns, setup.random_return, setup.target)
            trial.report(running, p.step)
            below = setup.prune_below is not None and p.step >= setup.prune_warmup and running < setup.prune_below
            if below or trial.should_prune():
                raise Pruned(p.step)

    try:
        try:
            _, summary = train(config, where or run_dir, on_progress=on_progress)
        finally:
            training[0] = False
    except Pruned as stop:
        trial.set_user_attr("env_steps", stop.step)
        study.tell(trial, state=TrialState.PRUNED)
        send(("end", n, "pruned", None, stop.step))
        return "pruned"
    except KeyboardInterrupt:  # ray.cancel in a Ray task
        _abandon(study, trial, params)
        raise
    except (ValueError, RuntimeError) as err:  # settings that cannot train (ConfigError, EnvError, Diverged)
        return _failed(study, trial, err, send)
    trial.set_user_attr("env_steps", summary["env_steps"])
    if summary.get("interrupted"):
        _abandon(study, trial, params)
        send(("end", n, "interrupted", None, summary["env_steps"]))
        return summary["interrupted"]
    if summary.get("stopped") and returns:  # ended at a return to stop at: it holds it for the rest of the budget
        full = -(-config.train.steps // eval_every) if eval_every else 1
        returns += [returns[-1]] * (full - len(returns))
    value = score(returns, summary.get("steps_to_threshold"), config.train.steps, setup.random_return,
                  setup.target, setup.by_threshold)
    with contextlib.suppress(ValueError):  # a figure is a nicety: the trial stands
        plot_finished(where or run_dir, summary)
    study.tell(trial, value)
    send(("end", n, "complete", value, summary["env_steps"]))
    return "complete"


def _failed(study, trial, err: Exception, send: Callable[[tuple], None]) -> str:
    from optuna.trial import TrialState

    trial.set_user_attr("error", f"{type(err).__name__}: {err}")
    study.tell(trial, state=TrialState.FAIL)
    send(("end", trial.number, "failed", None, None))
    return "failed"


def _abandon(study, trial, params: dict[str, Any]) -> None:
    """A trial stopped by a signal: failed without an error (so it does not count), its settings queued again."""
    from optuna.trial import TrialState

    study.tell(trial, state=TrialState.FAIL)
    study.enqueue_trial(params, user_attrs={"retry_of": trial.number})


SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def _throttled(send: Callable[[tuple], None], every: float = 0.25) -> Callable[[tuple], None]:
    """Pass every message on, but progress at most every `every` seconds (or when an evaluation is new)."""
    last = [0.0, None]

    def out(message: tuple) -> None:
        if message[0] == "progress":
            if time.monotonic() - last[0] < every and message[3] == last[1]:
                return
            last[:] = time.monotonic(), message[3]
        send(message)
    return out


def run_here(setup: Setup, left: int, show: Callable[[tuple], None]) -> tuple[str | None, list[str]]:
    """Run `left` trials one after another in this process; (the signal that stopped them, errors)."""
    study, stopped, training = load(setup), [], [False]

    def stop(signum: int, frame: Any) -> None:
        # Outside a training loop: no more trials after this one. Inside, the loop's own handler took a
        # first signal and put this one back: a second, which stops at once (the trial, left running,
        # is abandoned when the study resumes).
        if training[0]:
            raise KeyboardInterrupt
        stopped.append(SIGNALS[signal.Signals(signum)])

    previous = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        for _ in range(left):
            if stopped:
                break
            end = run_trial(study, setup, _throttled(show), training=training)
            if end in SIGNALS.values():
                return end, []
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return (stopped[0] if stopped else None), []


def _take(left) -> bool:
    with left.get_lock():
        if left.value <= 0:
            return False
        left.value -= 1
        return True


def _worker(setup: Setup, worker: int, left, messages) -> None:
    """A spawned worker: trials while tickets are left; a signal ends its trial and its loop."""
    os.setsid()  # a Ctrl-C at the terminal reaches the parent alone, which passes it on once
    stopped = []
    for s in SIGNALS:
        signal.signal(s, lambda signum, frame: stopped.append(signum))
    try:
        study = load(setup, worker)
        while not stopped and _take(left):
            if run_trial(study, setup, _throttled(messages.put)) in SIGNALS.values():
                break
        messages.put(("exit", worker))
    except BaseException as err:
        messages.put(("error", worker, f"{type(err).__name__}: {err}", traceback.format_exc()))


def run_workers(setup: Setup, left: int, workers: int, show: Callable[[tuple], None]) -> tuple[str | None, list[str]]:
    """Run `left` trials in `workers` spawned processes sharing the study; (the stopping signal, errors)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can hang
    messages, tickets = ctx.Queue(), ctx.Value("i", left)
    procs = {i: ctx.Process(target=_worker, args=(setup, i, tickets, messages), daemon=True)
             for i in range(min(workers, left))}
    stopped, errors = [], []

    def forward(signum: int, frame: Any) -> None:
        stopped.append(SIGNALS[signal.Signals(signum)])
        signal.signal(signum, previous[signum])  # a second one stops the parent at once
        with tickets.get_lock():
            tickets.value = 0
        for proc in procs.values():
            if proc.is_alive():
                os.kill(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        for proc in procs.values():
            proc.start()
        running = set(procs)
        while running:
            try:
                message = messages.get(timeout=0.5)
            except queue.Empty:
                for i in [i for i in running if procs[i].exitcode not in (None, 0)]:
                    errors.append(f"worker {i} exited with code {procs[i].exitcode}")
                    running.discard(i)
                continue
            if message[0] in ("exit", "error"):
                running.discard(message[1])
                errors += [message[2]] if message[0] == "error" else []
            else:
                show(message)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return (stopped[0] if stopped else None), errors


def _ray_trial(setup: Setup, worker: int) -> tuple[dict[str, bytes], tuple]:
    """A Ray task: one trial into a temp folder; its files {relative path: bytes} and its end message."""
    ends = []
    with tempfile.TemporaryDirectory(prefix="dreamer-tune-") as tmp:
        where = Path(tmp) / "run"
        run_trial(load(setup, worker), setup, lambda m: ends.append(m) if m[0] == "end" else None, where)
        files = {str(p.relative_to(where)): p.read_bytes() for p in sorted(where.rglob("*")) if p.is_file()}
    return files, ends[-1]


def run_ray(setup: Setup, left: int, address: str, show: Callable[[tuple], None]) -> tuple[str | None, list[str]]:
    """Run `left` trials as Ray tasks (one CPU each); the driver writes each trial's run folder."""
    from .multiseed import LOCAL_RAY, import_ray, write_run_files

    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == LOCAL_RAY else address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1)(_ray_trial)
    stopped, errors, waiting = [], [], []

    def cancel(signum: int, frame: Any) -> None:  # a running task abandons its trial (run_trial)
        stopped.append(SIGNALS[signal.Signals(signum)])
        signal.signal(signum, previous[signum])
        for ref in waiting:
            ray.cancel(ref)

    previous = {s: signal.signal(s, cancel) for s in SIGNALS}
    try:
        waiting += [task.remote(setup, i) for i in range(left)]
        while waiting:
            done, waiting[:] = ray.wait(waiting, num_returns=1, timeout=0.5)
            for ref in done:
                try:
                    files, end = ray.get(ref)
                except Exception as err:
                    if not stopped:
                        cause = getattr(err, "cause", None) or err  # RayTaskError wraps the task's error
                        errors.append(f"{type(cause).__name__}: {cause}")
                    continue
                if files:
                    write_run_files(setup.folder / f"trial-{end[1]}", files)
                show(end)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if started:
            ray.shutdown()
    return (stopped[0] if stopped else None), errors


def run(setup: Setup, left: int, workers: int, ray: str | None,
        show: Callable[[tuple], None]) -> tuple[str | None, list[str]]:
    """Run the trials left here, in worker processes or as Ray tasks; (the signal that stopped them, errors)."""
    if left == 0:
        return None, []
    if ray is not None:
        return run_ray(setup, left, ray, show)
    if workers > 1:
        return run_workers(setup, left, workers, show)
    return run_here(setup, left, show)
