"""What a recurrent model believes: while acting (Memory), and at every replayed step (Beliefs).

On a partially observed task one observation does not say where the system is going; the RSSM's
h_t, built from the episode so far, does. The off-policy learner therefore reads [o_t, h_t]: the
observation itself (so a fully observed task loses nothing) and the belief (so a hidden velocity
can be recovered); from vectors, only once the memory gate opens (memory_gate.py), and with h
standardised by BeliefScale. Replayed beliefs go stale as the model learns, so they are recomputed for the
whole replay every REFRESH_EVERY env steps and filled in for each new transition in between.

From images the learner reads the model state s_t alone, which means nothing until the model has
learned it: SAC trained on states that still move fits them and does not recover (pixel
Pendulum-v1 never learned; the same SAC started on a settled model did, docs/pixels.md). So it
starts once the states settle: each refresh measures their drift, the mean squared change of the
replayed states over their variance, and the learner starts after SETTLED_REFRESHES refreshes in a
row below settle_drift, or at SETTLE_CAP env steps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..buffer import ReplayBuffer
from ..config import LearnerConfig
from ..models.rssm import RSSM
from .memory_gate import CHECK_EVERY, CHECK_ROWS, MemoryGate
from .off_policy import OffPolicyLearner, Update
from .sac import SAC

REFRESH_EVERY = 100  # env steps between recomputing every replayed belief with the current model
SETTLED_REFRESHES = 5  # refreshes in a row with drift below settle_drift before a state-reading learner starts
SETTLE_CAP = 5_000  # env steps after which it starts whatever the drift: a bound on the wait
FIRSTS = 0.5  # share of the model's training sequences that start at an episode's first step
SCALE_FLOOR = 1e-3  # added to each unit's std in BeliefScale: a unit that never moves stays near 0


class Memory:
    """The belief of n envs while acting: h, z and the last action per row, fresh at an episode start."""

    def __init__(self, n: int, model: RSSM, action_dim: int, device: torch.device):
        self.h = torch.zeros(n, model.deter, device=device)
        self.z = torch.zeros(n, model.stoch, device=device)
        self.action = torch.zeros(n, action_dim, device=device)
        self.fresh = torch.ones(n, dtype=torch.bool, device=device)

    def reset(self, rows: list[int] | None = None) -> None:
        """Episode starts of the given rows (all by default): their next step begins from h = 0."""
        self.fresh[slice(None) if rows is None else rows] = True

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The carried state by name, for a checkpoint of the open episode."""
        return {"h": self.h, "z": self.z, "action": self.action, "fresh": self.fresh.float()}

    def load_state_tensors(self, part: dict[str, torch.Tensor]) -> None:
        """Restore state_tensors()."""
        for name in ("h", "z", "action"):
            getattr(self, name).copy_(part[name])
        self.fresh.copy_(part["fresh"] > 0.5)


