"""Seconds of one full-size DoSSR upscale (random weights): a converted shiftsr bundle against the official code.

Run `python bench/bench_official_dossr.py [--side 64] [--steps 5] [--threads 2] [--runs 2] [--folder /tmp/dossr-full]
[--official /tmp/dossr-official --python /tmp/dossr-venv/bin/python]`.

The bundle is built from the released key layout (tests/fixtures/official/dossr/full_keys.json: 2,377 tensors, 1.72B
values) by convert_dossr on meta tensors, then every tensor is filled with seeded random values (weights
N(0, 1 / fan_in), norm scales 1 +- 0.1, the rest 0.05 N(0, 1)) and the bundle is written as `shiftsr convert` writes
it (1.36B parameters: the text tower is not kept). Random weights run as fast as trained ones; no released file is
needed. Each side runs in a fresh process: a warm-up upscale, then --runs timed ones of a side x side random LR; it
prints seconds per upscale (wall and process CPU time), the network evaluations and the peak resident set (VmHWM).

With --official (a checkout of AMD-AIG-AIMA/DoSSR) and --python (a venv with omegaconf, open-clip-torch 2.24 and ftfy,
as in scripts/official_fixtures/dossr/record.py), the official ControlLDM of configs/model/cldm_v21.yaml (its own
random init, OpenCLIP ViT-H-14 text tower built from open_clip's config) runs scripts/inference.py process(): the
RRDB, then SpacedSampler.shift_sample_3_order at --steps with the wavelet colour fix, then the clamp.

Measured here (2 shared cores, load average 7 to 10, 64x64 -> 256x256, 5 steps, one warm-up then one timed run):
1 thread: shiftsr 23.7 s CPU (53.8 s wall), official 28.7 s CPU (87.8 s wall): the official code does 1.2x the work
(it encodes the prompt and the condition twice per call, for a negative prompt cfg_scale 1 never uses); peak RSS
9.5 GiB (shiftsr, reached while loading 5.1 GiB of weights; a run adds 0.7 GiB) and 7.7 GiB (official, 1.72B
parameters built in place). With --threads 2 on that busy machine both took about 75 s CPU per upscale (OpenMP
threads spin while they wait), shiftsr 255 s and the official code 160 s wall: use --threads 1 on a shared CPU.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ROOT / "tests" / "fixtures" / "official" / "dossr" / "full_keys.json"
RECORD = ROOT / "scripts" / "official_fixtures" / "dossr" / "record.py"
SEED = 0


def peak_bytes() -> int:
    """The resident-set high-water mark of this process (/proc/self/status VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (this benchmark needs Linux)")


def build_bundle(folder: Path, steps: int) -> Path:
    """The full-size bundle with random weights, written as `shiftsr convert dossr` writes it."""
    import torch

    from shiftsr.convert import Converted, write_converted
    from shiftsr.convert.dossr import bundle_settings, convert_dossr, model_card
    from shiftsr.denoisers.codecs import AutoencoderKLCodec

    state = {key: torch.empty(shape, device="meta") for key, shape in json.loads(KEYS.read_text())}
    conversion = convert_dossr(state, "random_full_size.ckpt")
    gen = torch.Generator().manual_seed(SEED)
    modules = (conversion.ldm, conversion.vae, conversion.cond_encoder, conversion.preprocessor)
    with torch.no_grad():
        for module in modules:
            module.to_empty(device="cpu")
            for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
                tensor.normal_(generator=gen)
                if tensor.ndim >= 2:
                    tensor.div_(math.sqrt(math.prod(tensor.shape[1:])))
                elif name.endswith(".weight"):
                    tensor.mul_(0.1).add_(1)
                else:
                    tensor.mul_(0.05)
    settings = bundle_settings(conversion.ldm, steps)
    card = model_card(conversion, Path("random_full_size.ckpt"), settings, {})
    converted = Converted(net=conversion.ldm, settings=settings, card=card,
                          codec=AutoencoderKLCodec(conversion.vae, sample=True),
                          parts={"cond_encoder": conversion.cond_encoder, "preprocessor": conversion.preprocessor})
    return write_converted(converted, folder, overwrite=True)


def timed(upscale, runs: int) -> dict:
    """A warm-up call, then wall and CPU seconds per call over runs calls."""
    upscale()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        nfe = upscale()
    return {"seconds": (time.perf_counter() - wall) / runs, "cpu_seconds": (time.process_time() - cpu) / runs,
            "nfe": nfe}


def shiftsr_child(folder: Path, side: int, steps: int, runs: int, threads: int) -> dict:
    """One timed shiftsr upscale of a side x side LR in this process."""
    import torch

    import shiftsr

    torch.set_num_threads(threads)
    started = time.perf_counter()
    pipe = shiftsr.load(folder, device="cpu")
    loaded = time.perf_counter() - started
    lr = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(SEED))

    def upscale() -> int:
        return pipe.run(lr, steps=steps, samples=1, seed=0).record["nfe"]

    return {"code": "shiftsr", "load_seconds": loaded, **timed(upscale, runs), "peak": peak_bytes()}


