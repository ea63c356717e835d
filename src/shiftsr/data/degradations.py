"""Synthetic LR images: the Real-ESRGAN second-order degradation (Wang et al. 2021, Sec. 3) and bicubic."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from kornia.color import rgb_to_grayscale

from ..ops.imresize import bicubic_degrade
from .kernels import (
    KernelConfig,
    bernoulli,
    blur,
    check_prob,
    check_probs,
    check_range,
    choose,
    random_kernel,
    random_sinc_kernel,
    uniform,
)

PRESETS = ("bicubic", "realesrgan", "resshift-test")
_PRESET_FILES = {"realesrgan": "realesrgan.yaml", "resshift-test": "resshift_test.yaml"}
RESIZE_MODES = ("area", "bilinear", "bicubic")
_RESIZE_TO = ("input", "output")
_ALL_SIZES = (7, 9, 11, 13, 15, 17, 19, 21)
_NOUNS = {float: "number", int: "integer", str: "string"}  # the YAML value types of the config fields


def _check_modes(name: str, modes: tuple[str, ...]) -> None:
    if not modes or set(modes) - set(RESIZE_MODES):
        raise ValueError(f"{name} must be a non-empty list of {', '.join(RESIZE_MODES)}, got {list(modes)}")


def _check_quality(name: str, quality: tuple[int, int] | None) -> None:
    if quality is not None:
        check_range(name, quality, low=1)
        if quality[1] > 100:
            raise ValueError(f"{name} must lie in [1, 100], got {list(quality)}")


@dataclass(frozen=True)
class StageConfig:
    """One degradation order: blur, random resize, Gaussian or Poisson noise, then JPEG (when jpeg_quality is set)."""

    blur_prob: float = 1.0
    kernel: KernelConfig = KernelConfig()
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)  # up draws from [1, high], down from [low, 1]
    resize_modes: tuple[str, ...] = RESIZE_MODES  # drawn uniformly
    resize_to: str = "input"  # the factor scales the current image ("input") or the final LR size ("output")
    gaussian_noise_prob: float = 0.5  # else Poisson noise
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)  # in 8-bit levels
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4  # the same noise in the three channels
    jpeg_quality: tuple[int, int] | None = (30, 95)  # integer quality drawn uniformly; null: no JPEG

    def __post_init__(self) -> None:
        check_prob("blur_prob", self.blur_prob)
        check_probs("resize_probs", self.resize_probs, 3)
        lo, hi = self.resize_range
        if not 0 < lo <= 1 <= hi:
            raise ValueError(f"resize_range must be [low, high] with 0 < low <= 1 <= high, got {[lo, hi]}")
        _check_modes("resize_modes", self.resize_modes)
        if self.resize_to not in _RESIZE_TO:
            raise ValueError(f"resize_to must be one of {', '.join(_RESIZE_TO)}, got {self.resize_to!r}")
        check_prob("gaussian_noise_prob", self.gaussian_noise_prob)
        check_range("gaussian_sigma", self.gaussian_sigma, low=0)
        check_range("poisson_scale", self.poisson_scale, low=0)
        check_prob("gray_noise_prob", self.gray_noise_prob)
        _check_quality("jpeg_quality", self.jpeg_quality)


@dataclass(frozen=True)
class FinalConfig:
    """The last step: [resize to H/scale x W/scale + sinc filter] and JPEG, in random order."""

    resize_modes: tuple[str, ...] = RESIZE_MODES
    resize_first_prob: float = 0.5  # resize + sinc, then JPEG; else JPEG, then resize + sinc
    sinc_prob: float = 0.8
    sinc_sizes: tuple[int, ...] = _ALL_SIZES
    sinc_cutoff_pi: tuple[float, float] = (1 / 3, 1.0)
    jpeg_quality: tuple[int, int] | None = (30, 95)

    def __post_init__(self) -> None:
        _check_modes("resize_modes", self.resize_modes)
        check_prob("resize_first_prob", self.resize_first_prob)
        check_prob("sinc_prob", self.sinc_prob)
        if not self.sinc_sizes or any(n < 1 or n % 2 == 0 for n in self.sinc_sizes):
            raise ValueError(f"sinc_sizes must be odd positive ints, got {list(self.sinc_sizes)}")
        check_range("sinc_cutoff_pi", self.sinc_cutoff_pi, low=0, open_low=True)
        _check_quality("jpeg_quality", self.jpeg_quality)


_SECOND_STAGE = StageConfig(
    blur_prob=0.8,
    kernel=KernelConfig(sigma=(0.2, 1.5)),
    resize_probs=(0.3, 0.4, 0.3),
    resize_range=(0.3, 1.2),
    resize_to="output",
    gaussian_sigma=(1.0, 25.0),
    poisson_scale=(0.05, 2.5),
    jpeg_quality=None,  # the second order's JPEG is the final one
)


@dataclass(frozen=True)
class DegradationConfig:
    """Every range and probability of the pipeline; the defaults are Real-ESRGAN's published options."""

    stage1: StageConfig = StageConfig()
    second_order_prob: float = 1.0
    stage2: StageConfig | None = _SECOND_STAGE
    final: FinalConfig = FinalConfig()

    def __post_init__(self) -> None:
        check_prob("second_order_prob", self.second_order_prob)
        if self.stage2 is None and self.second_order_prob > 0:
            raise ValueError("second_order_prob must be 0 when stage2 is null")


