"""The training recipe: typed sections read from YAML (or JSON) and checked before anything starts."""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ..networks.shiftnet import COND_MODES
from ..processes.vp import BETA_SCHEDULES
from ..typed import build_typed
from .files import write_text_atomic

MODEL_KINDS = ("dossr", "prior", "resshift", "vp", "autoencoder")
PREDICTIONS = ("residual", "sample")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
PREPROCESSORS = ("bicubic", "realesrgan_x4plus")
STLPIPS_NETS = ("alex", "vgg")
KEEP_BEST = ("", "val_psnr_y", "val_stlpips")  # lower is better for val_stlpips


class ConfigError(ValueError):
    """A recipe that cannot run; the message names the file, the key and what is wrong."""


@dataclass
class DataConfig:
    """Training images, crops and batch (per process); val_images of them are held out for validation.

    pool: a file of degraded and preprocessed pairs (python -m shiftsr.data.pool) to train on instead of fresh
    bicubic pairs, for preprocessors too slow to run at every step; a glob (runs/pool_*.safetensors) joins the
    parts of a pool made in several runs. val_patch: the side of the held-out center crops; 0 validates on the
    whole held-out images (each cropped to a multiple of the scale), as a photo is upscaled. val_degradation: how
    the held-out LR is made, once, at seed 0: "bicubic" (the benchmark LR) or a degradation preset (realesrgan,
    resshift-test or a YAML file); several, comma-separated, validate on every image under each.
    """

    folders: list[str] = field(default_factory=lambda: ["../shared/data/train"])
    scale: int = 4
    patch: int = 128
    batch: int = 16
    val_images: int = 4
    val_patch: int = 128
    pool: str = ""
    val_degradation: str = "bicubic"

    @property
    def val_degradations(self) -> list[str]:
        """The names in val_degradation, in order."""
        return [name.strip() for name in self.val_degradation.split(",")]


@dataclass
class ModelConfig:
    """What is trained: kind, network parametrisation and size, and the sampler default it ships with.

    kind: "dossr" (domain-shift process, DoSSR Eq. 8), "prior" (unconditional VP diffusion on HR images),
    "resshift" (ResShift Eq. 2, from scratch), "vp" (SR3-style VP diffusion conditioned on the LR, sampled
    from pure noise: the baseline DoSSR compares with) or "autoencoder" (a diffusers AutoencoderKL whose
    down-sampling factor is data.scale, latent_channels deep, for the kinds above to work in). prediction:
    "residual" (x0 - xh) or "sample" (x0).
    init_from: a model folder to start from: a prior (into cond_mode "branch") or a model of the same network.
    identity_init: zero the output convolution after init_from (a fresh network has it zeroed already), so that
    the residual prediction is 0 and the untrained model returns its source image exactly: training can then only
    be judged by what it adds (ControlNet's zero convolutions, Zhang et al. 2023).
    preprocessor: how the LR reaches the model's scale (DoSSR's source image); "realesrgan_x4plus" needs data.pool.
    codec: an autoencoder's model folder (a run of kind "autoencoder") to train in its latent space; empty: pixels,
    pixel-unshuffled by data.scale. channels and num_blocks size the autoencoder too (its widest level is twice
    channels; num_blocks residual blocks per level).
    """

    kind: str = "dossr"
    prediction: str = "residual"
    cond_mode: str = "concat"
    init_from: str = ""
    identity_init: bool = False
    preprocessor: str = "bicubic"
    codec: str = ""
    channels: int = 64
    num_blocks: int = 10
    latent_channels: int = 4
    default_samples: int = 2  # one antithetic pair (pipeline.sample_draws): above 8 independent samples in PSNR


@dataclass
class ProcessConfig:
    """The forward process: DoSSR's t1 and beta schedule (also the prior's), ResShift's steps, kappa and power."""

    t1: float = 500.0
    beta_schedule: str = "scaled_linear"
    resshift_steps: int = 15
    kappa: float = 2.0
    power: float = 0.3


@dataclass
class OptimConfig:
    """AdamW with warm-up and cosine decay; one iteration is one optimizer step over grad_accum batches per process.

    stlpips_weight > 0 adds that times ST-LPIPS (stlpips_net trunk) of the x0 prediction to the MSE loss.
    kl_weight: the weight of the KL term of an autoencoder's loss (LDM's 1e-6 by default).
    """

    grad_accum: int = 1
    iterations: int = 20000
    lr: float = 5e-4
    lr_min: float = 1e-5
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_beta: float = 0.999
    ema_start: int = 100
    mixed_precision: str = "no"
    stlpips_weight: float = 0.0
    stlpips_net: str = "vgg"
    kl_weight: float = 1e-6


