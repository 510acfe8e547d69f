"""Temporally correlated (coloured) exploration noise for collecting real experience.

Independent noise each step makes a random walk that stays where it started: on a task
whose reward appears only after a long push one way (a car that must rock out of a valley,
a sparse goal), white-noise actions almost never get there, and the world model never
sees that the reward exists. Noise whose power spectrum falls as 1/f^exponent keeps the
same per-step distribution but drifts for longer stretches (exponent 0: white, 1: pink,
2: red). Eberhard et al. (ICLR 2023, "Pink noise is all you need") found pink noise a good
default across tasks; here it carries random actions up MountainCarContinuous-v0's hill,
which white noise almost never climbs (docs/exploration.md).

Each step's noise is standard normal (each sequence scaled to exactly zero mean and unit
variance), so the prefill's random actions stay uniform and a policy's sampled actions keep
their distribution; only their order in time changes. One sequence covers an
episode, drawn from a seed that the loop keeps, so a resumed run redraws the same noise.
"""

from __future__ import annotations

import numpy as np
import torch

from .envs import EnvSpec


def colored_noise(length: int, dims: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """(length, dims) standard-normal noise whose power spectrum falls as 1/f^exponent."""
    if length < 2:
        return rng.standard_normal((length, dims))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1]  # the constant term gets the lowest frequency's power, not infinity
    scale = freqs ** (-exponent / 2.0)
    spectrum = (rng.standard_normal((dims, freqs.size)) + 1j * rng.standard_normal((dims, freqs.size))) * scale
    x = np.fft.irfft(spectrum, length)
    x -= x.mean(axis=1, keepdims=True)
    x /= x.std(axis=1, keepdims=True) + 1e-12  # every dimension exactly unit variance over the sequence
    return x.T.copy()


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x), elementwise: maps standard-normal noise to uniform noise in (0, 1)."""
    return torch.special.ndtr(torch.as_tensor(x, dtype=torch.float64)).numpy()  # the Phi Actor.explore uses


def random_action_from(spec: EnvSpec, noise: np.ndarray) -> np.ndarray:
    """A uniformly random agent-side action made from one step of standard-normal noise
    (spec.action_dim values): the index of the largest (Gumbel-max over equal logits, as
    Gumbel noise is a monotone function of the normal), or a vector in [-1, 1]."""
    if spec.discrete:
        return np.asarray(int(np.argmax(noise)))
    return (2.0 * normal_cdf(noise) - 1.0).astype(np.float32)


class EpisodeNoise:
    """One episode's coloured noise, drawn lazily from a seed in chunks of the episode limit."""

    def __init__(self, dims: int, exponent: float, length: int):
        self.dims, self.exponent, self.length = dims, exponent, max(2, length)
        self._rng: np.random.Generator | None = None
        self._chunk = np.zeros((0, dims))
        self._index = 0

    def restart(self, seed: int, consumed: int = 0) -> None:
        """Begin the sequence of `seed`, skipping its first `consumed` steps (a resumed episode)."""
        self._rng = np.random.default_rng(seed)
        self._chunk, self._index = np.zeros((0, self.dims)), 0
        for _ in range(consumed):
            self.next()

    def next(self) -> np.ndarray:
        """The next step's noise, (dims,) standard normal."""
        assert self._rng is not None, "restart() first"
        if self._index >= len(self._chunk):
            # An episode longer than the limit continues with a fresh chunk of the same generator.
            self._chunk, self._index = colored_noise(self.length, self.dims, self.exponent, self._rng), 0
        self._index += 1
        return self._chunk[self._index - 1]
