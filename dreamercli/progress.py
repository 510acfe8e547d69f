"""What the training loop reports while it runs, and an honest time-left estimate.

A run has phases of very different speed: random-action prefill (thousands of env steps per
second), world-model pretraining (no env steps), training steps (each one's collection and all
the updates it makes: world-model, imagination, branched rollouts, SAC, of very different
costs), evaluations (whose episodes grow longer or shorter as the policy changes) and
checkpoints. The time left is the remaining work of each phase times its measured cost, each
measured in the unit the work is counted in: seconds per training env step (never per update,
whose kinds mix), per pretraining update, per evaluation. No rich here: display.py draws it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

PHASES = ("prefill", "pretrain", "train", "eval", "checkpoint")
# The cost of a training step is the mean over the latest three quarters of those measured (at least 50):
# it follows a cost that changes (a trust guard that opens) and averages out a busy machine's noise.
WINDOW = 0.75
MIN_WINDOW = 50
READY = 10  # training steps measured before their cost is trusted (the first ones warm up)


@dataclass
class Progress:
    """What the loop reports after each env step and pretraining update, and as it evaluates or checkpoints."""

    step: int
    total: int
    episodes: int
    last_eval: float | None
    losses: dict[str, float]
    sps: float  # recent env steps per second (0 while pretraining, which takes no env steps)
    phase: str = "train"  # one of PHASES
    pretrained: int = 0  # world-model-only updates done so far, of pretrain
    pretrain: int = 0
    eta: float | None = None  # seconds left by CostModel; None until the costs it needs are measured
    stopping: str | None = None  # the signal (SIGINT, SIGTERM) that asked the run to stop after this step


class Ema:
    """Exponential moving average, bias-corrected: after n values it is their weighted mean."""

    def __init__(self, alpha: float):
        self.alpha, self.raw, self.n = alpha, 0.0, 0

    def add(self, x: float) -> None:
        self.raw += self.alpha * (x - self.raw)
        self.n += 1

    @property
    def value(self) -> float | None:
        """None before the first value (an unmeasured cost is unknown, not zero)."""
        return None if self.n == 0 else self.raw / (1.0 - (1.0 - self.alpha) ** self.n)


class RecentMean:
    """Mean of the latest values, over a window that grows with their count: the latest `share` of them,
    at least `least`; unknown (None) until `ready` values were seen."""

    def __init__(self, share: float = WINDOW, least: int = MIN_WINDOW, ready: int = READY):
        self.share, self.least, self.ready = share, least, ready
        self.values: deque[float] = deque()
        self.total, self.seen = 0.0, 0

    def add(self, x: float) -> None:
        self.values.append(x)
        self.total += x
        self.seen += 1
        while len(self.values) > max(self.least, int(self.share * self.seen)):
            self.total -= self.values.popleft()

    @property
    def value(self) -> float | None:
        return self.total / len(self.values) if self.seen >= max(self.ready, 1) else None


class CostModel:
    """Seconds left = prefill steps x their cost + pretraining updates x theirs + training steps x the
    recent seconds per training step + evaluations x the latest one's seconds + checkpoints x theirs.

    The loop passes in measured seconds (`add`) and the wall clock at the end of each env step
    (`end_step`); a step's duration leaves out the pretraining, evaluation and checkpoint inside
    it, which are counted on their own. So the estimate can be tested with hand-made timings.
    """

    def __init__(self, steps: int, prefill: int, pretrain: int, eval_every: int = 0, checkpoint_every: int = 0,
                 episode_limit: int = 1000, alpha: float = 0.05):
        self.steps, self.prefill, self.eval_every = steps, prefill, eval_every
        self.first_train = max(prefill, 1)  # the first step that learns (after the pretraining, at the same step)
        self.pretrain = pretrain if self.first_train <= steps else 0
        self.checkpoint_every = checkpoint_every or eval_every
        self.episode_limit, self.alpha = episode_limit, alpha
        self.prefill_step = Ema(alpha)  # seconds per random-action env step
        self.pretrain_update = Ema(alpha)  # seconds per world-model-only update
        self.train_step = RecentMean()  # seconds per training env step, all its updates included
        self.act = Ema(alpha)  # seconds to act and step the env once (collection alone)
        self.eval: float | None = None  # the latest evaluation's seconds
        self.checkpoint: float | None = None  # the latest checkpoint's seconds
        self.rate = Ema(alpha)  # wall-clock seconds per env step, for the rate shown
        self._last: float | None = None  # when the previous env step ended
        self._excluded = 0.0  # pretraining, evaluation and checkpoint seconds since then

    def add(self, kind: str, seconds: float) -> None:
        """One measured item: 'collect' (an env step's action and env.step), 'pretrain' (an update),
        'eval' or 'checkpoint'. The last three belong to no env step's duration."""
        if kind == "collect":
            self.act.add(seconds)
            return
        if kind == "pretrain":
            self.pretrain_update.add(seconds)
        elif kind == "eval":
            self.eval = seconds
        elif kind == "checkpoint":
            self.checkpoint = seconds
        else:
            raise ValueError(f"unknown cost kind {kind!r}")
        self._excluded += seconds

    def end_step(self, step: int, now: float) -> None:
        """Env step `step` ended at wall-clock `now`: its duration (less pretraining, evaluation and
        checkpoint) is a prefill step's or a training step's cost, and feeds the recent rate."""
        if step == self.first_train:  # policy steps are another kind: do not average with prefill
            self.rate = Ema(self.alpha)
        if self._last is not None:
            seconds = max(now - self._last - self._excluded, 1e-9)
            self.rate.add(seconds)
            (self.train_step if step >= self.first_train else self.prefill_step).add(seconds)
        self._last, self._excluded = now, 0.0

    def restart_clock(self, now: float) -> None:
        """Forget when the last step ended (a resumed run's first step has no predecessor)."""
        self._last, self._excluded = now, 0.0

    @property
    def sps(self) -> float:
        """Recent env steps per second (0 before two steps have ended)."""
        seconds = self.rate.value
        return 0.0 if seconds is None else 1.0 / seconds

    def _due(self, every: int, step: int) -> bool:
        return step == self.steps or (bool(every) and step % every == 0)

    def _every_left(self, every: int, step: int) -> int:
        """Events after `step`: every `every` steps, and always one at the end."""
        periodic = (self.steps // every - step // every) if every else 0
        at_end = 0 if step >= self.steps or (every and self.steps % every == 0) else 1
        return periodic + at_end

    def evals_left(self, step: int) -> int:
        """Evaluations after `step`: every eval_every steps, and always one at the end."""
        return self._every_left(self.eval_every, step)

    def checkpoints_left(self, step: int) -> int:
        """Checkpoints after `step`: every checkpoint_every (else eval_every) steps, and one at the end."""
        return self._every_left(self.checkpoint_every, step)

    def eval_seconds(self) -> float:
        """What an evaluation costs: the latest one's seconds; before the first, its episodes in lockstep
        take about episode_limit steps of one action and env step each (an upper bound); 0 while unknown."""
        if self.eval is not None:
            return self.eval
        return self.episode_limit * (self.act.value or 0.0)

    def seconds_left(self, step: int, pretrained: int, phase: str = "train") -> float | None:
        """Time left after `step` env steps and `pretrained` pretraining updates (during `phase`); None
        while a cost that the remaining work needs has not been measured."""
        work = [(min(self.first_train - 1, self.steps) - step, self.prefill_step.value),
                (max(self.pretrain - pretrained, 0) if step <= self.first_train else 0, self.pretrain_update.value),
                (self.steps - max(step, self.first_train - 1) + (phase == "pretrain"), self.train_step.value)]
        left = 0.0
        for count, cost in work:
            if count > 0:
                if cost is None:
                    return None
                left += count * cost
        # An evaluation or checkpoint under way at `step` is still to come, and so is a checkpoint after it.
        evals = self.evals_left(step) + (phase == "eval")
        checkpoints = self.checkpoints_left(step) + (phase in ("eval", "checkpoint")
                                                      and self._due(self.checkpoint_every, step))
        return left + evals * self.eval_seconds() + checkpoints * (self.checkpoint or 0.0)
