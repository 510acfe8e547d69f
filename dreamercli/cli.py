"""The `dreamer` command line: thin Typer commands that parse, call one function, hand the result to display.

`train` has a flag per config field, built from config.py's declarations; the flags given are read
from Click's parameters. Torch is imported inside commands only, so `dreamer --help` answers at once.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from . import config as cfg

app = typer.Typer(help="Dreamer-lite: learn a latent world model of a Gymnasium task and a policy inside it.",
                  add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)

# Where each section's flags appear in `train --help`; the main settings go with the command's own options.
PANELS = {"world_model": "World model", "actor_critic": "Actor-critic (imagination)", "train": "Training loop",
          "learner": "Off-policy learner and model-trust guard (model-free, mbpo, hybrid)",
          "observation": "Observations (pixels)"}
MAIN = ("env", "algo", "preset", "steps", "seed", "device")
SEEDS = "Several seeds"
# A setting's annotation -> the type its flag parses; a number-or-word setting (stop_at_return) takes the
# text as given, and validation reads it as a number unless it is the setting's word.
TYPES = {"int": int, "float": float, "str": str, "bool": bool, "float | None": float | None,
         "float | str | None": str | None}


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum of the allowed values, which Typer shows as the option's choices."""
    return Enum(name, [(v, v) for v in values], type=str)


Device = choices("Device", cfg.DEVICES)
XAxis = choices("XAxis", ("steps", "seconds"))
ActionSource = choices("ActionSource", ("policy", "random"))  # imagine.ACTION_SOURCES, without torch


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit: 2 for bad input, 1 for a run that cannot go on (diverged)."""
    typer.echo(f"dreamer: error: {message}", err=True)
    raise typer.Exit(code)


def _warn(message: str) -> None:
    typer.echo(f"dreamer: warning: {message}", err=True)


def setting_option(setting: cfg.Setting) -> inspect.Parameter:
    """The `train` option of one declared setting: named after its field, with its help and default."""
    kind = choices(setting.name, setting.choices) if setting.choices else TYPES[setting.kind]
    presets = "; ".join(f"{p} preset: {v}" for p, v in cfg.preset_values(setting.name).items())
    option = typer.Option(help=setting.help + (f" ({presets})" if presets else ""),
                          show_default=True if setting.default is not None else "none",
                          rich_help_panel=None if setting.name in MAIN else PANELS[setting.section])
    default = kind(setting.default) if setting.choices else setting.default
    return inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, option])


def with_settings(command: Callable) -> Callable:
    """Give a command an option per declared setting (but file-only ones): the main ones first."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    options = [setting_option(s) for s in cfg.SETTINGS.values() if not s.file_only]
    first = [p for p in own if p.kind is p.POSITIONAL_OR_KEYWORD] + [p for p in options if p.name in MAIN]
    rest = [p for p in own if p.kind is p.KEYWORD_ONLY] + [p for p in options if p.name not in MAIN]
    command.__signature__ = inspect.Signature(first + rest)
    return command


