"""The default model's network on the CPU, side by side in one run: torch eager fp32 (NCHW), channels-last (the
default), bf16 autocast, torch.compile and ONNX Runtime (an export of the network, `shiftsr export --onnx`).

Run `python bench/bench_backends.py [--side 128] [--runs 5] [--threads 1] [--no-compile]`.
Each backend: median seconds of one network call on a 1 x 48 x SIDE x SIDE model-space input (wall and CPU), the
largest difference of its output from eager fp32, and of a whole upscale (one sample, 5 steps, 64 x 64 LR)
through the pipeline; torch.compile also its first call, the compilation.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from shiftsr.pipeline import load

MODEL = "default"
TOLERANCE = 1e-3  # the largest change of the image a backend may make to be the default


def timed_calls(call, runs: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of runs calls after one warm-up."""
    call()
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def contenders(folder: Path, *, compile_network: bool) -> dict:
    """{name: the default model's pipeline with that backend}."""
    from shiftsr.backends import export_onnx, use_onnx
    from shiftsr.pipeline import network_denoiser

    eager = load(MODEL, device="cpu")
    eager.net.to(memory_format=torch.contiguous_format)
    eager.memory_format = torch.contiguous_format
    eager.denoiser = network_denoiser(eager.net, eager.settings, eager.process, dtype=torch.float32,
                                      memory_format=torch.contiguous_format)
    table = {"torch eager fp32 (NCHW)": eager,
             "torch channels-last fp32 (default)": load(MODEL, device="cpu"),
             "torch channels-last bf16 autocast": load(MODEL, device="cpu", dtype=torch.bfloat16)}
    if compile_network:
        compiled = load(MODEL, device="cpu")
        compiled.net.forward = torch.compile(compiled.net.forward)
        table["torch.compile (inductor), channels-last fp32"] = compiled
    try:
        runtime = load(MODEL, device="cpu")
        use_onnx(runtime, export_onnx(runtime, folder / "network.onnx"))
        table["ONNX Runtime (CPU EP), NCHW fp32"] = runtime
    except ImportError as error:
        print(f"bench_backends: ONNX Runtime skipped ({error})")
    return table


@torch.no_grad()
def compare(*, side: int = 128, runs: int = 5, compile_network: bool = True) -> list[dict]:
    """One row per backend: seconds per call, first-call seconds, and differences from eager fp32."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, side, side, generator=gen)
    t = torch.full((1,), 300.0)
    lr = torch.rand(1, 3, 64, 64, generator=gen)
    rows, reference, reference_image = [], None, None
    with tempfile.TemporaryDirectory() as folder:
        for name, pipe in contenders(Path(folder), compile_network=compile_network).items():
            given = x.contiguous(memory_format=pipe.memory_format)
            first = time.perf_counter()
            out = pipe.denoiser(given, t, given)
            first = time.perf_counter() - first
            wall, cpu = timed_calls(lambda: pipe.denoiser(given, t, given), runs)
            image = pipe(lr, samples=1)
            reference = out if reference is None else reference
            reference_image = image if reference_image is None else reference_image
            rows.append({"name": name, "wall": wall, "cpu": cpu, "first": first,
                         "diff": (out - reference).abs().max().item(),
                         "image_diff": (image - reference_image).abs().max().item()})
    return rows


def report(rows: list[dict], *, side: int) -> list[str]:
    """The table and the ratio of each backend's CPU time to the default's."""
    default = next(row for row in rows if "default" in row["name"])
    width = max(len(row["name"]) for row in rows)
    lines = [f"one network call, 1 x 48 x {side} x {side} model-space input ({4 * side}x{4 * side} output), "
             f"torch threads {torch.get_num_threads()}, median of runs; |diff| = largest difference from eager fp32: "
             "the network's output, and a whole upscale (1 sample, 5 steps, 64x64 LR) in [0, 1]",
             f"{'backend':{width}s} {'wall ms':>8s} {'CPU ms':>8s} {'first s':>8s} {'|diff| net':>10s} "
             f"{'|diff| image':>12s}"]
    for row in rows:
        lines.append(f"{row['name']:{width}s} {1e3 * row['wall']:8.1f} {1e3 * row['cpu']:8.1f} {row['first']:8.2f} "
                     f"{row['diff']:10.2e} {row['image_diff']:12.2e}")
    for row in rows:
        if row is not default:
            lines.append(f"ratio {row['name']} / default: {row['cpu'] / default['cpu']:.2f}x CPU time")
    return lines + [verdict(row, default) for row in rows]


def verdict(row: dict, default: dict) -> str:
    """Whether a backend is the default, and why the others are not (the rule: faster, results within 1e-3)."""
    name, speed = row["name"], default["cpu"] / row["cpu"]
    if row is default:
        return f"{name}: the default (the sampler keeps its state channels-last too, so no call copies it)"
    if row["image_diff"] > TOLERANCE:
        return f"{name}: not the default: {speed:.2f}x the speed, but it moves the image by {row['image_diff']:.1e} " \
               f"(> {TOLERANCE:g}); `--bf16` where that is acceptable"
    if speed <= 1:
        return f"{name}: not the default: slower ({speed:.2f}x)"
    if "compile" in name:
        return f"{name}: not the default: {speed:.2f}x the speed, but its first call compiles for " \
               f"{row['first']:.0f} s, again for each new image size"
    return f"{name}: not the default: {speed:.2f}x the speed within {TOLERANCE:g}, but onnxruntime is an optional " \
           "extra; opt in with `shiftsr export --onnx MODEL -o FILE` and `shiftsr upscale --onnx FILE`"


def main() -> None:
    """Measure every backend and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=128, help="model-space side of the input (default: 128)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = compare(side=args.side, runs=args.runs, compile_network=not args.no_compile)
    print("\n".join(report(rows, side=args.side)))


if __name__ == "__main__":
    main()
