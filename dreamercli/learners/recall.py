"""Whether the belief is worth reading: does h predict what the observation o_t cannot?

On a fully observed task the next step depends on (o_t, a_t) alone, and a learner that reads the
RSSM's belief beside o_t gains nothing but a moving input (on CartPole-v1 it needed twice the env
steps); on a partially observed one the belief carries what o_t leaves out (a velocity, a cue).
The test asks the replay. Two predictors learn the step's outcome

    y_t = [symlog o_{t+1} - symlog o_t, symlog r_t],  each standardised by running moments,

`plain` from (o_t, a_t, h0_{t+1}) and `recall` from (o_t, a_t, h_{t+1}), where h_{t+1} is the
belief after the episode so far and h0_{t+1} = GRU(0, posterior(0, o_t), a_t) the model's step
from o_t alone (a belief reset at t): both read the model's features of the step, and differ only
in the memory. They train on three episodes in four and are scored on the fourth's, so

    gain = max over outcomes d of (err_plain_d - err_recall_d)   (a share of y_d's variance)

is what the memory predicts beyond the observation, out of sample. The learner reads h once the
gain's running mean reaches `belief_gain`, and from then on for good; until then the model trains
at IDLE_SHARE of its rate, since only this test and `dreamer imagine` use it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..buffer import ReplayBuffer
from ..models.rssm import RSSM
from ..nets import mlp, symlog
from ..optim import FlatAdam

HIDDEN, LAYERS = 128, 2  # each predictor; a cue read against the action needs two layers (docs/belief.md)
BATCH = 256  # replayed transitions per test step
TEST_EVERY = 2  # env steps per test step, until the gate opens
RATE = 0.02  # running-mean rate of the scores and moments
SCORED_BEFORE_OPEN = 150  # test steps before the gate may open: the first scores are the predictors' noise
HELD_OUT = 4  # every 4th episode scores the predictors and never trains them
IDLE_SHARE = 0.125  # the model's share of its train_ratio while the learner does not read its belief
LR, CLIP = 1e-3, 100.0


class RecallTest(nn.Module):
    """Two one-step predictors, with the belief and with a reset one, and the running scores that open the gate."""

    def __init__(self, obs_dim: int, action_dim: int, deter: int, threshold: float):
        super().__init__()
        outcomes = obs_dim + 1
        self.plain = mlp(obs_dim + action_dim + deter, HIDDEN, outcomes, LAYERS)
        self.recall = mlp(obs_dim + action_dim + deter, HIDDEN, outcomes, LAYERS)
        self.threshold = threshold
        # Running scores and moments live in buffers, so that weights and checkpoints carry them.
        self.register_buffer("err_plain", torch.zeros(outcomes))
        self.register_buffer("err_recall", torch.zeros(outcomes))
        self.register_buffer("centre", torch.zeros(outcomes))
        self.register_buffer("spread", torch.zeros(outcomes))
        self.register_buffer("scored", torch.zeros(()))
        self.register_buffer("open", torch.tensor(float(threshold == 0.0)))  # belief_gain 0: read h from the start
        self.opt: FlatAdam | None = None

    def optimiser(self) -> FlatAdam:
        """The predictors' Adam (made once, after the module has moved to its device)."""
        if self.opt is None:
            self.opt = FlatAdam(self, LR, CLIP)
        return self.opt

    @property
    def reads_belief(self) -> bool:
        """Whether the learner reads h (the gate is open)."""
        return bool(self.open > 0.5)

    def gain(self) -> float:
        """max_d (err_plain_d - err_recall_d) over outcomes that vary, in standardised units; 0 before a score."""
        varies = self.spread > 1e-10
        if self.scored < 1 or not bool(varies.any()):
            return 0.0
        return float((self.err_plain - self.err_recall)[varies].max())

    def learn(self, replay: ReplayBuffer, model: RSSM, next_h: torch.Tensor, step: int,
              rng: np.random.Generator) -> None:
        """Env step `step`'s test step, every TEST_EVERY: score both predictors on the held-out episodes'
        replayed rows, fit them on the others. next_h (capacity, deter): every slot's h_{t+1} (Beliefs.next_h)."""
        if self.reads_belief or len(replay) == 0 or step % TEST_EVERY:
            return
        device = self.open.device
        slots = rng.integers(0, len(replay), size=BATCH)
        obs = torch.as_tensor(replay.obs[slots], device=device)
        action = torch.as_tensor(replay.actions[slots], device=device)
        y = torch.cat([symlog(torch.as_tensor(replay.next_obs[slots], device=device)) - symlog(obs),
                       symlog(torch.as_tensor(replay.rewards[slots], device=device))[:, None]], -1)
        with torch.no_grad():
            zero = torch.zeros(len(slots), model.deter, device=device)
            reset = model.recur(zero, model.split(model.observe_step(zero, obs))[1], action)
        y = self.standardise(y)
        base = torch.cat([symlog(obs), action], -1)
        guess_plain = self.plain(torch.cat([base, reset], -1))
        guess_recall = self.recall(torch.cat([base, next_h[slots].to(device)], -1))
        held = torch.as_tensor(replay.episode[slots] % HELD_OUT == 0, device=device)
        if bool(held.any()):
            self.score(y[held], guess_plain[held].detach(), guess_recall[held].detach())
        fit = ~held
        if bool(fit.any()):
            loss = (guess_plain[fit] - y[fit]).pow(2).mean() + (guess_recall[fit] - y[fit]).pow(2).mean()
            opt = self.optimiser()
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def standardise(self, y: torch.Tensor) -> torch.Tensor:
        """(y - running mean) / running std, the moments first moved toward this batch's."""
        rate = 1.0 if not bool(self.spread.any()) else RATE
        self.centre.mul_(1.0 - rate).add_(rate * y.mean(0))
        self.spread.mul_(1.0 - rate).add_(rate * y.var(0, unbiased=False))
        return (y - self.centre) / (self.spread + 1e-12).sqrt()

    @torch.no_grad()
    def score(self, y: torch.Tensor, plain: torch.Tensor, recall: torch.Tensor) -> None:
        """Fold one held-out batch's squared errors (rows, outcomes) into the running scores; open the gate when
        the gain has reached the threshold."""
        rate = 1.0 if self.scored < 1 else RATE
        self.err_plain.mul_(1.0 - rate).add_(rate * (plain - y).pow(2).mean(0))
        self.err_recall.mul_(1.0 - rate).add_(rate * (recall - y).pow(2).mean(0))
        self.scored += 1
        if self.threshold > 0 and self.scored >= SCORED_BEFORE_OPEN and self.gain() >= self.threshold:
            self.open.fill_(1.0)

    def metrics(self) -> dict[str, float]:
        """hybrid/memory_gain: the share of a step's outcome the belief predicts beyond the observation."""
        return {"hybrid/memory_gain": self.gain()} if self.scored >= 1 else {}
