"""One frozen config tree: each setting declared once, with its help text and its check.

The CLI's `train` flags and the README's settings table are built from these declarations;
`validate` applies their checks. Presets are overlays of the default, keyed by field name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

VERSION = "0.1.0"  # the package's version; here, in a module that imports nothing of the package
SCHEMA_VERSION = 2  # 2: metadata moved from config.json to run.json; 1 still loads
# Here rather than in envs.py, which imports it, so that config stays free of gymnasium.
DEFAULT_MAX_EPISODE_STEPS = 1000
META_KEYS = ("schema_version", "dreamer_version", "env_spec", "label")  # run.json's keys, not settings

# dreamer: imagination only; model-free: SAC on real data, no world model; mbpo: SAC on real and
# branched model data; hybrid: one policy trained by both, as far as the model-trust guard allows.
# belief: SAC on real transitions reading the observation and the RSSM's belief h.
ALGOS = ("dreamer", "model-free", "mbpo", "hybrid", "belief")
MODELS = ("auto", "latent", "rssm")
IMAG_NOISE = ("auto", "mean", "sample")
DEVICES = ("auto", "cpu", "cuda")
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "tiny": {
        "latent_dim": 8, "deter_dim": 16, "hidden_dim": 32,
        "seq_len": 8, "horizon": 5, "imag_starts": 32, "batch_size": 16,
        "steps": 300, "prefill": 100, "pretrain": 20, "train_ratio": 0.25, "eval_every": 150,
        "eval_episodes": 2, "log_every": 50, "sac_hidden": 32, "sac_batch": 32,
    },
}


REGISTERED = "registered"  # stop_at_return's word for the env's reward_threshold (else a number, or None)
TENSORBOARD_INSTALL = "pip install 'dreamercli[tensorboard]'"


class ConfigError(ValueError):
    """A setting that cannot be used; the message is meant for the user."""


def setting(default: Any, help: str, check: str = "", choices: tuple[str, ...] = (), file_only: str = "") -> Any:
    """A config field with its help text and its check ("> 0", ">= 2", "in (0, 1]", ...).

    choices: the only values allowed; file_only: why the field has no `train` flag (set it in a
    --config file instead).
    """
    if check:
        _bounds(check)  # a rule that does not parse fails at import, not at the first bad value
    return field(default=default, metadata={"help": help, "check": check, "choices": choices,
                                            "file_only": file_only})


def _bounds(rule: str):
    """The test of a rule: '> x', '>= x', or an interval such as 'in (0, 1]' or 'in [0, 2]'."""
    op, _, rest = rule.partition(" ")
    if op in (">", ">="):
        low = float(rest)
        return (lambda v: v > low) if op == ">" else (lambda v: v >= low)
    if op != "in" or rest[0] not in "([" or rest[-1] not in ")]":
        raise ValueError(f"cannot read the check {rule!r}")
    low, high = (float(x) for x in rest[1:-1].split(","))
    return lambda v: (low < v if rest[0] == "(" else low <= v) and (v < high if rest[-1] == ")" else v <= high)


@dataclass(frozen=True)
class WorldModelConfig:
    """Sizes and loss scales of the latent world model."""

    model: str = setting("auto", "Which world model: latent (from one observation: memoryless), rssm (a "
                                 "recurrent state-space model: a GRU belief over the episode so far, which "
                                 "remembers what observations leave out), auto (the algo's own: rssm for belief, "
                                 "latent for the others).", choices=MODELS)
    latent_dim: int = setting(64, "Size of the Gaussian latent z.", "> 0")
    deter_dim: int = setting(128, "Units of the RSSM's recurrent state h (its GRU).", "> 0")
    hidden_dim: int = setting(128, "Width of every hidden layer (world model and actor-critic).", "> 0")
    hidden_layers: int = setting(2, "Hidden layers of every network (world model and actor-critic).", "> 0")
    wm_lr: float = setting(1e-3, "Adam learning rate of the encoder, transition, heads and decoder.", "> 0")
    seq_len: int = setting(16, "Length of replayed sequences; the model is trained open-loop over them.", ">= 2")
    consistency: float = setting(20.0, "Weight of the open-loop latent consistency loss (per dim).", ">= 0")
    kl_rep: float = setting(0.1, "Weight of KL(posterior || stop-grad prior) (per dim in the latent model): it "
                                      "shapes the encoder.",
                            ">= 0")
    kl_dyn: float = setting(0.5, "RSSM: weight of KL(stop-grad posterior || prior), which trains the prior.",
                            ">= 0")
    kl_free: float = setting(1.0, "RSSM: free nats; each KL term below this many nats per step is not pushed "
                                  "lower.", ">= 0")
    min_std: float = setting(0.05, "Lower bound of every latent standard deviation.", "> 0")
    novelty: float = setting(0.0, "Imagined reward for the disagreement of an ensemble of one-step models, per "
                                  "step and relative to its mean (0: no ensemble).", ">= 0")
    novelty_heads: int = setting(5, "One-step predictors in that ensemble.", ">= 2")


@dataclass(frozen=True)
class ActorCriticConfig:
    """Imagination horizon, returns and optimiser settings of the policy and value."""

    horizon: int = setting(15, "Imagined steps per rollout (the horizon H).", "> 0")
    imag_starts: int = setting(64, "Replayed latents that start imagined rollouts, per update.", "> 0")
    imag_noise: str = setting("auto", "Imagined latents: prior means, samples, or auto (samples for continuous "
                                      "actions, means for discrete ones).", choices=IMAG_NOISE)
    actor_lr: float = setting(3e-5, "Adam learning rate of the actor in imagination (dreamer; hybrid's "
                                    "imagination path).", "> 0")
    critic_lr: float = setting(1e-3, "Adam learning rate of the critic.", "> 0")
    discount: float = setting(0.997, "Discount gamma (an effective horizon of about 333 steps).", "in (0, 1]")
    lam: float = setting(0.95, "Lambda of the lambda-return.", "in (0, 1]")
    entropy: float = setting(3e-4, "Entropy bonus, on returns normalised to about 0 to 1.", ">= 0")
    critic_ema: float = setting(0.02, "Rate at which the slow (target) critic follows the critic.", "in (0, 1]")
    return_ema: float = setting(0.01, "Rate of the percentile-range estimate that scales returns.", "in (0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop: data collection, update ratio, evaluation and logging."""

    steps: int = setting(10_000, "Env steps to train for.", "> 0")
    seed: int = setting(0, "Seed of torch, numpy and the env.", ">= 0")
    batch_size: int = setting(16, "Replayed sequences per world-model update.", "> 0")
    buffer_size: int = setting(100_000, "Real transitions kept in replay.", "> 0")
    train_ratio: float = setting(0.5, "Gradient updates per env step once the prefill is done.", "> 0")
    # 250 rather than 500: model-free reached the thresholds sooner and dreamer kept its medians
    # (benchmarks/sample_efficiency.py with --set prefill=...).
    prefill: int = setting(250, "Env steps of random actions before learning starts.", ">= 0")
    noise_exponent: float = setting(1.0, "Colour of the collection noise: its spectrum falls as 1/f^x (0 white, "
                                         "1 pink, 2 red); longer drifts reach rewards far from the start.",
                                    "in [0, 2]")
    pretrain: int = setting(200, "World-model-only updates on the prefill data, before behaviour learning.",
                            ">= 0")
    eval_every: int = setting(1_000, "Env steps between evaluations (0: only at the end).", ">= 0")
    eval_episodes: int = setting(10, "Deterministic episodes per evaluation.", "> 0")
    log_every: int = setting(250, "Env steps between training-metric rows.", "> 0")
    checkpoint_every: int = setting(0, "Env steps between checkpoints (0: at each evaluation); one at the end "
                                       "too.", ">= 0")
    threshold: float | None = setting(None, "Return that counts as solved (none: the env's reward_threshold).")
    max_episode_steps: int = setting(DEFAULT_MAX_EPISODE_STEPS, "Step limit of an env that registers none (an "
                                     "env whose episodes never end would hang evaluation).", "> 0")
    device: str = setting("auto", "Where the networks run (auto: cuda when torch sees a GPU).", choices=DEVICES)
    threads: int = setting(1, "Torch CPU threads; small networks run fastest on one.", "> 0")
    stop_at_return: float | str | None = setting(
        None, "End the run at the first evaluation whose mean return reaches this (registered: the env's "
              "registered reward_threshold, as threshold's default; none: run every step).")
    tensorboard: bool = setting(False, "Also write every metrics row, and the config, as TensorBoard event files "
                                       "in RUN/tensorboard/ (needs the tensorboard extra).")


