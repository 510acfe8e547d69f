"""Hyperparameter search with Optuna: a search space over config fields, a score that rewards learning
fast, and a study whose trials are ordinary run folders under RUNS/STUDY/trial-N.

Score (maximised): the mean over a trial's evaluations of its eval return normalised between a random
policy's return (0) and the target (1, the env's threshold; capped at 1) -- the normalised area under
the eval curve, so that of two trials that end equal, the one that got there sooner wins. With no
target known, the mean eval return above random play, in the env's units. With the `threshold`
setting given as a flag (tune --threshold R): minus the env steps to the first evaluation at or above
R; a trial that never gets there scores -steps * (2 - its normalised area), below every trial that
did, and ranked among its like by how near it came.

The study lives in RUNS/STUDY/study.journal (or an RDB storage), so that local worker processes, Ray
tasks and later commands share it; a trial stopped by a signal is marked failed without an "error"
and its settings are queued to run first when the study resumes; trials ended that way never count
toward --trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runs
from .config import SETTINGS, Config, ConfigError, build, to_dict, validate, with_overrides

OPTUNA_HINT = "dreamer tune needs Optuna: pip install -e '.[tune]' (or pip install 'optuna>=3.6')"
JOURNAL_FILE = "study.journal"
BEST_FILE = "best_config.json"
HISTORY_PLOT, IMPORTANCE_PLOT = "history.png", "importances.png"
MIN_FOR_IMPORTANCES = 4  # complete trials before parameter importances mean anything

# The default search space, keyed by field name: a range (log-uniform where "log") or choices. Each
# entry is searched only for algos whose composition has the part in USED_BY ("": every algo).
SPACE: dict[str, dict[str, Any]] = {
    "prefill": {"low": 100, "high": 2000, "log": True},
    "noise_exponent": {"low": 0.0, "high": 2.0},
    "sac_lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "sac_ratio": {"low": 1.0, "high": 20.0, "log": True},
    "sac_batch": {"choices": [64, 128, 256]},
    "sac_hidden": {"choices": [32, 64, 128, 256]},
    "sac_actor_share": {"low": 0.05, "high": 1.0, "log": True},
    "wm_lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "train_ratio": {"low": 0.1, "high": 2.0, "log": True},
    "horizon": {"low": 5, "high": 30},
    "actor_lr": {"low": 1e-5, "high": 3e-4, "log": True},
}
USED_BY = {"prefill": "", "noise_exponent": "", "sac_lr": "off_policy", "sac_ratio": "off_policy",
           "sac_batch": "off_policy", "sac_hidden": "off_policy", "sac_actor_share": "off_policy",
           "wm_lr": "world_model", "train_ratio": "world_model", "horizon": "imagination",
           "actor_lr": "imagination"}
# What sets the budget, the measurement or where a run goes: compared across trials, never searched.
NOT_SEARCHED = ("env", "algo", "preset", "steps", "seed", "eval_every", "eval_episodes", "log_every",
                "checkpoint_every", "threshold", "max_episode_steps", "device", "threads", "stop_at_return",
                "tensorboard")
if set(SPACE) - set(SETTINGS) or set(SPACE) != set(USED_BY):  # checked at import, as config checks its own
    raise ConfigError(f"tune.SPACE: no config field {sorted(set(SPACE) ^ set(USED_BY) | set(SPACE) - set(SETTINGS))}")


@dataclass(frozen=True)
class Setup:
    """Everything a process needs to join the study and run its trials (picklable, for workers and Ray)."""

    name: str
    folder: Path  # RUNS/STUDY, absolute
    storage: str | None  # an RDB URL; None: the journal file in folder
    base: Config  # the fixed settings; each trial overrides the searched ones
    space: dict[str, dict[str, Any]]
    by_threshold: bool
    target: float | None
    random_return: float
    sampler_seed: int = 0
    startup_trials: int = 10
    prune_startup: int = 5
    prune_warmup: int = 0
    prune_below: float | None = None


# -- the search space and the score ------------------------------------------------------------------


def space_for(base: Config, fixed: set[str], space_file: Path | None) -> dict[str, dict[str, Any]]:
    """The default space for base.algo, then the file's entries over it (null drops one), less the fixed fields."""
    from .agent import COMPOSITIONS

    parts = COMPOSITIONS[base.algo]
    space = {k: dict(v) for k, v in SPACE.items() if not USED_BY[k] or getattr(parts, USED_BY[k])}
    if "prefill" in space:  # never a prefill that leaves no steps to learn
        space["prefill"]["high"] = min(space["prefill"]["high"], base.train.steps // 2)
        if space["prefill"]["high"] <= space["prefill"]["low"]:
            del space["prefill"]
    given = {} if space_file is None else _read_space(space_file)
    both = sorted(fixed & {k for k, v in given.items() if v is not None})
    if both:
        raise ConfigError(f"--{both[0].replace('_', '-')} fixes {both[0]}, which {space_file} searches: drop one")
    for name, entry in given.items():
        if entry is None:
            space.pop(name, None)
        else:
            _check_entry(name, entry, base, space_file)
            space[name] = entry
    space = {k: v for k, v in space.items() if k not in fixed}
    if not space:
        raise ConfigError("nothing to search: every field of the search space is fixed by a flag")
    return space


def _read_space(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read the search space file {path}: {getattr(err, 'strerror', None) or err}") \
            from None
    if not isinstance(data, dict):
        raise ConfigError(f"search space file {path} must hold a JSON object of fields")
    for name in data:
        if name not in SETTINGS:
            raise ConfigError(f"unknown config field '{name}' in the search space file {path}")
        if name in NOT_SEARCHED:
            raise ConfigError(f"{name} cannot be searched (it sets the budget or the measurement); "
                              f"fix it with --{name.replace('_', '-')} instead ({path})")
    return data


def _check_entry(name: str, entry: Any, base: Config, path: Path | None) -> None:
    """A file's entry must be {"low", "high"[, "log"]} or {"choices": [...]}, of values the field accepts."""
    form = f'search space entry "{name}" in {path} must be {{"low": x, "high": y, "log": false}} or ' \
           f'{{"choices": [...]}}, got {json.dumps(entry)}'
    if not isinstance(entry, dict):
        raise ConfigError(form)
    kind = SETTINGS[name].kind
    if "choices" in entry:
        values = entry["choices"]
        if set(entry) != {"choices"} or not isinstance(values, list) or not values:
            raise ConfigError(form)
    else:
        values = [entry.get("low"), entry.get("high")]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        if set(entry) - {"low", "high", "log"} or {"low", "high"} - set(entry) or not numbers \
                or not isinstance(entry.get("log", False), bool) or kind == "str":
            raise ConfigError(form)
        if values[0] >= values[1] or (entry.get("log") and values[0] <= 0):
            raise ConfigError(f'search space entry "{name}" in {path}: low must be below high'
                              + (" and above 0 (log)" if entry.get("log") else "") + f", got {json.dumps(entry)}")
        if kind == "int" and not all(float(v).is_integer() for v in values):
            raise ConfigError(f'search space entry "{name}" in {path}: {name} takes integers, got {json.dumps(entry)}')
    for value in values:
        try:
            validate(with_overrides(base, {name: value}))
        except ConfigError as err:
            raise ConfigError(f"search space file {path}: {err}") from None


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's value of every searched field, asked of Optuna (int fields as ints)."""
    params = {}
    for name, entry in space.items():
        if "choices" in entry:
            params[name] = trial.suggest_categorical(name, entry["choices"])
        elif SETTINGS[name].kind == "int":
            params[name] = trial.suggest_int(name, int(entry["low"]), int(entry["high"]), log=entry.get("log", False))
        else:
            params[name] = trial.suggest_float(name, entry["low"], entry["high"], log=entry.get("log", False))
    return params


def trial_config(base: Config, params: dict[str, Any]) -> Config:
    """The config of a trial: base with its params (a whole number chosen for a float field as a float)."""
    def typed(name: str, value: Any) -> Any:
        whole = isinstance(value, int) and not isinstance(value, bool)
        return float(value) if whole and SETTINGS[name].kind.startswith("float") else value

    return validate(with_overrides(base, {k: typed(k, v) for k, v in params.items()}))


def normalised(returns: list[float], low: float, target: float | None) -> float:
    """Mean of the eval returns mapped to 0 (random play) .. 1 (target, capped); above random if no target."""
    if target is None or target <= low:
        return sum(r - low for r in returns) / len(returns)
    return sum(min(1.0, (r - low) / (target - low)) for r in returns) / len(returns)


def score(returns: list[float], reached_at: int | None, steps: int, low: float, target: float | None,
          by_threshold: bool) -> float:
    """A finished trial's score (the module's docstring has the rule)."""
    area = normalised(returns, low, target)
    if not by_threshold:
        return area
    if reached_at is not None:
        return -float(reached_at)
    return -steps * (2.0 - min(1.0, area))


def random_return(config: Config) -> float:
    """Mean return of uniformly random actions over eval_episodes seeded episodes: the score's zero."""
    from .envs import make_env

    env = make_env(config.env, seed=config.train.seed, max_episode_steps=config.train.max_episode_steps)
    total = 0.0
    try:
        for i in range(config.train.eval_episodes):
            env.reset(seed=config.train.seed + 10_000 + i)
            done = False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total, done = total + float(reward), terminated or truncated
    finally:
        env.close()
    return total / config.train.eval_episodes


# -- the study --------------------------------------------------------------------------------------


def import_optuna():
    """The optuna module (quiet), or ConfigError with the install hint."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(OPTUNA_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_of(setup: Setup):
    """Optuna's RDB storage at the URL, else a journal file in the study folder."""
    optuna = import_optuna()
    if setup.storage is not None:
        try:
            return optuna.storages.RDBStorage(setup.storage)
        except Exception as err:  # SQLAlchemy's many errors for a URL it cannot use
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--storage {setup.storage}: cannot open it: {first}") from None
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return optuna.storages.JournalStorage(JournalFileBackend(str(setup.folder / JOURNAL_FILE)))


def load(setup: Setup, worker: int = 0, storage: Any = None):
    """The study as one process sees it: a TPE sampler seeded per process and a median pruner."""
    import numpy as np

    optuna = import_optuna()
    storage = storage or storage_of(setup)
    done = len(optuna.load_study(study_name=setup.name, storage=storage).get_trials(deepcopy=False))
    # Seeded by the trials already there too, so that a resumed study draws no trial twice.
    seed = int(np.random.SeedSequence([setup.sampler_seed, done, worker]).generate_state(1)[0])
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=setup.startup_trials, constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=setup.prune_startup, n_warmup_steps=setup.prune_warmup)
    return optuna.load_study(study_name=setup.name, storage=storage, sampler=sampler, pruner=pruner)


def identity(setup: Setup) -> dict[str, Any]:
    """What trials of one study must share; a resume with other fixed settings is refused."""
    return json.loads(json.dumps({"base": to_dict(setup.base), "space": setup.space,
                                  "by_threshold": setup.by_threshold}))


def open_study(setup: Setup, trials: int) -> tuple[Setup, int]:
    """Create or resume the study; the setup (with the stored random return) and the trials left to run."""
    optuna = import_optuna()
    if setup.storage is None:
        setup.folder.mkdir(parents=True, exist_ok=True)
    storage = storage_of(setup)
    study = optuna.create_study(study_name=setup.name, storage=storage, direction="maximize", load_if_exists=True)
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity(setup))
        study.set_user_attr("random_return", setup.random_return)
    elif stored != identity(setup):
        what = {"base": "fixed settings", "space": "search space", "by_threshold": "score"}
        key = next(k for k in what if stored.get(k) != identity(setup)[k])
        raise ConfigError(f"study {setup.name} was started with other {what[key]}: give the same flags and "
                          "search space to resume it, or another --study")
    setup = dataclasses.replace(setup, random_return=study.user_attrs["random_return"])
    abandon_stale(study)
    return setup, max(0, trials - counted(study))


