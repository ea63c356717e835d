"""Peak memory of one upscale, untiled and tiled, and how it grows with the image: one fresh process per measurement.

Run `python bench/bench_memory.py [--sides 128 256 384 512] [--tile 128] [--overlap 16] [--steps 5] [--device cpu]`.
On the CPU the peak is the child's resident-set high-water mark (VmHWM), reset just before the call by writing 5 to
/proc/self/clear_refs: getrusage's ru_maxrss would also keep the load's peak and, after fork + exec, the parent's
resident set. The upscale's own working memory is that peak minus the resident set just before the call (Python,
torch and the model loaded). On CUDA it is torch.cuda.max_memory_allocated over the allocation before the call.
Sides are LR sides; the x4 model samples in a 4x pixel-unshuffled space, so a 512x512 LR (2048x2048 output) is a
512x512x48 model-space image, and --tile counts model-space pixels.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

UNTILED = 1 << 20  # a tile side larger than any image here: pipe() then runs the network on the whole image


def status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident set now, VmHWM: its high-water mark) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line (this benchmark needs Linux)")


def measure_here(*, model: str, side: int, tile: int, overlap: int, steps: int, device: str, threads: int) -> dict:
    """Peak and working memory of one side x side upscale in this process (call it in a fresh process)."""
    import torch

    from shiftsr.pipeline import load

    torch.set_num_threads(threads)
    pipe = load(model, device=device)
    image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM restarts from the resident set now
    before = status_bytes("VmRSS")
    if pipe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipe.device)
        before_cuda = torch.cuda.memory_allocated(pipe.device)
    out = pipe(image, steps=steps, samples=1, tile=tile, tile_overlap=overlap)
    result = {"side": side, "tile": tile, "out_pixels": out.shape[-2] * out.shape[-1],
              "peak": status_bytes("VmHWM"), "before": before}
    if pipe.device.type == "cuda":
        result.update(cuda_peak=torch.cuda.max_memory_allocated(pipe.device), cuda_before=before_cuda)
    return result


def working_memory(function, device) -> int:
    """Bytes one call of function adds at its peak: the allocator's peak on CUDA; on the CPU glibc's bytes in use
    (shiftsr.memory.peak_bytes), else VmHWM over VmRSS (which misses memory the allocator keeps and reuses)."""
    from shiftsr.memory import peak_bytes

    measured = peak_bytes(function, device)
    if measured is not None:
        return measured
    Path("/proc/self/clear_refs").write_text("5")
    before = status_bytes("VmRSS")
    function()
    return status_bytes("VmHWM") - before


def parts_here(*, model: str, side: int, tile: int, overlap: int, steps: int, device: str, threads: int) -> dict:
    """Working memory of the upscale's parts on one side x side image: LR -> model space, one network call
    untiled and tiled, and the sampler alone with a stand-in denoiser (x0 = a copy of the LR in model space)."""
    import torch

    from shiftsr.methods import METHODS
    from shiftsr.pipeline import load

    torch.set_num_threads(threads)
    pipe = load(model, device=device)
    lr = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(pipe.device)
    with torch.no_grad():
        xh = pipe.encode(pipe.source_image(lr))
        t = torch.full((1,), 0.5 * pipe.process.t_max, device=pipe.device)
        plan = pipe.plan((side, side), steps=steps)
        row, ts = METHODS[plan.method], METHODS[plan.method].grid(pipe.process, plan.steps, plan.t_start)
        calls = {
            "model space": lambda: pipe.encode(pipe.source_image(lr)),
            "network untiled": lambda: pipe.tiled(xh.shape, UNTILED, overlap)(xh, t, xh),
            "network tiled in memory": lambda: pipe.tiled(xh.shape, tile, overlap)(xh, t, xh),
            "sampler alone": lambda: row.sample(
                lambda x, time, cond: xh.clone(), xh.clone(), ts, process=pipe.process, y=xh, cond=xh,
                order=plan.order, generator=[torch.Generator().manual_seed(0)], callback=None),
        }
        return {name: working_memory(call, pipe.device) for name, call in calls.items()}


def child(*, parts: bool = False, **options) -> dict:
    """measure_here (or parts_here) in a fresh Python process, so no earlier allocation hides in the high-water mark."""
    command = [sys.executable, __file__, "--parts" if parts else "--child", "--model", options["model"],
               "--sides", str(options["side"]), "--tile", str(options["tile"]), "--overlap", str(options["overlap"]),
               "--steps", str(options["steps"]), "--device", options["device"], "--threads", str(options["threads"])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory child {' '.join(command[2:])} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def large(*, model: str = "default", side: int, tile: int, overlap: int, steps: int, device: str = "cpu",
          threads: int = 1) -> list[str]:
    """One tiled upscale of a large side (no untiled run: it would need many GiB), in a fresh process."""
    import time

    started = time.perf_counter()
    row = child(model=model, side=side, tile=tile, overlap=overlap, steps=steps, device=device, threads=threads)
    peak = row["cuda_peak"] if "cuda_peak" in row else row["peak"]
    return [f"large: LR {side}x{side} -> {4 * side}x{4 * side}, tiled only (tile {tile}, overlap {overlap}), "
            f"one sample, {steps} steps: peak {peak / (1 << 20):.0f} MiB, working {working(row) / (1 << 20):.0f} MiB "
            f"({working(row) / row['out_pixels']:.1f} B/out px), {time.perf_counter() - started:.0f} s",
            f"ratio large tiled peak / 2 GiB at {side} -> {4 * side}: {peak / (2 << 30):.2f}"]


def working(row: dict) -> int:
    """Bytes the upscale itself added: GPU peak over the allocation before the call, or RSS peak over RSS before."""
    return row["cuda_peak"] - row["cuda_before"] if "cuda_peak" in row else row["peak"] - row["before"]


def table(*, model: str = "default", sides: list[int], tile: int, overlap: int, steps: int, device: str = "cpu",
          threads: int = 1) -> dict[int, dict[str, dict]]:
    """{side: {"untiled": row, "tiled": row}}, one fresh process each."""
    common = dict(model=model, overlap=overlap, steps=steps, device=device, threads=threads)
    return {side: {"untiled": child(side=side, tile=UNTILED, **common),
                   "tiled": child(side=side, tile=tile, **common)} for side in sides}


def breakdown(*, model: str = "default", side: int, tile: int, overlap: int, steps: int, device: str = "cpu",
              threads: int = 1) -> list[str]:
    """Lines naming what sets the peak: the parts' working memory on one image, measured in a fresh process."""
    parts = child(parts=True, model=model, side=side, tile=tile, overlap=overlap, steps=steps, device=device,
                  threads=threads)
    return [f"parts of an untiled run at LR side {side} (working memory of each alone, glibc's bytes in use): "
            + ", ".join(f"{name} {value / (1 << 20):.0f} MiB" for name, value in parts.items())]


