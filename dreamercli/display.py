"""Everything the command line shows with rich: progress bars, tables, notes. No core module prints.

Tables of results go to stdout; progress, notes and warnings to stderr, so that a script can read
a command's results (and the run folders it prints) from stdout alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.status import Status
from rich.table import Column, Table

err = Console(stderr=True)


def out() -> Console:
    """A console on today's stdout (made per call, so that a test runner's captured stdout is used)."""
    return Console()


def note(message: str) -> None:
    """A yellow line on stderr, never wrapped."""
    err.print(f"[yellow]{message}", soft_wrap=True, highlight=False)


def status(text: str) -> Status:
    """A spinner with text on stderr while a block runs."""
    return err.status(text)


# -- one training run ------------------------------------------------------------------------------


def clock(seconds: float | None) -> str:
    """H:MM:SS as rich's time columns write it, or '-' while unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def phase_text(p: Any) -> str:
    """prefill, pretrain i/N or train, from a progress.Progress."""
    return f"pretrain {p.pretrained}/{p.pretrain}" if p.phase == "pretrain" else p.phase


# A row's fields in the order shown, and the order they are kept in when the terminal is narrow.
ROW_ORDER = ("env", "phase", "bar", "count", "episodes", "eval", "losses", "sps", "eta")
ROW_PRIORITY = ("phase", "count", "eta", "eval", "sps", "bar", "episodes", "losses", "env")
LOSS_LABELS = {"wm/loss": "wm", "ac/actor_loss": "actor", "sac/q_loss": "Q"}
NUMBER = 8  # characters of a loss: "-1.2e+04"
MIN_BAR, MAX_BAR = 8, 40
LOSS_CELL = len("actor") + 1 + NUMBER  # the widest 'name value' cell
MIN_LOSSES = LOSS_CELL


def number(value: float) -> str:
    """A loss in at most NUMBER characters: four significant digits, or two in exponent form."""
    text = f"{value:.4g}"
    if "e" in text and 1 <= abs(value) < 1e6:  # 41234 rather than 4.123e+04
        text = f"{value:.0f}"
    return text if len(text) <= NUMBER else f"{value:.1e}"


