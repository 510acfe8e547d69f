"""What the training loop reports while it runs, and an honest time-left estimate.

The loop has three phases of very different speed: random-action prefill (tens of thousands
of env steps per second), world-model pretraining (no env steps, a few seconds), and training
(each env step costs the agent's updates per step: train_ratio world-model updates where there
is a model, sac_ratio SAC updates where there is an off-policy learner). An average over the
whole run mixes them, so the time left comes from a cost model instead: the remaining work of
each kind times its measured recent cost. No rich here: the display lives in display.py.
"""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("prefill", "pretrain", "train")


@dataclass
class Progress:
    """What the loop reports after each env step and each pretraining update."""

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


class CostModel:
    """Seconds left = remaining pretrain updates x their cost + remaining env steps x (step cost
    + updates per step x update cost) + remaining evaluations x their cost, each cost a recent average.

    The loop passes in measured seconds (`add`) and the wall clock at the end of each env step
    (`end_step`), so the estimate can be tested with hand-made timings.
    """

    def __init__(self, steps: int, prefill: int, pretrain: int, train_ratio: float, eval_every: int = 0,
                 alpha: float = 0.05):
        self.steps, self.prefill = steps, prefill
        self.pretrain = pretrain if max(prefill, 1) <= steps else 0  # it runs at the prefill's last step
        self.train_ratio, self.eval_every, self.alpha = train_ratio, eval_every, alpha
        # alpha 0.05: about the last 20 items. Evaluations are few and grow longer as the
        # policy improves: follow the latest.
        self.costs = {"step": Ema(alpha), "pretrain": Ema(alpha), "update": Ema(alpha), "eval": Ema(0.5)}
        self.rate = Ema(alpha)  # wall-clock seconds per env step, for the rate shown
        self._last: float | None = None  # when the previous env step ended
        self._excluded = 0.0  # pretrain seconds since then, which belong to no env step

    def add(self, kind: str, seconds: float) -> None:
        """One measured item: an env step's collection, a pretrain update, an update, an evaluation."""
        self.costs[kind].add(seconds)
        if kind == "pretrain":  # not part of any env step's duration
            self._excluded += seconds

    def end_step(self, step: int, now: float) -> None:
        """Env step `step` ended at wall-clock `now`: feed its duration to the recent rate."""
        if step == self.prefill + 1:  # policy steps are another kind: do not average with prefill
            self.rate = Ema(self.alpha)
        if self._last is not None:
            self.rate.add(max(now - self._last - self._excluded, 1e-9))
        self._last, self._excluded = now, 0.0

    @property
    def sps(self) -> float:
        """Recent env steps per second (0 before two steps have ended)."""
        seconds = self.rate.value
        return 0.0 if seconds is None else 1.0 / seconds

    def evals_left(self, step: int) -> int:
        """Evaluations after `step`: every eval_every steps, and always one at the end."""
        periodic = (self.steps // self.eval_every - step // self.eval_every) if self.eval_every else 0
        at_end = 0 if step >= self.steps or (self.eval_every and self.steps % self.eval_every == 0) else 1
        return periodic + at_end

    def seconds_left(self, step: int, pretrained: int) -> float | None:
        """Time left after `step` env steps and `pretrained` pretrain updates; None while a cost
        that remaining work needs has not been measured. Evaluations count once one was timed."""
        work = {"pretrain": self.pretrain - pretrained,
                "step": self.steps - step,
                "update": self.train_ratio * (self.steps - max(step, self.prefill))}
        left = 0.0
        for kind, count in work.items():
            if count > 0:
                cost = self.costs[kind].value
                if cost is None:
                    return None
                left += count * cost
        return left + self.evals_left(step) * (self.costs["eval"].value or 0.0)