@dataclass(frozen=True)
class LearnerConfig:
    """The off-policy learner on real (and branched) transitions, and the model-trust guard.

    Used by --algo model-free, mbpo and hybrid; names start with sac_ so that none repeats another
    section's (the learner's discount is sac_discount). Defaults from benchmarks/sac_screen.py and
    benchmarks/sample_efficiency.py: DroQ-style critics at many updates per env step reach the
    thresholds in the fewest env steps.
    """

    sac_hidden: int = setting(64, "Width of the SAC actor's and critics' hidden layers.", "> 0")
    sac_layers: int = setting(2, "Hidden layers of the SAC actor and critics.", "> 0")
    sac_lr: float = setting(1e-3, "Adam learning rate of the critics, the temperature and the actor they train.",
                            "> 0")
    sac_batch: int = setting(128, "Transitions per SAC update.", "> 0")
    sac_discount: float = setting(0.99, "The off-policy learner's discount gamma.", "in (0, 1]")
    sac_nstep: int = setting(1, "Env steps a replayed transition runs on before its value is bootstrapped.",
                             "> 0")
    sac_tau: float = setting(0.005, "Rate at which the target critics follow the critics.", "in (0, 1]")
    sac_dropout: float = setting(0.01, "Dropout in the critics (DroQ), which with LayerNorm lets sac_ratio be "
                                       "high.", "in [0, 1)")
    sac_critics: int = setting(2, "Critics in the ensemble; targets use the min of two of them.", ">= 2")
    sac_ratio: float = setting(10.0, "SAC updates per env step once the prefill is done.", ">= 0")
    sac_actor_share: float = setting(0.1, "Share of the SAC updates that train the actor and temperature too (a "
                                          "step's last ones; the rest train the critics alone).", "in (0, 1]")
    sac_alpha: float = setting(0.2, "Initial entropy temperature, then tuned toward a target entropy.", "> 0")
    sac_novelty: float = setting(1.0, "Reward for novel observations (random network distillation), relative to "
                                      "its mean, paid while the replay holds no real episode end and its rewards "
                                      "vary by less than a tenth of this (0: none).", ">= 0")
    real_share: float = setting(0.5, "Least share of real transitions in a SAC batch (when the model is fully "
                                     "trusted).", "in (0, 1]")
    branch_length: int = setting(5, "Longest branched rollout through the model; the guard picks 0 up to this.",
                                 ">= 0")
    branch_starts: int = setting(32, "Replayed real states that start branched rollouts, per env step.", "> 0")
    model_buffer_size: int = setting(50_000, "Branched transitions kept.", "> 0")
    trust_threshold: float = setting(0.2, "Model error / 'nothing changes' error at or below which the model "
                                          "counts as useful.", "in (0, 1]")
    trust_window: int = setting(200, "Env steps of fresh transitions over which the guard measures errors.", "> 0")
    memory_gain: float = setting(0.3, "belief: the off-policy learner reads the RSSM's belief h only once a "
                                      "check (every 750 env steps) finds that the episode's history predicts a "
                                      "step's outcome on held-out episodes with this share less error than the "
                                      "observation alone (0: from the start).", "in [0, 1)")
    settle_drift: float = setting(0.1, "From images SAC reads only the model state: it starts once the replayed "
                                        "states move by less than this share of their variance between refreshes "
                                        "(100 env steps), 5 times in a row, or at 5,000 env steps (0: at once).",
                                  ">= 0")