@dataclass
class RunConfig:
    """Where the run writes, its seed, and how often it checkpoints, validates (0: only at the end) and logs.

    keep_best: a validation value (val_psnr_y, higher is better, or val_stlpips, lower) whose best EMA model is kept
    in OUTPUT/best with its values in best/validation.json; the model before the first step is a candidate too.
    """

    output: str = "runs/default"
    seed: int = 0
    checkpoint_every: int = 1000
    validate_every: int = 1000
    log_every: int = 50
    keep_best: str = ""


SECTIONS = {"data": DataConfig, "model": ModelConfig, "process": ProcessConfig, "optim": OptimConfig,
            "run": RunConfig}
CHOICES = {("model", "kind"): MODEL_KINDS, ("model", "prediction"): PREDICTIONS, ("model", "cond_mode"): COND_MODES,
           ("process", "beta_schedule"): BETA_SCHEDULES, ("optim", "mixed_precision"): MIXED_PRECISIONS,
           ("model", "preprocessor"): PREPROCESSORS, ("optim", "stlpips_net"): STLPIPS_NETS,
           ("run", "keep_best"): KEEP_BEST}
MINIMUMS = {("data", "scale"): 1, ("data", "patch"): 1, ("data", "batch"): 1, ("data", "val_images"): 0,
            ("data", "val_patch"): 0, ("model", "channels"): 1, ("model", "num_blocks"): 1,
            ("model", "default_samples"): 1, ("model", "latent_channels"): 1, ("process", "resshift_steps"): 1,
            ("optim", "grad_accum"): 1, ("optim", "iterations"): 0, ("optim", "warmup"): 0, ("optim", "lr_min"): 0,
            ("optim", "weight_decay"): 0, ("optim", "stlpips_weight"): 0, ("optim", "kl_weight"): 0,
            ("optim", "ema_start"): 0, ("run", "seed"): 0, ("run", "checkpoint_every"): 1,
            ("run", "validate_every"): 0, ("run", "log_every"): 1}
# sizes beyond these do not fit any machine (a typo such as channels: 1000000 would allocate terabytes)
MAXIMUMS = {("data", "scale"): 16, ("data", "patch"): 4096, ("data", "batch"): 4096, ("data", "val_patch"): 4096,
            ("data", "val_images"): 100_000, ("model", "channels"): 1024, ("model", "num_blocks"): 256,
            ("model", "latent_channels"): 256, ("model", "default_samples"): 256, ("process", "resshift_steps"): 1000,
            ("optim", "grad_accum"): 4096, ("optim", "iterations"): 10**9, ("optim", "warmup"): 10**9,
            ("optim", "ema_start"): 10**9, ("run", "seed"): 2**63 - 1, ("run", "checkpoint_every"): 10**9,
            ("run", "validate_every"): 10**9, ("run", "log_every"): 10**9}
POSITIVES = (("process", "t1"), ("process", "kappa"), ("process", "power"), ("optim", "lr"), ("optim", "grad_clip"))
# the flat layout of recipes before sections: these keys were renamed, every other key lives in exactly one section
FLAT_KEYS = {"data": ("data", "folders"), "model": ("model", "kind")}


def load_config(path: str | Path) -> TrainConfig:
    """Read a .yaml/.yml or .json training recipe, or a run's train_config file (TrainConfig.load)."""
    return TrainConfig.load(path)


