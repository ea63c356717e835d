"""Output sizes: a scale or a target box to the exact (height, width) of an upscale."""
from __future__ import annotations

import math


def round_half_up(value: float) -> int:
    """value rounded to the nearest integer, halves upwards (Python's round() sends halves to the even one)."""
    return math.floor(value + 0.5)


def output_size(height: int, width: int, *, scale: float | None = None,
                target: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of the upscale of an LR of height x width: sides times scale, or fitted inside target = (W, H).

    scale: each side is side * scale rounded half up (at least 1). target: the largest size with the LR's
    aspect ratio inside the target box; the limiting side gets the target exactly, the other side is its
    exact value rounded half up (never more than the box). A box with the LR's aspect ratio is met exactly.
    """
    if (scale is None) == (target is None):
        raise ValueError("pass exactly one of scale= or target=(width, height)")
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        return max(1, round_half_up(height * scale)), max(1, round_half_up(width * scale))
    if len(target) != 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in target):
        raise ValueError(f"target must be two positive ints (width, height), got {target!r}")
    box_w, box_h = target
    if box_w * height <= box_h * width:  # width limits: box_w / width <= box_h / height
        return min(box_h, max(1, round_half_up(height * box_w / width))), box_w
    return box_h, min(box_w, max(1, round_half_up(width * box_h / height)))
