"""Validation while training: PSNR-Y (and ST-LPIPS) of the EMA model's shipped sampler on fixed held-out crops."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from ..bundle import BundleSettings
from ..data.degradations import degrade, load_preset, seeded_generator
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
    """HR center crops of the held-out images and their LR: 8-bit bicubic, or a degradation preset drawn once
    (crop i with seeded_generator(0, i), as `shiftsr degrade --seed 0` draws image i)."""

    def __init__(self, images: list[Tensor], *, patch: int, scale: int, degradation: str = "bicubic"):
        self.hr = torch.stack([center_crop(image, patch) for image in images]).float() / 255
        if degradation == "bicubic":
            self.lr = degrade_bicubic(self.hr, scale)[0]
        else:
            config = load_preset(degradation)
            self.lr = torch.cat([degrade(hr[None], config, scale, seeded_generator(0, index))
                                 for index, hr in enumerate(self.hr)])
        self.border = scale

    def upscale(self, net: torch.nn.Module, settings: BundleSettings, device: torch.device, codec=None) -> Tensor:
        """One sample (seed 0) per crop through ShiftSRPipeline's default sampler, on the CPU."""
        # a copy: the pipeline converts the net
        pipe = ShiftSRPipeline(copy.deepcopy(net), settings, device=device, codec=codec)
        return pipe(self.lr, samples=1, seed=0)

    def scores(self, net: torch.nn.Module, settings: BundleSettings, device: torch.device, codec=None,
               perceptual: torch.nn.Module | None = None) -> dict:
        """Mean PSNR-Y (border = scale) of one sample (seed 0) per crop through ShiftSRPipeline's default sampler,
        and with a perceptual network (ST-LPIPS) its mean distance."""
        sr = self.upscale(net, settings, device, codec)
        values = {"val_psnr_y": float(psnr_y(sr, self.hr, border=self.border).mean())}
        if perceptual is not None:
            with torch.no_grad():
                values["val_stlpips"] = float(perceptual(sr.to(device), self.hr.to(device)).mean())
        return values
