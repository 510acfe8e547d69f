"""The run folder: naming, the one atomic writer, config/metrics/summary/weights, and loading."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import META_KEYS, SCHEMA_VERSION, VERSION, Config, ConfigError, from_dict, to_dict
from .envs import EnvSpec

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"  # metadata that is not config: schema, tool version, env dims, label
WEIGHTS_FILE = "weights.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"
EVAL_FILE = "eval.json"
TMP_SUFFIX = ".tmp"

_UMASK = os.umask(0)
os.umask(_UMASK)


class RunError(ValueError):
    """A run folder that is missing, incomplete or not ours; the message is for the user."""


def default_name(config: Config) -> str:
    """{env}-{algo}-s{seed}-{YYYYmmdd-HHMMSS} ({env}-pixels{size}-... from frames), characters unsafe in paths
    replaced."""
    env = config.env.replace("/", "_").replace(":", "_")
    if config.observation.pixels:
        env += f"-pixels{config.observation.frame_size}"
    return f"{env}-{config.algo}-s{config.train.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_name(name: str) -> str:
    """A run name must be one plain folder name, so a run never lands outside --runs-dir."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise RunError(f"--name must be a plain folder name (no '/', '\\', or leading '.'), got {name!r}")
    return name


def prepare_run_dir(runs_dir: Path, name: str | None, config: Config, force: bool) -> Path:
    """Pick the run folder path and check it may be used; creates nothing."""
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise RunError(f"--runs-dir {runs_dir} exists and is not a folder")
    path = runs_dir / check_name(name or default_name(config))
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} exists and is not a folder")
    if path.exists() and not force:
        raise RunError(f"run folder {path} already exists (use --force to replace it)")
    if path.exists() and any(path.iterdir()) and not (path / CONFIG_FILE).is_file():
        raise RunError(f"{path} exists and is not a dreamer run folder: --force deletes only run folders")
    parent = next((p for p in [runs_dir, *runs_dir.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"cannot create run folders in {runs_dir}: {parent} is not writable")
    return path


def create_run_dir(path: Path, fill: Callable[[Path], None]) -> Path:
    """Fill a hidden sibling folder, then rename it into place, replacing an old run (--force).

    A run folder exists only once it holds its config and a first checkpoint, so a kill at
    any instant leaves either no folder or one that loads and resumes.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):  # left by a kill mid-creation
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX))
    except OSError as err:
        raise RunError(f"cannot create run folder {path}: {err.strerror or err}") from None
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; match an ordinary folder
        fill(tmp)
        if path.exists():  # --force: the old run goes as a whole, never mixed with the new one
            shutil.rmtree(path)
        tmp.replace(path)
        _fsync_dir(path.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunError(f"cannot create run folder {path}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """The one writer of run files: temp file in the same folder, fsync, rename, fsync the folder.

    A kill at any instant leaves either the old file or the new one, never a mix; a failed
    write (disk full, read-only folder) leaves the old file and raises RunError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; run folders are meant to be shared
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise RunError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    """Atomically write a text file."""
    atomic_write(Path(path), text.encode())


def write_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    data = io.BytesIO()
    fig.savefig(data, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write(Path(path), data.getvalue())
    return Path(path)


def write_gif(frames: list, path: Path, fps: int = 30) -> Path:
    """Write rgb_array frames (padded to one size) as an animated GIF, atomically."""
    from PIL import Image

    h, w = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    images = []
    for f in frames:
        canvas = Image.new("RGB", (w, h), (230, 230, 230))
        canvas.paste(Image.fromarray(f), (0, 0))
        images.append(canvas)
    data = io.BytesIO()
    images[0].save(data, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    atomic_write(Path(path), data.getvalue())
    return Path(path)


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete temp files a kill left in a run folder (and its subfolders); return them."""
    stale = [p for p in Path(run_dir).rglob(f".*{TMP_SUFFIX}*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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
    atomic_write(Path(path), (json.dumps(_clean(data), indent=2) + "\n").encode())


def spec_record(spec: EnvSpec) -> dict[str, Any]:
    """The env spec as run.json holds it: obs_shape only for image observations (vector runs as before it)."""
    record = asdict(spec)
    if not spec.obs_shape:
        del record["obs_shape"]
    return record


def write_config(run_dir: Path, config: Config, spec: EnvSpec) -> None:
    """config.json (exactly the resolved config) and run.json (schema, tool version, env dims)."""
    write_json(Path(run_dir) / RUN_FILE, {"schema_version": SCHEMA_VERSION, "dreamer_version": VERSION,
                                          "env_spec": spec_record(spec)})
    write_json(Path(run_dir) / CONFIG_FILE, to_dict(config))


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl atomically with the given rows."""
    atomic_write(Path(run_dir) / METRICS_FILE, "".join(_line(row) for row in rows).encode())


def _line(row: dict[str, Any]) -> str:
    return json.dumps(_clean(row)) + "\n"


def append_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> int:
    """Append rows to metrics.jsonl and fsync; return the file's size after them.

    Appending keeps each write small however long the run; a kill mid-line leaves a broken
    last line, which readers skip and `--resume` cuts back to the checkpoint's size.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        with path.open("ab") as f:
            f.write("".join(_line(row) for row in rows).encode())
            f.flush()
            os.fsync(f.fileno())
            return f.tell()
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror or err}") from None


def truncate_metrics(run_dir: Path, size: int) -> None:
    """Keep the first `size` bytes of metrics.jsonl (what a checkpoint had seen), atomically."""
    path = Path(run_dir) / METRICS_FILE
    data = path.read_bytes() if path.is_file() else b""
    if len(data) < size:
        raise RunError(f"{path} is shorter than its checkpoint says ({len(data)} < {size} bytes)")
    atomic_write(path, data[:size])


def save_weights(run_dir: Path, tensors: dict) -> None:
    """weights.safetensors, written atomically; never pickle."""
    from safetensors.torch import save

    atomic_write(Path(run_dir) / WEIGHTS_FILE, save(tensors))


def check_safetensors(path: Path) -> None:
    """Refuse anything but a safetensors file by its first bytes, before any parser sees it.

    safetensors starts with an 8-byte little-endian header length and a JSON header; what does
    not is named when it can be (a pickle starts with 0x80, a torch zip archive with 'PK').
    Nothing here ever unpickles.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as err:
        raise RunError(f"cannot read {path}: {err.strerror or err}") from None
    header = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if 0 < header <= size - 8 and head[8:9] == b"{":
        return  # the header's length can begin with any byte, 0x80 or "PK" included: judge it first
    kind = "a pickle" if head[:1] == b"\x80" else "a zip archive (torch.save?)" if head[:2] == b"PK" else None
    if kind:
        raise RunError(f"{path} is {kind}, not safetensors: refusing to load it (pickles can run code)")
    raise RunError(f"{path} is not a safetensors file (truncated or damaged)")


def load_tensors(path: Path) -> tuple[dict, dict[str, str]]:
    """Tensors and string metadata of a safetensors file on the CPU; RunError when damaged."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} is missing")
    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise RunError(f"cannot read {path}: {str(err).splitlines()[0]}") from None


def load_weights(run_dir: Path) -> dict:
    """Read weights.safetensors onto the CPU."""
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no {WEIGHTS_FILE}: was training interrupted?")
    return load_tensors(path)[0]


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


def check_writable(run_dir: Path) -> None:
    """RunError unless files can be written in run_dir (checked before minutes of episodes)."""
    try:
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as err:
        raise RunError(f"cannot write in {run_dir}: {err.strerror or err}") from None


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise RunError(f"cannot read {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} is not valid JSON (truncated or damaged?): {err}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} must hold a JSON object")
    return data


def read_meta(run_dir: Path) -> dict[str, Any]:
    """run.json's metadata; a schema-1 run keeps it inside config.json instead."""
    run_dir = check_run_dir(run_dir)
    path = run_dir / RUN_FILE
    meta = _read_object(path) if path.is_file() else _read_object(run_dir / CONFIG_FILE)
    where = path if path.is_file() else run_dir / CONFIG_FILE
    version = meta.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunError(f"{where} has no valid schema_version")
    if version > SCHEMA_VERSION:
        raise RunError(f"{where} has schema version {version}, newer than this dreamer reads "
                       f"({SCHEMA_VERSION}): upgrade dreamer")
    return meta


def load_config(run_dir: Path) -> tuple[Config, EnvSpec]:
    """Rebuild the config and env spec from config.json and run.json alone."""
    meta = read_meta(run_dir)
    path = Path(run_dir) / CONFIG_FILE
    data = _read_object(path)
    try:
        spec_data = meta["env_spec"]
        spec = EnvSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_data.items()})
        if not (isinstance(spec.obs_dim, int) and isinstance(spec.action_dim, int)):
            raise TypeError("env_spec dims must be integers")
    except (KeyError, TypeError, AttributeError) as err:
        raise RunError(f"{Path(run_dir) / RUN_FILE} has no valid env_spec: {err}") from None
    try:
        # A config.json from before --algo existed is a dreamer run, one from before sac_novelty
        # existed paid no bonus, and one from before sac_actor_share trained the actor in every SAC
        # update, whatever today's defaults (a saved field, nested or flat, wins).
        fields = {"algo": "dreamer", "sac_novelty": 0.0, "sac_actor_share": 1.0,
                  **{k: v for k, v in data.items() if k not in META_KEYS}}
        config = from_dict(fields)
    except (ConfigError, TypeError, AttributeError) as err:
        raise RunError(f"{path} is not a valid dreamer config: {err}") from None
    return config, spec


def check_env_trust(run_dir: Path, env_id: str, given: str | None, trust: bool) -> None:
    """A module:Class env named in a run folder is code: import it only if the user names it too.

    A run folder may come from anywhere; importing the module its config.json names would run
    that module's code. Registered Gymnasium ids are installed code and always fine.
    """
    import gymnasium as gym

    if given is not None and given != env_id:
        raise RunError(f"--env {given} is not the env of {run_dir} ({env_id})")
    if ":" in env_id and env_id not in gym.registry and given is None and not trust:
        raise RunError(f"{Path(run_dir) / CONFIG_FILE} names the env '{env_id}', whose module would be imported "
                       f"(code from the run folder's author): pass --env {env_id} or --trust-env-code to allow it")


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
