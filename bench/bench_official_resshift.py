"""Seconds of one full-size ResShift v3 upscale (random weights): `shiftsr upscale` of a converted bundle against
the official sampler.

Run `python bench/bench_official_resshift.py [--side 64] [--threads 2] [--folder /tmp/resshift-full]
[--official /tmp/rs] [--python /tmp/resshift-venv/bin/python]`.

The official code (an extracted github:zsyOAOA/ResShift, run by --python: a venv with omegaconf and loguru, as in
scripts/official_fixtures/resshift/record.py) builds UNetModelSwin and VQModelTorch of
configs/realsr_swinunet_realesrgan256_journal.yaml at full size (118.6M + 55.3M parameters), every parameter
re-drawn by record.py's `redraw` (the sampler runs' scale), and saves them as the released files are: plain state
dicts, resshift_realsrx4_s4_v3.pth and autoencoder_vq_f4.pth. `shiftsr convert resshift-v3` makes the bundle.
Then, each in a fresh process on --threads threads, CPU, fp32, the same seeded side x side LR (a PNG):
the official ResShiftSampler.sample_func (inference_resshift.py's settings, use_amp off on a CPU), a warm-up call
and a timed one; and `shiftsr upscale` of the PNG twice (the first file warms up): the second file's JSON seconds and
its process CPU time. Random weights run as fast as trained ones. Prints both times and the ratios shiftsr /
official (wall and CPU: on a shared machine the CPU time is the steadier number).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "scripts" / "official_fixtures" / "resshift" / "record.py"
CONFIG = "configs/realsr_swinunet_realesrgan256_journal.yaml"
FILES = {"unet": "resshift_realsrx4_s4_v3.pth", "vq": "autoencoder_vq_f4.pth"}
SEED = 0


def record_module():
    """scripts/official_fixtures/resshift/record.py: the stand-ins the official code needs and `redraw`."""
    spec = importlib.util.spec_from_file_location("resshift_record", RECORD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_sampler(official: Path, folder: Path, threads: int):
    """The official ResShiftSampler on the files in folder (official code, in the venv)."""
    import torch

    record = record_module()
    record.install_stand_ins(official, "resshift")
    torch.set_num_threads(threads)
    from omegaconf import OmegaConf
    from sampler import ResShiftSampler

    configs = OmegaConf.load(official / CONFIG)
    configs.model.ckpt_path, configs.autoencoder.ckpt_path = str(folder / FILES["unet"]), str(folder / FILES["vq"])
    configs.autoencoder.use_fp16 = False  # fp32 on a CPU
    return ResShiftSampler(configs, sf=4, chop_size=512, chop_stride=448, chop_bs=1, use_amp=False, seed=12345,
                           padding_offset=configs.model.params.get("lq_size", 64))


def write_official_files(official: Path, folder: Path, threads: int) -> dict:
    """Full-size official networks with re-drawn parameters, saved as plain state dicts (official code)."""
    import torch

    record = record_module()
    record.install_stand_ins(official, "resshift")
    torch.set_num_threads(threads)
    from omegaconf import OmegaConf
    from utils import util_common

    configs = OmegaConf.load(official / CONFIG)
    counts = {}
    for part, section in (("unet", configs.model), ("vq", configs.autoencoder)):
        module = util_common.instantiate_from_config(section)
        state = module.state_dict()
        state.update(record.redraw({k: v.shape for k, v in state.items()}, record.SEED, record.SAMPLER_BRANCH_SCALE))
        torch.save(state, folder / FILES[part])
        counts[part] = sum(p.numel() for p in module.parameters())
    return counts


def time_official(official: Path, folder: Path, threads: int) -> dict:
    """A warm-up and a timed call of the official sample_func on the LR PNG."""
    import numpy as np
    import torch
    from PIL import Image

    sampler = official_sampler(official, folder, threads)
    lr = torch.from_numpy(np.asarray(Image.open(folder / "lr.png").convert("RGB")).copy())
    y0 = lr.permute(2, 0, 1)[None].float() / 255 * 2 - 1
    with torch.no_grad():
        sampler.sample_func(y0, noise_repeat=False, mask=None)
        wall, cpu = time.perf_counter(), time.process_time()
        out = sampler.sample_func(y0, noise_repeat=False, mask=None)
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
            "size": list(out.shape[-2:])}


def in_venv(python: str, mode: str, args: argparse.Namespace) -> dict:
    """This file's --child MODE under the official venv's Python; its one JSON line."""
    done = subprocess.run([python, __file__, "--child", mode, f"--official={args.official}",
                           f"--folder={args.folder}", f"--threads={args.threads}"],
                          capture_output=True, text=True, env=thread_env(args.threads))
    if done.returncode != 0:
        raise RuntimeError(f"bench_official_resshift child {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def thread_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def upscale_cli(folder: Path) -> None:
    """`shiftsr upscale lr.png again.png -m bundle --json` in this process, each JSON line with the file's CPU time."""
    from shiftsr.cli import main as cli

    upscale = importlib.import_module("shiftsr.cli.upscale")  # the module; shiftsr.cli.upscale is also the command

    per_file = upscale.upscale_file

    def with_cpu(*args, **kwargs) -> dict:
        started = time.process_time()
        record = per_file(*args, **kwargs)
        return {**record, "cpu_seconds": round(time.process_time() - started, 3)}

    upscale.upscale_file = with_cpu
    shutil.copyfile(folder / "lr.png", folder / "again.png")
    cli(["upscale", str(folder / "lr.png"), str(folder / "again.png"), "-m", str(folder / "bundle"), "-o",
         str(folder / "out"), "--json", "-q", "--overwrite", "--device", "cpu"])


