"""The one evaluation engine: `shiftsr eval`, `shiftsr metrics`, scripts/ and the tables in docs/ go through it.

pairing (HR/LR files by stem), upscalers (baselines and model settings from specs), loop (upscalers x images ->
per-image values, NFE, seconds; table rows), scoring (metrics by name), stats (mean, standard error, paired
differences, Spearman), cache (rows tied to a model's fingerprint), report and crops (table, plot, crop sheets).
"""
from __future__ import annotations

from .cache import ResultCache
from .crops import CropSheets, crop_box, crop_sheet_png
from .loop import evaluate, load_image, summarise
from .pairing import PAIR_LABELS, ImagePair, benchmark_folder, benchmark_pairs, pair_images
from .report import format_value, json_text, markdown_table, quality_vs_nfe_png
from .scoring import create_metrics, metric_infos, score, score_files
from .stats import Difference, mean, paired_difference, ranks, spearman, standard_error
from .upscalers import (BASELINES, MethodSpec, Upscaler, bicubic_upscaler, build_upscalers, model_upscaler,
                        parse_method, realesrgan_upscaler, sampler_sweep)

__all__ = [
    "BASELINES", "PAIR_LABELS", "CropSheets", "Difference", "ImagePair", "MethodSpec", "ResultCache", "Upscaler",
    "benchmark_folder", "benchmark_pairs", "bicubic_upscaler", "build_upscalers", "create_metrics", "crop_box",
    "crop_sheet_png", "evaluate", "format_value", "json_text", "load_image", "markdown_table", "mean",
    "metric_infos", "model_upscaler", "pair_images", "paired_difference", "parse_method", "quality_vs_nfe_png",
    "ranks", "realesrgan_upscaler", "sampler_sweep", "score", "score_files", "spearman", "standard_error",
    "summarise",
]
