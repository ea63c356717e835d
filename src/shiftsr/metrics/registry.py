"""Metrics by name: create("psnr", crop_border=4), create("stlpips", device="cuda"), create("fid")."""

from __future__ import annotations

from functools import partial
from typing import Callable

from . import fid, niqe, stlpips
from .base import Metric, MetricInfo
from .fidelity import PSNR_INFO, SSIM_INFO, LumaMetric, psnr_y, ssim_y

_METRICS: dict[str, tuple[MetricInfo, Callable[..., Metric]]] = {}
_ALIASES: dict[str, str] = {}


def register(info: MetricInfo, factory: Callable[..., Metric], *, aliases: tuple[str, ...] = ()) -> None:
    """Make a metric available to create() under info.name and its aliases; factory(device=..., **options)."""
    taken = [name for name in (info.name, *aliases) if name in _METRICS or name in _ALIASES]
    if taken:
        raise ValueError(f"metric name {taken[0]!r} is already registered")
    _METRICS[info.name] = (info, factory)
    _ALIASES.update({alias: info.name for alias in aliases})


def available() -> list[str]:
    """The registered metric names (without aliases), in registration order."""
    return list(_METRICS)


def aliases() -> dict[str, str]:
    """Alias -> metric name, e.g. stlpips -> stlpips-alex."""
    return dict(_ALIASES)


def metric_info(name: str) -> MetricInfo:
    """The metadata of a metric by name or alias (case-insensitive), without building it."""
    return _METRICS[_resolve(name)][0]


def create(name: str, *, device: str = "cpu", **options) -> Metric:
    """Build a metric by name or alias with its options (psnr and ssim take crop_border, default 0)."""
    info, factory = _METRICS[_resolve(name)]
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        allowed = ", ".join(info.options) or "none"
        raise TypeError(f"metric {info.name!r} has no option {unknown[0]!r}; its options: {allowed}")
    return factory(device=device, **options)


def _resolve(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _METRICS:
        names = ", ".join([*_METRICS, *_ALIASES])
        raise ValueError(f"unknown metric {name!r}; available: {names}")
    return key


register(PSNR_INFO, partial(LumaMetric, PSNR_INFO, psnr_y))
register(SSIM_INFO, partial(LumaMetric, SSIM_INFO, ssim_y))
register(stlpips.INFOS["alex"], partial(stlpips.STLPIPSMetric, "alex"), aliases=("stlpips",))
register(stlpips.INFOS["vgg"], partial(stlpips.STLPIPSMetric, "vgg"))
register(fid.INFO, fid.FID)
register(niqe.INFO, niqe.NIQE)
