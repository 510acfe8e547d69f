"""The policy: pi(a | x), a categorical or a tanh-squashed Gaussian, shared by every learner of an agent.

x is whatever the composition feeds it (latents for dreamer, symlog observations otherwise). One
policy, so that the off-policy learner and imagination can train the same distribution (hybrid).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..nets import mlp

UNIMIX = 0.01  # share of the uniform distribution mixed into discrete policies
STD_MIN, STD_MAX = 0.1, 1.0  # bounds of the continuous policy's pre-tanh std


class Actor(nn.Module):
    """pi(a | z): categorical (with 1% uniform mix) or tanh-squashed Gaussian."""

    def __init__(self, latent_dim: int, hidden_dim: int, action_dim: int, discrete: bool, layers: int = 2):
        super().__init__()
        self.discrete = discrete
        self.action_dim = action_dim
        out = action_dim if discrete else 2 * action_dim
        self.net = mlp(latent_dim, hidden_dim, out, layers)

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """Probabilities of the discrete policy, uniform mix included."""
        return self._probs(self.net(z))

    def _probs(self, out: torch.Tensor) -> torch.Tensor:
        return out.softmax(-1).mul(1 - UNIMIX).add(UNIMIX / self.action_dim)

    def _gaussian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.net(z))

    @staticmethod
    def _split(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = out.chunk(2, -1)
        std = (STD_MAX - STD_MIN) * torch.sigmoid(raw + 2.0) + STD_MIN
        return mean, std

    def sample(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sampled action (one-hot, or in [-1, 1], reparameterised), its log-prob and entropy."""
        if self.discrete:
            probs = self.probs(z)
            logp = probs.log()
            with torch.no_grad():
                action = self._one_hot_sample(probs, self.noise(probs.shape[:-1], z.device))
            entropy = -(probs * logp).sum(-1)
            return action, (logp * action).sum(-1), entropy
        noise = self.noise(z.shape[:-1], z.device)
        action, std = self.rollout_action(z, noise)
        logp = self.squashed_log_prob(action, std, noise)
        return action, logp, -logp  # single-sample entropy estimate of the squashed Gaussian

    def _one_hot_sample(self, probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sampling, one uniform (..., 1) per row: far cheaper than multinomial on CPU."""
        index = (probs.cumsum(-1) < uniform).sum(-1, keepdim=True).clamp_(max=self.action_dim - 1)
        return torch.zeros_like(probs).scatter_(-1, index, 1.0)

    def noise(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Pre-drawn randomness of `shape` rollout steps: one op instead of one per step."""
        if self.discrete:
            return torch.rand((*shape, 1), device=device)
        return torch.randn((*shape, self.action_dim), device=device)

    def rollout_action(self, z: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The action sample() would draw with this noise, without its log-prob; and the std.

        A rollout step runs only what the next step needs; log-probs and entropies are
        scored for all steps at once afterwards (log_prob, squashed_log_prob).
        """
        return self._action(self.net(z), noise)

    def rollout_policy(self) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]:
        """rollout_action as a function with the net's weights prepared once for a whole rollout."""
        net = self.net.prepared()
        return lambda z, noise: self._action(net(z), noise)

    def _action(self, out: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.discrete:
            return self._one_hot_sample(self._probs(out), noise), None
        mean, std = self._split(out)
        return torch.tanh(torch.addcmul(mean, std, noise)), std

    def explore(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A sampled action driven by given standard-normal noise (..., action_dim), which may be
        correlated in time: Gumbel-max over the policy's probabilities (the Gumbel noise made from
        the normal through its CDF) or the reparameterised squashed Gaussian."""
        out = self.net(z)
        if not self.discrete:
            return self._action(out, noise)[0]
        uniform = torch.special.ndtr(noise).clamp(1e-12, 1.0 - 1e-12)
        choice = (self._probs(out).log() - torch.log(-torch.log(uniform))).argmax(-1)
        return F.one_hot(choice, self.action_dim).to(z.dtype)

    @staticmethod
    def squashed_log_prob(action: torch.Tensor, std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """log pi(a) of a = tanh(mean + std * noise): the Gaussian log-density of the pre-tanh
        value, whose standardised form is the noise itself, less log|d tanh|."""
        logp = (-0.5 * noise.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return logp - torch.log(1 - action.pow(2) + 1e-6).sum(-1)

    def log_prob(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of one-hot actions (discrete policies) and the policy's entropy."""
        assert self.discrete, "log_prob of given actions is for discrete policies"
        logp = self.probs(z).log()
        return (logp * action).sum(-1), -(logp.exp() * logp).sum(-1)

    def mode(self, z: torch.Tensor) -> torch.Tensor:
        """The deterministic action used for evaluation."""
        if self.discrete:
            return F.one_hot(self.net(z).argmax(-1), self.action_dim).to(z.dtype)
        return torch.tanh(self._gaussian(z)[0])
