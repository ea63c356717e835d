"""Benchmark evaluation: PSNR/SSIM on the Y channel against HR, beside MATLAB-bicubic upscaling."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .data.imresize import imresize
from .imageio import read_image
from .metrics import psnr_y, ssim_y


def evaluate_pairs(pipe, hr_dir: Path, lr_dir: Path, *, scale: int, **sample_kwargs) -> dict:
    """Mean PSNR-Y/SSIM-Y (border = scale) of the pipeline and of bicubic over HR/LR files matched by name."""
    names = sorted(p.name for p in Path(hr_dir).iterdir() if (Path(lr_dir) / p.name).is_file())
    if not names:
        raise FileNotFoundError(f"{hr_dir}: no HR files with a same-named LR file in {lr_dir}")
    rows = {"psnr": [], "ssim": [], "bicubic_psnr": [], "bicubic_ssim": [], "seconds": []}
    for name in names:
        hr, lr = read_image(Path(hr_dir) / name).rgb, read_image(Path(lr_dir) / name).rgb
        started = time.perf_counter()
        sr = pipe(lr, scale=scale, **sample_kwargs)[0]
        rows["seconds"].append(time.perf_counter() - started)
        bicubic = imresize(lr, scale=scale).clamp(0, 1)
        for key, image in (("", sr), ("bicubic_", bicubic)):
            rows[key + "psnr"].append(psnr_y(image, hr, border=scale))
            rows[key + "ssim"].append(ssim_y(image, hr, border=scale))
    return {"images": len(names), **{k: float(np.mean(v)) for k, v in rows.items()}}


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
