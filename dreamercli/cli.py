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


class Algo(str, Enum):
    dreamer = "dreamer"
    model_free = "model-free"
    mbpo = "mbpo"
    hybrid = "hybrid"


class ImagNoise(str, Enum):
    auto = "auto"
    mean = "mean"
    sample = "sample"


class UserError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


def fail(message: str) -> None:
    """Print one line to stderr and exit 2."""
    typer.echo(f"dreamer: error: {message}", err=True)
    raise typer.Exit(2)


# Hyperparameter options; each name is the config field it sets.
HP = "Hyperparameters (default: the preset's value)"
LP = "Off-policy learner and model-trust guard (model-free, mbpo, hybrid)"


@app.command()
def train(
    env: Annotated[str | None, typer.Option(
        help="Gymnasium id or module:Class [default: the --config file's, else CartPole-v1].")] = None,
    algo: Annotated[Algo | None, typer.Option(
        help="dreamer: policy trained in imagination only; model-free: SAC on real transitions, no world "
             "model; mbpo: SAC on real and branched model transitions; hybrid: one policy trained by both, "
             "as far as the model-trust guard allows.", show_default="model-free")] = None,
    steps: Annotated[int | None, typer.Option(help="Env steps to train for.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of torch, numpy and the env.")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Folder that holds run folders [default: runs].")] = None,
    name: Annotated[str | None, typer.Option(
        help="Run folder name [default: {env}-{algo}-s{seed}-{YYYYmmdd-HHMMSS}].")] = None,
    force: Annotated[bool, typer.Option(
        help="Replace an existing run folder of that name: the old folder is deleted as a whole "
             "(only once the new run has its first checkpoint), never mixed with the new one.")] = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue this run folder from its last checkpoint, to its step total or a new --steps. "
             "Takes no other flag (--env or --trust-env-code only for module:Class envs).",
        show_default=False)] = None,
    trust_env_code: Annotated[bool, typer.Option(
        help="With --resume: import the module:Class env named in the run's config.json.")] = False,
    device: Annotated[Device | None, typer.Option(help="Where the networks run.")] = None,
    preset: Annotated[Preset | None, typer.Option(
        help="tiny: small and quick, for tests and smoke runs; default: the full agent.",
        show_default="default")] = None,
    config: Annotated[Path | None, typer.Option(
        help="JSON of config fields (a run's config.json works); flags override it.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Return that counts as solved [default: the env's reward_threshold].")] = None,
    latent_dim: Annotated[int | None, typer.Option(help="Size of the latent z.", rich_help_panel=HP)] = None,
    hidden_dim: Annotated[int | None, typer.Option(help="Width of hidden layers.", rich_help_panel=HP)] = None,
    hidden_layers: Annotated[int | None, typer.Option(
        help="Hidden layers of every network.", rich_help_panel=HP)] = None,
    seq_len: Annotated[int | None, typer.Option(
        help="Replayed sequence length (open-loop training).", rich_help_panel=HP)] = None,
    horizon: Annotated[int | None, typer.Option(help="Imagination horizon H.", rich_help_panel=HP)] = None,
    imag_starts: Annotated[int | None, typer.Option(
        help="Replayed latents that start imagined rollouts.", rich_help_panel=HP)] = None,
    imag_noise: Annotated[ImagNoise | None, typer.Option(
        help="Imagined latents: prior means, samples, or auto (samples for continuous actions).",
        rich_help_panel=HP)] = None,
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
    pretrain: Annotated[int | None, typer.Option(
        help="World-model-only updates on the prefill data.", rich_help_panel=HP)] = None,
    novelty: Annotated[float | None, typer.Option(
        help="Imagined reward for the disagreement of an ensemble of one-step models, per step and "
             "relative to its mean (0: no ensemble).", rich_help_panel=HP)] = None,
    noise_exponent: Annotated[float | None, typer.Option(
        help="Exploration noise colour, 0-2: its spectrum falls as 1/f^x (0 white, 1 pink: longer "
             "drifts reach rewards far from the start).", rich_help_panel=HP)] = None,
    eval_every: Annotated[int | None, typer.Option(
        help="Env steps between evaluations (0: only at the end).", rich_help_panel=HP)] = None,
    eval_episodes: Annotated[int | None, typer.Option(
        help="Episodes per evaluation.", rich_help_panel=HP)] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        help="Env steps between checkpoints (0: at each evaluation).", rich_help_panel=HP)] = None,
    max_episode_steps: Annotated[int | None, typer.Option(
        help="Step limit of an env that registers none.", rich_help_panel=HP)] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.", rich_help_panel=HP)] = None,
    sac_ratio: Annotated[float | None, typer.Option(help="SAC updates per env step.", rich_help_panel=LP)] = None,
    sac_actor_share: Annotated[float | None, typer.Option(
        help="Share of the SAC updates that train the policy and temperature too (the rest: the critics "
             "alone); 0.1 with 10 updates per env step trains the policy once per env step.",
        rich_help_panel=LP)] = None,
    sac_batch: Annotated[int | None, typer.Option(help="Transitions per SAC update.", rich_help_panel=LP)] = None,
    sac_hidden: Annotated[int | None, typer.Option(help="Width of SAC's networks.", rich_help_panel=LP)] = None,
    sac_lr: Annotated[float | None, typer.Option(help="SAC learning rate.", rich_help_panel=LP)] = None,
    sac_discount: Annotated[float | None, typer.Option(help="SAC's discount gamma.", rich_help_panel=LP)] = None,
    sac_novelty: Annotated[float | None, typer.Option(
        help="Reward for novel observations (random network distillation), relative to its mean, paid while "
             "the replay holds no real episode end and its rewards vary by less than a tenth of this; 0: none.",
        rich_help_panel=LP)] = None,
    real_share: Annotated[float | None, typer.Option(
        help="Least share of real transitions in a SAC batch (when the model is fully trusted).",
        rich_help_panel=LP)] = None,
    branch_length: Annotated[int | None, typer.Option(
        help="Longest branched rollout; the guard picks 0 up to this.", rich_help_panel=LP)] = None,
    branch_starts: Annotated[int | None, typer.Option(
        help="Real states that start branched rollouts, per env step.", rich_help_panel=LP)] = None,
    trust_threshold: Annotated[float | None, typer.Option(
        help="Model error / 'nothing changes' error at or below which the model is trusted.",
        rich_help_panel=LP)] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Train several seeds, a run folder each: '0 1 2', '0,1,2' or '0-9'.", rich_help_panel=MS)] = None,
    workers: Annotated[int | None, typer.Option(
        help="Parallel worker processes for --seeds (default: one per core, at most one per seed).",
        rich_help_panel=MS)] = None,
    ray: Annotated[str | None, typer.Option(
        help="Run --seeds as Ray tasks; alone: RAY_ADDRESS or a new local Ray; with ADDRESS "
             "(HEAD:6379): join that cluster. Needs the ray extra (pip install -e '.\\[ray]').",
        rich_help_panel=MS)] = None,
) -> None:
    """Train an agent and write a run folder (config, weights, checkpoint, metrics, summary, curves)."""
    flags = {k: v for k, v in locals().items() if v is not None and k not in NON_CONFIG}
    flags = {k: v.value if isinstance(v, Enum) else v for k, v in flags.items()}
    from . import commands

    if resume is not None:
        given = [k for k, v in flags.items() if k not in ("steps", "env")]
        given += [k for k, v in {"runs_dir": runs_dir, "name": name, "config": config, "preset": preset,
                                 "seeds": seeds, "workers": workers, "ray": ray}.items() if v is not None]
        given += ["force"] if force else []
        if given:
            fail(f"--resume continues the run as it was configured and takes only --steps "
                 f"(and --env or --trust-env-code): remove --{given[0].replace('_', '-')}")
        try:
            summary, restored = commands.resume_training(resume, steps, env, trust_env_code)
        except commands.USER_ERRORS as err:
            fail(str(err))
        except commands.TRAINING_FAILURES as err:
            stop(str(err))
        finish_training(summary, resume)
        return
    if trust_env_code:
        fail("--trust-env-code goes with --resume (a new run imports the --env you name)")
    runs_dir = Path("runs") if runs_dir is None else runs_dir
    preset_name = "default" if preset is None else preset.value
    if seeds is not None or workers is not None or ray is not None:
        train_seeds(flags, preset_name, config, runs_dir, name, force, seeds, workers, ray)
        return
    try:
        cfg, run_dir = commands.prepare_training(flags, preset_name, config, runs_dir, name, force)
        summary = commands.run_training(cfg, run_dir)
    except commands.USER_ERRORS as err:
        fail(str(err))
    except commands.TRAINING_FAILURES as err:
        stop(str(err))
    finish_training(summary, run_dir)


