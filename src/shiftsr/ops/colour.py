"""Colour fixes: keep the colours of the image sampling started from, take the detail of the sample.

Diffusion samplers shift colour on real photos; DoSSR's official sampler (after StableSR, Wang et al. 2023)
puts the sample's high frequencies on the low frequency of its preprocessed source.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

COLOUR_FIXES = ("none", "wavelet", "adain")
WAVELET_LEVELS = 5


def wavelet_split(x: Tensor, levels: int = WAVELET_LEVELS) -> tuple[Tensor, Tensor]:
    """(high, low): x as the sum of `levels` bands of dilated 3x3 binomial blurs (a trous, replicate borders)."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (kernel[:, None] * kernel[None] / 16).expand(x.shape[1], 1, 3, 3)
    high = torch.zeros_like(x)
    for level in range(levels):
        radius = 2**level
        low = F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=x.shape[1], dilation=radius)
        high, x = high + x - low, low
    return high, x


def wavelet_colour_fix(image: Tensor, source: Tensor) -> Tensor:
    """StableSR's wavelet colour fix (DoSSR's default): image's high frequencies on source's low frequency."""
    return wavelet_split(image)[0] + wavelet_split(source)[1]


def adain_colour_fix(image: Tensor, source: Tensor, eps: float = 1e-5) -> Tensor:
    """StableSR's AdaIN colour fix: each channel of image given source's mean and standard deviation."""
    mean, std = image.mean((-2, -1), keepdim=True), image.std((-2, -1), keepdim=True) + eps
    return (image - mean) / std * (source.std((-2, -1), keepdim=True) + eps) + source.mean((-2, -1), keepdim=True)


def colour_fix(kind: str, image: Tensor, source: Tensor) -> Tensor:
    """The named fix of image (B, 3, H, W) towards source of the same size; "none" returns image."""
    if kind not in COLOUR_FIXES:
        raise ValueError(f"color_fix: unknown {kind!r}; allowed: {', '.join(COLOUR_FIXES)}")
    if kind == "none":
        return image
    return (wavelet_colour_fix if kind == "wavelet" else adain_colour_fix)(image, source)
