"""Generic building blocks: MLPs, symlog, Gaussian parameters and their KL."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Sequential):
    """Linear -> LayerNorm -> ReLU blocks, then a linear output layer.

    ReLU, not SiLU: on a small CPU the exp in SiLU costs a third of a layer's matmul. A
    Sequential (its state-dict names are the checkpoint format) whose forward calls the
    functional ops on its layers' parameters: on this project's 2-core CPU, the eight module
    calls of a plain Sequential cost a third of a 16-row forward pass.
    """

    def __init__(self, *layers: nn.Module):
        super().__init__(*layers)
        # The hidden blocks as (linear, norm) pairs, the output layer being self[-1]: a plain
        # list of the same modules (not registered again), paired once.
        self.blocks: list[tuple[nn.Linear, nn.LayerNorm]] = [
            (layers[i], layers[i + 1]) for i in range(0, len(layers) - 1, 3)]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (the input of the output layer)."""
        for linear, norm in self.blocks:
            x = hidden_block(F.linear(x, linear.weight, linear.bias), norm)
        return x

    def prepared(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """forward() for 2-D inputs with every weight transposed once, for a loop that calls
        the same net at every step (a rollout): a transpose per layer, call and step, and its
        backward, add up there."""
        blocks = [(linear.weight.t(), linear.bias, norm) for linear, norm in self.blocks]
        w_last, b_last = self[-1].weight.t(), self[-1].bias

        def forward(x: torch.Tensor) -> torch.Tensor:
            for weight_t, bias, norm in blocks:
                x = hidden_block(torch.addmm(bias, x, weight_t), norm)
            return torch.addmm(b_last, x, w_last)

        return forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same maths as the Sequential, without a module call per layer."""
        last = self[-1]
        return F.linear(self.hidden(x), last.weight, last.bias)


def hidden_block(pre: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm then ReLU of a hidden layer's pre-activation."""
    return F.layer_norm(pre, norm.normalized_shape, norm.weight, norm.bias, norm.eps).relu_()


def mlp(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2) -> MLP:
    """An MLP of `layers` hidden blocks of width hidden_dim."""
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim))
    return MLP(*blocks)


def zero_output(net: nn.Sequential) -> nn.Sequential:
    """Zero the last layer so that a head starts by predicting its neutral value."""
    last = net[-1]
    assert isinstance(last, nn.Linear), type(last)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


@torch.no_grad()
def follow_(average: torch.Tensor, value: torch.Tensor, rate: float) -> torch.Tensor:
    """Move a running average (a 0-d buffer) a step of `rate` toward value, in place; while it
    is still 0 (unset) it takes the value whole, so early steps are not pulled toward 0."""
    if average.item() == 0.0:
        return average.copy_(value)
    return average.mul_(1 - rate).add_(rate * value)


def follow_spread_(average: torch.Tensor, values: torch.Tensor, quantiles: torch.Tensor,
                   rate: float) -> torch.Tensor:
    """Move a running percentile range (a 0-d buffer) toward the range of values between the two
    quantiles (e.g. 0.05 and 0.95), in place, as follow_ does."""
    low, high = torch.quantile(values.detach().flatten(), quantiles)
    return follow_(average, high - low, rate)


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
