"""Benchmark evaluation: upscalers (bicubic, Real-ESRGAN, models x methods x steps x orders x samples) scored on HR/LR
folders with shiftsr.metrics, one row per set and upscaler setting; `shiftsr eval` is its command line."""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .data.imresize import imresize
from .imageio import read_image
from .metrics import psnr_y, ssim_y
from .pairing import ImagePair, pair_images

Metric = Callable[[torch.Tensor, torch.Tensor], float]
BASELINES = ("bicubic", "realesrgan")
# As shiftsr.methods.run_method runs them: only DoSSR's solver has an order, and ResShift's chain has fixed steps.
ORDER_METHODS = ("dossr",)
FIXED_STEP_METHODS = ("resshift", "resshift-ode")
PAIR_LABELS = ("LR image", "HR image")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed --methods entry: kind is bicubic, realesrgan, preset or model (with an optional method)."""

    spec: str
    kind: str
    model: str | None = None
    method: str | None = None


@dataclass
class Upscaler:
    """One setting of one method spec: upscale(lr) -> sr in [0, 1]; calls of `network` are its NFE."""

    spec: str
    upscale: Callable[[torch.Tensor], torch.Tensor]
    network: nn.Module | None
    sampler: dict = field(default_factory=dict)  # method, steps, order, samples; None where they do not apply

    @property
    def label(self) -> str:
        """The spec with the settings that apply, e.g. `default:dossr s5 o3`."""
        marks = [f"{key[0]}{self.sampler[key]}" for key in ("steps", "order") if self.sampler.get(key) is not None]
        if (self.sampler.get("samples") or 1) > 1:
            marks.append(f"x{self.sampler['samples']}")
        return " ".join([self.spec, *marks])


def parse_method(spec: str) -> MethodSpec:
    """bicubic, realesrgan, a preset name, or MODEL[:METHOD] with MODEL a bundled model name or a model folder."""
    from .pipeline import bundled_models
    from .presets import presets

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


def build_upscalers(specs: list[MethodSpec], *, scale: int, steps: list[int] | None, orders: list[int] | None,
                    samples: list[int] | None, seed: int, device: str) -> list[Upscaler]:
    """Every setting to run: steps x orders x samples for a model spec where each applies, one for the others.

    None for steps, orders or samples is the model's own default. A preset runs exactly its own sampler
    (method, steps, order, samples): the sweeps do not apply to it.
    """
    from .pipeline import load
    from .preprocess import build_preprocessor

    pipes: dict[str, object] = {}
    upscalers = []
    for spec in specs:
        if spec.kind == "bicubic":
            upscalers.append(Upscaler(spec.spec, lambda lr: imresize(lr, scale=scale).clamp(0, 1), None))
            continue
        if spec.kind == "realesrgan":
            if scale != 4:
                raise ValueError(f"{spec.spec}: Real-ESRGAN x4plus upscales x4 only, not x{scale}")
            preprocessor = build_preprocessor("realesrgan_x4plus", device)
            upscalers.append(Upscaler(spec.spec, preprocessor, preprocessor.net))  # returns on lr's device
            continue
        if spec.model not in pipes:
            pipes[spec.model] = load(spec.model, device=device)
        pipe = pipes[spec.model]
        if pipe.scale != scale:
            raise ValueError(f"{spec.spec}: the model upscales x{pipe.scale}, not x{scale}")
        for sampler in sampler_sweep(spec, pipe, steps=steps, orders=orders, samples=samples):
            run = {key: value for key, value in sampler.items() if value is not None}
            upscalers.append(Upscaler(spec.spec, lambda lr, pipe=pipe, run=run: pipe(lr, seed=seed, **run),
                                      pipe.net, sampler))
    return upscalers


def sampler_sweep(spec: MethodSpec, pipe, *, steps: list[int] | None, orders: list[int] | None,
                  samples: list[int] | None) -> list[dict]:
    """The sampler settings of a model or preset spec; steps and order are None where the method ignores them."""
    if spec.kind == "preset":
        settings = pipe.sampler_settings()
        return [{**settings, "steps": None if settings["method"] in FIXED_STEP_METHODS else settings["steps"],
                 "order": settings["order"] if settings["method"] in ORDER_METHODS else None}]
    method = spec.method or pipe.settings.sampler.method
    if method not in pipe.methods:
        raise ValueError(f"{spec.spec}: {method!r} is not a method of this model; allowed: {', '.join(pipe.methods)}")
    defaults = pipe.settings.sampler
    step_values = [None] if method in FIXED_STEP_METHODS else (steps or [defaults.steps])
    order_values = (orders or [defaults.order]) if method in ORDER_METHODS else [None]
    return [{"method": method, "steps": s, "order": o, "samples": k}
            for s in step_values for o in order_values for k in (samples or [defaults.samples])]


@contextmanager
def counting_calls(module: nn.Module | None) -> Iterator[list[int]]:
    """Count the forward calls of module (none for None) while the block runs: counter[0]."""
    counter = [0]
    if module is None:
        yield counter
        return

    def count(*_) -> None:
        counter[0] += 1

    handle = module.register_forward_pre_hook(count)
    try:
        yield counter
    finally:
        handle.remove()


def create_metrics(names: list[str], *, scale: int, device: str) -> list:
    """shiftsr.metrics by name; PSNR and SSIM crop `scale` border pixels (the benchmark convention)."""
    from .metrics import create, metric_info

    metrics = {}
    for name in names:
        info = metric_info(name)
        if not info.per_image:
            raise ValueError(f"{name}: compares whole image sets; eval reports per-image metrics only")
        if info.name not in metrics:
            options = {"crop_border": scale} if "crop_border" in info.options else {}
            metrics[info.name] = create(name, device=device, **options)
    return list(metrics.values())


def crop_box(hr: torch.Tensor, size: int, at: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """(x, y, side) of a square window in hr (3xHxW): `at` moved inside the image, else the highest-variance one."""
    from .metrics import rgb_to_y

    height, width = hr.shape[-2:]
    side = min(size, height, width)
    if at is not None:
        return min(max(at[0], 0), width - side), min(max(at[1], 0), height - side), side
    y = rgb_to_y(hr.double())[None]
    stride = max(1, side // 8)
    mean = nn.functional.avg_pool2d(y, side, stride=stride)
    variance = (nn.functional.avg_pool2d(y * y, side, stride=stride) - mean**2)[0, 0]
    row, column = divmod(int(variance.argmax()), variance.shape[1])
    return column * stride, row * stride, side


@dataclass
class SetResult:
    """Rows of one set (one per upscaler) and the crop panels of each image: name -> (box, [(label, crop)])."""

    rows: list[dict]
    crops: dict[str, tuple[tuple[int, int, int], list[tuple[str, torch.Tensor]]]]


def evaluate_set(name: str, pairs: list[ImagePair], upscalers: list[Upscaler], metrics: list, *, scale: int,
                 crop_size: int, crop_at: tuple[int, int] | None = None, progress: bool = True) -> SetResult:
    """Run every upscaler on every LR image of a set; mean metrics, network calls and seconds per image."""
    per_image: list[dict[str, dict]] = [{} for _ in upscalers]
    crops = {}
    bar = tqdm(total=len(pairs) * len(upscalers), desc=name, unit="run", disable=None if progress else True)
    for pair in pairs:
        lr, hr = read_image(pair.image).rgb[None], read_image(pair.reference).rgb[None]
        x, y, side = box = crop_box(hr[0], crop_size, crop_at)
        window = (..., slice(y, y + side), slice(x, x + side))
        panels = [("HR", hr[0][window]), ("bicubic", imresize(lr, scale=scale).clamp(0, 1)[0][window])]
        for index, upscaler in enumerate(upscalers):
            with counting_calls(upscaler.network) as calls:
                started = time.perf_counter()
                sr = upscaler.upscale(lr)
                seconds = time.perf_counter() - started
            values = {metric.name: float(metric(sr, hr)[0]) for metric in metrics}
            per_image[index][pair.name] = {**values, "nfe": calls[0], "seconds": seconds}
            if upscaler.spec != "bicubic":
                first = next(iter(values.items()), None)
                caption = upscaler.label + (f"\n{first[0]} {first[1]:.3f}" if first else "")
                panels.append((caption, sr[0][window]))
            bar.update()
        crops[pair.name] = (box, panels)
    bar.close()
    rows = [summarise(name, upscaler, images, [m.name for m in metrics])
            for upscaler, images in zip(upscalers, per_image)]
    return SetResult(rows, crops)


def summarise(set_name: str, upscaler: Upscaler, images: dict[str, dict], metric_names: list[str]) -> dict:
    """A table row: the setting, the mean of each metric, network calls and seconds per image, per-image values."""
    mean = {key: float(np.mean([values[key] for values in images.values()])) if images else None
            for key in [*metric_names, "nfe", "seconds"]}
    calls = {values["nfe"] for values in images.values()}
    sampler = upscaler.sampler
    return {"set": set_name, "method": upscaler.spec, "sampler": sampler.get("method"), "steps": sampler.get("steps"),
            "order": sampler.get("order"), "samples": sampler.get("samples"),
            "nfe": calls.pop() if len(calls) == 1 else mean["nfe"], **{key: mean[key] for key in metric_names},
            "seconds": mean["seconds"], "images": len(images), "per_image": images}


def default_metrics(scale: int) -> dict[str, Metric]:
    """PSNR-Y and SSIM-Y with the benchmark's border crop of `scale` pixels."""
    return {"psnr": lambda sr, hr: psnr_y(sr, hr, border=scale), "ssim": lambda sr, hr: ssim_y(sr, hr, border=scale)}