@dataclass(frozen=True)
class BicubicConfig:
    """The SR benchmark convention: MATLAB bicubic imresize by 1/scale, rounded to 8 bits; nothing random."""


def load_config(path: str | Path) -> DegradationConfig:
    """A DegradationConfig from YAML; keys left out keep the Real-ESRGAN defaults, unknown keys are refused."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read ({error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    try:
        return _build(DegradationConfig, DegradationConfig(), data, "")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def load_preset(name_or_path: str | Path) -> DegradationConfig | BicubicConfig:
    """The config of a preset named in PRESETS, or of a YAML file."""
    if name_or_path == "bicubic":
        return BicubicConfig()
    if name_or_path in _PRESET_FILES:
        with resources.as_file(resources.files(__package__) / "presets" / _PRESET_FILES[name_or_path]) as path:
            return load_config(path)
    path = Path(name_or_path)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return load_config(path)
    raise ValueError(
        f"unknown degradation preset {str(name_or_path)!r}; use one of {', '.join(PRESETS)} or a YAML file"
    )


def _build(cls: type, base: object, data: dict, prefix: str) -> object:
    """replace(base, **data) after checking every key of data against the fields and types of cls."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    changes = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ValueError(f"unknown key '{where}'; allowed here: {', '.join(names)}")
        changes[key] = _convert(value, hints[key], getattr(base, key), where)
    try:
        return replace(base, **changes)
    except ValueError as error:
        raise ValueError(f"in '{prefix[:-1]}': {error}" if prefix else str(error)) from None


def _convert(value: object, tp: object, base: object, where: str) -> object:
    """value checked against the annotation tp (numbers, strings, tuples, dataclasses, optional) and converted."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, base, where)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"key '{where}' must be a mapping, got {_shown(value)}")
        return _build(tp, tp() if base is None else base, value, f"{where}.")
    if origin is tuple:
        variable = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, list) or (not variable and len(value) != len(args)):
            count = "" if variable else f"{len(args)} "
            raise ValueError(f"key '{where}' must be a list of {count}{_NOUNS[args[0]]}s, got {_shown(value)}")
        items = args[:1] * len(value) if variable else args
        return tuple(_convert(v, a, None, where) for v, a in zip(value, items))
    ok = {float: isinstance(value, (int, float)), int: isinstance(value, int), str: isinstance(value, str)}[tp]
    if not ok or isinstance(value, bool) or (tp is float and not math.isfinite(value)):
        article = "an" if tp is int else "a"
        raise ValueError(f"key '{where}' must be {article} {_NOUNS[tp]}, got {_shown(value)}")
    return tp(value)


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def seeded_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from non-negative ints through numpy's SeedSequence: (seed, i) give unrelated streams."""
    state = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device).manual_seed(int(state))


def quantize(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the nearest of the 256 levels k / 255 and clamped to [0, 1]."""
    return (x * 255).round().clamp(0, 255) / 255


def add_gaussian_noise(
    x: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """x + N(0, (sigma / 255)^2) per image, one noise plane for all channels where gray; clipped to [0, 1]."""
    b, c, h, w = x.shape
    color = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    plane = torch.randn((b, 1, h, w), generator=generator, device=generator.device, dtype=x.dtype)
    noise = torch.where(gray.view(b, 1, 1, 1).to(generator.device), plane, color).to(x.device)
    return (x + noise * sigma.to(x).view(b, 1, 1, 1) / 255).clamp(0, 1)


def _poisson_noise(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Poisson(v x) / v - x of the 8-bit rounded image x, v its count of distinct levels rounded up to 2^n."""
    rounded = quantize(image)
    distinct = int(torch.bincount((rounded * 255).round().long().flatten(), minlength=256).count_nonzero())
    levels = 2.0 ** math.ceil(math.log2(distinct))
    counts = torch.poisson((rounded * levels).to(generator.device), generator=generator).to(image.device)
    return counts / levels - rounded


def add_poisson_noise(
    x: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """x + scale * Poisson noise per image (Real-ESRGAN Sec. 3.1), of the luma where gray; clipped to [0, 1]."""
    noise = torch.stack([
        _poisson_noise(rgb_to_grayscale(image) if is_gray else image, generator).expand_as(image)
        for image, is_gray in zip(x, gray.tolist(), strict=True)
    ])
    return (x + noise * scale.to(x).view(-1, 1, 1, 1)).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: list[int]) -> torch.Tensor:
    """Each image of x (B,3,H,W) in [0, 1] through OpenCV's JPEG encoder at its quality and back (8-bit levels)."""
    import cv2

    levels = quantize(x.detach()).mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for rgb, q in zip(levels, quality, strict=True):
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode an image of size {rgb.shape[:2]}")
        decoded.append(torch.from_numpy(np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])))
    return torch.stack(decoded).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255


