"""Replay of real transitions, sampled as fixed-length sequences."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .config import DEFAULT_MAX_EPISODE_STEPS
from .envs import EnvSpec, encode_action, make_env, random_action, spec_of, to_env_action


class SequenceBatch(NamedTuple):
    """A batch of replayed sequences; mask marks steps inside the first step's episode."""

    obs: torch.Tensor  # (B, L, obs), or (B, L, H, W, C) uint8 images
    actions: torch.Tensor  # (B, L, act), one-hot or in [-1, 1]
    rewards: torch.Tensor  # (B, L)
    next_obs: torch.Tensor  # (B, L, obs), or (B, L, H, W, C) uint8 images
    terminated: torch.Tensor  # (B, L)
    mask: torch.Tensor  # (B, L), bool


class TransitionBatch(NamedTuple):
    """Single transitions, for the off-policy learner; truncation is not termination."""

    obs: torch.Tensor  # (B, obs)
    actions: torch.Tensor  # (B, act), one-hot or in [-1, 1]
    rewards: torch.Tensor  # (B,)
    next_obs: torch.Tensor  # (B, obs)
    terminated: torch.Tensor  # (B,), 1.0 where the episode ended in a terminal state
    steps: torch.Tensor  # (B,), env steps from obs to next_obs (n-step returns: rewards is their discounted sum)


def concat(a: TransitionBatch, b: TransitionBatch) -> TransitionBatch:
    """Two batches as one (real and branched transitions in one learner batch)."""
    return TransitionBatch(*(torch.cat([x, y]) for x, y in zip(a, b, strict=True)))


