"""A chain of steps (samplers.chain) run tile by tile on a state kept on disk: the same numbers as in memory.

Each step reads the tiles of the state row by row, blends their x0 predictions with the windows of
denoisers.tiling.TiledDenoiser in the same order (so the blend is the same, bit for bit), and as soon as a band of
rows has all its tiles it applies the step's elementwise update to that band and writes it back. In memory are one
row of tiles of x0 sums, one tile of network input and a few bands of `band_rows` rows.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..denoisers.tiling import split_cond, tile_layout
from ..memory import release_freed_memory
from ..samplers.chain import Step
from ..samplers.common import Generators
from .store import DiskTensor, draw_noise

BAND_ROWS = 16  # rows per band an update reads, changes and writes


class Stores:
    """The named DiskTensors of one run, all of one (B, C, H, W) shape, in one folder."""

    def __init__(self, folder: Path, shape: tuple[int, int, int, int]):
        self.folder, self.shape = Path(folder), tuple(shape)
        self.tensors: dict[str, DiskTensor] = {}

    def get(self, name: str, *, layout: str = "channels_last") -> DiskTensor:
        """The store called name, created (zero-filled) on first use."""
        if name not in self.tensors:
            self.tensors[name] = DiskTensor(self.folder / f"{name}.f32", self.shape, layout=layout)
        return self.tensors[name]

    def close(self) -> None:
        """Close every file."""
        for tensor in self.tensors.values():
            tensor.close()


def bands(height: int, top: int = 0, bottom: int | None = None) -> list[tuple[int, int]]:
    """[top, bottom) (default: all rows) cut into bands of at most BAND_ROWS rows."""
    bottom, rows = height if bottom is None else bottom, BAND_ROWS
    return [(start, min(start + rows, bottom)) for start in range(top, bottom, rows)]


def slide(rows: Tensor, shift: int) -> None:
    """Move rows (dim -2) up by shift in place and zero the rows that come free (a copy only where they overlap)."""
    kept = rows.shape[-2] - shift
    source = rows[..., shift:, :]
    rows[..., :kept, :] = source.clone() if shift < kept else source
    rows[..., kept:, :] = 0


class StreamedChain:
    """Runs a chain's steps with x, y and cond as DiskTensors; a drop-in `driver` for the samplers.

    The denoiser is called on each tile (tile x tile model-space pixels, overlapping by overlap) with the whole
    image batch, as TiledDenoiser calls its base with tile_batch 1. noise: the nchw store each step's draw goes to.
    """

    def __init__(self, stores: Stores, *, tile: int, overlap: int, device: torch.device, noise: DiskTensor,
                 on_step: Callable[[], None] | None = None):
        self.stores, self.tile, self.overlap, self.device = stores, tile, overlap, device
        self.noise, self.on_step = noise, on_step

    def __call__(self, steps: Sequence[Step], denoiser, x: DiskTensor, *, y: DiskTensor | None = None, cond=None,
                 generator: Generators = None, callback=None) -> DiskTensor:
        names: list[str] = []
        for i, step in enumerate(steps):
            if step.noisy:
                draw_noise(self.noise, generator)
            names = self.step(step, denoiser, x, y, cond, names)
            release_freed_memory()
            if callback is not None:
                callback({"i": i, "t": step.t})  # the state is on disk: no x or denoised here
            if self.on_step is not None:
                self.on_step()
        return x

    def load(self, store: DiskTensor | None, top: int, bottom: int, left: int = 0, right: int | None = None):
        """A region of a store on the run's device (None stays None)."""
        return None if store is None else store.read(top, bottom, left, right).to(self.device)

    def step(self, step: Step, denoiser, x: DiskTensor, y: DiskTensor | None, cond, names: list[str]) -> list[str]:
        """One step over the image, tile row by tile row; returns the history names the update kept."""
        batch, channels, height, width = x.shape
        (tile_h, tile_w), rows, cols = tile_layout(height, width, tile=self.tile, overlap=self.overlap,
                                                   device=self.device)
        t = torch.full((batch,), float(step.t), device=self.device)
        starts = list(rows)
        total = torch.zeros(batch, channels, tile_h, width, device=self.device)  # the x0 sums of rows top...
        weight = torch.zeros(tile_h, width, device=self.device)
        top, kept_names = 0, names
        for j, y0 in enumerate(starts):
            if y0 != top:  # the rows above y0 are written: slide the sums up to start at y0
                slide(total, y0 - top)
                slide(weight, y0 - top)
                top = y0
            for x0_col in cols:
                crop = [(slice(0, tile_h), slice(0, tile_w))]
                given = cond.read(y0, y0 + tile_h, x0_col, x0_col + tile_w).to(self.device) \
                    if isinstance(cond, DiskTensor) else split_cond(cond, crop, batch, (tile_h, tile_w))
                piece = denoiser(self.load(x, y0, y0 + tile_h, x0_col, x0_col + tile_w), t, given)
                w = torch.outer(rows[y0], cols[x0_col])
                weight[:, x0_col:x0_col + tile_w] += w
                total[..., x0_col:x0_col + tile_w] += piece * w
            done = starts[j + 1] if j + 1 < len(starts) else height
            for a, b in bands(height, y0, done):
                x0 = total[:, :, a - top:b - top] / weight[a - top:b - top]
                kept_names = self.update(step, x, y, a, b, x0, names)
        return kept_names

    def update(self, step: Step, x: DiskTensor, y: DiskTensor | None, top: int, bottom: int, x0: Tensor,
               names: list[str]) -> list[str]:
        """The step's elementwise update on rows [top, bottom): read, update, write back."""
        memory = {name: self.load(self.stores.get(name), top, bottom) for name in names}
        noise = self.load(self.noise, top, bottom) if step.noisy else None
        new = step.update(self.load(x, top, bottom), x0, self.load(y, top, bottom), memory, noise, False)
        x.write(top, new)
        for name, value in memory.items():
            self.stores.get(name).write(top, value)
        return list(memory)
