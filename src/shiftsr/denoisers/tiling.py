"""Tiled denoising: run a denoiser on overlapping tiles and blend the x0 predictions into one image.

Blending x0 with normalised window weights every call is the x0 form of Mixture of Diffusers
(Jimenez 2023) / MultiDiffusion (Bar-Tal et al. 2023); the window here is a raised cosine over the
overlap rather than Jimenez's Gaussian.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor


def auto_tile_size(*, height: int, width: int, channels: int, budget: int, batch: int = 1, multiple: int = 8) -> int:
    """Tile side for "tile 0 = auto": the largest one whose network input fits ``budget`` elements.

    The network input of one call has ``batch * channels * tile * tile`` elements, where ``batch``
    is the number of images per call (image batch x tile_batch). If the whole image fits the
    budget, the answer is ``max(height, width)`` (one tile, no tiling); otherwise it is the largest
    multiple of ``multiple`` (e.g. the UNet's down-sampling factor) whose square fits.
    """
    if batch * channels * height * width <= budget:
        return max(height, width)
    side = math.isqrt(budget // (batch * channels)) // multiple * multiple
    if side < multiple:
        raise ValueError(
            f"budget {budget} is below one {multiple}x{multiple} tile of {batch * channels} channels; "
            f"need at least {batch * channels * multiple * multiple}"
        )
    return side


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Tile starts along one axis: every ``stride`` pixels, the last tile flush with the border."""
    if size >= length:
        return [0]
    return list(range(0, length - size, stride)) + [length - size]


def _ramp(overlap: int) -> Tensor:
    """Raised-cosine ramp sin^2(pi/2 (k+1)/(overlap+1)), k < overlap: in (0, 1), and ramp + flipped ramp = 1."""
    k = torch.arange(1, overlap + 1, dtype=torch.float32)
    return torch.sin(0.5 * math.pi * k / (overlap + 1)) ** 2


def _window(start: int, size: int, length: int, overlap: int) -> Tensor:
    """1-D tile weight: 1 inside, ramps over ``overlap`` pixels at edges that are not image borders."""
    weight = torch.ones(size)
    if overlap > 0 and start > 0:
        weight[:overlap] *= _ramp(overlap)
    if overlap > 0 and start + size < length:
        weight[-overlap:] *= _ramp(overlap).flip(0)
    return weight


def tile_layout(height: int, width: int, *, tile: int, overlap: int, device=None
                ) -> tuple[tuple[int, int], dict[int, Tensor], dict[int, Tensor]]:
    """((tile_h, tile_w), {row start: 1-D weight}, {column start: 1-D weight}) of the tiles over a height x width
    image: every tile - overlap pixels, the last flush with the border; the weight of tile (y, x) is their outer
    product."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    stride = tile - overlap
    rows = {y: _window(y, tile_h, height, overlap).to(device) for y in _starts(height, tile_h, stride)}
    cols = {x: _window(x, tile_w, width, overlap).to(device) for x in _starts(width, tile_w, stride)}
    return (tile_h, tile_w), rows, cols


class TiledDenoiser(torch.nn.Module):
    """Blend a base denoiser's x0 over overlapping tiles, weighted as in Mixture of Diffusers (Jimenez 2023)."""

    def __init__(self, base: Callable, *, tile: int, overlap: int, tile_batch: int = 1):
        """Tile ``base`` with ``tile`` x ``tile`` tiles (model-space pixels) overlapping by at least ``overlap``.

        Tiles start every ``tile - overlap`` pixels; the last tile on each axis is flush with the
        border, so all tiles have the same size (an axis shorter than ``tile`` is one full-length
        tile). An image no larger than ``tile`` on both axes is denoised in one untiled call.
        ``tile_batch`` tile positions go through ``base`` per call, each holding the whole image
        batch, so the network batch is ``tile_batch * B``.

        ``cond`` is split like x_t: a Tensor, or the Tensor values of a dict / items of a tuple or
        list, must have batch size B; if 4-D with x_t's height and width it is cropped to the tile,
        if not 4-D it is repeated for every tile (e.g. per-image embeddings); non-Tensor
        values (None, numbers, strings) pass through unchanged. A 4-D cond of another size is an error.
        """
        super().__init__()
        if tile < 1:
            raise ValueError(f"tile must be a positive number of pixels, got {tile}; use auto_tile_size for 'auto'")
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must satisfy 0 <= overlap < tile={tile}, got {overlap}")
        if tile_batch < 1:
            raise ValueError(f"tile_batch must be a positive integer, got {tile_batch}")
        self.base = base
        self.tile = tile
        self.overlap = overlap
        self.tile_batch = tile_batch

    def forward(self, x_t: Tensor, t: Tensor, cond) -> Tensor:
        """Predict x0 for the whole image from tiled calls to the base denoiser."""
        batch, _, height, width = x_t.shape
        if height <= self.tile and width <= self.tile:
            return self.base(x_t, t, cond)
        (tile_h, tile_w), rows, cols = tile_layout(height, width, tile=self.tile, overlap=self.overlap,
                                                   device=x_t.device)
        tiles = [(y, x) for y in rows for x in cols]
        weight_sum = torch.zeros(height, width, device=x_t.device)
        out = None
        for first in range(0, len(tiles), self.tile_batch):
            chunk = tiles[first : first + self.tile_batch]
            crops = [(slice(y, y + tile_h), slice(x, x + tile_w)) for y, x in chunk]
            x0 = self.base(
                torch.cat([x_t[..., ys, xs] for ys, xs in crops]),
                t.repeat(len(chunk)),
                split_cond(cond, crops, batch, (height, width)),
            )
            if out is None:
                accumulate = torch.promote_types(x0.dtype, torch.float32)
                out = x_t.new_zeros((batch, x0.shape[1], height, width), dtype=accumulate)
            for (y, x), (ys, xs), piece in zip(chunk, crops, x0.split(batch)):
                w = torch.outer(rows[y], cols[x])
                weight_sum[ys, xs] += w
                out[..., ys, xs] += piece * w
        return (out / weight_sum.to(out.dtype)).to(x0.dtype)


def split_cond(cond, crops: list[tuple[slice, slice]], batch: int, size: tuple[int, int]):
    """Batch cond like the stacked x_t tiles: crop image-sized Tensors, repeat other Tensors."""
    if isinstance(cond, dict):
        return {key: _split_leaf(value, crops, batch, size) for key, value in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(_split_leaf(value, crops, batch, size) for value in cond)
    return _split_leaf(cond, crops, batch, size)


def _split_leaf(value, crops: list[tuple[slice, slice]], batch: int, size: tuple[int, int]):
    """Crop a 4-D Tensor of x_t's size per tile, repeat a non-4-D batch-B Tensor per tile, pass non-Tensors through."""
    if not torch.is_tensor(value):
        return value
    if value.ndim == 0 or value.shape[0] != batch:
        raise ValueError(f"cond Tensor of shape {tuple(value.shape)} must have x_t's batch size {batch} to be tiled")
    if value.ndim == 4 and tuple(value.shape[-2:]) == size:
        return torch.cat([value[..., ys, xs] for ys, xs in crops])
    if value.ndim == 4:
        raise ValueError(
            f"cond image of size {value.shape[-2]}x{value.shape[-1]} cannot be tiled with x_t of size "
            f"{size[0]}x{size[1]}"
        )
    return value.repeat(len(crops), *([1] * (value.ndim - 1)))


def tiled_decode(decode: Callable[[Tensor], Tensor], z: Tensor, *, tile: int, overlap: int, scale: int) -> Tensor:
    """decode(z) from overlapping tile x tile latent tiles, blended in image space with the tiles' windows
    (their overlap times the codec's scale), so a large latent decodes in the memory of one tile."""
    height, width = z.shape[-2:]
    (tile_h, tile_w), rows, cols = tile_layout(height, width, tile=tile, overlap=overlap)
    image_rows = {y: _window(y * scale, tile_h * scale, height * scale, overlap * scale).to(z.device) for y in rows}
    image_cols = {x: _window(x * scale, tile_w * scale, width * scale, overlap * scale).to(z.device) for x in cols}
    out, weight_sum = None, torch.zeros(height * scale, width * scale, device=z.device)
    for y in rows:
        for x in cols:
            piece = decode(z[..., y:y + tile_h, x:x + tile_w]).float()
            if out is None:
                out = torch.zeros(z.shape[0], piece.shape[1], height * scale, width * scale, device=z.device)
            ys, xs = slice(y * scale, (y + tile_h) * scale), slice(x * scale, (x + tile_w) * scale)
            w = torch.outer(image_rows[y], image_cols[x])
            weight_sum[ys, xs] += w
            out[..., ys, xs] += piece * w
    return out / weight_sum
