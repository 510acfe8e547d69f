"""The model-trust guard: how well the world model predicts fresh real data, and what that allows.

Every env step, the new observation o_{t+1} is predicted open-loop from each of the last K
observations (k = 1..K steps back, with the actions actually taken), before the model has
trained on it. Each prediction's squared error (in symlog units) is set against the error of
the reference "nothing changes" (o_{t+1} predicted as o_{t+1-k}), summed over the last
`trust_window` env steps: err_k = sum model error / sum reference error. 1.0 means the model is
no better than the reference, whatever the env's units.

Episode ends are scored too, since a branched transition carries the continue head's verdict
into SAC's targets: a missed end bootstraps value from beyond it, a false one cuts a return
short. Each step, the one-step prediction's continue flag (as branched rollouts read it: below
CONTINUE_BELOW is an end) is set against the real termination (a time-limit truncation is no
end to predict): err_end = missed ends / real ends + the share of value that false ends cost.
Missed ends are counted over the last END_EVENTS real ends, however long ago, since a good
policy makes ends rare: a window of 200 steps then holds one end or none, and one missed end
would read as a miss rate of 1.0, switching every branch and imagination update on and off.
False ends are counted over the window as a rate f per step that did not end, and scored by
what they do to a value: a target cut short at rate f gives V = r / (1 - gamma (1 - f)) instead
of r / (1 - gamma), a share f H / (1 + f H) less with H = 1 / (1 - sac_discount). A rate that
reads small is not: at H = 100, one false end in ten steps costs 91% of the value, one in 200
steps a third (docs/model-trust.md: a plain rate of 0.11 won full trust and cost a run its returns). The reference
"episodes never end" scores 1.0 (every end missed, no false one); "every step ends" 0.99. With
no real end seen yet, the false ends alone: an env without terminations keeps its trust as long
as its head calls no end.

From the errors (tau = trust_threshold): trust(e) = clip((2 tau - e) / tau, 0, 1), full at
e <= tau and none at e >= 2 tau.
- branch_length: the largest k with err_k <= tau, and 0 (no branched data) unless err_end <= tau.
  Not "all of err_1..k": on smooth dynamics such as Pendulum's, one step changes the
  observation less than the decoder's own error, so err_1 can exceed 1 while err_3..5 are
  below 0.25 (docs/model-trust.md);
- imag_weight: trust(max(err_K, err_end)), the share of imagination updates that hybrid runs.
  Imagination weighs each step by the continue head's probability rather than cutting at a
  verdict, but a head no better than chance still weighs imagined returns wrongly (on
  CartPole-v1, err_K of 0.1-0.2 came with err_end near 0.6);
- real_share: 1 - (1 - real_share) * trust(max(min_k err_k, err_end)), and 1.0 whenever
  branch_length is 0.
A model that predicts only the mean of iid noise scores err_k = 0.5 (half the reference's
expected error), so with the default tau = 0.2 (zero trust from 0.4 up) it gets none at all.
Until it has seen a quarter of its window, the guard trusts nothing: model-free learning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import LearnerConfig
from ..models import WorldModel
from ..nets import symlog
from .branched import CONTINUE_BELOW

END_EVENTS = 20  # real ends over which the missed-end rate is measured


@dataclass(frozen=True)
class TrustSettings:
    """What the guard allows the learners, from the measured errors."""

    branch_length: int
    imag_weight: float
    real_share: float


class TrustGuard:
    """Running k-step prediction errors of fresh transitions against the 'nothing changes' reference."""

    def __init__(self, cfg: LearnerConfig):
        self.cfg = cfg
        self.k = max(1, cfg.branch_length)
        self.model_err = np.zeros((cfg.trust_window, self.k))  # ring of per-step squared errors
        self.ref_err = np.zeros((cfg.trust_window, self.k))
        self.seen = np.zeros((cfg.trust_window, self.k), dtype=bool)
        self.ends = np.zeros((cfg.trust_window, 2), dtype=bool)  # per step: (really ended, predicted an end)
        self.caught = np.zeros(END_EVENTS, dtype=bool)  # ring of the last real ends: was each one predicted?
        self.real_ends = 0  # real ends seen in all
        self.cursor, self.filled = 0, 0
        self.latents: torch.Tensor | None = None  # (m, latent): predictions of the current obs, oldest first
        self.origins: torch.Tensor | None = None  # (m, obs): the observations they started from (symlog)

    @torch.no_grad()
    def observe(self, wm: WorldModel, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray,
                terminated: bool, truncated: bool = False) -> None:
        """Score the model's predictions of next_obs (and of whether it ends the episode) from the last k
        observations; an episode's end, terminated or truncated, clears them."""
        device = next(wm.parameters()).device
        o = torch.as_tensor(np.asarray(obs, np.float32), device=device)[None]
        a = torch.as_tensor(np.asarray(action, np.float32), device=device)[None]
        z_now, o_now = wm.encode_mean(o), symlog(o)
        if self.latents is None:
            latents, origins = z_now, o_now
        else:
            latents, origins = torch.cat([self.latents, z_now]), torch.cat([self.origins, o_now])
        latents = wm.transition(latents, a.expand(latents.shape[0], -1))[0]  # each one step further
        target = symlog(torch.as_tensor(np.asarray(next_obs, np.float32), device=device))
        model = (wm.decoder(latents) - target).pow(2).sum(-1).cpu().numpy()  # (m,), oldest = longest
        ref = (origins - target).pow(2).sum(-1).cpu().numpy()
        row = self.cursor % self.cfg.trust_window
        self.model_err[row], self.ref_err[row], self.seen[row] = 0.0, 0.0, False
        ks = np.arange(len(model), 0, -1) - 1  # index k - 1 of each prediction
        self.model_err[row, ks], self.ref_err[row, ks], self.seen[row, ks] = model, ref, True
        predicted_end = bool(wm.cont(latents[-1:]) < CONTINUE_BELOW)  # the newest is one step ahead
        self.ends[row] = (terminated, predicted_end)
        if terminated:
            self.caught[self.real_ends % END_EVENTS] = predicted_end
            self.real_ends += 1
        self.cursor += 1
        self.filled = min(self.filled + 1, self.cfg.trust_window)
        if terminated or truncated:
            self.latents = self.origins = None
        else:  # keep the K - 1 most recent: next step they predict 2 .. K steps ahead
            self.latents, self.origins = latents[-(self.k - 1):] if self.k > 1 else None, \
                origins[-(self.k - 1):] if self.k > 1 else None

    def errors(self) -> np.ndarray:
        """err_k for k = 1..K over the window (NaN where nothing was measured)."""
        ref = np.where(self.seen, self.ref_err, 0.0).sum(0)
        model = np.where(self.seen, self.model_err, 0.0).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ref > 0, model / np.maximum(ref, 1e-12), np.nan)

    def end_error(self) -> float:
        """err_end: the share of the last END_EVENTS real ends missed plus the share of a value that the
        window's rate of false ends cuts off."""
        real, predicted = self.ends[:self.filled].T  # the window's rows past `filled` are still unwritten
        rate = int((predicted & ~real).sum()) / max(len(real) - int(real.sum()), 1)
        horizon = 1.0 / (1.0 - self.cfg.sac_discount)
        n = min(self.real_ends, END_EVENTS)
        return (float((~self.caught[:n]).sum()) / n if n else 0.0) + rate * horizon / (1.0 + rate * horizon)

    def settings(self) -> TrustSettings:
        """Branch length, imagination weight and real share that the measured errors allow."""
        if self.filled < self.cfg.trust_window // 4:
            return TrustSettings(0, 0.0, 1.0)
        err, tau = np.nan_to_num(self.errors(), nan=np.inf), self.cfg.trust_threshold
        err_end = self.end_error()
        useful = np.flatnonzero(err <= tau) if err_end <= tau else []
        branch = min(int(useful[-1]) + 1 if len(useful) else 0, self.cfg.branch_length)

        def trust(e: float) -> float:
            return 0.0 if not np.isfinite(e) else float(np.clip((2 * tau - e) / tau, 0.0, 1.0))

        real = 1.0 if branch == 0 else 1.0 - (1.0 - self.cfg.real_share) * trust(max(float(err.min()), err_end))
        return TrustSettings(branch, trust(max(float(err[-1]), err_end)), real)

    def metrics(self) -> dict[str, float]:
        """hybrid/... rows: the errors and what they allow."""
        err, s = self.errors(), self.settings()
        return {"hybrid/err_1": float(err[0]), "hybrid/err_k": float(err[-1]), "hybrid/err_end": self.end_error(),
                "hybrid/branch_length": float(s.branch_length), "hybrid/imag_weight": s.imag_weight,
                "hybrid/real_share": s.real_share}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The window and the open predictions, for checkpoints."""
        state = {"model_err": torch.from_numpy(self.model_err.copy()), "ref_err": torch.from_numpy(self.ref_err.copy()),
                 "seen": torch.from_numpy(self.seen.copy()), "ends": torch.from_numpy(self.ends.copy()),
                 "counters": torch.tensor([self.cursor, self.filled], dtype=torch.int64),
                 "caught": torch.from_numpy(self.caught.copy()), "real_ends": torch.tensor(self.real_ends)}
        if self.latents is not None:
            state["latents"], state["origins"] = self.latents.cpu(), self.origins.cpu()
        return state

    def load_state_tensors(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        """Restore what state_tensors() returned."""
        self.model_err, self.ref_err = state["model_err"].numpy().copy(), state["ref_err"].numpy().copy()
        self.seen = state["seen"].numpy().copy()
        # A checkpoint from before ends were scored: an unmeasured window, as at the start.
        self.ends = state["ends"].numpy().copy() if "ends" in state else np.zeros((self.cfg.trust_window, 2), bool)
        self.cursor, self.filled = (int(x) for x in state["counters"])
        # From before missed ends were counted over events: none seen yet.
        self.caught = state["caught"].numpy().copy() if "caught" in state else np.zeros(END_EVENTS, bool)
        self.real_ends = int(state["real_ends"]) if "real_ends" in state else 0
        self.latents = state["latents"].to(device) if "latents" in state else None
        self.origins = state["origins"].to(device) if "origins" in state else None