def _interpolate(x: torch.Tensor, mode: str, **size: object) -> torch.Tensor:
    aligned = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, mode=mode, **size, **aligned)


def _random_resize(x: torch.Tensor, stage: StageConfig, target: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Resize by a factor drawn up, down or keep (Real-ESRGAN Sec. 3.1) with a random interpolation mode."""
    direction = choose(g, stage.resize_probs)
    factor = [uniform(g, 1.0, stage.resize_range[1]), uniform(g, stage.resize_range[0], 1.0), 1.0][direction]
    mode = stage.resize_modes[choose(g, (1.0,) * len(stage.resize_modes))]
    if stage.resize_to == "output":
        size = (max(1, int(target[0] * factor)), max(1, int(target[1] * factor)))
        return x if size == tuple(x.shape[-2:]) else _interpolate(x, mode, size=size)
    if min(x.shape[-2:]) * factor < 1:
        return _interpolate(x, mode, size=(max(1, int(x.shape[-2] * factor)), max(1, int(x.shape[-1] * factor))))
    return x if factor == 1 else _interpolate(x, mode, scale_factor=factor)


def _random_noise(x: torch.Tensor, stage: StageConfig, g: torch.Generator) -> torch.Tensor:
    """Gaussian noise with gaussian_noise_prob, else Poisson noise; gray with gray_noise_prob."""
    gaussian = bernoulli(g, stage.gaussian_noise_prob)
    bounds = stage.gaussian_sigma if gaussian else stage.poisson_scale
    strength = torch.tensor([uniform(g, *bounds)])
    gray = torch.tensor([bernoulli(g, stage.gray_noise_prob)])
    return (add_gaussian_noise if gaussian else add_poisson_noise)(x, strength, gray, g)


def _random_jpeg(x: torch.Tensor, quality: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    q = int(torch.randint(quality[0], quality[1] + 1, (), generator=g, device=g.device))
    return jpeg(x, [q])


def _stage(x: torch.Tensor, stage: StageConfig, target: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """One order of Real-ESRGAN's degradation (Sec. 3.2): blur, resize, noise, JPEG."""
    if bernoulli(g, stage.blur_prob):
        x = blur(x, random_kernel(stage.kernel, g))
    x = _random_noise(_random_resize(x, stage, target, g), stage, g)
    return x if stage.jpeg_quality is None else _random_jpeg(x, stage.jpeg_quality, g)


def _final(x: torch.Tensor, final: FinalConfig, target: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Resize to the LR size plus sinc filter, and JPEG, in random order (Real-ESRGAN Sec. 3.3)."""
    resize_first = bernoulli(g, final.resize_first_prob)
    mode = final.resize_modes[choose(g, (1.0,) * len(final.resize_modes))]
    sinc = random_sinc_kernel(g, final.sinc_sizes, final.sinc_cutoff_pi) if bernoulli(g, final.sinc_prob) else None

    def resize_and_filter(y: torch.Tensor) -> torch.Tensor:
        if tuple(y.shape[-2:]) != target:
            y = _interpolate(y, mode, size=target)
        return y if sinc is None else blur(y, sinc)

    def compress(y: torch.Tensor) -> torch.Tensor:
        return y if final.jpeg_quality is None else _random_jpeg(y, final.jpeg_quality, g)

    return compress(resize_and_filter(x)) if resize_first else resize_and_filter(compress(x))


def degrade(
    hr: torch.Tensor, config: DegradationConfig | BicubicConfig, scale: int, generator: torch.Generator
) -> torch.Tensor:
    """LR (B,3,H/scale,W/scale) in 8-bit levels from HR (B,3,H,W) in [0, 1]; each image draws its own degradation."""
    # Images are degraded one after the other with the same generator, so a batch gives the same result as
    # its images passed one at a time in order, and every image has its own resize factor and mode (which
    # Real-ESRGAN shares across a batch). Random numbers come from the generator on its own device.
    if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
        raise ValueError(f"hr must be a float tensor of shape (B, 3, H, W), got {hr.dtype} {tuple(hr.shape)}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of the scale {scale}; crop it first (modcrop)")
    if isinstance(config, BicubicConfig):
        return quantize(bicubic_degrade(hr, scale))
    target = (h // scale, w // scale)
    out = []
    for image in hr.split(1):
        x = _stage(image, config.stage1, target, generator)
        if config.stage2 is not None and bernoulli(generator, config.second_order_prob):
            x = _stage(x, config.stage2, target, generator)
        out.append(quantize(_final(x, config.final, target, generator)))
    return torch.cat(out)