def given(ctx: typer.Context) -> dict[str, Any]:
    """The options given on the command line (not left at their defaults) by name; choices as plain values."""
    # Recent Typer vendors Click, so the ParameterSource enum's module varies; its member names do not.
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return {name: value.value if isinstance(value, Enum) else value for name, value in ctx.params.items()
            if sources[name] is not None and sources[name].name == "COMMANDLINE"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dreamer {cfg.VERSION}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print dreamer's version and exit.")] = False) -> None:
    """Options that come before the command: --version."""


@app.command(epilog="Every setting starts at its preset's value; a --config file overrides the preset, and a "
                    "flag overrides both.")
@with_settings
def train(
    ctx: typer.Context,
    *,
    config: Annotated[Path | None, typer.Option(
        help="JSON of config fields (a run's config.json works); flags override it.",
        show_default="no file: the preset's values")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder that holds run folders.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(
        help="Run folder name.", show_default="{env}[-pixels{frame_size}]-{algo}-s{seed}-{YYYYmmdd-HHMMSS}")] = None,
    force: Annotated[bool, typer.Option(
        help="Replace a run folder of that name, as a whole, once the new run has its first checkpoint.")] = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue this run folder from its last checkpoint, to its step total or a new --steps. "
             "Takes no other flag (--env or --trust-env-code only for module:Class envs).",
        show_default="none: a new run")] = None,
    trust_env_code: Annotated[bool, typer.Option(
        help="With --resume: import the module:Class env named in the run's config.json.")] = False,
    seeds: Annotated[str | None, typer.Option(
        help="Train several seeds, a run folder each: '0 1 2', '0,1,2' or '0-9'.",
        show_default="one run, of --seed", rich_help_panel=SEEDS)] = None,
    workers: Annotated[int | None, typer.Option(
        help="Parallel worker processes for --seeds.", show_default="one per core, at most one per seed",
        rich_help_panel=SEEDS)] = None,
    ray: Annotated[str | None, typer.Option(
        help="Run --seeds as Ray tasks: alone, on RAY_ADDRESS or a new local Ray; with HEAD:6379, on that "
             "cluster. Needs the ray extra (pip install -e '.\\[ray]').", show_default="none: local workers",
        rich_help_panel=SEEDS)] = None,
    **settings: Any,
) -> None:
    """Train an agent and write a run folder (config, weights, checkpoint, metrics, summary, curves)."""
    typed = given(ctx)
    flags = {name: value for name, value in typed.items() if name in cfg.SETTINGS}
    if resume is not None:
        others = [name for name in typed if name not in ("resume", "steps", "env", "trust_env_code")]
        if others:
            fail(f"--resume continues the run as it was configured and takes only --steps "
                 f"(and --env or --trust-env-code): remove --{others[0].replace('_', '-')}")
        _run(lambda: _resume(resume, flags.get("steps"), flags.get("env"), trust_env_code), resume)
        return
    if trust_env_code:
        fail("--trust-env-code goes with --resume (a new run imports the --env you name)")
    if seeds is not None or workers is not None or ray is not None:
        _train_seeds(flags, config, runs_dir, name, force, seeds, workers, ray)
        return
    try:
        built, run_dir = _prepare(flags, config, runs_dir, name, force)
    except ValueError as err:
        fail(str(err))
    _run(lambda: _train(built, run_dir), run_dir)


def _prepare(flags: dict[str, Any], config_file: Path | None, runs_dir: Path, name: str | None,
             force: bool) -> tuple[cfg.Config, Path]:
    """The config, with the device, the env and the run folder checked before any folder is made."""
    from . import runs
    from .agent import resolve_device
    from .envs import make_run_env
    from .training import check_learns

    config = check_learns(cfg.build(flags, config_file))
    resolve_device(config.train.device)
    # Unknown ids, env constructors that fail and unsupported spaces are all refused here.
    make_run_env(config).close()
    return config, runs.prepare_run_dir(runs_dir, name, config, force)


def _train(config: cfg.Config, run_dir: Path) -> dict[str, Any]:
    """Train with a progress bar; the summary."""
    from . import display, training

    progress, show = display.run_progress(config.env, config.train.steps, config.train.pretrain)
    with progress:
        _, summary = training.train(config, run_dir, on_progress=show)
    return summary


def _resume(run_dir: Path, steps: int | None, env: str | None, trust_env_code: bool) -> dict[str, Any]:
    """Continue a run from its checkpoint with a progress bar, saying what was restored; the summary."""
    from . import display, runs, training

    config, _ = runs.load_config(run_dir)
    runs.check_env_trust(run_dir, config.env, env, trust_env_code)
    if steps is not None and steps <= 0:
        raise cfg.ConfigError(f"--steps must be > 0, got {steps}")
    total = config.train.steps if steps is None else steps
    # The bar starts only once the run is restored, so that a refusal stays one line on stderr.
    progress, show = display.run_progress(config.env, total, config.train.pretrain)
    trainer = training.resume(run_dir, steps, on_progress=show)
    display.resumed(run_dir, trainer.state, total, len(trainer.buffer))
    with progress:
        return trainer.run()


def _run(training: Callable[[], dict[str, Any]], run_dir: Path) -> None:
    """Run one training; then its curves.png, the summary table and the folder, or how to resume it."""
    from . import display

    try:
        summary = training()
    except ValueError as err:  # ConfigError, EnvError, RunError: the user's to fix
        fail(str(err))
    except RuntimeError as err:  # checkpoint.Diverged, without importing torch here
        fail(str(err), 1)
    display.summary_table(summary)
    if summary.get("interrupted"):
        from .training import EXIT_CODES

        display.interrupted(summary, run_dir)
        raise typer.Exit(EXIT_CODES[summary["interrupted"]])
    from .plotting import plot_finished

    try:
        plot_finished(run_dir, summary)
    except ValueError as err:  # a figure that cannot be drawn is a warning: the run stands
        _warn(f"no curves.png in {run_dir}: {err}")
    typer.echo(str(run_dir))


