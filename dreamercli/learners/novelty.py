"""Random network distillation: a novelty bonus on real transitions for the off-policy learner.

The world model's disagreement bonus (`models/ensemble.py`) needs a world model; model-free
learning has none. On a task whose reward lies behind a long push (MountainCarContinuous-v0),
SAC's policy learns to stand still before any episode finds the reward. RND (Burda et al., ICLR
2019) pays for reaching observations unlike those seen before: a fixed random network maps each
observation to features, a predictor learns them on replayed data, and its error is large where
the data has not been. The rules below and their measurements: docs/exploration.md.

- bonus = error / running mean of the error / max(1, value spread), where the spread is the
  running 5th-95th percentile range of the critics' Q values: it counts in full while the values
  are flat (no reward found yet) and fades once they spread.
- Paid only until the replay holds a real episode end (a termination, not a time limit): on goal
  tasks the first end is the found reward; on tasks whose episodes end in failure the random
  prefill ends episodes before any learning, so the bonus never pays there (a bonus for novel
  states pays for falling over).
- Paid only while the replay's rewards are quiet: their standard deviation below a tenth of
  `sac_novelty`; a reward that varies from the first step tells the learner where to go alone.
- And not on an env step whose first batch holds a dense reward that the action alone does not
  explain (`tells_where`): the same rule without units. A dense reward 100 times smaller than
  Pendulum-v1's is as quiet as MountainCarContinuous-v0's action cost, but it depends on the state,
  and the cost does not (docs/reward-scale.md).
- Observations are standardised by running moments before both networks (RND's recipe), so
  that a small-range dimension is not lost beside a large one.
- Fitted once per env step, paid at every update: the step's first SAC update (`fit_due`) trains
  the predictor and moves the statistics; the others read the bonus without a graph.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..nets import follow_, follow_spread_, mlp

FEATURES = 32  # size of the random target's output
MOMENTS_EMA = 0.1  # rate per env step at which the observation moments, the error's mean and the value spread move
SEED_OFFSET = 2  # the networks' seed: the run's plus this (the world model's stream is seeded from (seed, 1))
QUIET_REWARDS = 0.1  # the bonus pays while the replay's rewards deviate by less than this times sac_novelty
DENSE = 0.5  # rewards are dense when fewer than this share of a batch's equal its median (sparse: mostly one value)
ACTION_EXPLAINED = 0.5  # ... and the action's cost alone when [1, a, a^2] explain this share of their variance


def pays(rewards: np.ndarray, terminated: np.ndarray, weight: float) -> bool:
    """Whether the bonus pays at this env step, from the replay's rewards and end flags: no real episode
    end yet, and rewards that vary by less than a tenth of the bonus's mean size (weight)."""
    return not terminated.any() and float(rewards.std()) < QUIET_REWARDS * weight


@torch.no_grad()
def tells_where(rewards: torch.Tensor, actions: torch.Tensor) -> bool:
    """Whether a batch's rewards already say where to go, in no unit: dense (most differ from their
    median), and not a function of the action alone (a least-squares fit on [1, a, a^2] leaves more
    than half their variance). Rewards (B,), actions (B, A): one-hot or continuous."""
    if (rewards == rewards.median()).float().mean().item() >= DENSE:
        return False  # constant or sparse: nothing found yet, or too little to steer by
    x = torch.cat([torch.ones_like(rewards)[:, None], actions, actions.square()], -1).double()  # (B, 1 + 2A)
    r = rewards.double()
    fit = x @ torch.linalg.lstsq(x, r[:, None]).solution  # (B, 1)
    left = (r - fit.squeeze(-1)).square().sum() / (r - r.mean()).square().sum()
    return left.item() > 1 - ACTION_EXPLAINED


class RandomDistillation(nn.Module):
    """A fixed random target network, a predictor trained to match it, and running moments."""

    def __init__(self, obs_dim: int, hidden_dim: int, layers: int):
        super().__init__()
        # Initial weights from a generator of their own, seeded from the run's seed, and the global one
        # left where it was: a run with the bonus then draws its critics, dropout masks, noise and
        # batches exactly as the same seed without it, and comparing the two measures the bonus alone
        # rather than a shifted random stream (on CartPole-v1 a shift alone moves a seed's env steps to
        # 475 between 500 and 3,500).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + SEED_OFFSET)
            self.target = mlp(obs_dim, hidden_dim, FEATURES, 1).requires_grad_(False)
            self.predictor = mlp(obs_dim, hidden_dim, FEATURES, layers)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_var", torch.ones(obs_dim))
        self.register_buffer("error_mean", torch.zeros(()))
        self.register_buffer("value_spread", torch.zeros(()))
        self.register_buffer("updates", torch.zeros(()))
        self.register_buffer("quantiles", torch.tensor([0.05, 0.95]), persistent=False)
        # Set by the trainer before each step's updates: whether the replay holds no real episode end yet,
        # and that the step's first update is to fit the predictor (pay() clears it).
        self.paying = True
        self.fit_due = True

    def standardise(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations in units of the running moments, clipped as RND does."""
        return ((obs - self.obs_mean) / self.obs_var.add(1e-8).sqrt()).clamp(-5.0, 5.0)

    def error(self, obs: torch.Tensor) -> torch.Tensor:
        """The predictor's squared error per observation, (B,); gradients reach the predictor only."""
        x = self.standardise(obs)
        return (self.predictor(x) - self.target(x)).pow(2).mean(-1)

    def pay(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The bonus for arriving at each observation, (B,) without gradient, and, when a fit is due,
        the predictor's loss on them (after the moments and the error's mean have moved toward them)."""
        if not self.fit_due:
            with torch.no_grad():
                return self.bonus(self.error(obs)), None
        self.fit_due = False
        self.observe(obs)
        error = self.error(obs)
        self.observe_error(error)
        return self.bonus(error), error.mean()

    @torch.no_grad()
    def observe(self, obs: torch.Tensor) -> None:
        """Move the observation moments toward a replayed batch's (the first batch sets them)."""
        rate = 1.0 if self.updates.item() == 0 else MOMENTS_EMA
        self.obs_mean.lerp_(obs.mean(0), rate)
        self.obs_var.lerp_(obs.var(0, unbiased=False), rate)
        self.updates += 1

    def observe_error(self, error: torch.Tensor) -> None:
        """Move the error's running mean toward a batch's (the first batch sets it)."""
        follow_(self.error_mean, error.detach().mean(), MOMENTS_EMA)

    def bonus(self, error: torch.Tensor) -> torch.Tensor:
        """The error relative to its running mean, over max(1, the value spread), without gradient, (B,)."""
        return error.detach() / self.error_mean.clamp_min(1e-8) / self.value_spread.clamp_min(1.0)

    @torch.no_grad()
    def observe_values(self, q: torch.Tensor) -> None:
        """Move the value spread toward a batch's 5th-95th percentile range of Q values, (B,)."""
        follow_spread_(self.value_spread, q, self.quantiles, MOMENTS_EMA)