@dataclass(frozen=True)
class ObservationConfig:
    """What the agent observes: the env's own observation, or its rendered frames."""

    pixels: bool = setting(False, "Observe the env's rgb_array frames, resized to frame_size, instead of its "
                                  "observation vector; needs the RSSM (algo belief, or dreamer with --model "
                                  "rssm). An env whose observation is an image is read as one without it.")
    frame_size: int = setting(32, "Height and width of image observations (frames are resized to it): a power "
                                  "of two, since the convolutional encoder halves it down to 4x4.", ">= 16")


@dataclass(frozen=True)
class Config:
    """Everything a run needs; stored verbatim as config.json."""

    env: str = setting("CartPole-v1", "Gymnasium id or module:Class.")
    # belief by default: model-free's SAC reading the RSSM's belief beside the observation solves the
    # partially observed tasks, where SAC alone cannot, and keeps its pace on the suite (docs/belief.md).
    algo: str = setting("belief", "belief: SAC on real transitions, reading the observation and the RSSM's "
                                  "belief of the episode so far; dreamer: the policy learns in imagination "
                                  "only; model-free: SAC on real transitions, no world model; mbpo: SAC on "
                                  "real and branched model transitions; hybrid: one policy trained by both, as "
                                  "far as the model-trust guard allows.", choices=ALGOS)
    preset: str = setting("default", "The values every other setting starts from (tiny: small and quick, for "
                                     "tests and smoke runs).", choices=tuple(PRESETS))
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    observation: ObservationConfig = field(default_factory=ObservationConfig)