class ReplayBuffer:
    """A ring buffer of transitions with episode ids, so sequences never cross episodes.

    Image observations (obs_shape (H, W, C)) are kept as uint8, a quarter of float32's bytes.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, obs_shape: tuple[int, ...] = ()):
        self.capacity = capacity
        shape, dtype = (obs_shape, np.uint8) if obs_shape else ((obs_dim,), np.float32)
        self.obs = np.zeros((capacity, *shape), dtype)
        self.next_obs = np.zeros((capacity, *shape), dtype)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.episode = np.full(capacity, -1, np.int64)
        self.cursor = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool, episode: int) -> None:
        """Store one transition of the given episode, overwriting the oldest when full."""
        i = self.cursor
        self.obs[i], self.actions[i], self.next_obs[i] = obs, action, next_obs
        self.rewards[i], self.terminated[i], self.episode[i] = reward, float(terminated), episode
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_batch(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                  terminated: np.ndarray) -> None:
        """Store n transitions at once (branched rollouts), overwriting the oldest when full."""
        n = len(rewards)
        index = (self.cursor + np.arange(n)) % self.capacity
        self.obs[index], self.actions[index], self.next_obs[index] = obs, actions, next_obs
        self.rewards[index], self.terminated[index], self.episode[index] = rewards, terminated, -1
        self.cursor = int((self.cursor + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample_transitions(self, batch_size: int, rng: np.random.Generator, device: torch.device,
                           nstep: int = 1, discount: float = 1.0) -> TransitionBatch:
        """Uniformly chosen transitions; with nstep > 1, each runs on for up to nstep env steps of its episode.

        An n-step transition keeps the first step's obs and action, sums the rewards discounted by
        `discount`, and ends at the last step taken: at nstep, the episode's end, or the newest data.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self.transitions_at(rng.integers(0, self.size, size=batch_size), device, nstep, discount)[0]

    def transitions_at(self, i: np.ndarray, device: torch.device, nstep: int = 1, discount: float = 1.0,
                       observations: bool = True) -> tuple[TransitionBatch, np.ndarray]:
        """The (n-step) transitions from slots i, and the slot each ends at. Without observations, obs and
        next_obs are empty (n, 0): for a learner that reads something else in their place (frames' beliefs)."""
        steps = np.ones(len(i), np.float32)
        if nstep == 1:
            last, rewards = i, self.rewards[i]
        else:
            last, rewards = self.run_on(i, nstep, discount, steps)
        obs, next_obs = (self.obs[i], self.next_obs[last]) if observations else (np.empty((len(i), 0), np.float32),) * 2
        return TransitionBatch(*(torch.as_tensor(x, device=device) for x in (
            obs, self.actions[i], rewards, next_obs, self.terminated[last], steps))), last

    def run_on(self, i: np.ndarray, nstep: int, discount: float, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The last slot and the discounted reward sum of n-step transitions from slots i; counts steps in place."""
        # A slot's age order: 0 the oldest stored transition. The next step of a transition is the
        # next slot, if it is newer, of the same (real, not branched: id -1) episode, after no end.
        age = (i - self.cursor) % self.capacity if self.size == self.capacity else i
        last, rewards = i.copy(), self.rewards[i].astype(np.float64)
        going = (self.episode[i] >= 0) & (self.terminated[i] == 0)
        for k in range(1, nstep):
            j = (i + k) % self.capacity
            going &= (age + k < self.size) & (self.episode[j] == self.episode[i])
            last = np.where(going, j, last)
            rewards += np.where(going, discount**k * self.rewards[j], 0.0)
            steps += going
            going &= self.terminated[j] == 0
        return last, rewards.astype(np.float32)

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "episode")

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored transitions (in slot order) by field, for checkpoints."""
        return {name: getattr(self, name)[:self.size] for name in self.FIELDS}

    def load_arrays(self, arrays: dict[str, np.ndarray], cursor: int, capacity: int) -> None:
        """Restore what arrays() returned from a buffer of `capacity` with its write cursor.

        The same capacity restores the slots exactly (so sampling repeats); another one (a
        resumed run with a new step total) keeps the transitions in time order, newest last.
        """
        for name in self.FIELDS:
            own = getattr(self, name)
            if arrays[name].shape[1:] != own.shape[1:] or arrays[name].dtype != own.dtype:
                raise ValueError(f"replay field {name} has shape {arrays[name].shape[1:]} of {arrays[name].dtype}, "
                                 f"the buffer holds {own.shape[1:]} of {own.dtype}")
        size = len(arrays["rewards"])
        if capacity == self.capacity:
            order, self.cursor = np.arange(size), cursor
        else:
            order = np.roll(np.arange(size), -cursor) if size == capacity else np.arange(size)
            order = order[-self.capacity:]
            self.cursor = len(order) % self.capacity
        for name in self.FIELDS:
            getattr(self, name)[:len(order)] = arrays[name][order]
        self.size = len(order)

    def sample(self, batch_size: int, seq_len: int, rng: np.random.Generator,
               device: torch.device) -> SequenceBatch:
        """Sample sequences starting at uniformly chosen stored transitions."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self.sequences_at(rng.integers(0, self.size, size=batch_size), seq_len, device)

    def first_steps(self) -> np.ndarray:
        """The slots that hold an episode's first step (not an episode whose start the ring overwrote)."""
        slots = np.arange(self.size)
        if self.size < self.capacity:
            return slots[(slots == 0) | (self.episode[slots] != self.episode[slots - 1])]
        age = (slots - self.cursor) % self.capacity
        return slots[(age > 0) & (self.episode[slots] != self.episode[(slots - 1) % self.capacity])]

    def steps_into_episode(self, slots: np.ndarray, cap: int) -> np.ndarray:
        """How many stored steps of their episode come before the slots, counted up to cap (cap: that many or
        more); a step whose predecessors the ring overwrote counts from the oldest one kept."""
        before = np.zeros(len(slots), dtype=np.int64)
        going = np.ones(len(slots), dtype=bool)
        age = (slots - self.cursor) % self.capacity if self.size == self.capacity else slots
        for k in range(1, cap + 1):
            going &= (age - k >= 0) & (self.episode[(slots - k) % self.capacity] == self.episode[slots])
            before += going
        return before

    def history(self, slots: np.ndarray, cap: int = 1000) -> np.ndarray:
        """What the episode showed before each slot, raw (n, 2 obs + act + 2): [o_{t-1}, a_{t-1}, 1] where a step
        before it is stored, [o_first, 1] where the episode's first step is (within cap steps); zeros otherwise."""
        into = self.steps_into_episode(slots, cap)
        first = (slots - np.minimum(into, cap - 1)) % self.capacity
        has_prev = (into > 0)[:, None].astype(np.float32)
        has_first = ((into < cap) & np.isin(first, self.first_steps()))[:, None].astype(np.float32)
        prev = (slots - 1) % self.capacity
        flat = self.obs.reshape(self.capacity, -1)
        return np.concatenate([flat[prev] * has_prev, self.actions[prev] * has_prev, has_prev,
                               flat[first] * has_first, has_first], -1).astype(np.float32)

    def sequences_at(self, start: np.ndarray, seq_len: int, device: torch.device) -> SequenceBatch:
        """The sequences of seq_len steps from slots `start`; steps that leave the start's episode (or the
        stored data) are masked out."""
        index = start[:, None] + np.arange(seq_len)[None, :]  # (B, L)
        if self.size == self.capacity:
            index %= self.capacity
            valid = np.ones_like(index, dtype=bool)
        else:
            valid = index < self.size
            index = np.minimum(index, self.size - 1)
        same = self.episode[index] == self.episode[start][:, None]
        # Once a sequence has left its episode it may not come back (ring wrap-around).
        mask = np.cumprod(same & valid, axis=1).astype(bool)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x, device=device)

        return SequenceBatch(
            obs=t(self.obs[index]),
            actions=t(self.actions[index]),
            rewards=t(self.rewards[index]),
            next_obs=t(self.next_obs[index]),
            terminated=t(self.terminated[index]),
            mask=t(mask),
        )


def random_replay(env_id: str, steps: int, seed: int = 0,
                  max_episode_steps: int = DEFAULT_MAX_EPISODE_STEPS) -> tuple[ReplayBuffer, EnvSpec]:
    """A buffer of `steps` uniformly random-action transitions of a fresh env."""
    env = make_env(env_id, seed=seed, max_episode_steps=max_episode_steps)
    spec, rng = spec_of(env), np.random.default_rng(seed)
    buffer = ReplayBuffer(steps, spec.obs_dim, spec.action_dim, spec.obs_shape)
    obs, _ = env.reset(seed=seed)
    episode = 0
    for _ in range(steps):
        action = random_action(spec, rng)
        nxt, reward, term, trunc, _ = env.step(to_env_action(spec, action))
        buffer.add(obs, encode_action(spec, action), float(reward), nxt, term, episode)
        obs = nxt
        if term or trunc:
            obs, _ = env.reset()
            episode += 1
    env.close()
    return buffer, spec
