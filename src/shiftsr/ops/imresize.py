"""MATLAB-compatible bicubic imresize, separable, with banded weights: memory linear in the image side."""

from __future__ import annotations

import math

import torch

BLOCK_ELEMENTS = 1 << 20  # elements of the largest temporary one resampling step creates (4 MB in float32)


def imresize(x: torch.Tensor, *, scale: float | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """MATLAB imresize(x, scale) or imresize(x, [H W]), 'bicubic' with antialiasing, of CxHxW or BxCxHxW floats."""
    # With scale the output is ceil(H * scale) x ceil(W * scale) and the kernel uses scale itself; with size
    # each axis uses out / in, as MATLAB does. Computed in x's dtype with no intermediate rounding, i.e. like
    # MATLAB on double input; MATLAB on uint8 input rounds after each axis and so differs by a level at times.
    if (scale is None) == (size is None):
        raise ValueError("pass exactly one of scale= or size=(H, W)")
    if x.ndim not in (3, 4) or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of shape CxHxW or BxCxHxW, got {x.dtype} {tuple(x.shape)}")
    in_h, in_w = x.shape[-2:]
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        return _resize(x, (out_h, out_w), (scale, scale))
    if len(size) != 2 or any(not isinstance(n, int) or n < 1 for n in size):
        raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    return _resize(x, size, (size[0] / in_h, size[1] / in_w))


def modcrop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom rows and right columns so that height and width are multiples of scale (MATLAB modcrop)."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    h, w = x.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"image of size {h}x{w} is smaller than scale {scale}")
    return x[..., : h - h % scale, : w - w % scale]


def bicubic_degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The SR benchmark LR image, MATLAB imresize(modcrop(hr, scale), 1 / scale, 'bicubic'), unrounded."""
    # An HR whose sides are not multiples of scale loses its last rows and columns (see modcrop); crop the
    # HR reference with modcrop too so that the pair stays aligned.
    hr = modcrop(hr, scale)
    h, w = hr.shape[-2:]
    return _resize(hr, (h // scale, w // scale), (1 / scale, 1 / scale))


def contributions(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB imresize's contributions() along one axis: out_len x P input indices (0-based) and float64 weights."""
    # Output sample i (1-based) sits at u = i / scale + (1 - 1 / scale) / 2 in input coordinates. The kernel is
    # Keys' cubic with a = -0.5 (MATLAB 'bicubic'); when shrinking it is widened to scale * cubic(scale * t), of
    # width 4 / scale (MATLAB's antialiasing), so P = ceil(width) + 2 taps cover it. Weights are normalised to sum
    # to one, then taps outside the image fold back by symmetric padding (edge pixel repeated, padarray
    # 'symmetric'). MATLAB also drops all-zero tap columns; they add nothing, so they are kept here.
    shrink = scale < 1
    width = 4 / scale if shrink else 4.0
    u = torch.arange(1, out_len + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    taps = torch.floor(u - width / 2)[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64)
    distance = u[:, None] - taps
    weights = scale * _cubic(scale * distance) if shrink else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    folded = (taps.long() - 1) % (2 * in_len)  # 0-based index into [0..n-1, n-1..0]
    return torch.where(folded < in_len, folded, 2 * in_len - 1 - folded), weights


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel with a = -0.5, the kernel of MATLAB 'bicubic'."""
    d = t.abs()
    near = (1.5 * d**3 - 2.5 * d**2 + 1) * (d <= 1)
    far = (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2) * ((d > 1) & (d <= 2))
    return near + far


def _resize(x: torch.Tensor, out_size: tuple[int, int], scales: tuple[float, float]) -> torch.Tensor:
    # MATLAB resizes the axis with the smaller scale first (rows first on a tie), which also keeps the
    # intermediate image the smaller of the two possible ones when one axis shrinks.
    for axis in sorted((0, 1), key=lambda k: scales[k]):
        dim = x.ndim - 2 + axis
        index, weights = contributions(x.shape[dim], out_size[axis], scales[axis])
        x = _resample_axis(x, dim, index.to(x.device), weights.to(x.device, x.dtype))
    return x


def _resample_axis(x: torch.Tensor, dim: int, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """out[..., o, ...] = sum_p weights[o, p] x[..., index[o, p], ...] along dim (-2 or -1), in blocks of outputs."""
    # Taps are gathered along rows (index_select on the last dim is an order of magnitude slower), so columns are
    # resampled on a transposed copy of x; each block of at most BLOCK_ELEMENTS is written into out as it is done.
    columns = dim == x.ndim - 1
    source = x.transpose(-1, -2).contiguous() if columns else x
    out_len, taps = index.shape
    shape = list(x.shape)
    shape[dim] = out_len
    out = x.new_empty(shape)
    block = max(1, BLOCK_ELEMENTS // max(source.numel() // source.shape[-2], 1))
    for start in range(0, out_len, block):
        n = min(block, out_len - start)
        acc = source.new_zeros(*source.shape[:-2], n, source.shape[-1])
        for p in range(taps):
            acc.addcmul_(source.index_select(-2, index[start : start + n, p]), weights[start : start + n, p, None])
        out.narrow(dim, start, n).copy_(acc.transpose(-1, -2) if columns else acc)
    return out
