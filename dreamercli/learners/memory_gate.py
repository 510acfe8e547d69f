"""Whether the off-policy learner reads the belief: a held-out check of what memory tells about a step.

On a fully observed task h only adds inputs that move as the model learns: the critics lean on them
and learn slower (docs/belief.md: CartPole-v1 took twice model-free's env steps). On a partially
observed task h is what the learner needs. So the learner reads zeros in place of h until h pays.
The check: two small regressors of a step's outcome y_t = [symlog o_{t+1} - symlog o_t, symlog r_t]
(each part standardised), one reading (o_t, a_t, h~_{t+1}), the model's step from another row's belief,
h~_{t+1} = GRU(h_other, q(z | h_other, o_t), a_t), one reading (o_t, a_t, h_{t+1}), the same step from
the belief of the episode so far; fitted afresh to convergence on three episodes in four and scored
on the fourth. Both read the model's features of (o_t, a_t), so neither fits faster for richer
inputs; in a Markov task the outcome depends on (o_t, a_t) alone, so the one that reads the history
cannot do better on episodes it never saw; where the observation hides what the outcome depends on
(a velocity, a cue that decides which action pays), and h holds it, it does. Fitted to convergence,
since half-fitted regressors favour the better-formed features of the run's own belief even where
it tells nothing.

The gate opens once, for some part of y, the recall regressor's held-out error is below
(1 - memory_gain) of the plain one's, and stays open. Then h's columns of the learner's first layers
are zeroed (opening changes no output) and the learner starts afresh, reading h from its first update.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets import mlp, symlog
from ..optim import FlatAdam

HELD_OUT = 4  # episodes whose id is a multiple of this are scored, never trained on
CONSTANT = 1e-6  # parts of y whose variance is below this are constant (CartPole-v1's reward)
FLOOR = 0.02  # parts of y the plain regressor already predicts this well (in variances) do not count
# While shut the model trains at this share of train_ratio: its belief still has to learn what the
# check asks of it, but nothing else reads it yet, and on a fully observed task it never will.
SHUT_MODEL_SHARE = 0.5
LR = 1e-3
CHECK_EVERY = 750  # env steps between two converged checks while the gate is shut
CHECK_STEPS = 1500  # Adam steps of a check's fresh regressors
CHECK_BATCH = 256
CHECK_ROWS = 8192  # the newest replayed transitions a check reads, at most
GRAD_CLIP = 100.0


class MemoryGate(nn.Module):
    """The recall test and its verdict: `open` (a 0-d buffer, saved with the weights) multiplies h."""

    def __init__(self, obs_dim: int, deter: int, action_dim: int, hidden: int, needed_gain: float):
        """needed_gain: the least share of the plain regressor's held-out error that h must remove (memory_gain)."""
        super().__init__()
        self.obs_dim, self.deter, self.needed_gain = obs_dim, deter, needed_gain
        out = obs_dim + 1  # the observation's change and the reward
        self.plain = mlp(obs_dim + deter + action_dim, hidden, out, 2)
        self.recall = mlp(obs_dim + deter + action_dim, hidden, out, 2)
        self.register_buffer("open", torch.zeros(()))
        self.register_buffer("scored", torch.zeros(()))
        self.register_buffer("errors", torch.zeros(2, out))  # held-out squared errors per part: plain, recall
        self.register_buffer("outcome_mean", torch.zeros(out))
        self.register_buffer("outcome_square", torch.zeros(out))
        self.opt: FlatAdam | None = None  # built by optimiser(), after the module is on its device

    @property
    def is_open(self) -> bool:
        """Whether the learner reads h."""
        return bool(self.open.item())

    def optimiser(self) -> FlatAdam:
        """Both regressors' Adam (part of the checkpoint)."""
        if self.opt is None:
            self.opt = FlatAdam(nn.ModuleList([self.plain, self.recall]), LR, GRAD_CLIP)
        return self.opt

    def gain(self) -> float:
        """The largest 1 - recall error / plain error over the parts of y on held-out episodes (NaN before any
        were scored; parts the plain regressor predicts within FLOOR left out)."""
        if self.scored.item() == 0:
            return float("nan")
        plain, recall = self.errors
        varies = self.outcome_square - self.outcome_mean.pow(2) > CONSTANT  # a constant part has nothing to tell
        counted = (plain >= FLOOR) & varies
        return (1.0 - recall[counted] / plain[counted]).max().item() if counted.any() else 0.0

    def check(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
              reset: torch.Tensor, recalled: torch.Tensor, episodes: torch.Tensor) -> bool:
        """Fit fresh regressors to convergence on these rows' training episodes, score them on the held-out
        ones, and open the gate where h pays; True when it opens now. Rows as in test()."""
        f = symlog(obs)
        y = torch.cat([symlog(next_obs) - f, symlog(rewards)[:, None]], -1)
        mean, var = y.mean(0), y.var(0)
        y = (y - mean) / var.clamp_min(1e-8).sqrt()
        x_plain, x_recall = torch.cat([f, reset, actions], -1), torch.cat([f, recalled, actions], -1)
        held = episodes % HELD_OUT == 0
        train = torch.nonzero(~held).squeeze(-1)
        if not held.any() or len(train) < CHECK_BATCH:
            return False
        for net in (self.plain, self.recall):
            for layer in net:
                if isinstance(layer, nn.Linear | nn.LayerNorm):
                    layer.reset_parameters()
        opt = self.optimiser()
        opt.state = {}
        for _ in range(CHECK_STEPS):
            rows = train[torch.randint(len(train), (CHECK_BATCH,))]
            loss = (self.plain(x_plain[rows]) - y[rows]).pow(2).mean() \
                + (self.recall(x_recall[rows]) - y[rows]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            self.errors.copy_(torch.stack([(self.plain(x_plain[held]) - y[held]).pow(2).mean(0),
                                           (self.recall(x_recall[held]) - y[held]).pow(2).mean(0)]))
            self.outcome_mean.copy_(mean)
            self.outcome_square.copy_(var + mean.pow(2))
            self.scored += 1
        if self.gain() >= self.needed_gain:
            self.open.fill_(1.0)
            return True
        return False
