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


COND_MODES = ("concat", "branch")


class ShiftNet(ModelMixin, ConfigMixin):
    """Denoiser network (x_t, t, cond) -> prediction in model space; cond_channels = 0 makes it unconditional.

    cond_mode "concat" feeds cond beside x_t into the first conv. cond_mode "branch" adds cond through
    zero-initialised 1x1 convs at every block (ControlNet's zero convolutions, Zhang et al. 2023), so a
    network loaded from an unconditional prior computes exactly the prior until training moves them.
    """

    @register_to_config
    def __init__(self, *, in_channels: int = 48, cond_channels: int = 48, out_channels: int = 48,
                 channels: int = 64, num_blocks: int = 8, embed_dim: int = 128, cond_mode: str = "concat"):
        super().__init__()
        if cond_mode not in COND_MODES:
            raise ValueError(f"unknown cond_mode {cond_mode!r}; allowed: {', '.join(COND_MODES)}")
        concat = cond_channels if cond_mode == "concat" else 0
        self.conv_in = nn.Conv2d(in_channels + concat, channels, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.blocks = nn.ModuleList(FiLMResBlock(channels, embed_dim) for _ in range(num_blocks))
        if cond_mode == "branch" and cond_channels:
            self.cond_in = nn.Sequential(nn.Conv2d(cond_channels, channels, 3, padding=1), nn.SiLU(),
                                         nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU())
            self.cond_zero = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_blocks))
            for conv in self.cond_zero:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def conditional(self) -> bool:
        """Whether the network reads a conditioning image."""
        return self.config.cond_channels > 0

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.conditional and cond is None:
            raise ValueError("this network is conditional: pass the LR image in model space as cond")
        emb = self.time_mlp(timestep_embedding(t, self.config.embed_dim))
        branch = self.config.cond_mode == "branch" and self.conditional
        h = self.conv_in(x if branch or not self.conditional else torch.cat([x, cond], dim=1))
        c = self.cond_in(cond) if branch else None
        for i, block in enumerate(self.blocks):
            h = block(h + self.cond_zero[i](c) if branch else h, emb)
        return self.conv_out(h)

    def load_prior(self, prior: ShiftNet) -> None:
        """Copy an unconditional prior's weights into this branch-conditioned network; only the branch stays new."""
        if self.config.cond_mode != "branch" or prior.conditional:
            raise ValueError("a prior loads into a cond_mode='branch' network from an unconditional one")
        missing, unexpected = self.load_state_dict(prior.state_dict(), strict=False)
        if unexpected or any(not key.startswith(("cond_in.", "cond_zero.")) for key in missing):
            raise ValueError(f"the prior does not match this network: missing {missing}, unexpected {unexpected}")
