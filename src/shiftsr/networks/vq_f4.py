"""The VQ-f4 autoencoder of ResShift / SinSR (official ldm/models/autoencoder.py VQModelTorch), keys as released.

The LDM encoder and decoder (Rombach et al. 2022; taming-transformers, Esser et al. 2021) with a legacy
VectorQuantizer2 (nearest of n_embed codes) between quant_conv and post_quant_conv. The official sampler encodes
without quantising and quantises on decode (VQModelTorch.decode, force_not_quantize=False).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

CODE_CHUNK = 4096  # latent vectors per distance matrix in the codebook search: memory O(chunk x n_embed)


def _norm(channels: int) -> nn.GroupNorm:
    """LDM's Normalize: GroupNorm, 32 groups, eps 1e-6."""
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GN-swish-conv twice with a residual; a 1x1 nin_shortcut when the width changes (LDM ResnetBlock, no temb)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(channels)
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if channels != out_channels:
            self.nin_shortcut = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions with 1x1-conv q, k, v (LDM AttnBlock).

    Computed with scaled_dot_product_attention, whose CPU and GPU kernels do not hold the (HW)^2 matrix.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).reshape(b, 1, c, h * w).transpose(-1, -2) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class MidBlock(nn.Module):
    """ResnetBlock, attention, ResnetBlock at the lowest resolution (`mid` of the LDM encoder and decoder)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Resample(nn.Module):
    """LDM Downsample (pad right/bottom by 1, stride-2 3x3 conv) or Upsample (nearest 2x, 3x3 conv)."""

    def __init__(self, channels: int, *, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1 if up else 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Level(nn.Module):
    """One resolution: ResnetBlocks, then the resampler to the next (none at the last level)."""

    def __init__(self, widths: Sequence[int], *, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(a, b) for a, b in zip(widths, widths[1:]))
        if resample == "down":
            self.downsample = Resample(widths[-1], up=False)
        elif resample == "up":
            self.upsample = Resample(widths[-1], up=True)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                x = getattr(self, name)(x)
        return x


class Encoder(nn.Module):
    """LDM Encoder without level attention: conv_in, levels with down-sampling, mid, GN-swish-conv_out."""

    def __init__(self, *, in_channels: int, base: int, mult: Sequence[int], blocks: int, z_channels: int):
        super().__init__()
        widths = [base * m for m in (1, *mult)]
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        self.down = nn.ModuleList(Level([widths[i]] + [widths[i + 1]] * blocks,
                                        resample="down" if i < len(mult) - 1 else None) for i in range(len(mult)))
        self.mid = MidBlock(widths[-1])
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """LDM Decoder without level attention: conv_in, mid, levels (deepest first) with up-sampling, conv_out.

    up[i] is level i, as in the official file (it builds them deepest first and prepends each).
    """

    def __init__(self, *, out_channels: int, base: int, mult: Sequence[int], blocks: int, z_channels: int):
        super().__init__()
        widths = [base * m for m in mult]
        self.conv_in = nn.Conv2d(z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1])
        inputs = [widths[min(i + 1, len(mult) - 1)] for i in range(len(mult))]  # width arriving at level i
        self.up = nn.ModuleList(Level([inputs[i]] + [widths[i]] * (blocks + 1), resample="up" if i else None)
                                for i in range(len(mult)))
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook vector per latent position (VectorQuantizer2 at inference: argmin of squared distance)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def indices(self, z: Tensor) -> Tensor:
        """(B, D, H, W) -> (B, H, W) code indices, searched in chunks so memory stays O(CODE_CHUNK x n_embed)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.embedding.weight.to(flat.dtype)
        sq = codes.square().sum(1)
        found = [(chunk.square().sum(1, keepdim=True) + sq - 2 * chunk @ codes.T).argmin(1)
                 for chunk in flat.split(CODE_CHUNK)]
        return torch.cat(found).view(b, h, w)

    def forward(self, z: Tensor) -> Tensor:
        """z moved onto its codes as the official straight-through form computes it, z + (code - z): not exactly
        the code in float32, and the decoder's gain makes the difference visible (about 5e-4 on an image)."""
        code = self.embedding(self.indices(z)).permute(0, 3, 1, 2).to(z.dtype)
        return z + (code - z)


class VQF4Autoencoder(ModelMixin, ConfigMixin):
    """ResShift's VQ-f4 autoencoder (official VQModelTorch): images in [-1, 1] <-> latents at 1 / 2^(levels - 1).

    encode(x) = quant_conv(encoder(x)), not quantised; decode(h) = decoder(post_quant_conv(quantize(h))).
    `scale` and `channels` are the spatial factor and latent width, the attributes shiftsr's codecs expose.
    Level attention (attn_resolutions) is not built: the released VQ-f4 has none.
    """

    @register_to_config
    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, base_channels: int = 128,
                 channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2, z_channels: int = 3,
                 embed_dim: int = 3, n_embed: int = 8192):
        super().__init__()
        shape = dict(base=base_channels, mult=tuple(channel_mult), blocks=num_res_blocks, z_channels=z_channels)
        self.encoder = Encoder(in_channels=in_channels, **shape)
        self.decoder = Decoder(out_channels=out_channels, **shape)
        self.quantize = VectorQuantizer(n_embed, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.scale = 2 ** (len(channel_mult) - 1)
        self.channels = embed_dim

    # inputs are made contiguous, whatever layout the caller's tensor has: convolutions keep it, and torch's
    # channels-last GroupNorm on a CPU moves the tests' decoder output by 1.7e-3 (contiguous: 1e-5 from the official)
    def encode(self, x: Tensor) -> Tensor:
        """[-1, 1] image -> pre-quantisation latent (what ResShift diffuses in, scale factor 1)."""
        return self.quant_conv(self.encoder(x.contiguous()))

    def decode(self, h: Tensor, *, force_not_quantize: bool = False) -> Tensor:
        """Latent -> [-1, 1] image (not clamped), through the codebook unless force_not_quantize."""
        quant = h if force_not_quantize else self.quantize(h)
        return self.decoder(self.post_quant_conv(quant.contiguous()))
