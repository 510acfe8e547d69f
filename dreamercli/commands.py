"""Plain functions behind the CLI commands: build configs, show progress, print results."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from . import runs
from .config import Config, ConfigError, flatten, from_preset, load_json, validate, with_overrides
from .envs import EnvError, make_env

USER_ERRORS = (ConfigError, EnvError, runs.RunError, ValueError)
TRAINING_FAILURES = (RuntimeError,)  # checkpoint.Diverged, without importing torch here
console = Console(stderr=True)


def build_config(flags: dict[str, Any], preset: str = "default", config_file: Path | None = None) -> Config:
    """Preset, then the JSON file, then command-line flags; validated."""
    config = from_preset(preset)
    if config_file is not None:
        data = flatten(load_json(config_file))
        config = with_overrides(config, {k: v for k, v in data.items() if k not in runs.META_KEYS})
    return validate(with_overrides(config, flags))


def prepare_training(flags: dict[str, Any], preset: str, config_file: Path | None, runs_dir: Path,
                     name: str | None, force: bool) -> tuple[Config, Path]:
    """Check everything that can be wrong before any folder is made."""
    config = build_config(flags, preset, config_file)
    if config.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but torch sees no CUDA GPU")
    # Unknown ids, env constructors that fail and unsupported spaces are all refused here.
    make_env(config.env, max_episode_steps=config.train.max_episode_steps).close()
    return config, runs.prepare_run_dir(runs_dir, name, config, force)


def clock(seconds: float | None) -> str:
    """H:MM:SS as rich's time columns write it, or '-' while unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def phase_text(p) -> str:
    """prefill, pretrain i/N or train, from a training.Progress."""
    return f"pretrain {p.pretrained}/{p.pretrain}" if p.phase == "pretrain" else p.phase


def _progress_display(config: Config) -> tuple[Progress, Any]:
    """A rich progress display for one run, and the on_progress callback that updates it."""
    # The rate is the recent one and the time left comes from the loop's cost model
    # (progress.CostModel): rich's own columns average over the whole run, prefill included.
    width = len(f"pretrain {config.train.pretrain}/{config.train.pretrain}")
    columns = [
        TextColumn("[bold]{task.description}"), TextColumn(f"{{task.fields[phase]:<{width}}}"), BarColumn(),
        MofNCompleteColumn(), TextColumn("ep {task.fields[episodes]}"), TextColumn("eval {task.fields[eval]}"),
        TextColumn("{task.fields[losses]}"), TextColumn("{task.fields[sps]} steps/s"),
        TextColumn("{task.fields[eta]} left"),
    ]
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(config.env, total=config.train.steps, phase="prefill", episodes=0, eval="-",
                             losses="", sps="-", eta="-")

    def show(p) -> None:
        losses = " ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in p.losses.items())
        progress.update(task, completed=p.step, phase=phase_text(p), episodes=p.episodes,
                        eval="-" if p.last_eval is None else f"{p.last_eval:.1f}", losses=losses,
                        sps="-" if p.phase == "pretrain" else f"{p.sps:.0f}", eta=clock(p.eta))

    return progress, show


def run_training(config: Config, run_dir: Path) -> dict[str, Any]:
    """Train with a rich progress bar; return the summary."""
    from .training import train

    progress, show = _progress_display(config)
    with progress:
        _, summary = train(config, run_dir, on_progress=show)
    return summary


def resume_training(run_dir: Path, steps: int | None, env: str | None,
                    trust_env_code: bool) -> tuple[dict[str, Any], Any]:
    """Continue a run from its checkpoint with a progress bar; say what was restored; return the summary."""
    from .training import resume

    config, _ = runs.load_config(run_dir)
    runs.check_env_trust(run_dir, config.env, env, trust_env_code)
    if steps is not None and steps <= 0:
        raise ConfigError(f"--steps must be > 0, got {steps}")
    total = config.train.steps if steps is None else steps
    progress, show = _progress_display(dataclasses.replace(
        config, train=dataclasses.replace(config.train, steps=total)))
    trainer = resume(run_dir, steps, on_progress=show)
    st = trainer.state
    console.print(f"resumed {run_dir} at env step {st.step} of {total}: {st.updates} updates, "
                  f"replay of {len(trainer.buffer)} transitions, {st.episode} episodes, "
                  f"last eval {'-' if st.last_eval is None else f'{st.last_eval:.1f}'}", soft_wrap=True)
    with progress:
        summary = trainer.run()
    return summary, st


