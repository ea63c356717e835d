"""The training recipe as a dataclass that round-trips through JSON."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    """One training run: data, model kind, network size, process, optimisation, checkpoints.

    model: "dossr" (domain-shift process, DoSSR Eq. 8), "prior" (unconditional VP diffusion on HR images) or
    "resshift" (ResShift Eq. 2, from scratch). prediction: "residual" (x0 - xh) or "sample" (x0).
    init_from: a prior's model folder to fine-tune; it needs cond_mode "branch".
    """

    data: list[str] = field(default_factory=lambda: ["../shared/data/train"])
    output: str = "runs/default"
    model: str = "dossr"
    prediction: str = "residual"
    cond_mode: str = "concat"
    init_from: str = ""
    scale: int = 4
    patch: int = 128
    batch: int = 16
    iterations: int = 20000
    lr: float = 5e-4
    lr_min: float = 1e-5
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_beta: float = 0.999
    channels: int = 64
    num_blocks: int = 10
    t1: float = 500.0
    beta_schedule: str = "scaled_linear"
    resshift_steps: int = 15
    kappa: float = 2.0
    power: float = 0.3
    checkpoint_every: int = 1000
    default_samples: int = 8
    seed: int = 0

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read from JSON, rejecting unknown keys by name."""
        data = json.loads(Path(path).read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown training options {sorted(unknown)}")
        return cls(**data)
