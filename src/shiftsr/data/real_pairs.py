"""Training pairs for real-world SR: BicubicPairs' random HR crops, LR from the Real-ESRGAN degradation."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .degradations import BicubicConfig, DegradationConfig, degrade, load_preset, seeded_generator
from .pairs import BicubicPairs

DEGRADATION_STREAM = 1  # second key of the degradation generator's seed, beside the stream's seed


class RealPairs:
    """An endless stream of (hr, lr) batches in [0, 1]: lr (B,3,patch/scale,patch/scale) from degrade()."""

    def __init__(
        self,
        images: list[Tensor],
        *,
        patch: int,
        scale: int,
        batch: int,
        seed: int = 0,
        config: DegradationConfig | BicubicConfig | None = None,
    ):
        # The crops are BicubicPairs' (same images, weights and augmentation for a given seed); the
        # degradations draw from a second generator, so they do not shift the crop sequence.
        self.crops = BicubicPairs(images, patch=patch, scale=scale, batch=batch, seed=seed)
        self.scale, self.batch = scale, batch
        self.config = load_preset("realesrgan") if config is None else config
        self.generator = seeded_generator(seed, DEGRADATION_STREAM)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            hr = torch.stack([self.crops.crop() for _ in range(self.batch)])
            yield hr, degrade(hr, self.config, self.scale, self.generator)
