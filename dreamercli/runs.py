"""The run folder: naming, atomic writes, config/metrics/summary/weights, and loading."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import SCHEMA_VERSION, Config, ConfigError, from_dict, to_dict
from .envs import EnvSpec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
EVAL_FILE = "eval.json"
META_KEYS = ("schema_version", "dreamer_version", "env_spec")


_UMASK = os.umask(0)
os.umask(_UMASK)


class RunError(ValueError):
    """A run folder that is missing, incomplete or not ours; the message is for the user."""


def default_name(config: Config) -> str:
    """{env}-{algo}-s{seed}-{YYYYmmdd-HHMMSS}, with characters unsafe in paths replaced."""
    env = config.env.replace("/", "_").replace(":", "_")
    return f"{env}-{config.algo}-s{config.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(runs_dir: Path, name: str | None, config: Config, force: bool) -> Path:
    """Pick the run folder path and check it may be used; creates nothing."""
    path = Path(runs_dir) / (name or default_name(config))
    if path.exists() and not force:
        raise RunError(f"run folder {path} already exists (use --force to overwrite it)")
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} exists and is not a folder")
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run folders are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    _atomic_write(Path(path), (json.dumps(_clean(data), indent=2) + "\n").encode())


def write_config(run_dir: Path, config: Config, spec: EnvSpec) -> None:
    """config.json: the resolved config, the env's dims, the tool version, the schema version."""
    from . import __version__

    data = {"schema_version": SCHEMA_VERSION, "dreamer_version": __version__,
            "env_spec": asdict(spec), **to_dict(config)}
    write_json(Path(run_dir) / CONFIG_FILE, data)


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl atomically with every row so far (files stay small)."""
    text = "".join(json.dumps(_clean(row)) + "\n" for row in rows)
    _atomic_write(Path(run_dir) / METRICS_FILE, text.encode())


def save_weights(run_dir: Path, tensors: dict) -> None:
    """weights.safetensors, written atomically; never pickle."""
    from safetensors.torch import save

    _atomic_write(Path(run_dir) / WEIGHTS_FILE, save(tensors))


def load_weights(run_dir: Path) -> dict:
    """Read weights.safetensors onto the CPU."""
    from safetensors.torch import load_file

    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no {WEIGHTS_FILE}: was training interrupted?")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise RunError(f"cannot read {path}: {err}") from None


def check_run_dir(run_dir: Path) -> Path:
    """Raise RunError unless run_dir is a folder holding a config.json."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run folder not found: {run_dir}")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is not a folder")
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a dreamer run folder (no {CONFIG_FILE})")
    return run_dir


def load_config(run_dir: Path) -> tuple[Config, EnvSpec]:
    """Rebuild the config and env spec from config.json alone."""
    path = check_run_dir(run_dir) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            raise RunError(f"{path} has schema version {data.get('schema_version')!r}; "
                           f"this dreamer reads version {SCHEMA_VERSION}")
        spec_data = data["env_spec"]
        spec = EnvSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_data.items()})
        config = from_dict({k: v for k, v in data.items() if k not in META_KEYS})
    except RunError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError,
            ConfigError) as err:
        raise RunError(f"{path} is not a valid dreamer config: {err}") from None
    return config, spec


def read_metrics(run_dir: Path, warn=None) -> Iterator[dict[str, Any]]:
    """Rows of metrics.jsonl; a broken line is skipped and reported through warn(message)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "step" not in row:
                    raise ValueError("not an object with a 'step'")
            except ValueError as err:
                if warn is not None:
                    warn(f"{path}:{number}: skipped a broken line ({err})")
                continue
            yield row


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
