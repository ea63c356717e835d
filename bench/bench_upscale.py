"""Time one 128x128 -> 512x512 upscale: total, network, codec + resize, and the sampler's own overhead.

Run `python bench/bench_upscale.py [--model PATH] [--device cpu] [--threads N] [--runs 3]`.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple

import torch

import shiftsr.pipeline as pipeline
from shiftsr.pipeline import DTYPES, ShiftSRPipeline, load


class Stopwatch:
    """Accumulates wall time of the calls it wraps, synchronising CUDA so GPU work is counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, function: Callable) -> Callable:
        """function, timed into this stopwatch."""
        def timed(*args, **kwargs):
            self.sync()
            started = time.perf_counter()
            result = function(*args, **kwargs)
            self.sync()
            self.seconds += time.perf_counter() - started
            self.calls += 1
            return result
        return timed

    def sync(self) -> None:
        """Wait for queued GPU work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        """Start a new measurement."""
        self.seconds, self.calls = 0.0, 0


@contextlib.contextmanager
def instrumented(pipe: ShiftSRPipeline) -> Iterator[tuple[Stopwatch, Stopwatch]]:
    """(network, codec + resize) stopwatches wrapped around the pipeline's parts; the originals come back after."""
    network, codec = Stopwatch(pipe.device), Stopwatch(pipe.device)
    saved = pipe.net.forward, pipe.codec.encode, pipe.codec.decode, pipeline.imresize
    pipe.net.forward = network.wrap(pipe.net.forward)
    pipe.codec.encode, pipe.codec.decode = codec.wrap(pipe.codec.encode), codec.wrap(pipe.codec.decode)
    pipeline.imresize = codec.wrap(pipeline.imresize)
    try:
        yield network, codec
    finally:
        pipe.net.forward, pipe.codec.encode, pipe.codec.decode, pipeline.imresize = saved


def time_upscale(pipe: ShiftSRPipeline, image: torch.Tensor, *, scale: float, runs: int, **sampler) -> dict:
    """Medians over `runs` timed calls after one warm-up: seconds per image, network, codec, sampler overhead."""
    totals, nets, codecs = [], [], []
    with instrumented(pipe) as (network, codec):
        pipe(image, scale=scale, **sampler)
        for _ in range(runs):
            network.reset(), codec.reset()
            started = time.perf_counter()
            pipe(image, scale=scale, **sampler)
            network.sync()
            totals.append(time.perf_counter() - started)
            nets.append(network.seconds)
            codecs.append(codec.seconds)
    overheads = [(total - net - cod) / net for total, net, cod in zip(totals, nets, codecs)]
    return {"seconds": statistics.median(totals), "network": statistics.median(nets),
            "codec": statistics.median(codecs), "network_calls": network.calls,
            "overhead": statistics.median(overheads)}


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
    method, steps, order = (given or default for given, default in zip(
        (args.method, args.steps, args.order), astuple(pipe.settings.sampler)))
    print(f"model {args.model}: x{pipe.scale}, {args.size}x{args.size} -> {args.out}x{args.out}, "
          f"{method}, {steps} steps, order {order}")
    print(f"device {pipe.device}, {args.dtype}, torch threads {torch.get_num_threads()}, {args.runs} runs (median)")
    print(f"seconds per image        {result['seconds']:.3f}")
    print(f"network                  {result['network']:.3f}  ({result['network_calls']} calls)")
    print(f"encode + decode + resize {result['codec']:.3f}")
    print(f"sampler overhead         {result['overhead']:.1%} of network time")


if __name__ == "__main__":
    main()
