"""Validation while training: PSNR-Y of the EMA model's shipped sampler on fixed crops of held-out images."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from ..bundle import BundleSettings
from ..data.pairs import degrade_bicubic
from ..metrics import psnr_y
from ..pipeline import ShiftSRPipeline


def split_held_out(images: list[Tensor], count: int) -> tuple[list[Tensor], list[Tensor]]:
    """(training, held out): `count` images evenly spaced through the sorted list, never trained on."""
    if count >= len(images):
        raise ValueError(f"data.val_images: {count} leaves no training image out of {len(images)} usable ones")
    held = set(np.linspace(0, len(images) - 1, count).round().astype(int).tolist()) if count else set()
    return ([im for i, im in enumerate(images) if i not in held], [im for i, im in enumerate(images) if i in held])


def center_crop(image: Tensor, size: int) -> Tensor:
    """The central size x size pixels of a CxHxW image."""
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[..., top:top + size, left:left + size]


class HeldOutSet:
    """HR center crops of the held-out images and their LR made by the training degradation (8-bit bicubic)."""

    def __init__(self, images: list[Tensor], *, patch: int, scale: int):
        self.hr = torch.stack([center_crop(image, patch) for image in images]).float() / 255
        self.lr = degrade_bicubic(self.hr, scale)[0]
        self.border = scale

    def psnr_y(self, net: torch.nn.Module, settings: BundleSettings, device: torch.device, codec=None) -> float:
        """Mean PSNR-Y (border = scale) of one sample (seed 0) per crop through ShiftSRPipeline's default sampler."""
        # a copy: the pipeline converts the net
        pipe = ShiftSRPipeline(copy.deepcopy(net), settings, device=device, codec=codec)
        return float(psnr_y(pipe(self.lr, samples=1, seed=0), self.hr, border=self.border).mean())
