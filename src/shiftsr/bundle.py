"""A trained model as one folder: network weights (safetensors + config) and the settings that give them meaning."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .denoisers.codecs import FOLDER_CODECS, check_codec_spec
from .denoisers.prediction import PREDICTION_TYPES
from .files import write_atomic
from .methods import METHODS
from .model_files import check_finite, check_part, read_json
from .networks import ShiftNet
from .networks.adm_unet import ADMUNet
from .networks.dossr_ldm import DoSSRControlLDM
from .networks.resshift_unet import ResShiftUNet
from .ops.colour import COLOUR_FIXES
from .preprocess import PREPROCESSORS
from .presets import presets
from .processes import build_process, process_config
from .typed import build_typed

DTYPE_NAMES = ("fp32", "bf16", "fp16")

SETTINGS_FILE = "shiftsr.json"
PREDICTION_PATHS = ("model", "vp")
TIMESTEPS = ("process", "index")
INPUT_SCALES = ("none", "resshift")
CONDITIONS = ("xh", "lr", "encoder")
GRIDS = ("uniform", "official")
CONDITION_FOLDER = "cond_encoder"


class NoNetwork(torch.nn.Module):
    """The stand-in network of a regressor bundle (network "none", process null): no weights, never called."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("a regressor bundle has no diffusion network; its preprocessor's output is the answer")


@dataclass(frozen=True)
class NetworkKind:
    """A network class a bundle may name, whether a network of it sees the LR (from its config), and the family
    it fixes (None: the family of the bundle's process)."""

    cls: type
    conditional: Callable[[dict], bool]
    family: str | None = None


NETWORKS = {
    "none": NetworkKind(NoNetwork, lambda config: True, family="regressor"),
    "ShiftNet": NetworkKind(ShiftNet, lambda config: config.get("cond_channels", 1) > 0),
    "ADMUNet": NetworkKind(ADMUNet, lambda config: False),
    "DoSSRControlLDM": NetworkKind(DoSSRControlLDM, lambda config: True),
    "ResShiftUNet": NetworkKind(ResShiftUNet, lambda config: config.get("lq_channels", 0) > 0),
}


@dataclass
class SamplerDefaults:
    """The sampler a model was tuned for, used when the caller names none."""

    method: str = "dossr"
    steps: int = 5
    order: int = 3
    samples: int = 1


# the largest values a model folder may hold: beyond them a bundle is broken, not ambitious
SETTING_BOUNDS = {"scale": 64, "lr_multiple": 1024, "multiple": 1024, "sampler.steps": 1000, "sampler.order": 3,
                  "sampler.samples": 256}


@dataclass
class BundleSettings:
    """Everything but the weights: process, codec, the network's conventions, preprocessor and default sampler.

    The conventions of foreign networks (k-diffusion's external wrappers in one place): prediction_path "vp"
    converts the prediction on the VP path of the process's betas (DoSSR's official eps); timestep "index" gives the
    network t - 1; input_scale "resshift" multiplies x_t by 1 / sqrt(kappa^2 eta_t + 1); output_channels keeps the
    first channels of the output (the eps half of a learned-variance ADM); clip_denoised clamps x0 to [-1, 1];
    the network sees as its condition xh (the source image in model space), the LR itself in [-1, 1] ("lr",
    ResShift's lq) or the bundle's own encoder of the source image ("encoder", DoSSR's c_latent); grid
    "official" is DoSSR's released time grid; color_fix is applied against the source image; lr_multiple pads the
    LR (reflect, bottom/right) to a multiple before anything, as official samplers do, and multiple pads model
    space for networks that need it; dtypes lists the network precisions that are correct for it.
    """

    network: str
    process: dict | None  # null only for a regressor (network "none"): no diffusion
    scale: int
    prediction_type: str = "residual"
    prediction_path: str = "model"
    timestep: str = "process"
    input_scale: str = "none"
    output_channels: int | None = None
    clip_denoised: bool = False
    preprocessor: str = "bicubic"
    condition: str = "xh"
    codec: dict = field(default_factory=lambda: {"kind": "space_to_depth", "factor": 4})
    grid: str = "uniform"
    color_fix: str = "none"
    lr_multiple: int = 1
    multiple: int = 1
    dtypes: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)

    @classmethod
    def from_dict(cls, data, source: str = SETTINGS_FILE) -> BundleSettings:
        """Rebuild from the JSON form: every key, type and choice checked, errors naming source and key."""
        settings = build_typed(cls, data, source)
        for key, allowed in (("prediction_type", PREDICTION_TYPES), ("prediction_path", PREDICTION_PATHS),
                             ("timestep", TIMESTEPS), ("input_scale", INPUT_SCALES), ("condition", CONDITIONS),
                             ("grid", GRIDS), ("color_fix", COLOUR_FIXES), ("network", tuple(NETWORKS)),
                             ("preprocessor", PREPROCESSORS)):
            if getattr(settings, key) not in allowed:
                raise ValueError(f"{source}: {key}: {getattr(settings, key)!r} is not allowed; allowed: "
                                 f"{', '.join(allowed)}")
        unknown = [d for d in settings.dtypes if d not in DTYPE_NAMES]
        if unknown:
            raise ValueError(f"{source}: dtypes: {unknown[0]!r} is not allowed; allowed: {', '.join(DTYPE_NAMES)}")
        for key in ("scale", "output_channels", "lr_multiple", "multiple"):
            if getattr(settings, key) is not None and getattr(settings, key) < 1:
                raise ValueError(f"{source}: {key}: must be at least 1, got {getattr(settings, key)}")
        for key, bound in SETTING_BOUNDS.items():
            value = getattr(settings.sampler, key[8:]) if key.startswith("sampler.") else getattr(settings, key)
            if not 1 <= value <= bound:
                raise ValueError(f"{source}: {key}: must be 1 to {bound}, got {value}")
        if settings.sampler.method not in METHODS:
            raise ValueError(f"{source}: sampler.method: {settings.sampler.method!r} is not allowed; allowed: "
                             f"{', '.join(METHODS)}")
        check_codec_spec(settings.codec, source)
        if (settings.process is None) != (settings.network == "none"):
            raise ValueError(f"{source}: process: null exactly when network is 'none' (a regressor), got network "
                             f"{settings.network!r} with process {settings.process!r}")
        try:
            rebuild_process(settings)
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"{source}: process: {error}") from None
        return settings


