"""What an evaluation runs: bicubic, Real-ESRGAN x4plus, or a model with one sampler setting, parsed from specs."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from ..methods import METHODS
from ..ops import imresize

BASELINES = ("bicubic", "realesrgan")
SAMPLER_KEYS = ("method", "steps", "order", "samples")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed --methods entry: kind is bicubic, realesrgan, preset or model (with an optional method)."""

    spec: str
    kind: str
    model: str | None = None
    method: str | None = None


@dataclass
class Upscaler:
    """One setting to evaluate: run(lr, seed) -> (sr in [0, 1], network evaluations counted, None if not counted).

    sampler holds method, steps, order and samples, None where one does not apply (baselines, methods without order).
    """

    spec: str
    run: Callable[[Tensor, int], tuple[Tensor, int | None]]
    sampler: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def label(self) -> str:
        """The spec with the settings that apply, e.g. `default:dossr s5 o3`."""
        marks = [f"{key[0]}{self.sampler[key]}" for key in ("steps", "order") if self.sampler.get(key) is not None]
        if (self.sampler.get("samples") or 1) > 1:
            marks.append(f"x{self.sampler['samples']}")
        return " ".join([self.spec, *marks])


def bicubic_upscaler(*, scale: float | None = None, size: tuple[int, int] | None = None,
                     spec: str = "bicubic") -> Upscaler:
    """MATLAB imresize bicubic by scale or to size (H, W); no network, NFE 0."""
    return Upscaler(spec, lambda lr, seed: (imresize(lr, scale=scale, size=size).clamp(0, 1), 0))


@contextmanager
def forward_calls(module: nn.Module) -> Iterator[list[int]]:
    """Count the forward calls of module while the block runs, in counter[0] (a network outside a pipeline)."""
    counter = [0]
    handle = module.register_forward_pre_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    try:
        yield counter
    finally:
        handle.remove()


def realesrgan_upscaler(device: str, *, spec: str = "realesrgan") -> Upscaler:
    """The Real-ESRGAN x4plus network alone (x4); its NFE is its forward calls (one per tile)."""
    from ..preprocess import build_preprocessor

    preprocessor = build_preprocessor("realesrgan_x4plus", device)

    def run(lr: Tensor, seed: int) -> tuple[Tensor, int]:
        with forward_calls(preprocessor.net) as calls:
            sr = preprocessor(lr).cpu()
        return sr, calls[0]

    return Upscaler(spec, run)


def model_upscaler(pipe, spec: str, *, seed: int = 0, method: str | None = None, steps: int | None = None,
                   order: int | None = None, samples: int | None = None, **call) -> Upscaler:
    """pipe.run(lr, seed=..., method, steps, order, samples, **call) with NFE from its record; None takes the
    model's default, and call passes the other pipeline keywords (scale, target, strategy, t_start, noise, ...)."""
    sampler = pipe.sampler_settings(method=method, steps=steps, order=order, samples=samples)
    given = {key: value for key, value in sampler.items() if value is not None}

    def run(lr: Tensor, seed: int) -> tuple[Tensor, int]:
        out = pipe.run(lr, seed=seed, **given, **call)
        return out.image, out.record["nfe"]

    return Upscaler(spec, run, sampler, seed)


def parse_method(spec: str) -> MethodSpec:
    """bicubic, realesrgan, a preset name, or MODEL[:METHOD] with MODEL a bundled model name or a model folder."""
    from ..bundle import bundled_models
    from ..presets import presets

    spec = spec.strip()
    if spec in BASELINES:
        return MethodSpec(spec, spec)
    if spec in presets():
        return MethodSpec(spec, "preset", model=spec)
    model, method = spec, None
    if ":" in spec and not Path(spec).is_dir():
        model, _, method = spec.rpartition(":")
    if model in presets():
        raise ValueError(f"{spec}: a preset fixes its method; name its model instead "
                         f"({presets()[model].model}:{method})")
    if not (model in bundled_models() or Path(model).is_dir()):
        raise ValueError(f"{spec}: unknown method; give {', '.join(BASELINES)}, a preset "
                         f"({', '.join(presets())}), a bundled model ({', '.join(bundled_models())}) "
                         "or a model folder, each model optionally with :METHOD")
    return MethodSpec(spec, "model", model=model, method=method or None)


def sampler_sweep(spec: MethodSpec, pipe, *, steps: list[int] | None, orders: list[int] | None,
                  samples: list[int] | None) -> list[dict]:
    """The sampler settings of a model or preset spec: steps x orders x samples, order None where the method has
    none (shiftsr.methods.METHODS); a preset runs exactly its own settings."""
    if spec.kind == "preset":
        return [pipe.sampler_settings()]
    method = spec.method or pipe.sampler_settings()["method"]
    if method not in pipe.methods:
        raise ValueError(f"{spec.spec}: {method!r} is not a method of this model; allowed: {', '.join(pipe.methods)}")
    defaults = pipe.sampler_settings(method=method)
    order_values = (orders or [defaults["order"]]) if METHODS[method].uses_order else [None]
    return [{"method": method, "steps": s, "order": o, "samples": k}
            for s in steps or [defaults["steps"]] for o in order_values for k in samples or [defaults["samples"]]]


def build_upscalers(specs: list[MethodSpec], *, scale: int, steps: list[int] | None, orders: list[int] | None,
                    samples: list[int] | None, seed: int, device: str) -> list[Upscaler]:
    """Every setting to run: one per baseline and preset, steps x orders x samples for a model where each applies.

    None for steps, orders or samples is the model's own default. ValueError for a scale a spec cannot run.
    """
    from ..pipeline import load

    pipes: dict[str, object] = {}
    upscalers = []
    for spec in specs:
        if spec.kind == "bicubic":
            upscalers.append(bicubic_upscaler(scale=scale))
            continue
        if spec.kind == "realesrgan":
            if scale != 4:
                raise ValueError(f"{spec.spec}: Real-ESRGAN x4plus upscales x4 only, not x{scale}")
            upscalers.append(realesrgan_upscaler(device))
            continue
        if spec.model not in pipes:
            pipes[spec.model] = load(spec.model, device=device)
        pipe = pipes[spec.model]
        if pipe.scale != scale:
            raise ValueError(f"{spec.spec}: the model upscales x{pipe.scale}, not x{scale}")
        for sampler in sampler_sweep(spec, pipe, steps=steps, orders=orders, samples=samples):
            upscalers.append(model_upscaler(pipe, spec.spec, seed=seed, **sampler))
    return upscalers
