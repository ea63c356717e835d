"""ResShift's Swin UNet (Yue et al. 2023; official models/unet.py UNetModelSwin), in the official state-dict layout.

The ADM UNet (ResBlocks, resamplers) with a Swin Transformer layer (Liu et al. 2021, SwinIR-style, official
models/swin_transformer.py BasicLayer) after the first ResBlock of every level listed in attention_resolutions,
and the LR image concatenated to x. SinSR (Wang et al. 2024) distils into the same network.

The official code stores an `attn_mask` buffer per shifted Swin block but never reads it (it compares the stored
list resolution with the tuple input size, which is never equal, and recomputes the mask every call); here the
mask is computed at run time for the actual size, with the official formula, so any size works.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache, partial

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from ..ops.padding import pad_to_multiple
from .adm_unet import Downsample, EmbedSequential, ResBlock, Upsample, _norm, skip_pass
from .shiftnet import timestep_embedding

MASK_VALUE = -100.0  # the official shifted-window mask: -100 between tokens of different regions, 0 within


@lru_cache(maxsize=64)
def shift_mask(height: int, width: int, window: int, shift: int, device=None) -> Tensor:
    """The official SW-MSA mask (SwinTransformerBlock.calculate_mask) for a height x width map: (windows, N, N).

    The official code labels regions on a (1, 1, H, W) map with slices meant for (1, H, W, 1): only the height is
    split (rows < H - window, < H - shift, the rest), and its window flattening is column-major. So token p of
    the window in window-row i gets the region of row i * window + p % window. Reproduced here as it runs.
    Cached per size and device (a mask depends on nothing else), built outside inference mode so that a mask made
    while sampling also serves training; callers must not modify it.
    """
    with torch.inference_mode(False):
        rows = torch.arange(height, device=device)
        region = (rows >= height - window).long() + (rows >= height - shift).long()
        labels = region.view(height // window, window)[:, torch.arange(window * window, device=device) % window]
        labels = labels[:, None].expand(-1, width // window, -1).reshape(-1, window * window)
        return (labels[:, :, None] != labels[:, None, :]).float() * MASK_VALUE


def relative_position_index(window: int) -> Tensor:
    """Index into the (2w - 1)^2 relative-position bias table for every token pair of a w x w window (Swin Eq. 4)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias (Swin Sec. 3.2)."""

    def __init__(self, dim: int, *, window: int, heads: int):
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        """tokens (B, windows, N, C); mask (windows, N, N) or None."""
        b, nw, n, c = tokens.shape
        # windows fold into the batch: 4-D attention with a (1 or B x windows, heads, N, N) bias runs the fused CPU
        # kernel, about 2.7x faster than the 5-D broadcast that falls back to the math path (outputs agree to 2e-6)
        q, k, v = self.qkv(tokens).view(b * nw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        bias = bias.permute(2, 0, 1).to(q.dtype)  # heads, N, N
        bias = bias[None] if mask is None else (bias + mask[:, None].to(q.dtype)).repeat(b, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # B x windows, heads, N, C / heads
        return self.proj(out.transpose(1, 2).reshape(b, nw, n, c))


class Mlp(nn.Module):
    """The Swin MLP as 1x1 convs on the feature map: fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """(Shifted-)window attention and MLP, each after a GroupNorm with a residual (SwinTransformerBlock, Swin Eq. 3)."""

    def __init__(self, dim: int, *, heads: int, window: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = _norm(dim)
        self.attn = WindowAttention(dim, window=window, heads=heads)
        self.norm2 = _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        ws, s = self.window, self.shift
        # 1. cyclic shift, then windows of ws x ws tokens in row-major order
        y = self.norm1(x)
        y = torch.roll(y, (-s, -s), (2, 3)) if s else y
        tokens = y.reshape(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, ws * ws, c)
        mask = shift_mask(h, w, ws, s, device=x.device) if s else None
        # 2. attention per window, windows back into the map, shift undone
        y = self.attn(tokens, mask).view(b, h // ws, w // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        y = torch.roll(y, (s, s), (2, 3)) if s else y
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchProjection(nn.Module):
    """A 1x1 conv into or out of the Swin width (PatchEmbed / PatchUnEmbed with patch size 1, no norm)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """BasicLayer: project to the Swin width, `depth` blocks alternating plain and shifted windows, project back.

    resolution is the feature size the official model was built for (image_size / 2^level): where it is at most
    the window size, the official block uses that size as its window and never shifts, whatever the input.
    """

    def __init__(self, channels: int, *, embed_dim: int, heads: int, window: int, depth: int, mlp_ratio: float,
                 resolution: int):
        super().__init__()
        small = resolution <= window
        window = resolution if small else window
        self.window, self.resolution = window, resolution
        self.patch_embed = PatchProjection(channels, embed_dim)
        self.blocks = nn.ModuleList(SwinBlock(embed_dim, heads=heads, window=window, mlp_ratio=mlp_ratio,
                                              shift=0 if small or i % 2 == 0 else window // 2)
                                    for i in range(depth))
        self.patch_unembed = PatchProjection(embed_dim, channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)


class ResShiftUNet(ModelMixin, ConfigMixin):
    """ResShift / SinSR denoiser (official UNetModelSwin), x0-predicting, keys as released.

    forward(x, timesteps, lq): x is the network input (the latent x_t already scaled by 1/sqrt(kappa^2 eta_t + 1)),
    timesteps the 0-based step index (process time t - 1), lq the LR image in [-1, 1] at the latent's size
    (for the x4 VQ-f4 models the LR pixels themselves, concatenated after x: official lq_size == image_size).
    Any height and width work: inputs are padded (reflect, bottom/right) to a multiple of `size_multiple`
    (64 for the released models) and the output cropped; the official sampler pads the LR image to 64 first.
    """

    @register_to_config
    def __init__(self, *, image_size: int = 64, in_channels: int = 3, lq_channels: int = 3, out_channels: int = 3,
                 model_channels: int = 160, channel_mult: Sequence[int] = (1, 2, 2, 4),
                 num_res_blocks: Sequence[int] = (2, 2, 2, 2), attention_resolutions: Sequence[int] = (64, 32, 16, 8),
                 num_head_channels: int = 32, swin_embed_dim: int = 192, swin_depth: int = 2, window_size: int = 8,
                 mlp_ratio: float = 4.0, use_scale_shift_norm: bool = True):
        super().__init__()
        if len(num_res_blocks) != len(channel_mult):
            raise ValueError(f"num_res_blocks {list(num_res_blocks)} needs one entry per level of channel_mult "
                             f"{list(channel_mult)}")
        if swin_embed_dim % num_head_channels:
            raise ValueError(f"swin_embed_dim {swin_embed_dim} is not a multiple of num_head_channels "
                             f"{num_head_channels}")
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        res = partial(ResBlock, emb_dim=emb_dim, dropout=0.0, scale_shift=use_scale_shift_norm)
        swin = partial(SwinLayer, embed_dim=swin_embed_dim, heads=swin_embed_dim // num_head_channels,
                       window=window_size, depth=swin_depth, mlp_ratio=mlp_ratio)
        widths = [int(m * model_channels) for m in channel_mult]
        multiples = [2 ** (len(widths) - 1)]  # one halving per level boundary, and each Swin window at its level

        def swin_at(level: int) -> SwinLayer:
            layer = swin(widths[level], resolution=image_size // 2**level)
            multiples.append(layer.window * 2**level)
            return layer

        # 1. encoder: a conv on [x, lq], per level ResBlocks (Swin after the first), a stride-2 conv between levels
        ch, ds = widths[0], image_size
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels + lq_channels, ch, 3, padding=1))])
        skips = [ch]
        for level, width in enumerate(widths):
            for j in range(num_res_blocks[level]):
                layers = [res(ch, width)]
                ch = width
                if ds in attention_resolutions and j == 0:
                    layers.append(swin_at(level))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level < len(widths) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch, True)))
                skips.append(ch)
                ds //= 2
        # 2. bottleneck: ResBlock, Swin, ResBlock
        self.middle_block = EmbedSequential(res(ch, ch), swin_at(len(widths) - 1), res(ch, ch))
        # 3. decoder: per level num_res_blocks + 1 ResBlocks on [h, skip] (Swin after the first), an up-sampler
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for i in range(num_res_blocks[level] + 1):
                layers = [res(ch + skips.pop(), widths[level])]
                ch = widths[level]
                if ds in attention_resolutions and i == 0:
                    layers.append(swin_at(level))
                if level and i == num_res_blocks[level]:
                    layers.append(Upsample(ch, True))
                    ds *= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        self.size_multiple = math.lcm(*multiples)  # 64 for the released models (window 8 at 1/8 size)

    def shifted_blocks(self) -> list[str]:
        """Names of the Swin blocks that shift their windows: the ones that carry `attn_mask` in official files."""
        return [name for name, module in self.named_modules() if isinstance(module, SwinBlock) and module.shift]

    def forward(self, x: Tensor, timesteps: Tensor, lq: Tensor | None = None) -> Tensor:
        """The official output (an x0 prediction in latent space) for network input x at step index timesteps."""
        cfg = self.config
        if (lq is None) != (cfg.lq_channels == 0):
            raise ValueError(f"pass lq (the LR image in [-1, 1]) if and only if the network reads one "
                             f"(lq_channels={cfg.lq_channels})")
        if lq is not None and lq.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"lq must have x's size {tuple(x.shape[-2:])} (the LR image for an x4 latent), got "
                             f"{tuple(lq.shape[-2:])}")
        height, width = x.shape[-2:]
        h = x if lq is None else torch.cat([x, lq.to(x.dtype)], dim=1)
        h = pad_to_multiple(h, self.size_multiple)
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, cfg.model_channels))
        return skip_pass(self, h, emb)[..., :height, :width]
