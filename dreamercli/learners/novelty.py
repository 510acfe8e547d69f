"""Random network distillation: a novelty bonus on real transitions for the off-policy learner.

The world model's disagreement bonus (`models/ensemble.py`) pays imagined steps, so it needs a
world model; model-free learning has none. On a task whose reward lies behind a long push
(MountainCarContinuous-v0: moving costs until the flag pays 100), SAC's policy learns to stand
still before any episode finds the flag, its entropy falls to the std floor, and nothing leads
it anywhere new (the README's suite section). RND (Burda et al., ICLR 2019) pays for reaching
observations unlike those seen before: a fixed, randomly initialised network maps each
observation to features, a second network learns to predict them on the replayed data, and its
error is large where the data has not been. Added to the reward SAC learns from, the bonus
makes unvisited states valuable, so the policy goes to them; it fades where the replay is, so
a found reward soon outweighs it.

Paid only where the task's own values are flat: the bonus is divided by max(1, the spread of
the critics' Q values), the running 5th-95th percentile range over replayed batches (as
dreamer's imagination divides returns by their range). Before a sparse reward is found the
values hardly differ, and the bonus counts in full; once the reward is found, or on a task whose
values spread from the start (CartPole-v1: alive against fallen), it fades. Measured: at a fixed
weight, 1.0 found MountainCarContinuous-v0's flag on seeds 0-2 (93-95 by 2,000-3,000 env steps)
but slowed CartPole-v1 (seeds 0-2: 2,000 / 3,500 / 1,000 env steps to 475 against 1,500 /
1,000 / 500 without it), and 0.3 slowed it as much (1,500 / 2,500 / 3,500): README.

Paid only until the replay holds a real episode end (a termination, not a time limit). On a task
whose reward lies behind a goal that ends the episode (both MountainCars, Acrobot-v1) the first
end is the found reward, and from then on the values know where it is; on a task whose episodes
end in failure (CartPole-v1, the inverted pendulums) the random prefill ends episodes before any
learning, so the bonus never pays and the run is, bit for bit, the same seed without it
(measured before this rule, seeds 0-4 with the networks' own generator: CartPole-v1 at 1,500 /
2,500 / 1,500 / 2,000 / 2,500 env steps against 1,500 / 1,000 / 500 / 500 / 3,500: a bonus for
reaching states unlike the replay's pays for falling over). On a task that never terminates
(BeaconReach) it pays until the reward speaks (below), divided by the value spread as above.

Paid only while the replay's rewards are quiet: their standard deviation below a tenth of the
bonus's mean size (`sac_novelty`; the bonus is the error over its running mean, so about 1 per
step before the value spread divides it). A task whose reward varies from the first random step
(Pendulum-v1: -16 to 0) tells the learner where to go without it, and there the bonus never pays:
such a run is, bit for bit, the same seed without it. Measured before this rule (race, seeds 0-9,
paired by seed): on Pendulum-v1 the bonus reached -200 at a median of 1,000 env steps, as without
it, but on 9 of 10 seeds against 10 of 10, three seeds faster and two slower (README). On the
goal tasks the rewards stay quiet until the first end (MountainCar-v0 and Acrobot-v1: -1 per step;
MountainCarContinuous-v0: -0.1 a^2, a deviation of at most 0.05) and the rule changes nothing; on
BeaconReach (1 near the goal, else 0) the bonus stops once about 1% of the replay is rewarded.

Observations are standardised by running moments before both networks (RND's own recipe):
MountainCar's velocity spans a hundredth of its position's range, and a random network fed raw
values would see position alone. The bonus is the error divided by its running mean, so its
size does not depend on the task's units or on how fast the predictor learns; `sac_novelty`
scales it against the task's reward.

Fitted once per env step, paid at every update: the trainer marks each env step's first SAC update
(`fit_due`), which trains the predictor on its batch (its loss joins SAC's backward) and moves the
running statistics; the env step's other updates read the bonus of their batches without a graph.
The predictor's backward, its optimiser step and the statistics in each of ten updates per env step
made the bonus a third of an update's time (Pendulum-v1, where it then paid throughout: 5.7 against 4.2 ms
per update, one thread); the statistics move at the rate per env step that ten updates gave them.
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


def pays(rewards: np.ndarray, terminated: np.ndarray, weight: float) -> bool:
    """Whether the bonus pays at this env step, from the replay's rewards and end flags: no real episode
    end yet, and rewards that vary by less than a tenth of the bonus's mean size (weight)."""
    return not terminated.any() and float(rewards.std()) < QUIET_REWARDS * weight


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
