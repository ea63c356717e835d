"""Full-size float32 tensors kept in files and moved by bands, and Gaussian draws written there chunk by chunk.

A streamed run keeps its state, history, condition and noise here rather than in memory: the operating system's
page cache holds them (reclaimable, not the process's resident set), and the run reads and writes only the rows
or tiles it works on, with pread / pwrite (no memory map, whose touched pages would count as resident).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from ..samplers.common import Draws, Generators

LAYOUTS = ("channels_last", "nchw")
DRAW_CHUNK = 1 << 18  # elements per chunk of a streamed draw (1 MB); a multiple of 16, see draw_noise


class DiskTensor:
    """A (B, C, H, W) float32 tensor in a file, read and written by row bands or tiles.

    layout "channels_last" stores it as (B, H, W, C), the network's layout, so a row band is one read per image and
    a tile one read per row; "nchw" as (B, C, H, W), the order torch draws noise in.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int, int], *, layout: str = "channels_last"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout: unknown {layout!r}; allowed: {', '.join(LAYOUTS)}")
        self.path, self.shape, self.layout = Path(path), tuple(shape), layout
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, math.prod(self.shape) * 4)

    def close(self) -> None:
        """Close the file (the folder it lives in is removed by its owner)."""
        os.close(self.fd)

    def read(self, top: int, bottom: int, left: int = 0, right: int | None = None) -> Tensor:
        """Rows [top, bottom) and columns [left, right) as a (B, C, rows, columns) CPU tensor in the store's layout."""
        batch, channels, height, width = self.shape
        right = width if right is None else right
        rows, columns = bottom - top, right - left
        if self.layout == "nchw":
            out = torch.empty(batch, channels, rows, columns)
            for b in range(batch):
                for c in range(channels):
                    self._rows(out[b, c], ((b * channels + c) * height + top) * width + left, width, columns, read=True)
            return out
        out = torch.empty(batch, rows, columns, channels)
        for b in range(batch):
            self._rows(out[b], ((b * height + top) * width + left) * channels, width * channels, columns * channels,
                       read=True)
        return out.permute(0, 3, 1, 2)

    def write(self, top: int, value: Tensor, left: int = 0) -> None:
        """Write a (B, C, rows, columns) tensor at rows top... and columns left..."""
        batch, channels, height, width = self.shape
        value = value.detach().to("cpu", torch.float32)
        columns = value.shape[-1]
        if self.layout == "nchw":
            value = value.contiguous()
            for b in range(batch):
                for c in range(channels):
                    self._rows(value[b, c], ((b * channels + c) * height + top) * width + left, width, columns,
                               read=False)
            return
        value = value.permute(0, 2, 3, 1).contiguous()
        for b in range(batch):
            self._rows(value[b], ((b * height + top) * width + left) * channels, width * channels, columns * channels,
                       read=False)

    def write_flat(self, offset: int, values: Tensor) -> None:
        """Write a 1-D float32 tensor at element offset in file order (how draw_noise fills an nchw store)."""
        self._io(values.contiguous().numpy(), offset, read=False)

    def _rows(self, block: Tensor, offset: int, row_stride: int, row_length: int, *, read: bool) -> None:
        """Move a (rows, ...) block whose rows are row_length elements apart by row_stride in the file."""
        flat = block.numpy().reshape(block.shape[0], -1)
        if row_length == row_stride:  # whole rows: one contiguous range
            self._io(flat.reshape(-1), offset, read=read)
            return
        for r in range(flat.shape[0]):
            self._io(flat[r], offset + r * row_stride, read=read)

    def _io(self, array, offset: int, *, read: bool) -> None:
        """pread into / pwrite from a contiguous float32 array at element offset, until every byte moved."""
        view, position = memoryview(array).cast("B"), offset * 4
        while view.nbytes:
            done = os.preadv(self.fd, [view], position) if read else os.pwritev(self.fd, [view], position)
            if done <= 0:
                raise OSError(f"{self.path}: short {'read' if read else 'write'} at byte {position}")
            view, position = view[done:], position + done


def draw_noise(store: DiskTensor, generator: Generators) -> None:
    """Fill an nchw store with the draw samplers.randn_like would make for a tensor of its shape, chunk by chunk.

    torch's CPU normal draws fill a contiguous float32 tensor of n >= 16 elements with n uniforms, map them 16 at a
    time, and redraw the last 16 when n is not a multiple of 16; chunks that are multiples of 16 with a last one of
    at least 16 elements therefore give the same numbers as one draw (tests/test_streaming.py checks it).
    """
    if store.layout != "nchw":
        raise ValueError(f"{store.path}: noise is drawn into an nchw store, not {store.layout}")
    batch, sign = store.shape[0], 1.0
    if isinstance(generator, Draws):
        given, sign = generator.take(store.shape), generator.sign
        if given is not None:
            store.write(0, given * sign)
            return
        generator = generator.then
    if generator is None or isinstance(generator, torch.Generator):
        _draw_flat(store, generator, 0, math.prod(store.shape), sign)
        return
    if len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch}")
    per_image = math.prod(store.shape[1:])
    for b, g in enumerate(generator):
        _draw_flat(store, g, b * per_image, per_image, sign)


def _draw_flat(store: DiskTensor, generator: torch.Generator | None, offset: int, count: int, sign: float) -> None:
    """count standard normal numbers from one generator times sign, as sign * torch.randn(count) would give, at
    offset."""
    buffer = torch.empty(min(count, DRAW_CHUNK + 15))
    start = 0
    while start < count:
        size = count - start if count - start < DRAW_CHUNK + 16 else DRAW_CHUNK
        chunk = buffer[:size]
        torch.randn(size, generator=generator, out=chunk)
        if sign < 0:
            chunk.neg_()
        store.write_flat(offset + start, chunk)
        start += size
