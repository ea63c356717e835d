"""ShiftNet: a small time-conditioned residual conv net that works on pixel-unshuffled images."""
from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FiLMResBlock(nn.Module):
    """conv-SiLU-conv residual block whose hidden features are scaled and shifted by the time embedding."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * channels)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.act(self.conv1(x)) * (1 + scale) + shift
        return x + self.conv2(h)


class ShiftNet(ModelMixin, ConfigMixin):
    """Denoiser network: (x_t, t, xh) in model space -> x0 - xh, the residual over the conditioning."""

    @register_to_config
    def __init__(self, *, in_channels: int = 48, cond_channels: int = 48, out_channels: int = 48,
                 channels: int = 64, num_blocks: int = 8, embed_dim: int = 128):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.blocks = nn.ModuleList(FiLMResBlock(channels, embed_dim) for _ in range(num_blocks))
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.config.embed_dim))
        h = self.conv_in(torch.cat([x, cond], dim=1))
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(h)
