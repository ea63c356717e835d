"""Peak memory of MATLAB bicubic imresize (shiftsr.ops.imresize) on a long thin image and a large square one.

Run `python bench/bench_imresize.py [--threads 1]`. Each case runs in a fresh Python process and prints its peak
resident set (VmHWM, reset just before the call by /proc/self/clear_refs as in bench_memory.py), the working
memory (that peak minus the resident set just before the call), the input and output sizes, and the seconds.
Cases: a 3x16x12000 image x4 (-> 3x64x48000) and a 3x512x512 image x4 (-> 3x2048x2048), float32.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = {"16x12000 x4": (16, 12000), "512x512 -> 2048x2048": (512, 512)}


def measure_here(case: str, threads: int) -> dict:
    """Peak RSS, working memory and seconds of one x4 imresize of a random 3-channel float32 image of the case."""
    import torch

    from bench_memory import status_bytes, working_memory
    from shiftsr.ops.imresize import imresize

    torch.set_num_threads(threads)
    image = torch.rand(3, *CASES[case], generator=torch.Generator().manual_seed(0))
    shapes = []
    start = time.perf_counter()
    working = working_memory(lambda: shapes.append(tuple(imresize(image, scale=4).shape)), torch.device("cpu"))
    return {"case": case, "peak": status_bytes("VmHWM"), "working": working, "seconds": time.perf_counter() - start,
            "input": tuple(image.shape), "output": shapes[0]}


def child(case: str, threads: int) -> dict:
    """measure_here in a fresh Python process, so no earlier allocation hides in the high-water mark."""
    command = [sys.executable, __file__, "--child", case, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench_imresize child {case!r} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Print one line per case (or, with --child, one measurement as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_here(args.child, args.threads)))
        return
    mib = 1 << 20
    print("imresize x4, float32, one fresh process per case: peak RSS (VmHWM), working = peak minus RSS before")
    for case in CASES:
        row = child(case, args.threads)
        print(f"{case:>22s}: {row['input']} -> {row['output']}, peak RSS {row['peak'] / mib:.0f} MiB, "
              f"working {row['working'] / mib:.0f} MiB, {row['seconds']:.2f} s")


if __name__ == "__main__":
    main()
