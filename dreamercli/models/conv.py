"""Image encoder and decoder of the RSSM: strided convolutions down to 4x4, transposed ones back (DreamerV3's shape).

The encoder reads (..., H, W, C) uint8 frames as pixels / 255 - 0.5 and halves them with 4x4 stride-2
convolutions, channel widths doubling from DEPTH (16-32-64-128 at 64x64, 16-32 at 16x16), down to 4x4;
a linear layer maps the flattened features to the embedding. The decoder mirrors it from the state
s = [h, z] and returns pixels in the same [-0.5, 0.5] scale, channels last like the frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEPTH = 16  # channels of the first convolution; each further layer doubles them
MIN_RES = 4  # the encoder halves the frame down to MIN_RES x MIN_RES


def conv_layers(size: int) -> int:
    """Stride-2 layers that bring a size x size frame (a power of two, >= 16) down to MIN_RES."""
    layers = int(math.log2(size // MIN_RES))
    if size < 4 * MIN_RES or MIN_RES * 2**layers != size:
        raise ValueError(f"frames must be a power of two of at least {4 * MIN_RES} pixels a side, got {size}")
    return layers


def channel_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels of (N, C, H, W) at each pixel (DreamerV3's norm), then ReLU."""
    x = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return x.permute(0, 3, 1, 2).relu_()


class ConvEncoder(nn.Module):
    """(..., H, W, C) uint8 frames -> (..., out_dim) embeddings."""

    def __init__(self, obs_shape: tuple[int, ...], out_dim: int):
        super().__init__()
        height, width, channels = obs_shape
        assert height == width, f"frames must be square, got {obs_shape}"
        self.obs_shape = tuple(obs_shape)
        widths = [DEPTH * 2**i for i in range(conv_layers(height))]
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 4, 2, 1)
                                   for c_in, c_out in zip([channels, *widths[:-1]], widths, strict=True))
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in widths)
        self.out = nn.Linear(widths[-1] * MIN_RES * MIN_RES, out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Embeddings of frames in [0, 255] (uint8 or float)."""
        lead = obs.shape[:-3]
        assert tuple(obs.shape[-3:]) == self.obs_shape, (obs.shape, self.obs_shape)
        x = (obs.reshape(-1, *self.obs_shape).float() / 255.0 - 0.5).permute(0, 3, 1, 2)  # (N, C, H, W)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = channel_norm(conv(x), norm)
        return self.out(x.flatten(1)).reshape(*lead, -1)  # (..., out_dim)


class ConvDecoder(nn.Module):
    """(..., in_dim) states -> (..., H, W, C) frames in [-0.5, 0.5] (pixels / 255 - 0.5)."""

    def __init__(self, in_dim: int, obs_shape: tuple[int, ...]):
        super().__init__()
        height, _, channels = obs_shape
        self.obs_shape = tuple(obs_shape)
        widths = [DEPTH * 2**i for i in reversed(range(conv_layers(height)))]  # 128-64-32-16 at 64x64
        self.first = widths[0]
        self.inp = nn.Linear(in_dim, widths[0] * MIN_RES * MIN_RES)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in widths)
        self.deconvs = nn.ModuleList(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
                                     for c_in, c_out in zip(widths, [*widths[1:], channels], strict=True))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """The frame each state decodes to, pixels scaled to [-0.5, 0.5] (not clipped)."""
        lead = state.shape[:-1]
        x = self.inp(state.reshape(-1, state.shape[-1])).reshape(-1, self.first, MIN_RES, MIN_RES)
        for norm, deconv in zip(self.norms, self.deconvs, strict=True):
            x = deconv(channel_norm(x, norm))
        return x.permute(0, 2, 3, 1).reshape(*lead, *self.obs_shape)  # (..., H, W, C)
