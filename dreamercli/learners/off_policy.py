"""The off-policy learner: SAC on replayed real transitions, a fixed number of updates per env step.

Each env step owes sac_ratio updates, of which a share sac_actor_share also train the policy and
temperature (the step's last ones, so that the policy climbs the freshest critics; the others train
the critics alone). Fractional ratios carry over from step to step in two counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from ..buffer import ReplayBuffer
from ..config import LearnerConfig
from . import novelty
from .sac import SAC

Update = tuple[str, "dict[str, float] | None"]  # (kind, metrics; None: an update that NaN or inf skipped)


def actor_turns(updates: int, actor_owed: float) -> list[bool]:
    """Which of an env step's SAC updates train the actor too: the last ones, as many whole ones as are owed.

    Last, so that the policy climbs the freshest critics (REDQ steps its policy after the step's
    critic updates); the others train the critics alone.
    """
    turns = max(0, min(updates, math.floor(actor_owed)))
    return [False] * (updates - turns) + [True] * turns


class OffPolicyLearner:
    """SAC's updates of one env step on the real replay; its counters are part of a checkpoint."""

    COUNTERS = ("sac_owed", "actor_owed")

    def __init__(self, sac: SAC, cfg: LearnerConfig, device: torch.device):
        self.sac, self.cfg, self.device = sac, cfg, device
        self.sac_owed = 0.0  # SAC updates due (sac_ratio per env step)
        self.actor_owed = 0.0  # of those, updates that train the actor too

    def learn(self, replay: ReplayBuffer, rng: np.random.Generator) -> Iterator[Update]:
        """This env step's SAC updates, each yielded as it is made."""
        ln = self.cfg
        if self.sac.novelty is not None:  # from the replay itself, so that a resumed run pays as before
            n = len(replay)
            self.sac.novelty.paying = novelty.pays(replay.rewards[:n], replay.terminated[:n], ln.sac_novelty)
            self.sac.novelty.fit_due = True  # this step's first update fits the predictor
        self.before_updates(replay, rng)
        self.sac_owed += ln.sac_ratio
        self.actor_owed += ln.sac_ratio * ln.sac_actor_share
        turns = actor_turns(math.floor(self.sac_owed), self.actor_owed)
        for actor, metrics in zip(turns, self.updates(replay, turns, rng), strict=True):
            yield "update", metrics
            self.sac_owed -= 1.0
            self.actor_owed -= actor

    def before_updates(self, replay: ReplayBuffer, rng: np.random.Generator) -> None:
        """Work due before a step's updates (none here; branched rollouts in the hybrid learner)."""

    def updates(self, replay: ReplayBuffer, turns: list[bool], rng: np.random.Generator
                ) -> Iterator[dict[str, float] | None]:
        """One update per turn on real transitions, the step's batches drawn at once."""
        if not turns:  # sac_ratio below 1: not this step
            return iter(())
        ln = self.cfg
        batch = replay.sample_transitions(ln.sac_batch * len(turns), rng, self.device, ln.sac_nstep, ln.sac_discount)
        return self.sac.updates(batch, turns)

    def counters(self) -> dict[str, float]:
        """The carried-over counters by checkpoint name."""
        return {name: getattr(self, name) for name in self.COUNTERS}

    def load_counters(self, state: dict[str, float]) -> None:
        """Restore counters() (0 where a checkpoint has none)."""
        for name in self.COUNTERS:
            setattr(self, name, float(state.get(name, 0.0)))