def report(rows: dict[int, dict[str, dict]], *, tile: int, overlap: int, steps: int) -> list[str]:
    """The growth table (MiB and bytes per output pixel) and the tiled / untiled ratios at the largest side."""
    mib = 1 << 20
    gpu = "cuda_peak" in next(iter(rows.values()))["untiled"]
    kind = "GPU max_memory_allocated" if gpu else "process peak RSS (VmHWM)"
    lines = [f"memory: {kind}; one sample, {steps} sampler steps; tiled = tile {tile}, overlap {overlap} "
             "(model-space pixels); working = peak minus memory in use just before the call",
             f"{'LR side':>7s} {'output':>11s} | {'untiled peak':>12s} {'working':>8s} {'B/out px':>8s} | "
             f"{'tiled peak':>10s} {'working':>8s} {'B/out px':>8s}"]
    for side, pair in rows.items():
        cells = []
        for row in (pair["untiled"], pair["tiled"]):
            peak = row["cuda_peak"] if gpu else row["peak"]
            cells.append(f"{peak / mib:9.0f} MiB {working(row) / mib:4.0f} MiB {working(row) / row['out_pixels']:8.1f}")
        lines.append(f"{side:7d} {4 * side:>5d}x{4 * side:<5d} | {cells[0]} | {cells[1]}")
    side = max(rows)
    untiled, tiled = rows[side]["untiled"], rows[side]["tiled"]
    peak_key = "cuda_peak" if gpu else "peak"
    lines.append(f"ratio tiled / untiled at {side} -> {4 * side}: peak {tiled[peak_key] / untiled[peak_key]:.2f}, "
                 f"working memory {working(tiled) / working(untiled):.2f}")
    return lines


def main() -> None:
    """Run the table (or, with --child, one measurement printed as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model name or folder (default: default)")
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 256, 384, 512], help="LR sides")
    parser.add_argument("--tile", type=int, default=128, help="tile side in model-space pixels (default: 128)")
    parser.add_argument("--overlap", type=int, default=16, help="tile overlap in model-space pixels (default: 16)")
    parser.add_argument("--steps", type=int, default=5, help="sampler steps (default: 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parts", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common = dict(model=args.model, overlap=args.overlap, steps=args.steps, device=args.device, threads=args.threads)
    if args.child or args.parts:
        measure_one = parts_here if args.parts else measure_here
        print(json.dumps(measure_one(side=args.sides[0], tile=args.tile, **common)))
        return
    rows = table(sides=args.sides, tile=args.tile, **common)
    lines = report(rows, tile=args.tile, overlap=args.overlap, steps=args.steps)
    print("\n".join(lines + breakdown(side=max(args.sides), tile=args.tile, **common)))


if __name__ == "__main__":
    main()
