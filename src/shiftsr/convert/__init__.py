"""Official checkpoints (ResShift, SinSR, DoSSR, guided-diffusion ADM) converted into shiftsr bundles.

One row per architecture name: the module whose `to_bundle(arch, checkpoint, autoencoder=None, **flags)` reads
the official files (strictly, with `torch.load(weights_only=True)`) and returns a `Converted` bundle.
"""
from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when a conversion runs (`shiftsr convert --help` stays instant)
    import torch

ARCHS = {
    "resshift-v1": "resshift", "resshift-v2": "resshift", "resshift-v3": "resshift", "resshift-bicsr": "resshift",
    "sinsr": "resshift", "dossr": "dossr", "adm": "adm",
}
CARD_FILE = "MODEL_CARD.md"


@dataclass
class Converted:
    """A converted model: the denoiser network, its settings, the model card, a codec and other parts by folder."""

    net: torch.nn.Module
    settings: object  # shiftsr.bundle.BundleSettings
    card: str
    codec: torch.nn.Module | None = None
    parts: dict[str, torch.nn.Module] = field(default_factory=dict)


def convert(arch: str, checkpoint: str | Path, autoencoder: str | Path | None = None, **flags) -> Converted:
    """The bundle of an official checkpoint of architecture `arch` (a key of ARCHS)."""
    if arch not in ARCHS:
        raise ValueError(f"arch: unknown {arch!r}; allowed: {', '.join(ARCHS)}")
    module = importlib.import_module(f"{__name__}.{ARCHS[arch]}")
    converted = module.to_bundle(arch, Path(checkpoint), None if autoencoder is None else Path(autoencoder), **flags)
    check_weights(converted, Path(checkpoint), autoencoder)
    return converted


def check_weights(converted: Converted, checkpoint: Path, autoencoder: str | Path | None) -> None:
    """A CheckpointError naming the file unless every converted weight is finite (NaN in, NaN images out)."""
    import torch

    from ..model_files import check_finite
    from .checkpoint import CheckpointError

    codec_file = checkpoint if autoencoder is None else Path(autoencoder)
    for module, source in [(converted.net, checkpoint), (converted.codec, codec_file),
                           *((part, checkpoint) for part in converted.parts.values())]:
        if isinstance(module, torch.nn.Module):
            try:
                check_finite(module, source)
            except ValueError as error:
                raise CheckpointError(str(error)) from None


def write_converted(converted: Converted, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write the bundle into folder: completely beside it first, then renamed into place (nothing half-written)."""
    from ..bundle import save_bundle
    from ..files import write_atomic

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder}: already exists (pass --overwrite to replace it)")
    staging = folder.with_name(f".{folder.name}.converting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        save_bundle(staging, converted.net, converted.settings, converted.codec, parts=converted.parts)
        write_atomic(staging / CARD_FILE, converted.card)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