@torch.no_grad()
def perceive(model: RSSM, memory: Memory, obs: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
    """Advance the rows' beliefs by one observation: h_t = GRU(h_{t-1}, z_{t-1}, a_{t-1}) (0 when fresh), then
    z_t the posterior mean; returns the states s_t = [h_t, z_t] (n, state). The action follows with `took`."""
    pick = slice(None) if rows is None else rows
    h = model.recur(memory.h[pick], memory.z[pick], memory.action[pick])
    h = torch.where(memory.fresh[pick, None], torch.zeros_like(h), h)
    state = model.observe_step(h, obs)
    memory.h[pick], memory.z[pick] = model.split(state)
    memory.fresh[pick] = False
    return state


def took(memory: Memory, actions: torch.Tensor, rows: list[int] | None = None) -> None:
    """Record the rows' encoded actions (one-hot or in [-1, 1]): the next transition reads them."""
    memory.action[slice(None) if rows is None else rows] = actions


class BeliefScale(nn.Module):
    """Per-unit mean and scale of the replayed h, by which the learner's h is standardised: (h - mean) / scale.

    A GRU state can settle near one vector at each step of an episode, and what tells episodes apart
    (a cue) then moves it by hundredths: on a CueRecall seed whose learner never took up the cue, h at
    each step spread by 0.03 in all, nearly all of it the cue, which a linear read-out recovered with
    R² 1 (docs/belief.md). Refitted at each refresh of the replayed beliefs; saved with the weights.
    """

    def __init__(self, deter: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(deter))
        self.register_buffer("scale", torch.ones(deter))  # the identity until the first fit

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Standardised h."""
        return (h - self.mean) / self.scale

    @torch.no_grad()
    def fit(self, h: torch.Tensor) -> None:
        """Mean and std + SCALE_FLOOR of each unit over the rows of h (n, deter)."""
        self.mean.copy_(h.mean(0))
        self.scale.copy_(h.std(0) + SCALE_FLOOR)


class Beliefs:
    """The RSSM's state s_t = [h_t, z_t] and its next h_{t+1} at every replay slot, in step with the replay."""

    COUNTERS = ("believed", "drift", "calm", "settled_at")

    def __init__(self, model: RSSM, device: torch.device, settle: float | None = None,
                 scale: BeliefScale | None = None):
        """settle: the drift below which the states count as settled (settle_drift); None: not measured.
        scale: refitted to the replayed h at each refresh, and applied by inputs(); None: h as it is."""
        self.model, self.device, self.settle, self.scale = model, device, settle, scale
        self.state = torch.zeros(0, model.latent_dim)  # sized to the replay at the first follow()
        self.next_h = torch.zeros(0, model.deter)
        self.believed = 0  # transitions (env steps) whose beliefs are filled in
        self.drift = float("nan")  # of the last refresh
        self.calm = 0  # refreshes in a row with drift below settle
        self.settled_at = 0  # the env step the states settled (0: not yet)

    @property
    def settled(self) -> bool:
        """Whether a learner reading the states alone may start: settle_drift 0 starts it at once."""
        return self.settle == 0 or self.settled_at > 0

    def follow(self, replay: ReplayBuffer, step: int) -> None:
        """Fill in the beliefs of the transitions stored since the last call; recompute all when due."""
        if len(self.state) != replay.capacity:
            self.state = torch.zeros(replay.capacity, self.model.latent_dim)
            self.next_h = torch.zeros(replay.capacity, self.model.deter)
            self.believed = 0
        if self.believed == 0 or step % REFRESH_EVERY == 0:
            self.refresh(replay, new=step - self.believed)
        else:
            self.extend(replay, min(step - self.believed, len(replay)))
        self.believed = step
        if self.settle and not self.settled_at and (self.calm >= SETTLED_REFRESHES or step >= SETTLE_CAP):
            self.settled_at = step

    @torch.no_grad()
    def extend(self, replay: ReplayBuffer, new: int) -> None:
        """Beliefs of the `new` newest slots, each carried on from the slot before it in its episode."""
        for k in range(new, 0, -1):
            i = (replay.cursor - k) % replay.capacity
            prev = (i - 1) % replay.capacity
            older = len(replay) - k > 0  # the slot before i holds an older transition
            h = self.next_h[prev:prev + 1] if older and replay.episode[prev] == replay.episode[i] \
                else torch.zeros(1, self.model.deter)
            self._believe(replay, np.array([i]), h.to(self.device))

    def _believe(self, replay: ReplayBuffer, slots: np.ndarray, h: torch.Tensor) -> torch.Tensor:
        """Beliefs at the given slots from the carried h (n, deter); returns h_{t+1}."""
        obs = torch.as_tensor(replay.obs[slots], device=self.device)
        action = torch.as_tensor(replay.actions[slots], device=self.device)
        state = self.model.observe_step(h, obs)
        nxt = self.model.recur(h, self.model.split(state)[1], action)
        self.state[slots], self.next_h[slots] = state.cpu(), nxt.cpu()
        return nxt

    @torch.no_grad()
    def refresh(self, replay: ReplayBuffer, new: int = 0) -> None:
        """Recompute every stored belief, all episodes at once, step by step from their first stored step;
        where settling is measured, the drift of the slots believed before (all but the `new` newest).

        Episodes sorted longest first: at step t the ones still going are a prefix, so the batch
        only shrinks and nothing is padded.
        """
        size, cap = len(replay), replay.capacity
        if size == 0:
            return
        before = None
        if self.settle is not None and self.believed > 0:
            before = np.ones(size, dtype=bool)
            before[(replay.cursor - 1 - np.arange(min(new, size))) % cap] = False
            before = torch.as_tensor(before)
            old = self.state[:size][before]  # boolean indexing copies: refresh overwrites self.state
        order = np.arange(size) if size < cap else (replay.cursor + np.arange(size)) % cap  # oldest first
        episode = replay.episode[order]
        starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
        lengths = np.diff(np.r_[starts, size])
        longest = np.argsort(-lengths, kind="stable")
        starts, lengths = starts[longest], lengths[longest]
        h = torch.zeros(len(starts), self.model.deter, device=self.device)
        for t in range(int(lengths[0])):
            going = int(np.searchsorted(-lengths, -t, side="left"))  # episodes longer than t
            h = self._believe(replay, order[starts[:going] + t], h[:going])
        if self.scale is not None:
            self.scale.fit(self.model.split(self.state[:size])[0].to(self.device))
        if before is not None and len(old):
            self.drift = drift(old, self.state[:size][before])
            self.calm = self.calm + 1 if self.drift < self.settle else 0

    @staticmethod
    def sequence_starts(replay: ReplayBuffer, n: int, rng: np.random.Generator, firsts_share: float = FIRSTS,
                        snap: int = 0) -> np.ndarray:
        """Where the model's n training sequences begin: a firsts_share of them at episodes' first steps, where
        the belief starts from h = 0 as acting does, and what is seen there (a cue) is in the window with what
        it later decides; the rest at uniformly drawn steps, since uniform starts alone put an episode's start
        in few windows, and first steps alone leave the rest of a long episode unfitted. With snap, a drawn
        step fewer than snap steps after its episode's first step starts at that first step instead."""
        start = rng.integers(0, len(replay), size=n)
        if snap > 1:
            into = replay.steps_into_episode(start, snap)
            start = np.where(into < snap, start - into, start)
        firsts = replay.first_steps()
        k = round(n * firsts_share)
        if len(firsts) and k:
            start[:k] = firsts[rng.integers(0, len(firsts), size=k)]
        return start

    def starts(self, replay: ReplayBuffer, start: np.ndarray) -> torch.Tensor:
        """h carried into sequences that begin at the given slots: the slot before's h_{t+1}, or 0 at an episode's
        start."""
        if self.believed == 0 or len(self.next_h) != replay.capacity:  # none yet: every sequence starts at h = 0
            return torch.zeros(len(start), self.model.deter, device=self.device)
        prev = (start - 1) % replay.capacity
        age = (start - replay.cursor) % replay.capacity if len(replay) == replay.capacity else start
        carried = (age > 0) & (replay.episode[prev] == replay.episode[start])
        h = self.next_h[prev] * torch.as_tensor(carried, dtype=torch.float32)[:, None]
        return h.to(self.device)

    @torch.no_grad()
    def next_states(self, replay: ReplayBuffer, last: np.ndarray) -> torch.Tensor:
        """s_{t+1} after the slots (n, state): the next slot's belief where its episode goes on in the replay, else
        (an episode's end, the newest step) the posterior of next_obs from h_{t+1}, the few that need the encoder."""
        age = (last - replay.cursor) % replay.capacity if len(replay) == replay.capacity else last
        nxt = (last + 1) % replay.capacity
        goes_on = (age + 1 < len(replay)) & (replay.episode[nxt] == replay.episode[last])
        states = self.state[nxt].clone()
        ends = np.flatnonzero(~goes_on)
        if len(ends):
            obs = torch.as_tensor(replay.next_obs[last[ends]], device=self.device)
            states[ends] = self.model.observe_step(self.next_h[last[ends]].to(self.device), obs).cpu()
        return states.to(self.device)

    def inputs(self, slots: np.ndarray, after: bool = False) -> torch.Tensor:
        """What the off-policy learner reads beside o_t: h_t at the slots, or h_{t+1} after them (standardised
        where there is a scale)."""
        h = (self.next_h[slots] if after else self.model.split(self.state[slots])[0]).to(self.device)
        return h if self.scale is None else self.scale(h)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The stored beliefs by name: stale by design, so a resume cannot recompute them."""
        return {"state": self.state, "next_h": self.next_h}

    def load_state_tensors(self, part: dict[str, torch.Tensor]) -> None:
        """Restore state_tensors(); follow() recomputes them for a replay of another capacity (a new step total)."""
        self.state, self.next_h = part["state"].clone(), part["next_h"].clone()

    def counters(self) -> dict[str, float]:
        """The carried-over counters by checkpoint name (the settling ones only where it is measured)."""
        return {name: getattr(self, name) for name in (self.COUNTERS if self.settle is not None else ("believed",))}

    def load_counters(self, state: dict[str, float]) -> None:
        """Restore counters() (0, and drift NaN, where a checkpoint has none; one written before SAC waited
        resumes with SAC on from wherever its beliefs had got to)."""
        self.believed = int(state.get("believed", 0))
        self.drift = float(state.get("drift", float("nan")))
        self.calm, self.settled_at = int(state.get("calm", 0)), int(state.get("settled_at", self.believed))


def drift(old: torch.Tensor, new: torch.Tensor) -> float:
    """How far states moved: mean ||s_new - s_old||^2 over the total variance of s_old (0: unchanged)."""
    spread = (old - old.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return ((new - old).pow(2).sum(-1).mean() / spread).item()


class BeliefOffPolicy(OffPolicyLearner):
    """SAC on replayed transitions whose inputs are [o_t, h_t]: the observation and the model's belief; or, with
    reads_state (image observations: never raw pixels), the model state s_t = [h_t, z_t] alone."""

    def __init__(self, sac: SAC, cfg: LearnerConfig, device: torch.device, beliefs: Beliefs, obs_dim: int,
                 reads_state: bool = False, gate: MemoryGate | None = None, memoryless: SAC | None = None,
                 draws: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        """gate: reads h only once its test says h pays (learners/memory_gate.py), and until then trains
        `memoryless`, a SAC of its own on o_t alone; None: reads h always. draws: the model's random stream,
        which the gate's check draws from."""
        self.gate, self.memoryless, self.draws = gate, memoryless, draws
        super().__init__(sac, cfg, device)
        self.beliefs, self.obs_dim, self.reads_state = beliefs, obs_dim, reads_state
        self.replay: ReplayBuffer | None = None  # the replay of the last step, for metrics()

    @property
    def shut(self) -> bool:
        """Whether the gate keeps the learner off h."""
        return self.gate is not None and not self.gate.is_open

    @property
    def sac(self) -> SAC:
        """The SAC that learns now: the memoryless one while the gate is shut, the one reading h after."""
        return self.memoryless if self.shut else self.reading

    @sac.setter
    def sac(self, value: SAC) -> None:
        self.reading = value

    def learn(self, replay: ReplayBuffer, rng: np.random.Generator) -> Iterator[Update]:
        """This env step's SAC updates; none (and none owed) while a learner reading the states alone waits for
        them to settle."""
        if self.reads_state and not self.beliefs.settled:
            return
        yield from super().learn(replay, rng)

    def before_updates(self, replay: ReplayBuffer, rng: np.random.Generator) -> None:
        """Remember the replay: metrics() reads its newest transitions."""
        self.replay = replay

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """hybrid/belief_share: the share of the critics' first-layer input signal that comes from the belief;
        from images, hybrid/state_drift (the last refresh's) and hybrid/learner_on (1 once SAC reads the states).

        Each input j counts ||W_j|| * rms(x_j) (its weights in every critic, times its size over the
        newest replayed steps), so 0 means the learner ignores the model and 1 that it reads nothing else.
        """
        if self.reads_state:  # no observation beside it: how far the states still move, and whether SAC reads them
            rows = {"hybrid/learner_on": float(self.beliefs.settled)}
            if not math.isnan(self.beliefs.drift):  # NaN: no refresh has measured it yet
                rows["hybrid/state_drift"] = self.beliefs.drift
            return rows
        if self.replay is None or self.beliefs.believed == 0:
            return {}
        rows = {}
        if self.gate is not None:
            rows["hybrid/memory_gate"] = float(self.gate.is_open)
            if not math.isnan(self.gate.gain()):
                rows["hybrid/recall_gain"] = self.gate.gain()
        if self.shut:
            rows["hybrid/belief_share"] = 0.0
            return rows
        n = min(len(self.replay), 256)
        slots = (self.replay.cursor - 1 - np.arange(n)) % self.replay.capacity
        x = self.sac.features(torch.cat([torch.as_tensor(self.replay.obs[slots], device=self.device),
                                         self.beliefs.inputs(slots)], -1))
        columns = x.shape[-1]
        weight = self.sac.critics.weights[0][:, :columns]  # (members, inputs[, + actions], hidden)
        signal = weight.pow(2).sum((0, 2)).sqrt() * x.pow(2).mean(0).sqrt()
        rows["hybrid/belief_share"] = (signal[self.obs_dim:].sum() / signal.sum().clamp_min(1e-12)).item()
        return rows

    def updates(self, replay: ReplayBuffer, turns: list[bool], rng: np.random.Generator
                ) -> Iterator[dict[str, float] | None]:
        """One update per turn on real transitions with their beliefs, the step's batches drawn at once; then,
        while the gate is shut, every CHECK_EVERY env steps, its check on the newest replayed transitions."""
        if not turns:
            return iter(())
        ln = self.cfg
        slots = rng.integers(0, len(replay), size=ln.sac_batch * len(turns))
        batch, last = replay.transitions_at(slots, self.device, ln.sac_nstep, ln.sac_discount,
                                            observations=not self.reads_state)  # frames: read through beliefs
        if self.reads_state:
            batch = batch._replace(obs=self.beliefs.state[slots].to(self.device),
                                   next_obs=self.beliefs.next_states(replay, last))
            return self.sac.updates(batch, turns)
        if not self.shut:
            batch = batch._replace(obs=torch.cat([batch.obs, self.beliefs.inputs(slots)], -1),
                                   next_obs=torch.cat([batch.next_obs, self.beliefs.inputs(last, after=True)], -1))
            return self.sac.updates(batch, turns)
        if self.beliefs.believed % CHECK_EVERY:  # shut: the memoryless learner, on the observation alone
            return self.sac.updates(batch, turns)
        return self._then_check(self.sac.updates(batch, turns), replay)

    def _then_check(self, updates: Iterator[dict[str, float] | None], replay: ReplayBuffer
                    ) -> Iterator[dict[str, float] | None]:
        """The step's updates, then the gate's converged check on the newest replayed transitions."""
        yield from updates
        n = min(len(replay), CHECK_ROWS)
        tested = (replay.cursor - 1 - np.arange(n)) % replay.capacity
        raw, _ = replay.transitions_at(tested, self.device)
        history = torch.as_tensor(replay.history(tested), device=self.device)
        episodes = torch.as_tensor(replay.episode[tested], device=self.device)
        # An opening hands learning to the SAC reading h, untrained until then (the sac property): the one
        # that read the observation alone has fitted what that allows.
        with self.draws():
            self.gate.check(raw.obs, raw.actions, raw.rewards, raw.next_obs, history, episodes)
