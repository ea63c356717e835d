"""Crop sheets: the same window of HR, bicubic and every output of an image, labelled, side by side."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import imresize
from .report import figure_png
from .upscalers import Upscaler

COLUMNS_PER_ROW = 6  # crop panels per row of a sheet
PANEL_INCHES = 2.2
Box = tuple[int, int, int]  # x, y, side in HR pixels


def crop_box(hr: torch.Tensor, size: int, at: tuple[int, int] | None = None) -> Box:
    """(x, y, side) of a square window in hr (3xHxW): `at` moved inside the image, else the highest-variance one."""
    from ..metrics import rgb_to_y

    height, width = hr.shape[-2:]
    side = min(size, height, width)
    if at is not None:
        return min(max(at[0], 0), width - side), min(max(at[1], 0), height - side), side
    y = rgb_to_y(hr.double())[None]
    stride = max(1, side // 8)
    mean = nn.functional.avg_pool2d(y, side, stride=stride)
    variance = (nn.functional.avg_pool2d(y * y, side, stride=stride) - mean**2)[0, 0]
    row, column = divmod(int(variance.argmax()), variance.shape[1])
    return column * stride, row * stride, side


class CropSheets:
    """Collects, as the loop's `each` hook, one window per image: HR, bicubic, then every other output captioned
    with its label and first metric. sheets: image name -> (box, [(caption, 3xSxS crop)])."""

    def __init__(self, *, size: int, at: tuple[int, int] | None, scale: int):
        self.size, self.at, self.scale = size, at, scale
        self.sheets: dict[str, tuple[Box, list[tuple[str, torch.Tensor]]]] = {}

    def __call__(self, name: str, lr: torch.Tensor, hr: torch.Tensor, upscaler: Upscaler, sr: torch.Tensor,
                 values: dict[str, float]) -> None:
        if name not in self.sheets:
            box = crop_box(hr[0], self.size, self.at)
            bicubic = imresize(lr, scale=self.scale).clamp(0, 1)
            self.sheets[name] = (box, [("HR", self.window(hr, box)), ("bicubic", self.window(bicubic, box))])
        if upscaler.spec == "bicubic":
            return
        box, panels = self.sheets[name]
        first = next(iter(values.items()), None)
        caption = upscaler.label + (f"\n{first[0]} {first[1]:.3f}" if first else "")
        panels.append((caption, self.window(sr, box)))

    @staticmethod
    def window(image: torch.Tensor, box: Box) -> torch.Tensor:
        """The box of the first image of a batch."""
        x, y, side = box
        return image[0, :, y:y + side, x:x + side]


def crop_sheet_png(panels: list[tuple[str, torch.Tensor]], box: Box, title: str) -> bytes:
    """PNG: the 3xSxS crops side by side (wrapping every COLUMNS_PER_ROW), each under its label, pixels unsmoothed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = min(len(panels), COLUMNS_PER_ROW)
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES * columns, (PANEL_INCHES + 0.5) * rows),
                                squeeze=False, layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for axis, (label, crop) in zip(axes.flat, panels):
        axis.imshow(crop.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(label, fontsize="small")
    x, y, side = box
    figure.suptitle(f"{title}: {side}x{side} pixels at x={x}, y={y} of the HR image")
    return figure_png(figure)
