"""The `dreamer` command line: thin Typer commands that parse, call one function, print."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Dreamer-lite: learn a latent world model of a Gymnasium task and a policy inside it.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Preset(str, Enum):
    default = "default"
    tiny = "tiny"


class UserError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


def fail(message: str) -> None:
    """Print one line to stderr and exit 2."""
    typer.echo(f"dreamer: error: {message}", err=True)
    raise typer.Exit(2)


# Hyperparameter options; each name is the config field it sets.
HP = "Hyperparameters (default: the preset's value)"


@app.command()
def train(
    env: Annotated[str, typer.Option(help="Gymnasium id (CartPole-v1) or module:Class.")] = "CartPole-v1",
    steps: Annotated[int | None, typer.Option(help="Env steps to train for.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of torch, numpy and the env.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder that holds run folders.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(
        help="Run folder name [default: {env}-{algo}-s{seed}-{YYYYmmdd-HHMMSS}].")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run folder of that name.")] = False,
    device: Annotated[Device | None, typer.Option(help="Where the networks run.")] = None,
    preset: Annotated[Preset, typer.Option(
        help="tiny: small and quick, for tests and smoke runs; default: the full agent.")] = Preset.default,
    config: Annotated[Path | None, typer.Option(
        help="JSON of config fields (a run's config.json works); flags override it.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Return that counts as solved [default: the env's reward_threshold].")] = None,
    latent_dim: Annotated[int | None, typer.Option(help="Size of the latent z.", rich_help_panel=HP)] = None,
    hidden_dim: Annotated[int | None, typer.Option(help="Width of hidden layers.", rich_help_panel=HP)] = None,
    seq_len: Annotated[int | None, typer.Option(
        help="Replayed sequence length (open-loop training).", rich_help_panel=HP)] = None,
    horizon: Annotated[int | None, typer.Option(help="Imagination horizon H.", rich_help_panel=HP)] = None,
    imag_starts: Annotated[int | None, typer.Option(
        help="Replayed latents that start imagined rollouts.", rich_help_panel=HP)] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Replayed sequences per update.", rich_help_panel=HP)] = None,
    wm_lr: Annotated[float | None, typer.Option(help="World-model learning rate.", rich_help_panel=HP)] = None,
    actor_lr: Annotated[float | None, typer.Option(help="Actor learning rate.", rich_help_panel=HP)] = None,
    critic_lr: Annotated[float | None, typer.Option(help="Critic learning rate.", rich_help_panel=HP)] = None,
    discount: Annotated[float | None, typer.Option(help="Discount gamma.", rich_help_panel=HP)] = None,
    lam: Annotated[float | None, typer.Option(help="Lambda of the lambda-return.", rich_help_panel=HP)] = None,
    entropy: Annotated[float | None, typer.Option(
        help="Entropy bonus on normalised returns.", rich_help_panel=HP)] = None,
    buffer_size: Annotated[int | None, typer.Option(
        help="Real transitions kept in replay.", rich_help_panel=HP)] = None,
    train_ratio: Annotated[float | None, typer.Option(
        help="Gradient updates per env step.", rich_help_panel=HP)] = None,
    prefill: Annotated[int | None, typer.Option(
        help="Random-action env steps before learning.", rich_help_panel=HP)] = None,
    eval_every: Annotated[int | None, typer.Option(
        help="Env steps between evaluations (0: only at the end).", rich_help_panel=HP)] = None,
    eval_episodes: Annotated[int | None, typer.Option(
        help="Episodes per evaluation.", rich_help_panel=HP)] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.", rich_help_panel=HP)] = None,
) -> None:
    """Train an agent and write a run folder (config, weights, metrics, summary, curves)."""
    flags = {k: v for k, v in locals().items() if v is not None and k not in NON_CONFIG}
    flags = {k: v.value if isinstance(v, Enum) else v for k, v in flags.items()}
    from . import commands

    try:
        cfg, run_dir = commands.prepare_training(flags, preset.value, config, runs_dir, name, force)
    except commands.USER_ERRORS as err:
        fail(str(err))
    summary = commands.run_training(cfg, run_dir)
    commands.print_summary(summary)
    typer.echo(str(run_dir))


NON_CONFIG = {"runs_dir", "name", "force", "config", "preset"}


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `dreamer train`.")],
    episodes: Annotated[int, typer.Option(help="Deterministic episodes to run.")] = 10,
    seed: Annotated[int | None, typer.Option(help="Seed of the first episode [default: the run's seed].")] = None,
    render: Annotated[bool, typer.Option(
        help="Record the first episode to videos/eval.gif (and show it when a display exists).")] = False,
    device: Annotated[Device, typer.Option(help="Where the networks run.")] = Device.auto,
) -> None:
    """Rebuild the agent from a run folder, run episodes, print a table, write eval.json."""
    if episodes <= 0:
        fail(f"--episodes must be > 0, got {episodes}")
    from . import commands

    try:
        agent, cfg = commands.load_agent(run, device.value)
    except commands.USER_ERRORS as err:
        fail(str(err))
    report = commands.run_evaluation(agent, cfg, run, episodes, seed, render)
    commands.print_evaluation(report)


def main() -> None:
    """Entry point: usage errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        typer.echo("dreamer: aborted", err=True)
        sys.exit(130)
    except Exception as err:
        # Click's (or Typer's vendored Click's) usage errors carry these two attributes.
        if not (hasattr(err, "format_message") and hasattr(err, "exit_code")):
            raise
        if type(err).__name__ == "NoArgsIsHelpError":
            err.show()
        else:
            typer.echo(f"dreamer: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
