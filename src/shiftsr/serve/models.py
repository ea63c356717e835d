"""The models a server offers (presets, bundled models, the --model folder) and its cache: one load per model."""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..bundle import bundled_models, read_settings, resolve_model
from ..methods import METHODS
from ..pipeline import ShiftSRPipeline, load
from ..presets import presets

WARM_UP_SIDE = 8  # LR pixels of the run each model gets when it loads


@dataclass(frozen=True)
class Offer:
    """One entry of the page's model list: what it loads and the defaults it samples with."""

    name: str
    kind: str  # "preset", "model" or "folder"
    source: str  # the name or folder that shiftsr.load takes
    description: str
    scale: int
    sampler: dict

    def as_json(self) -> dict:
        """The entry as /api/models sends it (without the folder path)."""
        return {key: value for key, value in asdict(self).items() if key != "source"}


def offers(model: str) -> tuple[dict[str, Offer], str]:
    """(offers by name, the name of `model`): every preset and bundled model, plus `model` when it is a folder."""
    table = {}
    for preset in presets().values():
        table[preset.name] = offer(preset.name, "preset", preset.name, preset.description, preset.model)
    for name in bundled_models():
        table[name] = offer(name, "model", name, card_title(resolve_model(name)) or "a bundled model", name)
    if model in table:
        return table, model
    folder = resolve_model(model)  # FileNotFoundError naming the presets and bundled models
    name = folder.name if folder.name not in table else str(folder)
    table[name] = offer(name, "folder", str(folder), card_title(folder) or f"the model folder {folder.name}", folder)
    return table, name


def offer(name: str, kind: str, source: str, description: str, model: str | Path) -> Offer:
    """An Offer from the model's settings file alone (no weights read); a preset's sampler applied, no order
    where the method has none."""
    settings = read_settings(resolve_model(model))
    preset = presets().get(source) if kind == "preset" else None
    sampler = asdict(preset.apply(settings.sampler) if preset else settings.sampler)
    if not METHODS[sampler["method"]].uses_order:
        sampler["order"] = None
    return Offer(name=name, kind=kind, source=source, description=description, scale=settings.scale,
                 sampler=sampler)


def card_title(folder: Path) -> str:
    """What the first line of the folder's MODEL_CARD.md says after its colon ("" without a card)."""
    card = folder / "MODEL_CARD.md"
    title = card.read_text(encoding="utf-8").partition("\n")[0] if card.is_file() else ""
    return title.partition(": ")[2].strip()


class ModelCache:
    """Pipelines by offer name, each loaded once per process on first use (a lock keeps two loads apart)."""

    def __init__(self, table: dict[str, Offer], *, device: str, dtype: torch.dtype) -> None:
        self.table = table
        self.device = device
        self.dtype = dtype
        self.loaded: dict[str, ShiftSRPipeline] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> ShiftSRPipeline:
        """The pipeline of an offered model, loaded and run once on a tiny image the first time (so that what a
        first run measures or sets up, such as the network's memory per pixel, is done before any job)."""
        with self.lock:
            if name not in self.loaded:
                pipe = load(self.table[name].source, device=self.device, dtype=self.dtype)
                pipe.run(torch.zeros(3, WARM_UP_SIDE, WARM_UP_SIDE))
                self.loaded[name] = pipe
            return self.loaded[name]