def row_widths(width: int, env: str, steps: int, pretrain: int) -> dict[str, int]:
    """The width of each field the progress row shows, fixed for the run so that the row never jumps or
    cuts a field: the most useful fields that fit a terminal `width` columns wide, one space apart."""
    digits = len(str(steps))
    sizes = {"phase": max(len("checkpoint"), len(f"pretrain {pretrain}/{pretrain}")), "count": 2 * digits + 1,
             "eta": len("00:00:00 left"), "eval": len("eval -1234.5"), "sps": len("123456 steps/s"),
             "bar": MIN_BAR, "episodes": len("ep ") + max(3, digits - 1), "losses": MIN_LOSSES, "env": len(env)}
    shown: dict[str, int] = {}
    for name in ROW_PRIORITY:
        used = sum(shown.values()) + len(shown)  # a space before each field but the first
        if used + sizes[name] <= width:
            shown[name] = sizes[name]
    room = width - sum(shown.values()) - (len(shown) - 1)
    if "losses" in shown:  # room for whole cells, up to three losses; then the bar takes what is left
        cells = min(3, (shown["losses"] + room + 1) // (LOSS_CELL + 1))
        room -= cells * (LOSS_CELL + 1) - 1 - shown["losses"]
        shown["losses"] = cells * (LOSS_CELL + 1) - 1
    if "bar" in shown:
        shown["bar"] = min(MAX_BAR, shown["bar"] + room)
    return {name: shown[name] for name in ROW_ORDER if name in shown}


def losses_text(losses: dict[str, float], width: int) -> str:
    """As many of the losses as fit in width, each as 'name value' in a fixed-width cell."""
    cells = [f"{LOSS_LABELS.get(k, k.split('/')[-1])} {number(v):<{NUMBER}}" for k, v in losses.items()]
    text = ""
    for cell in cells:
        if len(text) + bool(text) + len(cell) > width:
            break
        text += (" " if text else "") + cell
    return text


def stop_pending(signal_name: str) -> str:
    """What a first Ctrl-C (or SIGTERM) does, and how to stop at once."""
    again = "press Ctrl-C again" if signal_name == "SIGINT" else f"send {signal_name} again"
    return f"dreamer: stopping after this env step, with a checkpoint to resume from; {again} to stop now"


def run_progress(env: str, steps: int, pretrain: int,
                 console: Console | None = None) -> tuple[Progress, Callable[[Any], None]]:
    """A progress row for one run, to enter while it trains, and the on_progress callback that moves it.

    Each field has a fixed width chosen for the terminal at the start (row_widths): the row fits in it and
    keeps its shape when losses appear. A first signal is announced once, above the row."""
    # The rate is the recent one and the time left comes from the loop's cost model
    # (progress.CostModel): rich's own columns average over the whole run, prefill included.
    console = console or err
    widths = row_widths(console.width, env, steps, pretrain)
    columns = [BarColumn(bar_width=w) if name == "bar" else
               TextColumn(f"{{task.fields[{name}]}}", style="bold" if name == "env" else "none", markup=False,
                          table_column=Column(width=w, no_wrap=True)) for name, w in widths.items()]
    progress = Progress(*columns, console=console, transient=False)
    digits = len(str(steps))
    told: list[str] = []

    def texts(p: Any) -> dict[str, str]:
        last = "-" if p.last_eval is None else f"{p.last_eval:.1f}"
        sps = "-" if p.phase == "pretrain" else f"{p.sps:.0f}"
        return {"env": env, "phase": phase_text(p), "count": f"{p.step:>{digits}}/{steps}",
                "episodes": f"ep {p.episodes}", "eval": f"eval {last if len(last) <= 7 else number(p.last_eval)}",
                "losses": losses_text(p.losses, widths.get("losses", 0)), "sps": f"{sps:>6} steps/s",
                "eta": f"{clock(p.eta):>8} left"}

    first = texts(SimpleNamespace(step=0, episodes=0, last_eval=None, losses={}, phase="prefill", sps=0.0,
                                  eta=None, pretrained=0, pretrain=pretrain))
    task = progress.add_task(env, total=steps, **first)

    def show(p: Any) -> None:
        if p.stopping and not told:
            told.append(p.stopping)
            progress.console.print(stop_pending(p.stopping), style="yellow", markup=False, highlight=False,
                                   soft_wrap=True)
        progress.update(task, completed=p.step, **texts(p))

    return progress, show


def resumed(run_dir: Path, state: Any, total: int, replay: int) -> None:
    """What a resumed run restored: its step, updates, replay, episodes and last evaluation."""
    last = "-" if state.last_eval is None else f"{state.last_eval:.1f}"
    err.print(f"resumed {run_dir} at env step {state.step} of {total}: {state.updates} updates, "
              f"replay of {replay} transitions, {state.episode} episodes, last eval {last}", soft_wrap=True)


def summary_table(summary: dict[str, Any]) -> None:
    """One table of what a run reached."""
    table = Table(title="training summary")
    for key in ("final_eval", "best_eval", "threshold", "steps_to_threshold", "env_steps",
                "episodes", "updates", "wall_seconds"):
        value = summary.get(key)
        table.add_row(key, "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value))
    err.print(table)


def interrupted(summary: dict[str, Any], run_dir: Path) -> None:
    """How an interrupted run stopped and how to resume it."""
    err.print(f"dreamer: interrupted by {summary['interrupted']} at env step {summary['env_steps']}; "
              f"resume with: dreamer train --resume {run_dir}", markup=False, highlight=False, soft_wrap=True)


# -- several seeds -------------------------------------------------------------------------------


@contextlib.contextmanager
def seeds_progress(jobs: Sequence[tuple[Any, Path]], waiting: str = "waiting") -> Iterator[Callable[[tuple], None]]:
    """A progress row per seed; yields the callback that takes multiseed's messages."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("eval {task.fields[eval]}"), TextColumn("{task.fields[sps]} steps/s"),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err)
    rows = {cfg.train.seed: progress.add_task(f"seed {cfg.train.seed}", total=cfg.train.steps, eval="-", sps="-",
                                              status=waiting) for cfg, _ in jobs}

    def show(message: tuple) -> None:
        kind, row = message[0], rows[message[1]]
        if kind == "start":
            progress.update(row, status="running")
        elif kind == "progress":
            _, _, step, last_eval, sps = message
            progress.update(row, completed=step, eval="-" if last_eval is None else f"{last_eval:.1f}",
                            sps=f"{sps:.0f}", status="running")
        elif kind == "done":
            stopped = message[2].get("interrupted")
            progress.update(row, completed=message[2].get("env_steps", progress.tasks[row].completed),
                            status=f"[yellow]{stopped}" if stopped else "[green]done")
        else:
            progress.update(row, status="[red]failed")

    with progress:
        yield show


def seeds_report(results: dict[int, dict[str, Any]]) -> None:
    """A line per seed on stderr (final eval, how to resume, or the error), then the run folders on stdout."""
    for seed in sorted(results):
        r = results[seed]
        if "error" in r:
            err.print(f"[red]seed {seed} failed:[/red] {r['error']}", highlight=False)
        elif r["summary"].get("interrupted"):
            err.print(f"seed {seed}: interrupted by {r['summary']['interrupted']} at env step "
                      f"{r['summary'].get('env_steps')}; resume with: dreamer train --resume {r['run_dir']}",
                      highlight=False, soft_wrap=True)
        else:
            final = r["summary"].get("final_eval")
            err.print(f"seed {seed}: final eval {'-' if final is None else f'{final:.1f}'}"
                      f" in {r['summary'].get('wall_seconds', 0):.1f} s", highlight=False)
    for seed in sorted(results):
        if "error" not in results[seed]:
            print(results[seed]["run_dir"])


# -- evaluate --------------------------------------------------------------------------------------


def evaluation_table(report: dict[str, Any]) -> None:
    """The evaluation table on stdout, and where the first episode's GIF went."""
    table = Table(title=f"{report['env']}: {report['episodes']} deterministic episodes (seed {report['seed']})")
    for col in ("mean", "std", "min", "max"):
        table.add_column(f"return {col}", justify="right")
    table.add_row(*(f"{report[f'return_{c}']:.2f}" for c in ("mean", "std", "min", "max")))
    out().print(table)
    if "gif" in report:
        out().print(f"first episode: {report['gif']}")


def window_available() -> bool:
    """Whether a window can be opened here."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_episode(agent: Any, env_id: str, seed: int, max_episode_steps: int) -> None:
    """Play one deterministic episode in a window; a window is a nicety, so failures only warn."""
    from .envs import make_env, to_env_action

    try:
        env = make_env(env_id, render_mode="human", max_episode_steps=max_episode_steps)
        try:
            obs, _ = env.reset(seed=seed)
            done, memory = False, agent.memory()
            while not done:
                obs, _, term, trunc, _ = env.step(to_env_action(agent.spec, agent.act(obs, True, memory=memory)))
                done = term or trunc
        finally:
            env.close()
    except Exception as error:
        note(f"could not open a window: {error}")


# -- imagine and compare ----------------------------------------------------------------------------


def _cell(mean: float | None, std: float | None) -> str:
    # Mean over spread on two lines keeps the columns narrow enough for an 80-column terminal.
    return "-" if mean is None or math.isnan(mean) else f"{mean:.3g}\n±{std:.2g}"


def imagine_table(metrics: dict[str, Any], dims: Sequence[str], steps: Sequence[int], title: str,
                  max_dims: int = 8) -> None:
    """The table of dream-versus-reality errors at the given steps (mean±std over rollouts), on stdout."""
    table = Table(title=title)
    table.add_column("step", justify="right")
    table.add_column("n", justify="right")  # rollouts whose real episode still runs
    table.add_column("obs (all)", justify="right")
    shown = list(dims)[:max_dims]  # the JSON holds every dimension; the terminal only so many
    for name in shown:
        table.add_column(name.split(" (")[0], justify="right")  # the title names the units
    table.add_column("reward", justify="right")
    table.add_column("cont agrees", justify="right")
    for k in steps:
        j = k - 1
        dim_cells = [_cell(metrics["obs_err_dim_mean"][j][d], metrics["obs_err_dim_std"][j][d])
                     for d in range(len(shown))]
        agree = metrics["cont_agreement"][j]
        table.add_row(str(k), str(metrics["rollouts_left"][j]),
                      _cell(metrics["obs_err_mean"][j], metrics["obs_err_std"][j]), *dim_cells,
                      _cell(metrics["reward_err_mean"][j], metrics["reward_err_std"][j]),
                      "-" if agree is None or math.isnan(agree) else f"{agree:.0%}")
    out().print(table)


def belief_table(probe: dict[str, Any]) -> None:
    """What the belief recovers of what the observation hides: a linear probe's R^2, on stdout."""
    table = Table(title=f"what the observation hides, read from the belief: R² of a linear probe on "
                        f"{probe['steps'] - probe['fit_steps']} held-out steps (1: exact, 0: no better than the mean)")
    table.add_column("hidden")
    table.add_column("from the belief", justify="right")
    table.add_column("from the observation alone", justify="right")
    for name, belief, obs in zip(probe["hidden"], probe["r2_belief"], probe["r2_observation"], strict=True):
        table.add_row(name, f"{belief:.2f}", f"{obs:.2f}")
    out().print(table)


def compare_tables(tables: dict[str, list[dict[str, Any]]], headers: Sequence[str], caption: str,
                   cells: Callable[[dict[str, Any]], list[str]]) -> None:
    """A table per env of the groups over seeds, on stdout."""
    console = out()
    for env, rows in tables.items():
        # Brackets are rich markup: "[min, max]" would vanish. A narrow terminal folds a label, never cuts it.
        table = Table(title=escape(f"{env}: groups over seeds"), caption=escape(caption))
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i < 2 else "right", overflow="fold")
        for row in rows:
            table.add_row(*map(escape, cells(row)))
        console.print(table)


# -- tune ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tune_progress(study: str) -> Iterator[Callable[[tuple], None]]:
    """A progress row per trial as it starts; yields the callback that takes tune's messages."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("eval {task.fields[eval]}"), TextColumn("{task.fields[status]}"),
                        TimeElapsedColumn(), console=err)
    rows: dict[int, Any] = {}

    def row(n: int, total: int | None = None) -> Any:
        if n not in rows:
            rows[n] = progress.add_task(f"{study} trial {n}", total=total, eval="-", status="running")
        return rows[n]

    def show(message: tuple) -> None:
        kind, n = message[0], message[1]
        if kind == "start":
            row(n, message[2])
        elif kind == "progress":
            progress.update(row(n), completed=message[2], eval="-" if message[3] is None else f"{message[3]:.1f}")
        elif kind == "end":
            _, _, state, score, step = message
            colour = {"complete": "green", "pruned": "yellow"}.get(state, "red")
            shown = f"[{colour}]{state}" + ("" if score is None else f" {score:.4g}")
            progress.update(row(n), status=shown, **({} if step is None else {"completed": step}))

    with progress:
        yield show


def tune_table(rows: list[dict[str, Any]], title: str) -> None:
    """A study's trials on stdout (the best one bold, starred), then why any failed on stderr."""
    table = Table(title=title)
    for header in ("trial", "state", "score", "env steps"):
        table.add_column(header, justify="left" if header == "state" else "right", no_wrap=True)
    table.add_column("settings", overflow="fold")

    def text(value: Any) -> str:
        return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    for r in rows:
        settings = " ".join(f"{k}={text(v)}" for k, v in r["params"].items())
        table.add_row(("*" if r["best"] else "") + str(r["number"]), r["state"],
                      "-" if r["score"] is None else f"{r['score']:.4g}", text(r["env_steps"]), settings,
                      style="bold" if r["best"] else None)
    out().print(table)
    for r in rows:
        if r["error"]:
            err.print(f"trial {r['number']} failed: {r['error']}", style="red", markup=False, highlight=False)
