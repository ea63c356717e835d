"""ADM, the UNet of Dhariwal & Nichol 2021 (guided-diffusion unet.py UNetModel), in the official state-dict layout."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from .shiftnet import timestep_embedding

RESAMPLES = (None, "up", "down")


def _norm(channels: int) -> nn.GroupNorm:
    """ADM's normalisation: GroupNorm with 32 groups (computed in the input dtype; fp32 here)."""
    return nn.GroupNorm(32, channels)


def _zeroed(module: nn.Module) -> nn.Module:
    """The official initialisation of output layers: all parameters zero, so a fresh block is the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _resample(x: Tensor, how: str | None) -> Tensor:
    """Nearest 2x up-sampling, 2x2 average pooling, or nothing (the parameter-free resampling of ResBlocks)."""
    if how == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.avg_pool2d(x, 2) if how == "down" else x


class ResBlock(nn.Module):
    """ADM residual block: GN-SiLU-conv, time embedding added (or AdaGN scale-shift, ADM Sec. 3), GN-SiLU-conv."""

    def __init__(self, channels: int, out_channels: int, *, emb_dim: int, dropout: float, scale_shift: bool,
                 resample: str | None = None):
        super().__init__()
        if resample not in RESAMPLES:
            raise ValueError(f"unknown resample {resample!r}; allowed: {RESAMPLES}")
        self.resample = resample
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels * (2 if scale_shift else 1)))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # 1. norm and activation, resample features and skip alike (BigGAN-style up/down block), then conv
        h = _resample(self.in_layers[:-1](x), self.resample)
        x = _resample(x, self.resample)
        h = self.in_layers[-1](h)
        # 2. inject the embedding: h + e, or GN(h) (1 + scale) + shift
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = rest(norm(h + e))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions; legacy order splits heads before q/k/v (QKVAttentionLegacy)."""

    def __init__(self, channels: int, *, heads: int, head_channels: int, new_order: bool):
        super().__init__()
        if head_channels != -1:
            if channels % head_channels:
                raise ValueError(f"attention width {channels} is not a multiple of num_head_channels {head_channels}")
            heads = channels // head_channels
        self.heads = heads
        self.new_order = new_order
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        # 1. (b, 3, heads, ch, T) for the new order, (b, heads, 3, ch, T) for the legacy one
        if self.new_order:
            q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, -1).unbind(1)
        else:
            q, k, v = qkv.reshape(b, self.heads, 3, c // self.heads, -1).unbind(2)
        # 2. softmax(q k^T / sqrt(ch)) v per head, positions on the second-last axis
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = self.proj_out(h.transpose(-1, -2).reshape(b, c, -1))
        return (flat + h).reshape(b, c, *spatial)


class Downsample(nn.Module):
    """Stride-2 3x3 conv (conv_resample) or 2x2 average pooling between levels."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x up-sampling, then a 3x3 conv when conv_resample."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_resample(x, "up"))


class EmbedSequential(nn.Sequential):
    """Layers in order; ResBlocks also receive the time embedding (TimestepEmbedSequential's key layout)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(ModelMixin, ConfigMixin):
    """ADM UNet (Dhariwal & Nichol 2021, Sec. 3; guided-diffusion UNetModel / SuperResModel), keys as released.

    attention_resolutions are down-sampling rates (1 = full size), as UNetModel takes them, not the image
    resolutions of the command-line flags. low_res_channels > 0 is SuperResModel: a low-resolution image,
    bilinearly resized to x, is concatenated after x. Height and width must be multiples of
    2 ** (len(channel_mult) - 1).
    """

    @register_to_config
    def __init__(self, *, in_channels: int = 3, model_channels: int = 128, out_channels: int = 3,
                 num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (4, 8), dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4, 8), conv_resample: bool = True,
                 num_classes: int | None = None, num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False, low_res_channels: int = 0):
        super().__init__()
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)
        res = partial(ResBlock, emb_dim=emb_dim, dropout=dropout, scale_shift=use_scale_shift_norm)
        attn = partial(AttentionBlock, head_channels=num_head_channels, new_order=use_new_attention_order)
        up_heads = num_heads if num_heads_upsample == -1 else num_heads_upsample
        widths = [int(m * model_channels) for m in channel_mult]
        # 1. encoder: a conv, then per level num_res_blocks ResBlocks (+ attention), a down-sampler between levels
        ch, ds = widths[0], 1
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels + low_res_channels, ch, 3,
                                                                     padding=1))])
        skips = [ch]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers = [res(ch, width)]
                ch = width
                if ds in attention_resolutions:
                    layers.append(attn(ch, heads=num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level < len(widths) - 1:
                down = res(ch, ch, resample="down") if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                skips.append(ch)
                ds *= 2
        # 2. bottleneck: ResBlock, attention, ResBlock
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, heads=num_heads), res(ch, ch))
        # 3. decoder: per level num_res_blocks + 1 ResBlocks on [h, skip] (+ attention), an up-sampler closing it
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), widths[level])]
                ch = widths[level]
                if ds in attention_resolutions:
                    layers.append(attn(ch, heads=up_heads))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, resample="up") if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zeroed(nn.Conv2d(ch, out_channels, 3, padding=1)))

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (one halving per level boundary)."""
        return 2 ** (len(self.config.channel_mult) - 1)

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None,
                low_res: Tensor | None = None) -> Tensor:
        """The official output for x at the network's time input (the 0-based DDPM index, possibly fractional).

        y: class labels (B,), needed iff num_classes is set; low_res: needed iff low_res_channels > 0.
        Returns out_channels channels: epsilon first, then the learned-range variance values when learn_sigma.
        """
        cfg = self.config
        if (y is None) != (cfg.num_classes is None):
            raise ValueError(f"pass y (class labels) if and only if the model is class-conditional "
                             f"(num_classes={cfg.num_classes})")
        if (low_res is None) != (cfg.low_res_channels == 0):
            raise ValueError(f"pass low_res if and only if the model is an upsampler "
                             f"(low_res_channels={cfg.low_res_channels})")
        m = self.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"ADMUNet needs height and width in multiples of {m}, got {tuple(x.shape[-2:])}")
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, cfg.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x
        if low_res is not None:
            h = torch.cat([x, F.interpolate(low_res, x.shape[-2:], mode="bilinear")], dim=1)
        return skip_pass(self, h, emb)


def skip_pass(unet: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
    """guided-diffusion's U-Net pass (unet.py UNetModel.forward), shared by ADM and ResShift's UNet: the input
    blocks, each output kept, the middle block, the output blocks each reading the newest kept output, `out`."""
    skips = []
    for block in unet.input_blocks:
        h = block(h, emb)
        skips.append(h)
    h = unet.middle_block(h, emb)
    for block in unet.output_blocks:
        h = block(torch.cat([h, skips.pop()], dim=1), emb)
    return unet.out(h)
