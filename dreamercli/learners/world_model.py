"""Fitting the world model: pretraining on the prefill data, then train_ratio updates per env step.

Each update draws replayed sequences, takes one gradient step of the model's sequence loss, and,
where the composition asks (dreamer always, hybrid as far as the guard trusts the model), hands the
posterior latents to the imagination learner, which trains the policy from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..buffer import ReplayBuffer, SequenceBatch
from ..config import Config
from ..models import WorldModel
from ..optim import FlatAdam
from .belief import Beliefs
from .hybrid import Draws
from .imagination import ImaginationLearner
from .off_policy import Update

GRAD_CLIP = 100.0  # global gradient-norm clip of the model's optimiser (as every optimiser here)


class ModelLearner:
    """The world model's optimiser and update schedule; imagination updates ride on its latents."""

    COUNTERS = ("owed", "deferred")

    def __init__(self, world_model: WorldModel, config: Config, device: torch.device, draws: Draws,
                 imagination: ImaginationLearner | None = None, imagine_due: Callable[[], bool] = lambda: False,
                 beliefs: Beliefs | None = None, share: Callable[[], float] = lambda: 1.0,
                 starts: Callable[[ReplayBuffer, int, np.random.Generator], np.ndarray] | None = None):
        """share: the multiple of train_ratio to train at, asked each env step (the memory gate sets it); below
        1 the rest, and the pretraining, is deferred and paid at the first step at 1 or more; starts: where a
        recurrent model's n sequences begin, asked each update (None: Beliefs.sequence_starts)."""
        self.world_model, self.train_cfg, self.device, self.draws = world_model, config.train, device, draws
        self.seq_len = config.world_model.seq_len
        self.opt = FlatAdam(world_model, config.world_model.wm_lr, GRAD_CLIP)
        self.imagination, self.imagine_due = imagination, imagine_due
        self.owed = 0.0  # world-model updates due but not yet run (train_ratio may be fractional)
        self.deferred = 0.0  # updates put off while share < 1
        self.beliefs = beliefs  # a recurrent model's replayed beliefs: what its sequences start from
        self.share = share
        self.starts = starts if starts is not None or beliefs is None else beliefs.sequence_starts

    def learn(self, replay: ReplayBuffer, step: int, rng: np.random.Generator) -> Iterator[Update]:
        """Env step `step`'s model updates: the pretraining at the prefill's last step, then train_ratio's."""
        tr = self.train_cfg
        share = self.share()
        if step == max(tr.prefill, 1):
            if share < 1.0:
                self.deferred += tr.pretrain
            # Fit the model to the prefill data first: an actor trained in an untrained model
            # follows its artefacts, and Adam turns that steady pull into a collapsed policy.
            for _ in range(tr.pretrain if share >= 1.0 else 0):
                yield "pretrain", self.update(replay, rng, behave=False)
        if step < tr.prefill:
            return
        self.owed += tr.train_ratio * share
        self.deferred += tr.train_ratio * max(0.0, 1.0 - share)
        if share >= 1.0 and self.deferred:
            # Back at the full rate (a learner now reads the model): the model catches up at once, so it is
            # as far on as one that never slowed down.
            self.owed, self.deferred = self.owed + self.deferred, 0.0
        while self.owed >= 1.0:
            yield "update", self.update(replay, rng, behave=self.imagination is not None and self.imagine_due())
            self.owed -= 1.0

    def update(self, replay: ReplayBuffer, rng: np.random.Generator, behave: bool) -> dict[str, float] | None:
        """One model update on replayed sequences (model draws), then, with behave, one imagination update."""
        with self.draws(rng) as model_rng:
            if self.beliefs is None:
                return self.step(replay.sample(self.train_cfg.batch_size, self.seq_len, model_rng, self.device), behave)
            if len(replay) == 0:
                raise ValueError("cannot sample from an empty replay buffer")
            start = self.starts(replay, self.train_cfg.batch_size, model_rng)
            batch = replay.sequences_at(start, self.seq_len, self.device)
            return self.step(batch, behave, self.beliefs.starts(replay, start))

    def step(self, batch: SequenceBatch, behave: bool = True, h0: torch.Tensor | None = None
             ) -> dict[str, float] | None:
        """fit() on a batch, then (with behave) an imagination update from its posterior latents; None: skipped."""
        metrics, post = self.fit(batch, h0)
        if metrics is None or not behave:
            return metrics  # a skipped fit's latents would carry its NaN into the actor-critic too
        behaviour = self.imagination.update(post.detach().flatten(0, 1))
        return None if behaviour is None else {**metrics, **behaviour}

    def fit(self, batch: SequenceBatch, h0: torch.Tensor | None = None
            ) -> tuple[dict[str, float] | None, torch.Tensor | None]:
        """One gradient step of the world model on replayed sequences (a recurrent one from the beliefs h0):
        its metrics and posterior latents."""
        losses, wm_metrics, post = self.world_model.loss(*batch) if h0 is None else self.world_model.loss(*batch, h0=h0)
        total = sum(losses.values())
        self.opt.zero_grad()
        total.backward()
        if not self.opt.step():
            return None, None
        metrics = {f"wm/{k}": v.item() for k, v in losses.items()}
        metrics["wm/loss"] = total.item()
        metrics.update({f"wm/{k}": v for k, v in wm_metrics.items()})
        return metrics, post

    def counters(self) -> dict[str, float]:
        """The carried-over counter by checkpoint name."""
        return {"owed": self.owed}

    def load_counters(self, state: dict[str, float]) -> None:
        """Restore counters() (0 where a checkpoint has none)."""
        self.owed = float(state.get("owed", 0.0))
        self.deferred = float(state.get("deferred", 0.0))
