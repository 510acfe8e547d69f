"""Generic building blocks: MLPs, symlog, Gaussian parameters and their KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU blocks, then a linear output layer.

    ReLU, not SiLU: on a small CPU the exp in SiLU costs a third of a layer's matmul.
    """
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*blocks)


def run_layers(net: nn.Sequential, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Apply net's layers start..stop-1 to x; slicing the Sequential instead builds a new one
    per call (about 40 us, a rollout step's worth of small ops)."""
    for layer in list(net)[start:stop]:
        x = layer(x)
    return x


def zero_output(net: nn.Sequential) -> nn.Sequential:
    """Zero the last layer so that a head starts by predicting its neutral value."""
    last = net[-1]
    assert isinstance(last, nn.Linear), type(last)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|): squashes large magnitudes, near identity around zero."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of symlog."""
    return torch.sign(x) * torch.expm1(x.abs())


def gaussian(params: torch.Tensor, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the last axis into mean and a positive std bounded below by min_std."""
    mean, raw_std = params.chunk(2, dim=-1)
    std = F.softplus(raw_std) + min_std
    return mean, std


def gaussian_kl(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over the last axis."""
    var_q, var_p = std_q.pow(2), std_p.pow(2)
    kl = torch.log(std_p / std_q) + (var_q + (mean_q - mean_p).pow(2)) / (2 * var_p) - 0.5
    return kl.sum(-1)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Negative log-density of x under N(mean, std), per element, without the constant."""
    return ((x - mean) / std).pow(2) / 2 + std.log()
