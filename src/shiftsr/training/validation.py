"""Validation while training: PSNR-Y (and ST-LPIPS) of the EMA model's shipped sampler on fixed held-out images."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..bundle import BundleSettings
from ..data.degradations import DegradationConfig, degrade, load_preset, seeded_generator
from ..data.pairs import degrade_bicubic
from ..metrics import psnr_y
from ..ops import modcrop
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
    """The held-out images as HR center crops of side patch (0: whole, cropped to a multiple of the scale) and their
    LR: 8-bit bicubic, or each degradation preset drawn once (image i with seeded_generator(0, i), as `shiftsr
    degrade --seed 0` draws image i). Crops form one batch; whole images one batch each (their sizes differ)."""

    def __init__(self, images: list[Tensor], *, patch: int, scale: int, degradations: Sequence[str] = ("bicubic",)):
        hrs = [(center_crop(image, patch) if patch else modcrop(image, scale)).float() / 255 for image in images]
        self.batches: list[tuple[Tensor, Tensor]] = []
        for name in degradations:
            config = None if name == "bicubic" else load_preset(name)
            lrs = [low_resolution(hr, config, scale, index) for index, hr in enumerate(hrs)]
            pairs = [(torch.stack(hrs), torch.cat(lrs))] if patch else [(hr[None], lr) for hr, lr in zip(hrs, lrs)]
            self.batches.extend(pairs)
        self.border = scale

    @property
    def hr(self) -> list[Tensor]:
        """The HR batches."""
        return [hr for hr, _ in self.batches]

    def scores(self, net: torch.nn.Module, settings: BundleSettings, device: torch.device, codec=None,
               perceptual: torch.nn.Module | None = None) -> dict:
        """Mean PSNR-Y (border = scale) over the held-out images of one sample (seed 0) each through
        ShiftSRPipeline's default sampler, on the CPU, and with a perceptual network (ST-LPIPS) its mean distance."""
        pipe = ShiftSRPipeline(copy.deepcopy(net), settings, device=device, codec=codec)  # a copy: it converts the net
        psnrs, distances = [], []
        for hr, lr in self.batches:
            sr = pipe(lr, samples=1, seed=0)
            psnrs.append(psnr_y(sr, hr, border=self.border))
            if perceptual is not None:
                with torch.no_grad():
                    distances.append(perceptual(sr.to(device), hr.to(device)).flatten().cpu())
        values = {"val_psnr_y": float(torch.cat(psnrs).mean())}
        if perceptual is not None:
            values["val_stlpips"] = float(torch.cat(distances).mean())
        return values


def low_resolution(hr: Tensor, config: DegradationConfig | None, scale: int, index: int) -> Tensor:
    """The 1x3xh/scale xw/scale LR of one held-out CxHxW image: 8-bit bicubic (config None), or the degradation
    drawn with seeded_generator(0, index)."""
    if config is None:
        return degrade_bicubic(hr[None], scale)[0]
    return degrade(hr[None], config, scale, seeded_generator(0, index))