def time_shiftsr(folder: Path, threads: int) -> dict:
    """The second file's JSON record of upscale_cli in a fresh process (the first file warms up)."""
    command = [sys.executable, __file__, "--child", "shiftsr", f"--folder={folder}"]
    done = subprocess.run(command, capture_output=True, text=True, env=thread_env(threads))
    if done.returncode != 0:
        raise RuntimeError(f"shiftsr upscale failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")][-1]


def prepare(args: argparse.Namespace) -> None:
    """The official-layout files (once), the converted bundle and the seeded LR PNG."""
    import numpy as np
    from PIL import Image

    from shiftsr.cli import main as cli

    args.folder.mkdir(parents=True, exist_ok=True)
    if not all((args.folder / name).is_file() for name in FILES.values()):
        counts = in_venv(args.python, "write", args)
        print(f"official files written: UNet {counts['unet']:,} and VQ-f4 {counts['vq']:,} parameters")
    cli(["convert", "resshift-v3", "--checkpoint", str(args.folder / FILES["unet"]), "--autoencoder",
         str(args.folder / FILES["vq"]), "-o", str(args.folder / "bundle"), "--overwrite"], standalone_mode=False)
    rng = np.random.default_rng(SEED)
    Image.fromarray(rng.integers(0, 256, (args.side, args.side, 3), dtype=np.uint8)).save(args.folder / "lr.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=64, help="LR side; the output is 4x")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/resshift-full"), help="files, bundle, images")
    parser.add_argument("--official", type=Path, default=Path("/tmp/rs"), help="an extracted zsyOAOA/ResShift")
    parser.add_argument("--python", default="/tmp/resshift-venv/bin/python", help="runs the official code")
    parser.add_argument("--child", choices=("write", "time", "shiftsr"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.official = args.official.resolve()
    if args.child == "shiftsr":
        return upscale_cli(args.folder)
    if args.child:
        run = write_official_files if args.child == "write" else time_official
        print(json.dumps(run(args.official, args.folder, args.threads)))
        return
    prepare(args)
    official = in_venv(args.python, "time", args)
    ours = time_shiftsr(args.folder, args.threads)
    print(f"ResShift v3, {args.side}x{args.side} -> {4 * args.side}x{4 * args.side}, CPU fp32, {args.threads} "
          f"threads, one timed call after a warm-up")
    print(f"official sample_func: {official['seconds']:.2f} s wall ({official['cpu_seconds']:.2f} s CPU), "
          f"output {official['size']}")
    print(f"shiftsr upscale:      {ours['seconds']:.2f} s wall ({ours['cpu_seconds']:.2f} s CPU), nfe {ours['nfe']}, "
          f"output {ours['size']}")
    print(f"shiftsr / official: {ours['seconds'] / official['seconds']:.2f} wall, "
          f"{ours['cpu_seconds'] / official['cpu_seconds']:.2f} CPU")


if __name__ == "__main__":
    main()
