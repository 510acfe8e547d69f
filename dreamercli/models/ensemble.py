"""An ensemble of one-step latent predictors whose disagreement measures novelty (Plan2Explore).

On a sparse or deceptive task the imagined rewards are flat (or favour doing nothing), so
the actor has nothing that leads it anywhere new. Heads trained on the same transitions
from different initial weights agree where the data has been and disagree where it has not:
the variance of their predictions of the next latent, added to the imagined reward, pays
the actor for reaching (state, action) pairs the replay does not cover yet (Sekar et al.,
ICML 2020). It fades where the data is: once a task's rewards are found, returns divided by
their percentile range leave the small bonus little weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nets import follow_

NOVELTY_EMA = 0.01  # rate at which the running mean of novelty follows each update's


class Disagreement(nn.Module):
    """K MLPs (one hidden layer each) from (z, a) to the next latent mean, run as batched products."""

    def __init__(self, latent_dim: int, action_dim: int, hidden_dim: int, heads: int):
        super().__init__()
        in_dim = latent_dim + action_dim

        def uniform(*shape: int, fan_in: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per head
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.w_in = uniform(heads, in_dim, hidden_dim, fan_in=in_dim)
        self.b_in = uniform(heads, 1, hidden_dim, fan_in=in_dim)
        self.w_out = uniform(heads, hidden_dim, latent_dim, fan_in=hidden_dim)
        self.b_out = uniform(heads, 1, latent_dim, fan_in=hidden_dim)
        # EMA of the mean novelty of imagined steps: the bonus is paid relative to it, so that
        # its size does not depend on how fast the heads learn a task (saved with the weights).
        self.register_buffer("novelty_mean", torch.zeros(()))

    def predict(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Every head's next-latent prediction: (K, *z.shape[:-1], latent)."""
        lead = z.shape[:-1]
        x = torch.cat([z, action], -1).reshape(1, -1, self.w_in.shape[1])
        x = x.expand(self.w_in.shape[0], -1, -1)
        hidden = torch.baddbmm(self.b_in, x, self.w_in).relu_()
        out = torch.baddbmm(self.b_out, hidden, self.w_out)
        return out.reshape(out.shape[0], *lead, out.shape[-1])

    def loss(self, z: torch.Tensor, action: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-transition squared error of every head against the target latent, (*z.shape[:-1],)."""
        return (self.predict(z, action) - target).pow(2).mean(-1).mean(0)

    def novelty(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The heads' variance, averaged over latent dimensions: (*z.shape[:-1],)."""
        return self.predict(z, action).var(0).mean(-1)

    def bonus(self, z: torch.Tensor, action: torch.Tensor, rate: float = NOVELTY_EMA) -> torch.Tensor:
        """novelty() over its running mean (updated with these steps): about 1 on average."""
        novelty = self.novelty(z, action)
        return novelty / follow_(self.novelty_mean, novelty.detach().mean(), rate).clamp(min=1e-8)