def official_child(official: Path, side: int, steps: int, runs: int, threads: int) -> dict:
    """scripts/inference.py process() of the official ControlLDM (random init) on a side x side LR."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("dossr_record", RECORD)
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    sys.path[:0] = [str(record.STUBS), str(official)]
    torch.set_num_threads(threads)
    import open_clip
    from ldm.xformers_state import disable_xformers
    from model.shift_sampler import SpacedSampler
    from omegaconf import OmegaConf
    from utils.common import instantiate_from_config

    record.shim_open_clip(open_clip.get_model_config("ViT-H-14")["text_cfg"])
    disable_xformers()
    started = time.perf_counter()
    model = instantiate_from_config(OmegaConf.load(official / "configs" / "model" / "cldm_v21.yaml")).eval()
    loaded = time.perf_counter() - started
    lr = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(SEED))

    @torch.no_grad()
    def upscale() -> int:
        pre = model.preprocess_model(lr).float().clamp_(0, 1)
        model.control_scales = [1.0] * 13
        sampler = SpacedSampler(model, var_type="fixed_small")
        shape = (1, 4, pre.shape[-2] // 8, pre.shape[-1] // 8)
        sampler.shift_sample_3_order(steps=steps, shape=shape, cond_img=pre, x_T=pre, cfg_scale=1.0,
                                     color_fix_type="wavelet").clamp(0, 1)
        return steps

    return {"code": "official", "load_seconds": loaded, **timed(upscale, runs), "peak": peak_bytes()}


def child(python: str, code: str, path: Path, args: argparse.Namespace) -> dict:
    """Run this file's --child mode in a fresh process and read its one JSON line."""
    numbers = [f"--{name}={getattr(args, name)}" for name in ("side", "steps", "runs", "threads")]
    done = subprocess.run([python, __file__, "--child", code, str(path), *numbers], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench_official_dossr child {code} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=64, help="LR side; the output is 4x")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/dossr-full"), help="where the bundle is written")
    parser.add_argument("--official", type=Path, help="a checkout of AMD-AIG-AIMA/DoSSR")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs the official code")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    numbers = (args.side, args.steps, args.runs, args.threads)
    if args.child:
        code, path = args.child
        run = shiftsr_child if code == "shiftsr" else official_child
        print(json.dumps(run(Path(path), *numbers)))
        return
    started = time.perf_counter()
    if not (args.folder / "shiftsr.json").is_file():
        build_bundle(args.folder, args.steps)
        print(f"bundle: {args.folder} written in {time.perf_counter() - started:.0f} s")
    results = [child(sys.executable, "shiftsr", args.folder, args)]
    if args.official:
        results.append(child(args.python, "official", args.official.resolve(), args))
    print(f"{args.side}x{args.side} -> {4 * args.side}x{4 * args.side}, {args.steps} steps, order 3, "
          f"{args.threads} threads, {args.runs} timed runs after a warm-up")
    for r in results:
        print(f"{r['code']:>8}: {r['seconds']:.2f} s/upscale wall, {r['cpu_seconds']:.2f} s CPU, nfe {r['nfe']}, "
              f"peak RSS {r['peak'] / 2**30:.2f} GiB (model built or loaded in {r['load_seconds']:.1f} s)")
    if len(results) == 2:
        print(f"official / shiftsr: {results[1]['seconds'] / results[0]['seconds']:.2f}x wall")


if __name__ == "__main__":
    main()