def save_bundle(folder: str | Path, net: torch.nn.Module, settings: BundleSettings, codec=None,
                parts: dict[str, torch.nn.Module] | None = None) -> Path:
    """Write weights (safetensors), network config and settings into folder; an autoencoder and other parts too.

    parts: further ModelMixin components by folder name (a condition encoder, a preprocessor network).
    """
    folder = Path(folder)
    net.save_pretrained(folder, safe_serialization=True)
    if settings.codec["kind"] in FOLDER_CODECS:
        codec.save_pretrained(folder / settings.codec["folder"], safe_serialization=True)
    for name, part in (parts or {}).items():
        part.save_pretrained(folder / name, safe_serialization=True)
    write_atomic(folder / SETTINGS_FILE, json.dumps(asdict(settings), indent=2) + "\n")
    return folder


def read_settings(folder: str | Path) -> BundleSettings:
    """A model folder's checked settings; FileNotFoundError or ValueError naming the file otherwise."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a shiftsr model folder (no {SETTINGS_FILE})")
    return BundleSettings.from_dict(read_json(path), source=str(path))


def load_bundle(folder: str | Path) -> tuple[torch.nn.Module, BundleSettings]:
    """Read a folder written by save_bundle; the network comes back in eval mode on the CPU."""
    settings = read_settings(folder)
    if settings.network == "none":
        return NoNetwork().eval(), settings
    return load_part(NETWORKS[settings.network].cls, Path(folder)), settings


def load_part(cls: type, folder: Path) -> torch.nn.Module:
    """A ModelMixin component from its folder, strictly: a missing, broken or partial weights file, a config that
    does not fit it, weights that are not floating point or not finite are a ValueError naming the file and key."""
    files = check_part(cls, folder)
    try:
        part = cls.from_pretrained(folder, low_cpu_mem_usage=True).eval()
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as error:
        message = " ".join(str(error).split())[:300]
        raise ValueError(f"{folder}: cannot load its {cls.__name__} ({message})") from None
    check_finite(part, files)
    return part


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    root = resources.files("shiftsr") / "weights"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / SETTINGS_FILE).is_file())


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled model's name or a folder path, to the folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) in bundled_models():
        return Path(str(resources.files("shiftsr") / "weights" / str(name_or_path)))
    names = ", ".join([*presets(), *bundled_models()]) or "none"
    raise FileNotFoundError(f"{name_or_path}: no such model folder; presets and bundled models: {names}")


def open_model(name_or_path: str | Path) -> tuple[Path, torch.nn.Module, BundleSettings]:
    """(folder, network, settings) of a preset, a bundled model or a model folder; a preset's sampler applied."""
    preset = presets().get(str(name_or_path))
    folder = resolve_model(preset.model if preset else name_or_path)
    net, settings = load_bundle(folder)
    if preset:
        settings = dataclasses.replace(settings, sampler=preset.apply(settings.sampler))
    return folder, net, settings


def settings_for(net: torch.nn.Module, process, *, scale: int, **kwargs) -> BundleSettings:
    """Settings for a network trained on a process at a scale."""
    return BundleSettings(network=type(net).__name__, process=process_config(process), scale=scale, **kwargs)


def rebuild_process(settings: BundleSettings):
    """The forward process a bundle was trained with; None for a regressor."""
    return None if settings.process is None else build_process(settings.process)