def stop(message: str) -> None:
    """A run that cannot go on (diverged): one line on stderr, exit 1."""
    typer.echo(f"dreamer: error: {message}", err=True)
    raise typer.Exit(1)


def finish_training(summary: dict, run_dir: Path) -> None:
    """The summary table and the run folder; for an interrupted run, how to resume, and exit 130 / 143."""
    from . import commands
    from .training import EXIT_CODES

    commands.print_summary(summary)
    if summary.get("interrupted"):
        typer.echo(f"dreamer: interrupted by {summary['interrupted']} at env step {summary['env_steps']}; "
                   f"resume with: dreamer train --resume {run_dir}", err=True)
        raise typer.Exit(EXIT_CODES[summary["interrupted"]])
    typer.echo(str(run_dir))


NON_CONFIG = {"runs_dir", "name", "force", "config", "preset", "seeds", "workers", "ray", "resume", "trust_env_code"}
MS = "Several seeds"


def train_seeds(flags: dict, preset: str, config_file: Path | None, runs_dir: Path, name: str | None,
                force: bool, seeds: str | None, workers: int | None, ray: str | None) -> None:
    """`train --seeds`: a run folder per seed in local workers or Ray tasks; exit 1 if any failed."""
    from . import commands, multiseed

    if seeds is None:
        fail("--workers and --ray need --seeds")
    if "seed" in flags:
        fail("give either --seed or --seeds, not both")
    if workers is not None and workers <= 0:
        fail(f"--workers must be > 0, got {workers}")
    try:
        seed_list = multiseed.parse_seeds(seeds)
        if ray is not None:
            multiseed.import_ray()
        first = f"{name}-s{seed_list[0]}" if name else None
        cfg, _ = commands.prepare_training({**flags, "seed": seed_list[0]}, preset, config_file, runs_dir,
                                           first, force)
        jobs = multiseed.plan(cfg, seed_list, runs_dir, name, force)
    except commands.USER_ERRORS as err:
        fail(str(err))
    if ray is not None:
        results = multiseed.run_ray(jobs, ray)
    else:
        results = multiseed.run_local(jobs, workers or multiseed.default_workers(len(jobs)))
    code = multiseed.report(results)
    if code:
        raise typer.Exit(code)