@dataclass(frozen=True)
class Setting:
    """One declared field: where it lives, its default, type, help, check and choices."""

    name: str
    section: str  # '' for the top level
    default: Any
    kind: str  # the annotation's text (`from __future__ import annotations`): int, float, str, float | None
    help: str
    check: str
    choices: tuple[str, ...]
    file_only: str


def declarations(tree: type = Config) -> dict[str, Setting]:
    """Every field of a config tree by name; ConfigError when a name repeats across sections."""
    found: dict[str, Setting] = {}

    def add(f: dataclasses.Field, section: str) -> None:
        if f.name in found:
            where = found[f.name].section or "the top level"
            raise ConfigError(f"config field {f.name!r} of {section or 'the top level'} repeats the one of {where}: "
                              "names must be unique, since flags and overrides name a field alone")
        meta = f.metadata
        found[f.name] = Setting(f.name, section, f.default, str(f.type), meta.get("help", ""),
                                meta.get("check", ""), meta.get("choices", ()), meta.get("file_only", ""))

    for f in fields(tree):
        if dataclasses.is_dataclass(f.default_factory):
            for inner in fields(f.default_factory):
                add(inner, f.name)
        else:
            add(f, "")
    return found


SETTINGS = declarations()  # checked here, at import: a repeated name never reaches a run
SECTIONS = tuple(dict.fromkeys(s.section for s in SETTINGS.values() if s.section))
TOP_LEVEL = tuple(s.name for s in SETTINGS.values() if not s.section)


def field_names() -> dict[str, str]:
    """Map every settable field name to the section that holds it ('' for top level)."""
    return {name: s.section for name, s in SETTINGS.items()}


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy of config with the named fields replaced (names are unique in the tree)."""
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
    top = {k: v for k, v in overrides.items() if SETTINGS[k].section == ""}
    sections = {}
    for section in SECTIONS:
        current = getattr(config, section)
        part = {k: _coerce(getattr(current, k), v) for k, v in overrides.items() if SETTINGS[k].section == section}
        if part:
            sections[section] = dataclasses.replace(current, **part)
    return dataclasses.replace(config, **top, **sections)


def _coerce(old: Any, value: Any) -> Any:
    """Turn a JSON float such as 1000.0 into an int where the field holds ints."""
    if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float):
        return int(value) if value.is_integer() else value
    return value


def from_preset(name: str) -> Config:
    """The default config with a preset's overlay applied."""
    if not isinstance(name, str):
        raise ConfigError(f"preset must be a string, got {_shown(name)}")
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return with_overrides(Config(preset=name), PRESETS[name])


def build(flags: dict[str, Any], config_file: Path | None = None) -> Config:
    """Preset, then the JSON file, then the flags, each over the last; validated, and refused if it cannot learn.

    The preset is the flags' preset, else the file's, else the default; a run's config.json
    works as the file (its metadata keys are skipped).
    """
    flags = dict(flags)
    data = {} if config_file is None else flatten(load_json(config_file))
    data = {k: v for k, v in data.items() if k not in META_KEYS}
    preset = flags.pop("preset", None) or data.get("preset", "default")
    data.pop("preset", None)
    return validate(with_overrides(with_overrides(from_preset(preset), data), flags))


