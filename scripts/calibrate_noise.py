"""Measure noise injection's best start time per scale on training crops (Diff-SR Sec. 4.3, at our scale).

    OMP_NUM_THREADS=1 python scripts/calibrate_noise.py --overwrite     # about 6 minutes on one CPU thread

For every scale and every start time t of a grid, each HR crop (the centre crop of a training image, never
a benchmark image) is brought down to 1/scale by MATLAB bicubic and rounded to 8 bits, upscaled back to the
crop size by the prior with noise injected up to t (`pipe(lr, target=..., t_start=t)`, 10 DDIM steps, seed =
the image's index, so every t of an image sees the same noise) and scored with ST-LPIPS (alex) and PSNR-Y
(border ceil(scale)). t = 0 is the bicubic upscale itself. The best t of a scale has the lowest mean
ST-LPIPS; the table keeps those times made non-decreasing in the scale (isotonic fit, which leaves a rising
sequence unchanged) and writes them, the raw argmins and every measured score to the model folder's
noise_levels.json, which the pipeline then uses by default (interpolated in log(scale)).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from shiftsr.bundle import resolve_model
from shiftsr.eval import bicubic_upscaler, create_metrics, evaluate, json_text, mean, metric_infos, model_upscaler
from shiftsr.files import write_atomic
from shiftsr.imageio import read_image
from shiftsr.ops import imresize
from shiftsr.pipeline import load
from shiftsr.processes import NOISE_TABLE_FILE, NoiseTable, recoverable_time

SCALES = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
GRID = (0, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 700)


def training_crops(root: Path, count: int, crop: int) -> tuple[list[str], list[torch.Tensor]]:
    """Centre crops of `count` images spread evenly over the sorted training images with both sides >= crop."""
    from PIL import Image

    paths = [p for p in sorted(root.rglob("*.png")) if min(Image.open(p).size) >= crop]
    if len(paths) < count:
        raise ValueError(f"{root}: only {len(paths)} images have both sides >= {crop} px, {count} needed")
    chosen = [paths[round(i * (len(paths) - 1) / max(count - 1, 1))] for i in range(count)]
    crops = []
    for path in chosen:
        image = read_image(path).rgb
        top, left = (image.shape[-2] - crop) // 2, (image.shape[-1] - crop) // 2
        crops.append(image[None, :, top:top + crop, left:left + crop])
    return [str(p.relative_to(root)) for p in chosen], crops


def degrade(hr: torch.Tensor, scale: float) -> torch.Tensor:
    """The LR of an HR crop whose sides are multiples of 1/scale: MATLAB bicubic, rounded to 8 bits."""
    size = tuple(round(side / scale) for side in hr.shape[-2:])
    if any(abs(side / scale - n) > 1e-6 for side, n in zip(hr.shape[-2:], size)):
        raise ValueError(f"crop {tuple(hr.shape[-2:])} is not a multiple of 1/{scale}; choose another --crop")
    return (imresize(hr, size=size).clamp(0, 1) * 255).round() / 255


def measure(pipe, crops: list[torch.Tensor], scales, grid, steps: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Mean ST-LPIPS and PSNR-Y over the crops for every (scale, t), and the KL rule's mean t per scale.

    Through the evaluation engine: one upscaler per t (t = 0: the bicubic upscale), image i with seed i.
    """
    lpips_scores, psnr_scores = np.zeros((len(scales), len(grid))), np.zeros((len(scales), len(grid)))
    kl_times = []
    stlpips = create_metrics(metric_infos(["stlpips"]))
    for i, scale in enumerate(scales):
        started = time.perf_counter()
        metrics = [*stlpips, *create_metrics(metric_infos(["psnr"]), crop_border=math.ceil(scale))]
        images = [(str(index), degrade(hr, scale), hr) for index, hr in enumerate(crops)]
        size = tuple(crops[0].shape[-2:])
        upscalers = [bicubic_upscaler(size=size) if t == 0 else
                     model_upscaler(pipe, f"t {t}", steps=steps, samples=1, target=size[::-1], t_start=float(t))
                     for t in grid]
        results = evaluate(images, upscalers, metrics, desc=f"x{scale:g}", seed_step=1)
        for j, per_image in enumerate(results):
            lpips_scores[i, j] = mean([values["stlpips-alex"] for values in per_image.values()])
            psnr_scores[i, j] = mean([values["psnr"] for values in per_image.values()])
        kl_times.append(mean([recoverable_time(pipe.process, scale, rule="kl",
                                               x_up=imresize(lr, size=size).clamp(0, 1) * 2 - 1)
                              for _, lr, _ in images]))
        print(f"x{scale:g}: best t {grid[int(np.argmin(lpips_scores[i]))]} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return lpips_scores, psnr_scores, kl_times


def write_json(path: Path, data: dict, overwrite: bool) -> None:
    """Write data as indented JSON atomically; an existing file needs overwrite."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    write_atomic(path, json_text(data, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="prior-x4", help="an unconditional prior (name or folder)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192, help="HR crop side; a multiple of 1/scale for every scale")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--grid", type=int, nargs="+", default=list(GRID), help="start times t to try")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, help=f"default: the model folder's {NOISE_TABLE_FILE}")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    pipe = load(args.model, device="cpu")
    if pipe.family != "prior":
        raise SystemExit(f"{args.model}: a conditional model; noise injection needs an unconditional prior")
    names, crops = training_crops(args.data, args.images, args.crop)
    lpips_scores, psnr_scores, kl_times = measure(pipe, crops, args.scales, args.grid, args.steps)
    table, best = NoiseTable.from_scores(args.scales, args.grid, lpips_scores, t_max=pipe.process.t_max)
    data = {
        "about": "noise injection's start time t per scale: the lowest mean ST-LPIPS on training crops",
        "model": str(args.model), "t_max": table.t_max, "scales": list(table.scales), "t_start": list(table.times),
        "best_t": best,
        "measured": {
            "command": "OMP_NUM_THREADS=1 python scripts/calibrate_noise.py " + " ".join(
                f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in
                (("images", args.images), ("crop", args.crop), ("scales", args.scales), ("grid", args.grid),
                 ("steps", args.steps))),
            "data": str(args.data), "images": names,
            "degradation": "MATLAB bicubic to 1/scale, rounded to 8 bits", "crop": args.crop,
            "sampler": f"DDIM, {args.steps} steps from t, seed = image index", "grid": args.grid,
            "stlpips_alex": lpips_scores.round(5).tolist(), "psnr_y": psnr_scores.round(3).tolist(),
            "kl_rule_t": [round(t, 1) for t in kl_times],
            "paper_t": [recoverable_time(pipe.process, s) if s <= 8 else None for s in args.scales],
        },
    }
    out = args.out or resolve_model(args.model) / NOISE_TABLE_FILE
    write_json(out, data, args.overwrite)
    print(f"wrote {out}: scales {list(table.scales)}, t {list(table.times)} (raw argmins {best})")


if __name__ == "__main__":
    main()