def counted(study) -> int:
    """Trials toward --trials: complete, pruned, running, and failed by their settings (not by a signal)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs))


def abandon_stale(study) -> None:
    """Running trials of dead processes on this host (a kill, a second Ctrl-C): abandoned and queued again."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == socket.gethostname() and not _alive(t.user_attrs.get("pid", -1)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# -- the command's steps: prepare, run, report -------------------------------------------------------


def prepare(flags: dict[str, Any], config_file: Path | None, space_file: Path | None, runs_dir: Path,
            name: str | None, storage: str | None, trials: int, workers: int, ray: str | None,
            **search: Any) -> Setup:
    """Check the command's input and build the study's setup; creates nothing. ConfigError for the user."""
    from .agent import resolve_device
    from .envs import make_run_env, threshold_of

    for option, value, least in (("trials", trials, 1), ("workers", workers, 1),
                                 *((k, v, 0) for k, v in search.items() if k != "prune_below")):
        if value < least:
            raise ConfigError(f"--{option.replace('_', '-')} must be >= {least}, got {value}")
    if search.get("prune_below") is not None and not math.isfinite(search["prune_below"]):
        raise ConfigError(f"--prune-below must be a finite number, got {search['prune_below']}")
    if ray is not None and workers > 1:
        raise ConfigError("give either --workers or --ray: Ray places the trials itself")
    import_optuna()
    if ray is not None:
        from .multiseed import import_ray

        import_ray()
    from .training import check_learns

    base = check_learns(build(flags, config_file))
    resolve_device(base.train.device)
    make_run_env(base).close()  # an unknown env fails here
    name = name or f"tune-{base.env}-{base.algo}".replace("/", "_").replace(":", "_")
    try:
        runs.check_name(name)
    except runs.RunError:
        raise ConfigError(f"--study must be a plain folder name (no '/', '\\', or leading '.'), got {name!r}") \
            from None
    folder = (Path(runs_dir) / name).resolve()
    if (folder / runs.CONFIG_FILE).is_file():
        raise ConfigError(f"{folder} is a run folder, not a study: choose another --study")
    return Setup(name, folder, storage, base, space_for(base, set(flags), space_file), "threshold" in flags,
                 threshold_of(base.env, base.train.threshold), random_return(base), **search)