def to_dict(config: Config) -> dict[str, Any]:
    """The config as nested plain JSON-able dicts."""
    return dataclasses.asdict(config)


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Field values from to_dict() output (nested by section) or an already flat dict."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config from to_dict() output (nested) or from a flat dict of field names."""
    flat = flatten(data)
    return validate(with_overrides(from_preset(flat.get("preset", "default")), flat))


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON object of config fields, with errors fit for the user."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a JSON file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def _shown(value: Any) -> str:
    """A value as the user wrote it: JSON's true, false and null; Python's repr otherwise."""
    return json.dumps(value) if value is None or isinstance(value, bool) else repr(value)


def _check_type(name: str, annotation: str, value: Any) -> None:
    """Raise ConfigError unless value fits the field's annotation: str, bool, int, float, float | None or
    float | str | None."""
    kinds = annotation.split(" | ")
    if value is None and "None" in kinds:
        return
    if "str" in kinds and isinstance(value, str):
        return
    if kinds[0] == "str":
        raise ConfigError(f"{name} must be a string, got {_shown(value)}")
    if kinds[0] == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {_shown(value)}")
        return
    # bool is an int to Python, but `"steps": true` in a JSON file is a slip, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be {'an integer' if kinds[0] == 'int' else 'a number'}, got {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if kinds[0] == "int" and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{name} must be an integer, got {value!r}")


def _stop_at_return(value: float | str | None) -> float | str | None:
    """stop_at_return as a number, 'registered' or None (a flag gives numbers as text)."""
    if not isinstance(value, str) or value == REGISTERED:
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"stop_at_return must be a finite number or '{REGISTERED}', got {value!r}")
    return number


def validate(config: Config) -> Config:
    """Check every field's type, then its declared check or choices; ConfigError names the first bad one.

    Returns the config with stop_at_return's number text (from a flag) read as a number.
    """
    values = {s.name: getattr(getattr(config, s.section) if s.section else config, s.name)
              for s in SETTINGS.values()}
    for s in SETTINGS.values():
        _check_type(s.name, s.kind, values[s.name])
    for s in SETTINGS.values():
        value = values[s.name]
        if s.choices and value not in s.choices:
            raise ConfigError(f"unknown {s.name} '{value}' (choose from {', '.join(s.choices)})")
        if s.check and value is not None and not _bounds(s.check)(value):
            raise ConfigError(f"{s.name} must be {s.check}, got {value}")
    size = config.observation.frame_size
    if size & (size - 1):  # the encoder halves frames down to 4x4 and the decoder doubles them back
        raise ConfigError(f"frame_size must be a power of two (16, 32, 64, ...), got {size}")
    stop = _stop_at_return(config.train.stop_at_return)
    return config if stop == config.train.stop_at_return else with_overrides(config, {"stop_at_return": stop})


def preset_values(name: str) -> dict[str, Any]:
    """The presets that give a field a value other than its default, with that value."""
    default = SETTINGS[name].default
    return {preset: overlay[name] for preset, overlay in PRESETS.items() if overlay.get(name, default) != default}


def default_text(name: str) -> str:
    """A field's default as the README shows it, with each preset's own value where it differs."""
    def text(value: Any) -> str:
        return "none" if value is None else str(value)

    own = [f"{preset}: {text(value)}" for preset, value in preset_values(name).items()]
    return "; ".join([text(SETTINGS[name].default), *own])


def settings_table() -> str:
    """The README's settings table in markdown: field, default, help and section of every setting."""
    rows = ["| field | default | help | section |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        note = f" File only: {s.file_only}" if s.file_only else ""
        choices = f" One of: {', '.join(s.choices)}." if s.choices else ""
        rule = f" Must be {s.check}." if s.check else ""
        cells = (f"`{s.name}`", f"`{default_text(s.name)}`", s.help + choices + rule + note, s.section or "top level")
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