def _train_seeds(flags: dict[str, Any], config_file: Path | None, runs_dir: Path, name: str | None,
                 force: bool, seeds: str | None, workers: int | None, ray: str | None) -> None:
    """`train --seeds`: a run folder per seed in local workers or Ray tasks; exit 1 if any failed."""
    from . import display, multiseed

    try:
        seed_list = multiseed.seeds_of(seeds, workers, ray, flags)
        built, _ = _prepare({**flags, "seed": seed_list[0]}, config_file, runs_dir,
                            f"{name}-s{seed_list[0]}" if name else None, force)
        jobs = multiseed.plan(built, seed_list, runs_dir, name, force)
    except ValueError as err:
        fail(str(err))
    with display.seeds_progress(jobs, "waiting" if ray is None else "queued") as show:
        results = multiseed.run(jobs, workers, ray, show)
    display.seeds_report(results)
    code = multiseed.exit_code(results)
    if code:
        raise typer.Exit(code)


SEARCH = "Search"


@app.command(epilog="Score: the mean over a trial's evaluations of its eval return, 0 at random play and 1 at the "
                    "env's threshold (capped), so learning sooner scores higher; with --threshold R, minus the env "
                    "steps to the first evaluation at or above R. Each setting starts at its preset's value (then "
                    "--config's); the search space varies its fields; a flag fixes one for every trial.")
@with_settings
def tune(
    ctx: typer.Context,
    *,
    trials: Annotated[int, typer.Option(
        help="Trials in the study in all, those of earlier commands included: a resumed study runs the rest.",
        rich_help_panel=SEARCH)] = 20,
    study: Annotated[str | None, typer.Option(
        help="Study name: RUNS-DIR/STUDY holds study.journal, a run folder per trial (trial-N), best_config.json "
             "and the plots. The same name again resumes the study.", show_default="tune-{env}-{algo}",
        rich_help_panel=SEARCH)] = None,
    space: Annotated[Path | None, typer.Option(
        help='JSON of {"field": {"low": x, "high": y, "log": true} or {"choices": [...]}} over the default '
             "search space (null drops a field).", show_default="the default space of the algo",
        rich_help_panel=SEARCH)] = None,
    config: Annotated[Path | None, typer.Option(
        help="JSON of config fields that every trial starts from; searched fields still vary.",
        show_default="no file: the preset's values", rich_help_panel=SEARCH)] = None,
    runs_dir: Annotated[Path, typer.Option(help="Folder that holds the study folder.", rich_help_panel=SEARCH)
                        ] = Path("runs"),
    workers: Annotated[int, typer.Option(
        help="Local processes that run trials at once, sharing the study.", rich_help_panel=SEARCH)] = 1,
    storage: Annotated[str | None, typer.Option(
        help="Optuna RDB storage URL (postgresql://..., mysql://..., sqlite:///study.db) instead of the journal "
             "file, so that processes on several machines join one study.", show_default="RUNS-DIR/STUDY/"
        "study.journal", rich_help_panel=SEARCH)] = None,
    ray: Annotated[str | None, typer.Option(
        help="Run trials as Ray tasks (one CPU each): alone, on RAY_ADDRESS or a new local Ray; with HEAD:6379, "
             "on that cluster. Run folders come back here; the study needs --storage, or a file system that "
             "every node sees at the same path for the journal. Needs the ray extra (pip install -e '.\\[ray]').",
        show_default="none: --workers", rich_help_panel=SEARCH)] = None,
    sampler_seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.", rich_help_panel=SEARCH)] = 0,
    startup_trials: Annotated[int, typer.Option(
        help="Random trials before TPE models the space.", rich_help_panel=SEARCH)] = 10,
    prune_startup: Annotated[int, typer.Option(
        help="Complete trials before the median pruner stops any.", rich_help_panel=SEARCH)] = 5,
    prune_warmup: Annotated[int, typer.Option(
        help="Env steps of a trial before it may be pruned.", rich_help_panel=SEARCH)] = 0,
    prune_below: Annotated[float | None, typer.Option(
        help="Also prune a trial whose running score (its normalised eval returns so far) is below this.",
        show_default="none: the median rule alone", rich_help_panel=SEARCH)] = None,
    **settings: Any,
) -> None:
    """Search settings with Optuna (TPE, median pruning at evaluations); each trial a run folder."""
    from . import display, tune_trials
    from . import tune as tuning

    flags = {name: value for name, value in given(ctx).items() if name in cfg.SETTINGS}
    try:
        setup = tuning.prepare(flags, config, space, runs_dir, study, storage, trials, workers, ray,
                               sampler_seed=sampler_seed, startup_trials=startup_trials, prune_startup=prune_startup,
                               prune_warmup=prune_warmup, prune_below=prune_below)
        setup, left = tuning.open_study(setup, trials)
    except ValueError as err:
        fail(str(err))
    if left == 0:
        display.note(f"study {setup.name} has {trials} trials already: a larger --trials runs more")
    with display.tune_progress(setup.name) as show:
        stopped, errors = tune_trials.run(setup, left, workers, ray, show)
    rows = tuning.trial_rows(setup)
    done = sum(r["state"] == "complete" for r in rows)
    display.tune_table(rows, f"study {setup.name}: {done} complete of {len(rows)} trials, "
                             f"{tuning.score_name(setup)}")
    for path in tuning.write_outputs(setup, _warn):
        typer.echo(str(path))
    for error in errors:
        _warn(f"a worker failed: {error}")
    if stopped:
        from .training import EXIT_CODES

        display.note(f"dreamer: study {setup.name} stopped by {stopped}; the same command resumes it")
        raise typer.Exit(EXIT_CODES[stopped])
    if errors:
        raise typer.Exit(1)