def score_name(setup: Setup) -> str:
    """What the score measures, in a few words for the table's title."""
    if setup.by_threshold:
        return f"score: minus env steps to return {setup.target:g}"
    if setup.target is None or setup.target <= setup.random_return:
        return f"score: mean eval return above random play ({setup.random_return:.3g})"
    return f"score: mean eval return, 0 at random play ({setup.random_return:.3g}), 1 at {setup.target:g}"


STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running", "WAITING": "queued"}


def trial_rows(setup: Setup) -> list[dict[str, Any]]:
    """Every trial of the study: number, state, score, env steps reached, params, and whether it is the best."""
    optuna = import_optuna()
    study = optuna.load_study(study_name=setup.name, storage=storage_of(setup))
    trials = study.get_trials(deepcopy=False)
    best = max((t for t in trials if t.value is not None and t.state.name == "COMPLETE"),
               key=lambda t: t.value, default=None)
    return [{"number": t.number, "score": t.value if t.state.name == "COMPLETE" else None,
             "state": STATES.get(t.state.name, "failed" if "error" in t.user_attrs else "interrupted"),
             "env_steps": t.user_attrs.get("env_steps"), "best": t is best,
             "params": t.params or t.system_attrs.get("fixed_params", {}),  # a queued trial's are fixed ones
             "error": t.user_attrs.get("error")} for t in trials]