class XAxis(str, Enum):
    steps = "steps"
    seconds = "seconds"


def _warn(message: str) -> None:
    typer.echo(f"dreamer: warning: {message}", err=True)


@app.command()
def plot(
    run: Annotated[list[Path], typer.Argument(help="Run folders (a shell glob such as runs/* works).")],
    out: Annotated[Path | None, typer.Option(
        help="PNG to write (default: RUN/curves.png for one run, plot.png for several).")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        help="Metric key from metrics.jsonl; repeat for several (default: all for one run, "
             "eval/return_mean for several).")] = None,
    x: Annotated[XAxis, typer.Option(help="Horizontal axis: env steps or wall-clock seconds.")] = XAxis.steps,
) -> None:
    """Plot one run's curves, or overlay several grouped by (env, algo, label) with 95% bands."""
    from . import runs
    from .compare import group_runs, load_runs
    from .plotting import check_metrics, plot_groups, plot_run

    metrics = [m for item in metric or [] for m in item.split(",") if m]
    try:
        if len(run) == 1:
            path = plot_run(run[0], out, metrics or None, x.value, warn=_warn)
        else:
            run_list = load_runs(run, warn=_warn)
            check_metrics(run_list, metrics)
            path = plot_groups(group_runs(run_list, warn=_warn), out or Path("plot.png"), metrics or None, x.value)
    except (runs.RunError, ValueError) as err:
        fail(str(err))
    typer.echo(str(path))


@app.command()
def compare(
    run: Annotated[list[Path], typer.Argument(help="Run folders (a shell glob such as runs/* works).")],
    threshold: Annotated[float | None, typer.Option(
        help="Return that counts as solved (default: each run's threshold in summary.json).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for compare.md, .csv, .json and .png.")] = Path("compare"),
) -> None:
    """Table per env of groups (env, algo, label) over seeds: IQM, 95% CI, AUC, steps to threshold."""
    from rich.console import Console
    from rich.table import Table

    from . import compare as cmp
    from . import runs

    try:
        run_list = cmp.load_runs(run, warn=_warn)
    except (runs.RunError, ValueError) as err:
        fail(str(err))
    tables = cmp.compare(run_list, threshold, warn=_warn)
    console = Console()
    for env, rows in tables.items():
        table = Table(title=f"{env}: groups over seeds", caption=cmp.CAPTION)
        for i, (_, header) in enumerate(cmp.COLUMNS):
            table.add_column(header, justify="left" if i < 2 else "right")
        for row in rows:
            table.add_row(*cmp.cells(row))
        console.print(table)
    for path in cmp.write_outputs(tables, run_list, out, threshold):
        typer.echo(str(path))