@app.command()
def plot(
    run: Annotated[list[Path], typer.Argument(help="Run folders (a shell glob such as runs/* works).")],
    out: Annotated[Path | None, typer.Option(
        help="PNG to write.", show_default="RUN/curves.png for one run, plot.png for several")] = None,
    metric: Annotated[list[str] | None, typer.Option(
        help="Metric key from metrics.jsonl; repeat for several.",
        show_default="all for one run, eval/return_mean for several")] = None,
    x: Annotated[XAxis, typer.Option(help="Horizontal axis: env steps or wall-clock seconds.")] = XAxis.steps,
) -> None:
    """Plot one run's curves, or overlay several grouped by (env, algo, label) with 95% bands."""
    from .compare import group_runs, load_runs
    from .plotting import check_metrics, plot_groups, plot_run

    metrics = [m for item in metric or [] for m in item.split(",") if m]
    try:
        if len(run) == 1:
            path = plot_run(run[0], out, metrics or None, x.value, warn=_warn)
        else:
            run_list = load_runs(run, warn=_warn)
            check_metrics(run_list, metrics)
            path = plot_groups(group_runs(run_list, warn=_warn), out or Path("plot.png"), metrics or None, x.value,
                               warn=_warn)
    except ValueError as err:
        fail(str(err))
    typer.echo(str(path))


@app.command()
def compare(
    run: Annotated[list[Path], typer.Argument(help="Run folders (a shell glob such as runs/* works).")],
    threshold: Annotated[float | None, typer.Option(
        help="Return that counts as solved.", show_default="each run's threshold in summary.json")] = None,
    out: Annotated[Path, typer.Option(help="Folder for compare.md, .csv, .json and .png.")] = Path("compare"),
) -> None:
    """Table per env of groups (env, algo, label) over seeds: IQM, 95% CI, AUC, steps to threshold."""
    from . import compare as cmp
    from . import display
    from .plotting import plot_comparison

    try:
        run_list = cmp.load_runs(run, warn=_warn)
    except ValueError as err:
        fail(str(err))
    tables = cmp.compare(run_list, threshold, warn=_warn)
    display.compare_tables(tables, [header for _, header in cmp.COLUMNS], cmp.CAPTION, cmp.cells)
    for path in [*cmp.write_outputs(tables, out), plot_comparison(run_list, out / "compare.png", threshold, _warn)]:
        typer.echo(str(path))


THREADS_HELP = "Torch CPU threads."
THREADS_DEFAULT = "the run's threads setting"
ENV_HELP = "The run's module:Class env, named again so that dreamer may import it."
ENV_DEFAULT = "the run's env"
TRUST_HELP = "Import the module:Class env named in the run's config.json (runs code from the run folder)."


