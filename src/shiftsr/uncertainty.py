"""Where the samples disagree: the per-pixel spread of K samples, written as a colour-mapped and a 16-bit PNG.

The K samples of `--samples K` are draws of the posterior p(x0 | y) (in antithetic pairs, see
pipeline.sample_draws); their mean is the output, their standard deviation says how much each pixel depends on the
draw, i.e. where detail was invented rather than read off the LR.
Scales are fixed, so maps of different images and runs compare directly:

- `{stem}_{suffix}_std.png`: the matplotlib colour map STD_COLOUR_MAP over std 0 (black) to STD_MAP_MAX = 0.1 of the
  intensity range (light yellow; larger values saturate), 8-bit RGB;
- `{stem}_{suffix}_std16.png`: the raw values, 16-bit grayscale, level = round(std * 65535 / STD16_FULL_SCALE) with
  STD16_FULL_SCALE = 0.5, the largest standard deviation values in [0, 1] can have (so nothing is clipped):
  std = level * 0.5 / 65535.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

STD_MAP_MAX = 0.1  # the colour map spans std 0 -> 0.1 of the [0, 1] intensity range
STD16_FULL_SCALE = 0.5  # the 16-bit map stores std * 65535 / 0.5
STD_COLOUR_MAP = "magma"  # perceptually uniform, black at 0
STD_SUFFIXES = ("_std.png", "_std16.png")


def sample_spread(total: Tensor, squares: Tensor, count: int, *, antithetic: bool = False) -> Tensor:
    """(B, 1, H, W) spread of `count` samples from their sum and sum of squares (B, C, H, W): the root mean over
    channels of each channel's variance (sum of squares - sum^2 / K) / (K - 1), unbiased for independent samples.

    antithetic pairs (pipeline.sample_draws) divide by K: their mean is nearly exact, so the deviations from it are
    draws of the deviation from the true mean (exactly, where the output is linear in the noise), K / 2 of them
    independent; K - 1 would overstate the spread by sqrt(K / (K - 1)).
    """
    if count < 2:
        raise ValueError(f"uncertainty: the spread of samples needs samples >= 2, got {count}")
    variance = ((squares - total.square() / count) / (count if antithetic else count - 1)).clamp(min=0)
    return variance.mean(dim=1, keepdim=True).sqrt().float()


def colour_mapped(std: Tensor) -> Tensor:
    """3xHxW RGB in [0, 1]: a 1xHxW std map through STD_COLOUR_MAP over [0, STD_MAP_MAX] (above: the top colour)."""
    from matplotlib import colormaps

    scaled = (std[0].double() / STD_MAP_MAX).clamp(0, 1).numpy()
    return torch.from_numpy(colormaps[STD_COLOUR_MAP](scaled)[..., :3]).permute(2, 0, 1).float()


def std_paths(target: Path) -> tuple[Path, Path]:
    """The colour-mapped and the 16-bit map written beside an output: {output stem}_std.png, {output stem}_std16.png."""
    return tuple(target.with_name(target.stem + suffix) for suffix in STD_SUFFIXES)


def write_std_maps(target: Path, std: Tensor, *, overwrite: bool) -> dict:
    """Write the two maps of a 1xHxW std beside target, atomically; the JSON fields naming them and the mean std."""
    from .imageio import write_image

    coloured, raw = std_paths(target)
    write_image(coloured, colour_mapped(std), overwrite=overwrite)
    write_image(raw, (std / STD16_FULL_SCALE).expand(3, -1, -1), bit_depth=16, gray=True, overwrite=overwrite)
    return {"std_map": str(coloured), "std16": str(raw)}