@dataclass
class TrainConfig:
    """One training run, in sections: data, model, process, optim, run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a .yaml/.yml or .json recipe; any problem is a ConfigError naming the file."""
        path = Path(path)
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            raise ConfigError(f"{path}: a training recipe must be .yaml, .yml or .json")
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the recipe ({error.strerror or error})") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not a text file ({error.reason} at byte {error.start})") from None
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=RecipeLoader)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {' '.join(str(error).split())}") from None
        return cls.from_dict({} if data is None else data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "recipe") -> TrainConfig:
        """Build from {section: {key: value}} (or the old flat layout), checking keys, types, choices and ranges."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {data!r}")
        if _is_flat(data):
            data = _nest_flat(data, source)
        sections = {}
        for name, values in data.items():
            if name not in SECTIONS:
                raise ConfigError(f"{source}: unknown section {name!r}; allowed: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {name!r} must be a mapping of keys, got {values!r}")
            sections[name] = _build_section(name, values, source)
        config = cls(**sections)
        config.check(source)
        return config

    def to_dict(self) -> dict:
        """{section: {key: value}}, the form load and from_dict read."""
        return asdict(self)

    def updated(self, changes: dict) -> TrainConfig:
        """A copy with {section: {key: value}} changes applied and checked."""
        data = self.to_dict()
        for section, values in changes.items():
            data.setdefault(section, {}).update(values)
        return TrainConfig.from_dict(data, source="updated recipe")

    def save(self, path: str | Path) -> None:
        """Write as YAML (atomically)."""
        write_text_atomic(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    def check(self, source: str = "recipe") -> None:
        """Raise a ConfigError for a value outside its choices or range, or settings that contradict each other."""
        def value(section: str, key: str) -> Any:
            return getattr(getattr(self, section), key)

        def refuse(key: str, problem: str) -> None:
            raise ConfigError(f"{source}: {key}: {problem}")

        for (section, key), allowed in CHOICES.items():
            if value(section, key) not in allowed:
                refuse(f"{section}.{key}", f"{value(section, key)!r} is not allowed; allowed: {', '.join(allowed)}")
        for (section, key), low in MINIMUMS.items():
            if value(section, key) < low:
                refuse(f"{section}.{key}", f"must be at least {low}, got {value(section, key)!r}")
        for (section, key), high in MAXIMUMS.items():
            if value(section, key) > high:
                refuse(f"{section}.{key}", f"must be at most {high}, got {value(section, key)!r}")
        for section in SECTIONS:
            for key, number in asdict(getattr(self, section)).items():
                if isinstance(number, float) and not math.isfinite(number):
                    refuse(f"{section}.{key}", f"must be a finite number, got {number!r}")
        for section, key in POSITIVES:
            if not value(section, key) > 0:
                refuse(f"{section}.{key}", f"must be positive, got {value(section, key)!r}")
        d, m, o = self.data, self.model, self.optim
        rules = (
            (bool(d.folders), "data.folders", "name at least one folder of training images"),
            (d.patch % d.scale == 0, "data.patch", f"{d.patch} must be a multiple of data.scale ({d.scale})"),
            (d.val_patch % d.scale == 0, "data.val_patch", f"{d.val_patch} must be a multiple of data.scale "
                                                           f"({d.scale})"),
            (d.val_patch <= d.patch, "data.val_patch", f"{d.val_patch} must not exceed data.patch ({d.patch})"),
            (o.lr_min <= o.lr, "optim.lr_min", f"{o.lr_min} must not exceed optim.lr ({o.lr})"),
            (0 <= o.ema_beta < 1, "optim.ema_beta", f"must be in [0, 1), got {o.ema_beta}"),
            (m.preprocessor == "bicubic" or bool(d.pool), "model.preprocessor", f"{m.preprocessor!r} trains from "
                                                                                  "a pair pool: set data.pool"),
            (not m.init_from or m.kind not in ("prior", "autoencoder"), "model.init_from",
             f"a model of kind {m.kind} is trained from scratch"),
            (not m.codec or m.kind != "autoencoder", "model.codec", "an autoencoder is a codec; it has none"),
            (not m.identity_init or (m.kind == "dossr" and m.prediction == "residual"), "model.identity_init",
             "starts a residual-predicting dossr model at its source image; set model.prediction residual"),
            (not self.run.keep_best or d.val_images > 0, "run.keep_best", "validates on held-out images: set "
                                                                          "data.val_images"),
            (all(name == "bicubic" or known_degradation(name) for name in d.val_degradations),
             "data.val_degradation", f"{d.val_degradation!r}: each name is bicubic, a degradation preset or a YAML "
                                     "file"),
            (m.kind != "autoencoder" or (d.scale & (d.scale - 1) == 0 and d.scale > 1), "data.scale",
             f"an autoencoder down-samples by a power of two above 1, got {d.scale}"),
        )
        for ok, key, problem in rules:
            if not ok:
                refuse(key, problem)


def known_degradation(name: str) -> bool:
    """Whether name is a degradation preset (shiftsr.data.degradations.PRESETS) or a readable degradation YAML."""
    from ..data.degradations import load_preset

    try:
        load_preset(name)
    except (ValueError, OSError):
        return False
    return True


@cache
def _fields(section: str) -> dict[str, Any]:
    """The keys of a section with their (resolved) types."""
    return get_type_hints(SECTIONS[section])


def _build_section(section: str, values: dict, source: str):
    """One section from its mapping: unknown keys and values of the wrong type are errors naming both."""
    return build_typed(SECTIONS[section], values, source, ConfigError, path=f"{section}.")


def _is_flat(data: dict) -> bool:
    """True for the layout before sections: no key holds a mapping, and some key is not a section name."""
    return not any(isinstance(value, dict) for value in data.values()) and not set(data) <= set(SECTIONS)


def _nest_flat(data: dict, source: str) -> dict:
    """A flat recipe as sections: data -> data.folders, model -> model.kind, other keys to the section holding them."""
    owners = {key: (section, key) for section in SECTIONS for key in _fields(section)} | FLAT_KEYS
    nested: dict[str, dict] = {}
    for key, value in data.items():
        if key not in owners:
            raise ConfigError(f"{source}: unknown key {key!r}")
        section, name = owners[key]
        nested.setdefault(section, {})[name] = value
    return nested


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats and booleans as YAML 1.2 does: 5e-4 is a float, only true/false are bools.

    (YAML 1.1 reads 5e-4 as a string and no/off as false, surprising in `lr: 5e-4` and `mixed_precision: no`.)
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))
