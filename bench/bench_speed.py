"""Seconds per image of shiftsr (default model, perceptual preset) and of Real-ESRGAN x4plus, same input and machine.

Run `python bench/bench_speed.py [--size 128] [--runs 2] [--threads 1] [--device cpu]`.
Each contender upscales the same --size x --size image x4 (128 -> 512 by default); wall clock and process CPU
time are both reported, since a busy machine inflates wall time more than CPU time.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from shiftsr.pipeline import load
from shiftsr.preprocess import build_preprocessor

RRDB = "realesrgan_x4plus"


def seconds_per_image(upscale: Callable[[], torch.Tensor], *, runs: int, device: torch.device) -> dict:
    """Median wall and CPU seconds of `runs` calls after one warm-up call."""
    upscale()
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        upscale()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


@torch.no_grad()
def compare(*, size: int = 128, runs: int = 2, device: str = "cpu") -> dict[str, dict]:
    """{contender: {"wall", "cpu", "nfe", "sampler"}} for shiftsr default, shiftsr perceptual and the RRDB."""
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    results = {}
    for name in ("default", "perceptual"):
        pipe = load(name, device=device)
        sampler = pipe.sampler_settings()
        timing = seconds_per_image(lambda: pipe(image), runs=runs, device=pipe.device)
        nfe = sampler["steps"] * sampler["samples"]
        results[f"shiftsr {name}"] = {**timing, "nfe": nfe, "sampler": sampler}
    rrdb = build_preprocessor(RRDB, device, tile=None)
    lr = image.to(device)
    results[f"{RRDB} (RRDBNet)"] = {**seconds_per_image(lambda: rrdb(lr), runs=runs, device=torch.device(device)),
                                    "nfe": 1, "sampler": "one forward pass"}
    return results


def report(results: dict[str, dict], *, size: int) -> list[str]:
    """Lines of the table and of the shiftsr / RRDB ratios."""
    labels = {name: name if isinstance(row["sampler"], str) else
              f"{name} ({row['sampler']['method']}, {row['sampler']['steps']} steps, order {row['sampler']['order']}, "
              f"samples {row['sampler']['samples']})" for name, row in results.items()}
    width = max(map(len, labels.values()))
    lines = [f"{size}x{size} -> {4 * size}x{4 * size}, torch threads {torch.get_num_threads()}, median of runs",
             f"{'contender':{width}s} {'NFE':>4s} {'wall s':>8s} {'CPU s':>8s}"]
    for name, row in results.items():
        lines.append(f"{labels[name]:{width}s} {row['nfe']:4d} {row['wall']:8.3f} {row['cpu']:8.3f}")
    rrdb = results[f"{RRDB} (RRDBNet)"]
    for name in ("shiftsr default", "shiftsr perceptual"):
        row = results[name]
        lines.append(f"ratio {name} / {RRDB}: {row['wall'] / rrdb['wall']:.2f}x wall, "
                     f"{row['cpu'] / rrdb['cpu']:.2f}x CPU time")
    return lines


def main() -> None:
    """Time the three contenders and print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="LR side in pixels (default: 128)")
    parser.add_argument("--runs", type=int, default=2, help="timed runs after one warm-up (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("\n".join(report(compare(size=args.size, runs=args.runs, device=args.device), size=args.size)))


if __name__ == "__main__":
    main()
