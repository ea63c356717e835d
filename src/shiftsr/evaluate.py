"""Benchmark evaluation: any metrics of a model's upscales against HR, beside MATLAB-bicubic upscaling."""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .data.imresize import imresize
from .imageio import read_image
from .metrics import psnr_y, ssim_y

Metric = Callable[[torch.Tensor, torch.Tensor], float]


def default_metrics(scale: int) -> dict[str, Metric]:
    """PSNR-Y and SSIM-Y with the benchmark's border crop of `scale` pixels."""
    return {"psnr": lambda sr, hr: psnr_y(sr, hr, border=scale), "ssim": lambda sr, hr: ssim_y(sr, hr, border=scale)}


def matched_names(hr_dir: Path, lr_dir: Path) -> list[str]:
    """The file names present in both folders; a name in only one of them is an error naming every such file."""
    hr_names = {p.name for p in Path(hr_dir).iterdir() if p.is_file()}
    lr_names = {p.name for p in Path(lr_dir).iterdir() if p.is_file()}
    problems = [f"{Path(hr_dir) / n}: no LR file of that name" for n in sorted(hr_names - lr_names)]
    problems += [f"{Path(lr_dir) / n}: no HR file of that name" for n in sorted(lr_names - hr_names)]
    if problems:
        raise ValueError("HR and LR folders do not match:\n" + "\n".join(problems))
    if not hr_names:
        raise FileNotFoundError(f"{hr_dir}: no images")
    return sorted(hr_names)


def evaluate_pairs(pipe, hr_dir: Path, lr_dir: Path, *, scale: int, metrics: dict[str, Metric] | None = None,
                   **sample_kwargs) -> dict:
    """Mean of every metric (and seconds per image) for the pipeline and for bicubic, over matched HR/LR files."""
    metrics = metrics or default_metrics(scale)
    rows: dict[str, list[float]] = {"seconds": []}
    for name in matched_names(hr_dir, lr_dir):
        hr, lr = read_image(Path(hr_dir) / name).rgb[None], read_image(Path(lr_dir) / name).rgb[None]
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
            raise ValueError(f"{Path(lr_dir) / name}: LR {tuple(lr.shape[-2:])} times {scale} is not the HR size "
                             f"{tuple(hr.shape[-2:])}")
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
    parser = argparse.ArgumentParser(description=main.__doc__)
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
