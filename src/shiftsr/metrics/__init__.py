"""Image-quality metrics: PSNR and SSIM on luma (MATLAB conventions), ST-LPIPS, and FID as an optional extra."""

from __future__ import annotations

from .base import DistributionMetric, Metric, MetricInfo, PairMetric
from .fid import frechet_distance
from .fidelity import psnr_y, rgb_to_y, ssim_y
from .registry import aliases, available, create, metric_info, register
from .stlpips import STLPIPS

__all__ = [
    "STLPIPS", "DistributionMetric", "Metric", "MetricInfo", "PairMetric", "aliases", "available", "create",
    "frechet_distance", "metric_info", "psnr_y", "register", "rgb_to_y", "ssim_y",
]
