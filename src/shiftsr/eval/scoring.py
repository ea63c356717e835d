"""Metrics by name for an evaluation, and scoring one output or a folder of existing outputs with them."""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from ..imageio import read_image
from ..metrics import Metric, MetricInfo, create, metric_info
from .pairing import ImagePair


def metric_infos(names: list[str], *, per_image_only: bool = False) -> list[MetricInfo]:
    """The metrics named (aliases resolved, repeats dropped); ValueError for an unknown name or, with
    per_image_only, a metric of whole image sets (FID)."""
    infos: list[MetricInfo] = []
    for name in names:
        info = metric_info(name)
        if per_image_only and not info.per_image:
            raise ValueError(f"{name}: compares whole image sets; only per-image metrics apply here")
        if info not in infos:
            infos.append(info)
    if not infos:
        raise ValueError("no metric given")
    return infos


def create_metrics(infos: list[MetricInfo], *, crop_border: int = 0, device: str = "cpu") -> list[Metric]:
    """Each metric built on device; PSNR and SSIM crop crop_border pixels (the SR benchmarks crop the scale)."""
    return [create(info.name, device=device, **({"crop_border": crop_border} if "crop_border" in info.options else {}))
            for info in infos]


def score(metrics: list[Metric], sr: torch.Tensor, hr: torch.Tensor | None) -> dict[str, float]:
    """The per-image values of one output (1x3xHxW) against its reference; set metrics (FID) take the pair in after."""
    values = {metric.name: float(metric(sr, hr)[0]) for metric in metrics if metric.per_image}
    for metric in metrics:
        if not metric.per_image:
            metric.update(sr, hr)
    return values


def score_files(pairs: list[ImagePair], metrics: list[Metric], *,
                on_problem: Callable[[str], None]) -> list[dict]:
    """One row (name, target, reference, values) per pair of existing images that reads and fits; a file that
    does not goes to on_problem as one message naming it, and the others are still scored."""
    rows = []
    for pair in tqdm(pairs, unit="image", desc="metrics", disable=None):
        target, reference = pair.image, pair.reference
        try:
            sr = read_image(target).rgb[None]
            hr = None if reference is None else read_image(reference).rgb[None]
            values = score(metrics, sr, hr)
        except (ValueError, OSError) as error:  # unreadable file, size mismatch, image too small for a metric
            message = str(error)
            on_problem(message if str(target) in message or str(reference) in message else f"{target}: {message}")
            continue
        rows.append({"name": pair.name, "target": str(target),
                     "reference": None if reference is None else str(reference), **values})
    return rows
