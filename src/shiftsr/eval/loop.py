"""The evaluation loop: upscalers x images -> per-image metric values, network evaluations and seconds; table rows."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from ..imageio import read_image
from ..metrics import Metric
from .pairing import ImagePair
from .scoring import score
from .stats import mean, standard_error
from .upscalers import SAMPLER_KEYS, Upscaler

Image = ImagePair | tuple[str, torch.Tensor, torch.Tensor]  # files, or (name, lr, hr) as 1x3xHxW batches
Each = Callable[[str, torch.Tensor, torch.Tensor, Upscaler, torch.Tensor, dict], None]


def load_image(image: Image) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(name, lr, hr) batches of one image: an ImagePair's files read, a tuple as it is."""
    if isinstance(image, ImagePair):
        return image.name, read_image(image.image).rgb[None], read_image(image.reference).rgb[None]
    return image


def evaluate(images: Sequence[Image], upscalers: list[Upscaler], metrics: list[Metric], *, desc: str = "eval",
             seed_step: int = 0, each: Each | None = None, progress: bool = True) -> list[dict[str, dict]]:
    """Every upscaler on every image; per upscaler {image name: {metric: value, "nfe": n, "seconds": s}}.

    Image i runs with seed upscaler.seed + i * seed_step (0: the same seed for every image). Seconds are the
    wall clock of the upscaling alone. each(name, lr, hr, upscaler, sr, values) sees every output (crop sheets).
    An output that is not the HR's size is a ValueError.
    """
    results: list[dict[str, dict]] = [{} for _ in upscalers]
    with tqdm(total=len(images) * len(upscalers), desc=desc, unit="run", disable=None if progress else True) as bar:
        for index, image in enumerate(images):
            name, lr, hr = load_image(image)
            for upscaler, result in zip(upscalers, results):
                started = time.perf_counter()
                sr, nfe = upscaler.run(lr, upscaler.seed + index * seed_step)
                seconds = time.perf_counter() - started
                if sr.shape[-2:] != hr.shape[-2:]:
                    raise ValueError(f"{name}: {upscaler.label} gives {sr.shape[-1]}x{sr.shape[-2]}, not the HR "
                                     f"size {hr.shape[-1]}x{hr.shape[-2]}")
                values = score(metrics, sr, hr)
                result[name] = {**values, "nfe": nfe, "seconds": seconds}
                if each is not None:
                    each(name, lr, hr, upscaler, sr, values)
                bar.update()
    return results


def summarise(set_name: str, upscaler: Upscaler, images: dict[str, dict], metric_names: list[str]) -> dict:
    """A table row: the setting, the mean (and standard error) of each metric, NFE and seconds per image, and the
    per-image values. NFE is an int when every image took the same, else the mean; None where not counted."""
    if not images:
        raise ValueError(f"{set_name}: no image to summarise for {upscaler.label}")
    column = {key: [values[key] for values in images.values()] for key in [*metric_names, "nfe", "seconds"]}
    calls = set(column["nfe"])
    nfe = calls.pop() if len(calls) == 1 else mean(column["nfe"])
    return {"set": set_name, "method": upscaler.spec, "sampler": upscaler.sampler.get("method"),
            **{key: upscaler.sampler.get(key) for key in SAMPLER_KEYS[1:]}, "nfe": nfe,
            **{key: mean(column[key]) for key in metric_names}, "seconds": mean(column["seconds"]),
            "standard_error": {key: standard_error(column[key]) for key in metric_names},
            "images": len(images), "per_image": images}