THREADS_HELP = "Torch CPU threads [default: the run's threads setting]."
ENV_HELP = "The run's module:Class env, named again so that dreamer may import it."
TRUST_HELP = "Import the module:Class env named in the run's config.json (runs code from the run folder)."


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `dreamer train`.")],
    episodes: Annotated[int, typer.Option(help="Deterministic episodes to run.")] = 10,
    seed: Annotated[int | None, typer.Option(help="Seed of the first episode [default: the run's seed].")] = None,
    render: Annotated[bool, typer.Option(
        help="Record the first episode to videos/eval.gif (and show it when a display exists).")] = False,
    device: Annotated[Device, typer.Option(help="Where the networks run.")] = Device.auto,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    env: Annotated[str | None, typer.Option(help=ENV_HELP)] = None,
    trust_env_code: Annotated[bool, typer.Option(help=TRUST_HELP)] = False,
) -> None:
    """Rebuild the agent from a run folder, run episodes, print a table, write eval.json."""
    if episodes <= 0:
        fail(f"--episodes must be > 0, got {episodes}")
    if seed is not None and seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    from . import commands

    try:
        agent, cfg = commands.load_agent(run, device.value, threads, env, trust_env_code)
        commands.check_writable(run)
    except commands.USER_ERRORS as err:
        fail(str(err))
    try:
        report = commands.run_evaluation(agent, cfg, run, episodes, seed, render)
    except commands.USER_ERRORS as err:
        fail(str(err))
    commands.print_evaluation(report)


class ActionSource(str, Enum):
    policy = "policy"
    random = "random"


@app.command("imagine")
def imagine_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by `dreamer train`.")],
    horizon: Annotated[int, typer.Option(help="Imagined steps per rollout (may exceed the training horizon).")] = 15,
    rollouts: Annotated[int, typer.Option(help="Rollouts: half from fresh resets, half along a real episode.")] = 16,
    seed: Annotated[int | None, typer.Option(help="Seed of the start states [default: the run's seed].")] = None,
    actions: Annotated[ActionSource, typer.Option(
        help="policy: the actor on the imagined latent; random: uniform from the seed.")] = ActionSource.policy,
    device: Annotated[Device, typer.Option(help="Where the networks run.")] = Device.auto,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    env: Annotated[str | None, typer.Option(help=ENV_HELP)] = None,
    trust_env_code: Annotated[bool, typer.Option(help=TRUST_HELP)] = False,
) -> None:
    """Dream beside reality: table of errors, imagine/imagine.json, imagine.png and dream.gif."""
    if horizon <= 0:
        fail(f"--horizon must be > 0, got {horizon}")
    if rollouts <= 0:
        fail(f"--rollouts must be > 0, got {rollouts}")
    from . import commands
    from .imagine import print_table, run_imagine

    def note(message: str) -> None:
        commands.console.print(f"[yellow]{message}", soft_wrap=True)  # one line, never wrapped

    try:
        if seed is not None and seed < 0:
            raise ValueError(f"--seed must be >= 0, got {seed}")
        report = run_imagine(run, horizon, rollouts, seed, actions.value, device.value, note, threads,
                             env, trust_env_code)
    except commands.USER_ERRORS as err:
        fail(str(err))
    print_table(report["metrics"], report["obs_labels"],
                f"{report['env']}: |imagined - real|, mean±std over {rollouts} rollouts "
                f"({report['actions']} actions, seed {report['seed']}, env units)")
    for key in ("json", "png", "gif"):
        typer.echo(report[key])


def join_seeds_argv(args: list[str]) -> list[str]:
    """Let `--seeds 0 1 2` and a bare `--ray` parse: join the seed words, give --ray its default."""
    out: list[str] = []
    i = 0
    while i < len(args):
        out.append(args[i])
        if args[i] == "--seeds":
            words = []
            while i + 1 < len(args) and not args[i + 1].startswith("-"):
                words.append(args[i + 1])
                i += 1
            out.append(" ".join(words))
        elif args[i] == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("local")  # multiseed.LOCAL_RAY: RAY_ADDRESS if set, else a local Ray
        elif args[i] == "--":
            out += args[i + 1:]
            break
        i += 1
    return out


def main() -> None:
    """Entry point: usage errors become one line on stderr and exit code 2."""
    try:
        # Without standalone mode Click returns a typer.Exit's code instead of raising it.
        code = app(args=join_seeds_argv(sys.argv[1:]), standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
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
