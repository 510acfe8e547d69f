"""mbpo and hybrid: the off-policy learner on real and branched model data, as far as the model is trusted.

The trust guard (trust.py) scores the world model on fresh real transitions and sets, step by
step, how long branched rollouts may be (0: none, model-free learning), the share of real data in
each SAC batch, and for hybrid the share of world-model updates followed by an imagination update.
Branched transitions go to a model buffer of their own; the model's random draws come from its own
stream (streams.py), so that an untrusted model leaves the learner exactly model-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import numpy as np
import torch

from ..buffer import ReplayBuffer
from ..config import LearnerConfig
from ..models import WorldModel
from . import branched
from .off_policy import OffPolicyLearner
from .policy import Actor
from .sac import SAC
from .trust import TrustGuard, TrustSettings

Draws = Callable[[np.random.Generator], AbstractContextManager[np.random.Generator]]


class HybridLearner(OffPolicyLearner):
    """SAC on a mix of real and branched transitions; the guard, the model buffer and their counters."""

    COUNTERS = (*OffPolicyLearner.COUNTERS, "imag_owed")

    def __init__(self, sac: SAC, cfg: LearnerConfig, device: torch.device, world_model: WorldModel,
                 policy: Actor, obs_dim: int, action_dim: int, draws: Draws):
        super().__init__(sac, cfg, device)
        self.world_model, self.policy, self.draws = world_model, policy, draws
        self.guard = TrustGuard(cfg)
        self.model_buffer = ReplayBuffer(cfg.model_buffer_size, obs_dim, action_dim)
        self.imag_owed = 0.0  # imagination updates due (imag_weight per world-model update)
        self.allowed: TrustSettings | None = None  # what the guard allows this env step

    def observe(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, terminated: bool,
                truncated: bool) -> None:
        """Score the model on a fresh real transition (before it trains on it)."""
        self.guard.observe(self.world_model, obs, action, next_obs, terminated, truncated)

    def imagine_due(self) -> bool:
        """Whether this world-model update is followed by an imagination update: imag_weight of them."""
        self.imag_owed += self.guard.settings().imag_weight
        if self.imag_owed < 1.0:
            return False
        self.imag_owed -= 1.0
        return True

    def before_updates(self, replay: ReplayBuffer, rng: np.random.Generator) -> None:
        """Branched rollouts from replayed real states into the model buffer, as long as the guard allows."""
        self.allowed = self.guard.settings()
        if self.allowed.branch_length > 0:
            with self.draws(rng) as model_rng:
                starts = replay.sample_transitions(self.cfg.branch_starts, model_rng, self.device).obs
                branched.fill(self.model_buffer, branched.branch(self.world_model, self.policy, starts,
                                                                 self.allowed.branch_length))

    def updates(self, replay: ReplayBuffer, turns: list[bool], rng: np.random.Generator
                ) -> Iterator[dict[str, float] | None]:
        """Real data alone while branches are off; else each update on its own mixed batch."""
        allowed, ln = self.allowed, self.cfg
        if allowed is None or allowed.branch_length == 0:
            return super().updates(replay, turns, rng)
        return (self.sac.update(branched.mixed_batch(replay, self.model_buffer, ln.sac_batch, allowed.real_share,
                                                     rng, self.device, ln.sac_nstep, ln.sac_discount), actor)
                for actor in turns)

    def metrics(self) -> dict[str, float]:
        """hybrid/... rows: the guard's errors and what they allow."""
        return self.guard.metrics()
