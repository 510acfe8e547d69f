"""Checkpoints: weights, optimiser states, replay, RNG states and the loop's counters in one file.

One safetensors file, `checkpoint.safetensors`, written by the run folder's atomic writer, so a
kill at any instant leaves the previous complete checkpoint. Tensors are grouped by prefix
(`weights/`, `opt/<name>/`, `replay/`, `rng/`); everything else (counters, numpy's and the
env's generator states, the current episode's actions) is JSON in the file's metadata.
Nothing here pickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runs
from .agent import Agent
from .buffer import ReplayBuffer

FORMAT_VERSION = 1


class CheckpointError(runs.RunError):
    """A checkpoint that is missing, damaged or does not fit the run; the message is for the user."""


class Diverged(RuntimeError):
    """Training produced non-finite weights or kept failing updates; the message is for the user."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, read back: tensors by prefix and the loop's state."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    numpy_rng: dict[str, Any]

    def part(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under `prefix/`, with the prefix removed."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + "/")}


def write(run_dir: Path, agent: Agent, buffers: dict[str, ReplayBuffer], rng: np.random.Generator,
          state: dict[str, Any], extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write checkpoint.safetensors atomically; Diverged (and nothing written) if a weight is not finite.

    buffers: the real replay ("replay") and, for mbpo and hybrid, the branched one ("model_replay");
    extra: other tensors by full name (the trust guard's window).
    """
    from safetensors.torch import save

    if not agent.finite():
        raise Diverged("the weights hold NaN or inf; they were not written, the last checkpoint is kept")
    tensors = {f"weights/{k}": v for k, v in agent.weights().items()}
    for name, opt in agent.optimisers().items():
        tensors.update({f"opt/{name}/{k}": v for k, v in opt.state_tensors().items()})
    layout = {}
    for name, buffer in buffers.items():
        tensors.update({f"{name}/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in buffer.arrays().items()})
        layout[name] = [buffer.cursor, buffer.capacity]
    tensors.update(extra or {})
    tensors["rng/torch"] = torch.get_rng_state()
    if agent.device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(agent.device)
    metadata = {
        "format": str(FORMAT_VERSION),
        "state": json.dumps({**state, "buffers": layout}),
        "numpy_rng": json.dumps(rng.bit_generator.state),
    }
    runs.atomic_write(Path(run_dir) / runs.CHECKPOINT_FILE, save(tensors, metadata=metadata))


def read(run_dir: Path) -> Checkpoint:
    """Read and check checkpoint.safetensors; CheckpointError in one line when it cannot be used."""
    path = Path(run_dir) / runs.CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {runs.CHECKPOINT_FILE} to resume from")
    tensors, metadata = runs.load_tensors(path)
    try:
        version = int(metadata["format"])
        state = json.loads(metadata["state"])
        numpy_rng = json.loads(metadata["numpy_rng"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path} has damaged metadata ({err})") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {version}, newer than this dreamer reads: upgrade dreamer")
    return Checkpoint(tensors, state, numpy_rng)


def restore(ckpt: Checkpoint, agent: Agent, buffers: dict[str, ReplayBuffer], rng: np.random.Generator,
            path: Path) -> None:
    """Load weights, optimiser states, replay buffers and RNG states into freshly built objects."""
    try:
        agent.load_weights(ckpt.part("weights"))
        for name, opt in agent.optimisers().items():
            opt.load_state_tensors(ckpt.part(f"opt/{name}"))
        for name, buffer in buffers.items():
            arrays = {k: v.numpy() for k, v in ckpt.part(name).items()}
            missing = sorted(set(ReplayBuffer.FIELDS) - set(arrays))
            if missing:
                raise ValueError(f"{name} field(s) missing: {', '.join(missing)}")
            cursor, capacity = ckpt.state["buffers"][name]
            buffer.load_arrays(arrays, int(cursor), int(capacity))
        rng.bit_generator.state = ckpt.numpy_rng
        torch.set_rng_state(ckpt.tensors["rng/torch"])
        if agent.device.type == "cuda" and "rng/cuda" in ckpt.tensors:
            torch.cuda.set_rng_state(ckpt.tensors["rng/cuda"], agent.device)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path} does not fit this run: {str(err).splitlines()[0]}") from None


def load_agent(run_dir: Path, device: str = "auto", threads: int | None = None, env: str | None = None,
               trust_env_code: bool = False) -> tuple[Agent, runs.Config]:
    """Rebuild a run's agent, in eval mode, from config.json, run.json and weights.safetensors alone.

    A module:Class env named by the run is imported only when the caller names it again (env)
    or trusts the folder. Sets torch's CPU threads to the run's `threads` (or the given
    override): torch's default of one thread per core is many times slower for small networks.
    """
    from .agent import resolve_device
    from .config import ConfigError
    from .envs import make_run_env

    config, spec = runs.load_config(run_dir)
    runs.check_env_trust(run_dir, config.env, env, trust_env_code)
    if threads is not None and threads <= 0:
        raise ConfigError(f"threads must be > 0, got {threads}")
    tensors = runs.load_weights(run_dir)
    make_run_env(config).close()  # importable, same spaces
    torch.set_num_threads(config.train.threads if threads is None else threads)
    agent = Agent(config, spec, resolve_device(device))
    try:
        agent.load_weights(tensors)
    except ValueError as err:
        raise runs.RunError(f"{Path(run_dir) / runs.WEIGHTS_FILE}: {err}") from None
    agent.eval()
    return agent, config
