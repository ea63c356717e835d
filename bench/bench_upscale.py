"""Time one 128x128 -> 512x512 upscale: total, network, codec + resize, and the sampler's own overhead.

Run `python bench/bench_upscale.py [--model PATH] [--device cpu] [--threads N] [--runs 3]`.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from shiftsr.pipeline import DTYPES, ShiftSRPipeline, load


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so wall time counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def network_stopwatch(pipe: ShiftSRPipeline) -> Iterator[list[float]]:
    """Seconds spent inside pipe.net's forward calls, accumulated in [wall seconds, calls, CPU seconds] through
    forward hooks (CPU seconds: this process's, which other processes on a busy machine do not inflate)."""
    totals, started = [0.0, 0, 0.0], []

    def before(module, args) -> None:
        synchronise(pipe.device)
        started.append((time.perf_counter(), time.process_time()))

    def after(module, args, output) -> None:
        synchronise(pipe.device)
        wall, cpu = started.pop()
        totals[0] += time.perf_counter() - wall
        totals[1] += 1
        totals[2] += time.process_time() - cpu

    handles = pipe.net.register_forward_pre_hook(before), pipe.net.register_forward_hook(after)
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()


def timed(function: Callable, device: torch.device, clock: Callable[[], float] = time.perf_counter
          ) -> tuple[float, object]:
    """(seconds, result) of one call, GPU work included; clock time.process_time counts CPU seconds."""
    synchronise(device)
    started = clock()
    result = function()
    synchronise(device)
    return clock() - started, result


def codec_seconds(pipe: ShiftSRPipeline, image: torch.Tensor, *, scale: float, samples: int,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """The image side of one upscale, run alone: the LR to the source image, its encoding, `samples` decodings
    and the final MATLAB resize (each through the pipeline's public parts)."""
    device = pipe.device
    lr = image.to(device)
    with torch.no_grad():
        source, canvas = timed(lambda: pipe.source_image(lr), device, clock)
        encode, latent = timed(lambda: pipe.encode(canvas), device, clock)
        decode, decoded = timed(lambda: pipe.decode(latent), device, clock)
        plan = pipe.plan(tuple(lr.shape[-2:]), scale=scale)
        resize, _ = timed(lambda: pipe.finish(decoded.clamp(0, 1).cpu(), plan), device, clock)
    return source + encode + samples * decode + resize


def time_upscale(pipe: ShiftSRPipeline, image: torch.Tensor, *, scale: float, runs: int, **sampler) -> dict:
    """Medians over `runs` timed calls after one warm-up: seconds per image, network, codec, sampler overhead;
    the overhead in wall time and in this process's CPU time (on the CPU with one thread, the same work)."""
    totals, nets, cpu_totals, cpu_nets = [], [], [], []
    samples = pipe.sampler_settings(**sampler)["samples"]
    with network_stopwatch(pipe) as network:
        pipe(image, scale=scale, **sampler)
        for _ in range(runs):
            network[:] = [0.0, 0, 0.0]
            started = time.process_time()
            seconds, _ = timed(lambda: pipe(image, scale=scale, **sampler), pipe.device)
            cpu_totals.append(time.process_time() - started)
            totals.append(seconds)
            nets.append(network[0])
            cpu_nets.append(network[2])
    codec = statistics.median(codec_seconds(pipe, image, scale=scale, samples=samples) for _ in range(runs))
    cpu_codec = statistics.median(codec_seconds(pipe, image, scale=scale, samples=samples, clock=time.process_time)
                                  for _ in range(runs))
    overheads = [(total - net - codec) / net for total, net in zip(totals, nets)]
    cpu_overheads = [(total - net - cpu_codec) / net for total, net in zip(cpu_totals, cpu_nets)]
    return {"seconds": statistics.median(totals), "network": statistics.median(nets), "codec": codec,
            "network_calls": network[1], "overhead": statistics.median(overheads),
            "cpu_overhead": statistics.median(cpu_overheads)}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="bundled model name or model folder (default: default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="network precision (default: fp32)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (default: 3)")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels (default: 128)")
    parser.add_argument("--out", type=int, default=512, help="output side in pixels (default: 512)")
    parser.add_argument("--method", help="sampling method (default: the model's)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--order", type=int, help="solver order (default: the model's)")
    return parser.parse_args()


def main() -> None:
    """Warm up once, time the runs, print medians."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        pipe = load(args.model, device=args.device, dtype=DTYPES[args.dtype])
    except FileNotFoundError as error:
        raise SystemExit(f"bench_upscale: {error}") from None
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    sampler = dict(method=args.method, steps=args.steps, order=args.order)
    result = time_upscale(pipe, image, scale=args.out / args.size, runs=args.runs, **sampler)
    method, steps, order = (pipe.sampler_settings(**sampler)[key] for key in ("method", "steps", "order"))
    print(f"model {args.model}: x{pipe.scale}, {args.size}x{args.size} -> {args.out}x{args.out}, "
          f"{method}, {steps} steps, order {order}")
    print(f"device {pipe.device}, {args.dtype}, torch threads {torch.get_num_threads()}, {args.runs} runs (median)")
    print(f"seconds per image        {result['seconds']:.3f}")
    print(f"network                  {result['network']:.3f}  ({result['network_calls']} calls)")
    print(f"encode + decode + resize {result['codec']:.3f}")
    print(f"sampler overhead         {result['overhead']:.1%} of network time "
          f"({result['cpu_overhead']:.1%} in CPU time)")


if __name__ == "__main__":
    main()