def print_summary(summary: dict[str, Any]) -> None:
    """One table of what a run reached."""
    table = Table(title="training summary")
    for key in ("final_eval", "best_eval", "threshold", "steps_to_threshold", "env_steps",
                "episodes", "updates", "wall_seconds"):
        value = summary.get(key)
        table.add_row(key, "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value))
    console.print(table)


def load_agent(run_dir: Path, device: str, threads: int | None = None, env: str | None = None,
               trust_env_code: bool = False):
    """Rebuild the agent from config.json, run.json and weights.safetensors alone.

    A module:Class env named by the run is imported only when the user names it again (env)
    or trusts the folder. Also sets torch's CPU threads to the run's `threads` (or the given
    override): torch's default, one thread per core, is many times slower for these small
    networks when the cores are busy.
    """
    import torch

    from .agent import Agent, resolve_device

    config, spec = runs.load_config(run_dir)
    runs.check_env_trust(run_dir, config.env, env, trust_env_code)
    if threads is not None and threads <= 0:
        raise ConfigError(f"threads must be > 0, got {threads}")
    tensors = runs.load_weights(run_dir)
    make_env(config.env, max_episode_steps=config.train.max_episode_steps).close()  # importable, same spaces
    torch.set_num_threads(config.train.threads if threads is None else threads)
    agent = Agent(config, spec, resolve_device(device))
    try:
        agent.load_weights(tensors)
    except ValueError as err:
        raise runs.RunError(f"{Path(run_dir) / runs.WEIGHTS_FILE}: {err}") from None
    agent.eval()
    return agent, config


def check_writable(run_dir: Path) -> None:
    """RunError unless files can be written in run_dir (checked before minutes of episodes)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise runs.RunError(f"cannot write in {run_dir}: {err.strerror or err}") from None


def display_available() -> bool:
    """Whether a window can be opened here."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_evaluation(agent, config: Config, run_dir: Path, episodes: int, seed: int | None,
                   render: bool) -> dict[str, Any]:
    """Evaluate, write eval.json (and videos/eval.gif with render); return the report."""
    from .evaluation import evaluate_policy

    seed = config.train.seed if seed is None else seed
    with console.status(f"evaluating {episodes} episodes of {config.env}"):
        result = evaluate_policy(agent, config.env, episodes, seed, record=render,
                                 max_episode_steps=config.train.max_episode_steps)
    report: dict[str, Any] = {"env": config.env, "seed": seed, **result.stats(),
                              "returns": result.returns, "lengths": result.lengths}
    if render and result.render_error is not None:
        report["gif_error"] = result.render_error
        console.print(f"[yellow]no eval.gif: the env could not render ({result.render_error})")
    if render and result.frames:
        report["gif"] = str(runs.write_gif(result.frames, Path(run_dir) / "videos" / "eval.gif"))
        if display_available():
            try:
                env = make_env(config.env, render_mode="human", max_episode_steps=config.train.max_episode_steps)
                obs, _ = env.reset(seed=seed)
                done = False
                while not done:
                    from .envs import to_env_action

                    obs, _, term, trunc, _ = env.step(to_env_action(agent.spec, agent.act(obs, True)))
                    done = term or trunc
                env.close()
            except Exception as err:  # a window is a nicety: never lose the evaluation over it
                console.print(f"[yellow]could not open a window: {err}")
    runs.write_json(Path(run_dir) / runs.EVAL_FILE, report)
    return report


def print_evaluation(report: dict[str, Any]) -> None:
    """The evaluation table on stdout."""
    table = Table(title=f"{report['env']}: {report['episodes']} deterministic episodes (seed {report['seed']})")
    for col in ("mean", "std", "min", "max"):
        table.add_column(f"return {col}", justify="right")
    table.add_row(*(f"{report[f'return_{c}']:.2f}" for c in ("mean", "std", "min", "max")))
    Console().print(table)
    if "gif" in report:
        Console().print(f"first episode: {report['gif']}")
