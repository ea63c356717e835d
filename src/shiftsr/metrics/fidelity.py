"""Benchmark metrics on the luma channel: PSNR and SSIM as computed by the common SR evaluation code."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .base import MetricInfo, PairMetric

_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_WINDOW, _SSIM_SIGMA, _SSIM_K1, _SSIM_K2 = 11, 1.5, 0.01, 0.03


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma as MATLAB rgb2ycbcr on doubles: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255."""
    # x holds RGB in [0, 1] along dim -3; the result keeps that dim with size 1 and lies in [16/255, 235/255]
    # (multiply by 255 for the [16, 235] studio range).
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected RGB along dim -3 (shape ...x3xHxW), got shape {tuple(x.shape)}")
    weights = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (16 + (x * weights).sum(dim=-3, keepdim=True)) / 255


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, *, border: int) -> torch.Tensor:
    """PSNR = 10 log10(255^2 / MSE) on BT.601 Y in [0, 255], RGB rounded to 8 bits, border pixels cropped per side."""
    # Takes 3xHxW or Bx3xHxW floats in [0, 1]; returns a 0-d float64 tensor or one value per image.
    # Y itself is not rounded (as BasicSR); identical images give inf.
    a, b = _y_255(sr, hr, border)
    mse = (a - b).pow(2).mean(dim=(-3, -2, -1))
    return _unbatch(10 * torch.log10(255**2 / mse), sr)


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, *, border: int) -> torch.Tensor:
    """SSIM of Wang et al. 2004 (11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, 'valid') on BT.601 Y in [0, 255]."""
    # As psnr_y: RGB rounded to 8 bits, border pixels cropped per side, Y unrounded; 3xHxW or Bx3xHxW input,
    # a 0-d float64 tensor or one value per image out.
    a, b = _y_255(sr, hr, border)
    if min(a.shape[-2:]) < _SSIM_WINDOW:
        size = tuple(a.shape[-2:])
        raise ValueError(f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after cropping, got {size}")
    window = _gaussian_window(a.device)
    mean_a, mean_b = F.conv2d(a, window), F.conv2d(b, window)
    var_a = F.conv2d(a * a, window) - mean_a**2
    var_b = F.conv2d(b * b, window) - mean_b**2
    cov = F.conv2d(a * b, window) - mean_a * mean_b
    c1, c2 = (_SSIM_K1 * 255) ** 2, (_SSIM_K2 * 255) ** 2
    ssim_map = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    return _unbatch(ssim_map.mean(dim=(-3, -2, -1)), sr)


def _y_255(sr: torch.Tensor, hr: torch.Tensor, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bx1xhxw float64 luma in [0, 255] of both images, 8-bit rounded and border-cropped."""
    if sr.shape != hr.shape or sr.ndim not in (3, 4) or sr.shape[-3] != 3:
        raise ValueError(
            f"sr and hr must both be 3xHxW or Bx3xHxW of equal shape, got {tuple(sr.shape)} and {tuple(hr.shape)}"
        )
    height, width = sr.shape[-2:]
    if not isinstance(border, int) or border < 0 or 2 * border >= min(height, width):
        largest = (min(height, width) - 1) // 2
        raise ValueError(f"border must be an int in [0, {largest}] for {height}x{width} images, got {border!r}")
    lumas = []
    for image in (sr, hr):
        eight_bit = (image.detach().to(torch.float64) * 255).round().clamp(0, 255) / 255
        y = rgb_to_y(eight_bit.reshape(-1, 3, height, width)) * 255
        lumas.append(y[..., border : height - border, border : width - border])
    return lumas[0], lumas[1]


def _gaussian_window(device: torch.device) -> torch.Tensor:
    offsets = torch.arange(_SSIM_WINDOW, dtype=torch.float64, device=device) - _SSIM_WINDOW // 2
    g = torch.exp(-(offsets**2) / (2 * _SSIM_SIGMA**2))
    g = g / g.sum()
    return torch.outer(g, g)[None, None]


def _unbatch(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values[0] if like.ndim == 3 else values


PSNR_INFO = MetricInfo("psnr", full_reference=True, lower_is_better=False, per_image=True,
                       description="PSNR in dB on BT.601 luma (MATLAB rgb2ycbcr), 8-bit rounded, border cropped",
                       options=("crop_border",))
SSIM_INFO = MetricInfo("ssim", full_reference=True, lower_is_better=False, per_image=True,
                       description="SSIM (Wang et al. 2004) on BT.601 luma, 8-bit rounded, border cropped",
                       options=("crop_border",))


class LumaMetric(PairMetric):
    """psnr_y or ssim_y as a registry metric, computed in float64 on the inputs' device; crop_border px per side."""

    def __init__(self, info: MetricInfo, function: Callable[..., torch.Tensor], *, device: str | torch.device = "cpu",
                 crop_border: int = 0) -> None:
        if not isinstance(crop_border, int) or isinstance(crop_border, bool) or crop_border < 0:
            raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
        self.info = info
        self.crop_border = crop_border
        self._function = function

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        self._check_batches(sr, hr, same_size=True)
        return self._function(sr, hr, border=self.crop_border).cpu()