def write_outputs(setup: Setup, warn: Callable[[str], None]) -> list[Path]:
    """best_config.json of the best complete trial, and Optuna's history and importance plots; their paths."""
    optuna = import_optuna()
    from optuna.visualization import matplotlib as plots

    from . import plotting  # noqa: F401  (matplotlib's Agg backend)

    study = optuna.load_study(study_name=setup.name, storage=storage_of(setup))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        warn(f"study {setup.name} has no complete trial yet: no {BEST_FILE}")
        return []
    setup.folder.mkdir(parents=True, exist_ok=True)
    best = trial_config(setup.base, study.best_trial.params)
    runs.write_json(setup.folder / BEST_FILE, to_dict(best))
    paths = [setup.folder / BEST_FILE]
    figures = [(HISTORY_PLOT, plots.plot_optimization_history)]
    if len(complete) >= MIN_FOR_IMPORTANCES:
        figures.append((IMPORTANCE_PLOT, plots.plot_param_importances))
    for file, draw in figures:
        try:
            with warnings.catch_warnings():  # Optuna's notes on small studies; the figure says enough
                warnings.simplefilter("ignore")
                paths.append(runs.write_figure(draw(study).figure, setup.folder / file))
        except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as err:
            warn(f"no {file}: {err}")
    return paths
