"""Training pairs for bicubic SR: random HR crops, dihedral augmentation, MATLAB-bicubic LR quantized to 8 bits."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..ops.imresize import bicubic_degrade, imresize

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def find_images(root: str | Path) -> list[Path]:
    """The image files under root (recursive, sorted); a missing folder or one without images is an error naming it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder {'is not a folder' if root.exists() else 'does not exist'}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder or below")
    return files


def load_training_images(roots: list[str | Path], *, min_side: int) -> list[Tensor]:
    """Images under the roots (each sorted by path) with both sides >= min_side, uint8 3xHxW; names unreadable files."""
    images, unreadable = [], []
    for path in (path for root in roots for path in find_images(root)):
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            unreadable.append(f"{path} ({' '.join(str(error).split())})")
            continue
        if min(array.shape[:2]) >= min_side:
            images.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
    if unreadable:
        listed = "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        raise ValueError(f"{len(unreadable)} training image(s) cannot be read: {listed}")
    if not images:
        raise ValueError(f"no training image under {', '.join(map(str, roots))} has both sides >= {min_side} px")
    return images


def degrade_bicubic(hr: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """LR = imresize(HR, 1/scale) rounded to 8 bits (the benchmark convention) and xh = imresize(LR, scale)."""
    lr = (bicubic_degrade(hr, scale) * 255).round().clamp(0, 255) / 255
    return lr, imresize(lr, scale=scale).clamp(0, 1)


class BicubicPairs:
    """An endless stream of (hr, xh) batches in [0, 1]: area-weighted random crops with the 8 dihedral flips."""

    def __init__(self, images: list[Tensor], *, patch: int, scale: int, batch: int, seed: int = 0):
        if patch % scale:
            raise ValueError(f"patch {patch} must be a multiple of the scale {scale}")
        self.images, self.patch, self.scale, self.batch = images, patch, scale, batch
        areas = torch.tensor([im.shape[1] * im.shape[2] for im in images], dtype=torch.float64)
        self.weights = areas / areas.sum()
        self.generator = torch.Generator().manual_seed(seed)

    def crop(self) -> Tensor:
        """One random dihedral HR crop as float in [0, 1]."""
        g, p = self.generator, self.patch
        image = self.images[int(torch.multinomial(self.weights, 1, generator=g))]
        top = int(torch.randint(image.shape[1] - p + 1, (1,), generator=g))
        left = int(torch.randint(image.shape[2] - p + 1, (1,), generator=g))
        crop = image[:, top:top + p, left:left + p].float() / 255
        if torch.rand(1, generator=g) < 0.5:
            crop = crop.flip(-1)
        return torch.rot90(crop, int(torch.randint(4, (1,), generator=g)), dims=(1, 2))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            hr = torch.stack([self.crop() for _ in range(self.batch)])
            yield hr, degrade_bicubic(hr, self.scale)[1]