def _untrained(run: Path) -> str | None:
    """Why the run's weights are untrained (its checkpoint precedes any update), or None."""
    import json

    from safetensors import safe_open

    from .runs import CHECKPOINT_FILE

    try:  # the header alone: the checkpoint's tensors (its replay) may be large
        with safe_open(str(run / CHECKPOINT_FILE), framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
    except Exception:  # no or a damaged checkpoint: the weights may still be trained; say nothing
        return None
    if state.get("updates", 0) > 0:
        return None
    return f"its checkpoint is at env step {state.get('step', 0)}, before any update"


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `dreamer train`.")],
    episodes: Annotated[int, typer.Option(help="Deterministic episodes to run.")] = 10,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the first episode.", show_default="the run's seed")] = None,
    render: Annotated[bool, typer.Option(
        help="Record the first episode to videos/eval.gif (and show it when a display exists).")] = False,
    device: Annotated[Device, typer.Option(help="Where the networks run.")] = Device.auto,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP, show_default=THREADS_DEFAULT)] = None,
    env: Annotated[str | None, typer.Option(help=ENV_HELP, show_default=ENV_DEFAULT)] = None,
    trust_env_code: Annotated[bool, typer.Option(help=TRUST_HELP)] = False,
) -> None:
    """Rebuild the agent from a run folder, run episodes, print a table, write eval.json."""
    if episodes <= 0:
        fail(f"--episodes must be > 0, got {episodes}")
    if seed is not None and seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    from . import display, runs
    from .checkpoint import load_agent
    from .evaluation import evaluate_policy

    try:
        agent, config = load_agent(run, device.value, threads, env, trust_env_code)
        runs.check_writable(run)
        untrained = _untrained(run)
        if untrained is not None:
            _warn(f"{run} holds an untrained policy ({untrained}): these returns are of its initial weights; "
                  f"train it on with `dreamer train --resume {run}`")
        seed = config.train.seed if seed is None else seed
        limit = config.train.max_episode_steps
        with display.status(f"evaluating {episodes} episodes of {config.env}"):
            result = evaluate_policy(agent, config.env, episodes, seed, record=render, max_episode_steps=limit)
        report = {"env": config.env, "seed": seed, **result.stats(), "returns": result.returns,
                  "lengths": result.lengths}
        if render and result.render_error is not None:
            report["gif_error"] = result.render_error
            display.note(f"no eval.gif: the env could not render ({result.render_error})")
        if render and result.frames:
            report["gif"] = str(runs.write_gif(result.frames, run / "videos" / "eval.gif"))
            if display.window_available() and not agent.spec.image:  # an image agent sees no window's frames
                display.show_episode(agent, config.env, seed, limit)
        runs.write_json(run / runs.EVAL_FILE, report)
    except ValueError as err:
        fail(str(err))
    display.evaluation_table(report)


@app.command("imagine")
def imagine_command(
    run: Annotated[Path, typer.Argument(help="A run folder written by `dreamer train`.")],
    horizon: Annotated[int, typer.Option(help="Imagined steps per rollout (may exceed the training horizon).")] = 15,
    rollouts: Annotated[int, typer.Option(help="Rollouts: half from fresh resets, half along a real episode.")] = 16,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the start states.", show_default="the run's seed")] = None,
    actions: Annotated[ActionSource, typer.Option(
        help="policy: the actor on the imagined latent; random: uniform from the seed.")] = ActionSource.policy,
    device: Annotated[Device, typer.Option(help="Where the networks run.")] = Device.auto,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP, show_default=THREADS_DEFAULT)] = None,
    env: Annotated[str | None, typer.Option(help=ENV_HELP, show_default=ENV_DEFAULT)] = None,
    trust_env_code: Annotated[bool, typer.Option(help=TRUST_HELP)] = False,
) -> None:
    """Dream beside reality: table of errors, imagine/imagine.json, imagine.png and dream.gif."""
    from . import display
    from .dream_render import run_imagine
    from .imagine import table_steps

    try:
        report = run_imagine(run, horizon, rollouts, seed, actions.value, device.value, display.note, threads,
                             env, trust_env_code)
    except ValueError as err:
        fail(str(err))
    display.imagine_table(report["metrics"], report["obs_labels"], table_steps(horizon),
                          f"{report['env']}: |imagined - real|, mean±std over {rollouts} rollouts "
                          f"({report['actions']} actions, seed {report['seed']}, env units)")
    if "belief_probe" in report:
        display.belief_table(report["belief_probe"])
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
