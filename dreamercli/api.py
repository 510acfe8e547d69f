"""The Python API of the design document: DreamerLite(env_name=...).train/evaluate/save/load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import runs
from .agent import Agent, resolve_device
from .checkpoint import load_agent
from .config import Config, from_preset, validate, with_overrides
from .envs import make_run_env, spec_of
from .evaluation import evaluate_policy
from .training import train


class DreamerLite:
    """A Dreamer-lite agent for one environment; keyword arguments are config field names."""

    def __init__(self, env_name: str = "CartPole-v1", preset: str = "default", **hparams: Any):
        self.config: Config = validate(with_overrides(from_preset(preset), {"env": env_name, **hparams}))
        env = make_run_env(self.config)
        self.spec = spec_of(env)
        env.close()
        self.agent = self._build_agent()
        self.summary: dict[str, Any] | None = None
        self.memory, self.memory_agent = None, None  # act()'s belief of the open episode, and whose it is

    def _build_agent(self) -> Agent:
        # The run's thread count, as `dreamer evaluate` uses: torch's default of one thread per
        # core is many times slower for small networks on busy cores.
        torch.set_num_threads(self.config.train.threads)
        return Agent(self.config, self.spec, resolve_device(self.config.train.device))

    def train(self, steps: int | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
        """Train a fresh agent for `steps` env steps (default: the config's); return the summary.

        With run_dir, the run folder is written as `dreamer train` writes it, curves.png included.
        """
        if steps is not None:
            self.config = validate(with_overrides(self.config, {"steps": steps}))
        self.agent, self.summary = train(self.config, None if run_dir is None else Path(run_dir))
        if run_dir is not None:
            from .plotting import plot_finished

            plot_finished(Path(run_dir), self.summary)
        return self.summary

    def evaluate(self, num_episodes: int = 10, render: bool = False, seed: int | None = None) -> dict:
        """Deterministic episodes; with render, the frames of the first come back under 'frames'."""
        seed = self.config.train.seed if seed is None else seed
        result = evaluate_policy(self.agent, self.config.env, num_episodes, seed, record=render,
                                 max_episode_steps=self.config.train.max_episode_steps)
        report: dict[str, Any] = {**result.stats(), "returns": result.returns}
        if render:
            report["frames"] = result.frames
        return report

    def save_models(self, path: str | Path) -> Path:
        """Write config.json and weights.safetensors into the folder `path`."""
        path = Path(path)
        runs.write_config(path, self.config, self.spec)
        runs.save_weights(path, self.agent.weights())
        return path

    def load_models(self, path: str | Path, trust_env_code: bool = False) -> DreamerLite:
        """Load a folder written by save_models() or `dreamer train`; the config comes with it.

        A module:Class env named by the folder is imported only if this object was made for
        that same env, or with trust_env_code. Raises runs.RunError (one line) for a folder that
        is damaged or does not fit.
        """
        config, _ = runs.load_config(Path(path))
        same_env = self.config.env if self.config.env == config.env else None
        self.agent, self.config = load_agent(Path(path), config.train.device, env=same_env,
                                             trust_env_code=trust_env_code)
        self.spec = self.agent.spec
        return self

    def act(self, obs, deterministic: bool = True, first: bool = False):
        """The env-side action for one observation; first=True at an episode's first observation.

        A recurrent world model (--model rssm, the belief algo) carries its belief from call to
        call, so tell it where each episode starts; other agents ignore `first`.
        """
        from .envs import to_env_action

        if first or self.memory_agent is not self.agent:  # a new episode, or a newly trained or loaded agent
            self.memory, self.memory_agent = self.agent.memory(), self.agent
        return to_env_action(self.spec, self.agent.act(obs, deterministic, memory=self.memory))
