"""A trained model as one folder: network weights (safetensors + config) and the settings that give them meaning."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .networks import ShiftNet
from .processes import build_process, process_config

SETTINGS_FILE = "shiftsr.json"
NETWORKS = {"ShiftNet": ShiftNet}


@dataclass
class SamplerDefaults:
    """The sampler a model was tuned for, used when the caller names none."""

    method: str = "dossr"
    steps: int = 5
    order: int = 3
    samples: int = 1


@dataclass
class BundleSettings:
    """Everything but the weights: process, codec, prediction type, scale, LR preprocessor and default sampler."""

    network: str
    process: dict
    scale: int
    prediction_type: str = "residual"
    preprocessor: str = "bicubic"
    codec: dict = field(default_factory=lambda: {"kind": "space_to_depth", "factor": 4})
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)

    @classmethod
    def from_dict(cls, data: dict) -> BundleSettings:
        """Rebuild from the JSON form."""
        data = dict(data)
        data["sampler"] = SamplerDefaults(**data.get("sampler", {}))
        return cls(**data)


def save_bundle(folder: str | Path, net: torch.nn.Module, settings: BundleSettings, codec=None) -> Path:
    """Write weights (safetensors), network config and settings into folder; a latent codec's autoencoder too."""
    folder = Path(folder)
    net.save_pretrained(folder, safe_serialization=True)
    if settings.codec["kind"] == "autoencoder_kl":
        codec.vae.save_pretrained(folder / settings.codec["folder"], safe_serialization=True)
    (folder / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n")
    return folder


def load_bundle(folder: str | Path) -> tuple[torch.nn.Module, BundleSettings]:
    """Read a folder written by save_bundle; the network comes back in eval mode on the CPU."""
    folder = Path(folder)
    settings_path = folder / SETTINGS_FILE
    if not settings_path.is_file():
        raise FileNotFoundError(f"{folder}: not a shiftsr model folder (no {SETTINGS_FILE})")
    settings = BundleSettings.from_dict(json.loads(settings_path.read_text()))
    if settings.network not in NETWORKS:
        raise ValueError(f"{folder}: unknown network {settings.network!r}; allowed: {', '.join(NETWORKS)}")
    net = NETWORKS[settings.network].from_pretrained(folder)
    return net.eval(), settings


def settings_for(net: torch.nn.Module, process, *, scale: int, **kwargs) -> BundleSettings:
    """Settings for a network trained on a process at a scale."""
    return BundleSettings(network=type(net).__name__, process=process_config(process), scale=scale, **kwargs)


def rebuild_process(settings: BundleSettings):
    """The forward process a bundle was trained with."""
    return build_process(settings.process)
