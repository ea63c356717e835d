"""PSNR-Y (border 4) of a x4 preprocessor on benchmark folders, with seconds per image.

Run `python bench/bench_rrdb.py [--sets Set5 Set14] [--name realesrgan_x4plus] [--tile 256] [--threads N]`.
Reference for realesrgan_x4plus (this project's measurement): Set5 26.63, Set14 25.43, BSD100 25.11 dB.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from shiftsr.imageio import read_image
from shiftsr.metrics import psnr_y
from shiftsr.preprocess import PREPROCESSORS, build_preprocessor


def main() -> None:
    """Print per-set mean PSNR-Y and seconds per image (wall clock, and process CPU time that a busy CPU inflates less)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/benchmark"))
    parser.add_argument("--sets", nargs="+", default=["Set5"])
    parser.add_argument("--name", choices=PREPROCESSORS, default="realesrgan_x4plus")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pre = build_preprocessor(args.name, args.device, tile=args.tile, overlap=args.overlap)
    print(f"{args.name}: loaded in {time.perf_counter() - started:.1f} s")
    for name in args.sets:
        folder = args.data / name / "x4"
        scores, seconds, cpu_seconds = [], 0.0, 0.0
        for lr_path in sorted((folder / "LR").glob("*.png")):
            lr = read_image(lr_path).rgb[None]
            hr = read_image(folder / "HR" / lr_path.name).rgb[None]
            started, cpu_started = time.perf_counter(), time.process_time()
            sr = pre(lr.to(args.device))
            if sr.device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - started
            cpu_seconds += time.process_time() - cpu_started
            scores.append(psnr_y(sr.cpu(), hr, border=4).item())
        print(f"{name}: PSNR-Y {sum(scores) / len(scores):.4f} dB over {len(scores)} images, "
              f"{seconds / len(scores):.2f} s/image wall, {cpu_seconds / len(scores):.2f} s/image CPU time")


if __name__ == "__main__":
    main()
