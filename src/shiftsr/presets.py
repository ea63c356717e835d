"""Named presets: a bundled model plus the sampler settings that serve one goal (fidelity, detail, real photos)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources

PRESETS_FILE = "presets.json"


@dataclass(frozen=True)
class Preset:
    """A bundled model and the sampler settings it runs with under this name."""

    name: str
    model: str
    description: str
    sampler: dict = field(default_factory=dict)

    def apply(self, defaults):
        """The model's SamplerDefaults with this preset's settings on top."""
        return replace(defaults, **self.sampler)


def presets() -> dict[str, Preset]:
    """The presets shipped in the package (shiftsr/weights/presets.json), by name."""
    path = resources.files("shiftsr") / "weights" / PRESETS_FILE
    if not path.is_file():
        return {}
    return {name: Preset(name=name, **spec) for name, spec in json.loads(path.read_text()).items()}