def evaluate_pairs(pipe, hr_dir: Path, lr_dir: Path, *, scale: int, metrics: dict[str, Metric] | None = None,
                   **sample_kwargs) -> dict:
    """Mean of every metric (and seconds per image) for the pipeline and for bicubic; any unpaired file is an error."""
    metrics = metrics or default_metrics(scale)
    pairs, problems = pair_images(lr_dir, hr_dir, scale=scale, labels=PAIR_LABELS)
    if problems:
        raise ValueError("HR and LR folders do not match:\n" + "\n".join(problems))
    rows: dict[str, list[float]] = {"seconds": []}
    for pair in pairs:
        hr, lr = read_image(pair.reference).rgb[None], read_image(pair.image).rgb[None]
        started = time.perf_counter()
        sr = pipe(lr, scale=scale, **sample_kwargs)
        rows["seconds"].append(time.perf_counter() - started)
        bicubic = imresize(lr, scale=scale).clamp(0, 1)
        for prefix, image in (("", sr), ("bicubic_", bicubic)):
            for key, metric in metrics.items():
                rows.setdefault(prefix + key, []).append(float(metric(image, hr)))
    return {"images": len(rows["seconds"]), **{k: float(np.mean(v)) for k, v in rows.items()}}


def main(argv: list[str] | None = None) -> None:
    """python -m shiftsr.evaluate --model default --root ../shared/data/benchmark --sets Set5 Set14 BSD100."""
    parser = argparse.ArgumentParser(description=main.__doc__ + " For sweeps, plots and crops: shiftsr eval.")
    parser.add_argument("--model", default="default")
    parser.add_argument("--root", default="../shared/data/benchmark")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14", "BSD100"])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--method")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--order", type=int)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from .pipeline import load
    pipe = load(args.model, device=args.device)
    for name in args.sets:
        folder = Path(args.root) / name / f"x{args.scale}"
        result = evaluate_pairs(pipe, folder / "HR", folder / "LR", scale=args.scale, method=args.method,
                                steps=args.steps, order=args.order, samples=args.samples, seed=args.seed)
        print(json.dumps({"set": name, **result}), flush=True)


if __name__ == "__main__":
    main()
