"""Whether the off-policy learner reads the belief: a held-out check of what the episode's history tells.

On a fully observed task h only adds inputs that move as the model learns: the critics lean on them
and learn slower (docs/belief.md: CartPole-v1 took twice model-free's env steps). On a partially
observed task h is what the learner needs. So the learner does without h until the
history pays. The check: two small regressors of a step's outcome y_t = [symlog o_{t+1} - symlog
o_t, symlog r_t] (each part standardised), one reading (o_t, a_t), one also the raw history
(o_{t-1}, a_{t-1}, and the episode's first observation, as stored); fitted afresh to convergence on
three episodes in four and scored on the fourth. In a Markov task the outcome depends on (o_t, a_t)
alone, so the history cannot help on episodes the regressors never saw; where the observation hides
what the outcome depends on (a velocity, a cue seen at the start), it does. Raw history and not the
model's h, so the verdict does not wait for the model to learn what it would show.

A finite difference also sharpens a regressor's fit of deterministic dynamics, where errors are
tiny: so a part counts only where the history removes MIN_REDUCTION of its variance, besides
memory_gain of the plain error (docs/belief.md: partially observed tasks 0.53 or more, fully
observed ones 0.29 or less). The gate opens once and stays open.

While shut, a memoryless SAC of its own learns and acts on o_t alone, drawn from the learner's
random stream as model-free's is, while the model, its check and the SAC that will read h draw
from the model's: so until the gate opens the run is model-free's, step for step. Opening hands
learning to the SAC reading [o_t, h_t], untrained until then, and the model catches up the
updates it deferred.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets import mlp, symlog
from ..optim import FlatAdam

HELD_OUT = 4  # episodes whose id is a multiple of this are scored, never trained on
CONSTANT = 1e-6  # parts of y whose variance is below this are constant (CartPole-v1's reward)
MIN_REDUCTION = 0.4  # least share of a part's variance the history must remove for the part to count
# While shut the model trains at this share of train_ratio (the rest is deferred and paid at the
# opening): nothing reads it yet, and on a fully observed task nothing ever will but `imagine`.
SHUT_MODEL_SHARE = 0.25
# Once open, at this multiple: the learner acts on h, and a memory is learned in model updates, not env
# steps (CueRecall's cue took 1,200 to 3,200 of them on random play). Twice 0.5 updates of 16 x 16 steps
# replays 256 steps per env step, still below DreamerV3's 512.
OPEN_MODEL_SHARE = 2.0
LR = 1e-3
CHECK_EVERY = 750  # env steps between two converged checks while the gate is shut
CHECK_STEPS = 1500  # Adam steps of a check's fresh regressors
CHECK_BATCH = 256
CHECK_ROWS = 8192  # the newest replayed transitions a check reads, at most
GRAD_CLIP = 100.0


class MemoryGate(nn.Module):
    """The history check and its verdict: `open`, a 0-d buffer saved with the weights (1: the learner reads h)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, needed_gain: float):
        """needed_gain: the least share of the plain regressor's held-out error the history must remove
        (memory_gain)."""
        super().__init__()
        self.obs_dim, self.needed_gain = obs_dim, needed_gain
        out = obs_dim + 1  # the observation's change and the reward
        self.plain = mlp(obs_dim + action_dim, hidden, out, 2)
        self.recall = mlp(obs_dim + action_dim + history_width(obs_dim, action_dim), hidden, out, 2)
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
        """The largest 1 - recall error / plain error on held-out episodes over the parts of y whose error the
        history reduces by MIN_REDUCTION of their variance (0: none, or where the history regressor is worse
        over all parts, as where neither generalises across episodes; NaN before any check was scored)."""
        if self.scored.item() == 0:
            return float("nan")
        plain, recall = self.errors
        varies = self.outcome_square - self.outcome_mean.pow(2) > CONSTANT  # a constant part has nothing to tell
        if recall[varies].mean() > plain[varies].mean():
            return 0.0
        counted = (plain - recall >= MIN_REDUCTION) & varies
        return (1.0 - recall[counted] / plain[counted]).max().item() if counted.any() else 0.0

    def check(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
              history: torch.Tensor, episodes: torch.Tensor) -> bool:
        """Fit fresh regressors to convergence on these rows' training episodes, score them on the held-out
        ones, and open the gate where the history pays; True when it opens now.

        obs/next_obs (B, obs) raw; actions (B, act) encoded; rewards (B,); history (B, history_width) as
        ReplayBuffer.history() gives it; episodes (B,) the rows' episode ids.
        """
        f = symlog(obs)
        y = torch.cat([symlog(next_obs) - f, symlog(rewards)[:, None]], -1)
        mean, var = y.mean(0), y.var(0)
        y = (y - mean) / var.clamp_min(1e-8).sqrt()
        x_plain = torch.cat([f, actions], -1)
        x_recall = torch.cat([x_plain, symlog(history)], -1)
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


def history_width(obs_dim: int, action_dim: int) -> int:
    """Columns of ReplayBuffer.history(): o_{t-1}, a_{t-1}, a flag, the first o, a flag."""
    return 2 * obs_dim + action_dim + 2
