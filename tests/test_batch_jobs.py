"""Batch jobs of `shiftsr upscale`: two processes under `accelerate launch`, a killed job resumed with
--skip-existing, same-size inputs batched with --batch, and the network exported to ONNX."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from shiftsr.cli import main

SIZES = [(12, 16), (12, 16), (12, 16), (10, 14), (12, 16), (10, 14)]  # (height, width) of the six inputs


def inputs(folder):
    """Six small random PNGs of two sizes, named out of order."""
    folder.mkdir()
    for index, (height, width) in enumerate(SIZES):
        pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{(index * 7) % 6}.png")
    return folder


def pixels(folder):
    """{name: decoded pixels} of every file in folder."""
    return {path.name: np.asarray(Image.open(path)) for path in sorted(folder.iterdir())}


def cli(*args):
    """`shiftsr ARGS` in this process."""
    result = CliRunner().invoke(main, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def command(tiny_model, *args):
    return [sys.executable, "-m", "shiftsr", "upscale", *map(str, args), "--model", str(tiny_model), "-q", "--json"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}


def test_two_processes_share_a_folder_and_match_one_process(tiny_model, tmp_path):
    folder = inputs(tmp_path / "in")
    cli("upscale", folder, "-o", tmp_path / "one", "--model", tiny_model, "-q")
    # `accelerate launch --cpu` starts one process; torchrun-style workers (--multi_gpu) join on CPUs through gloo
    # when ACCELERATE_USE_CPU is set (as tests/test_training_distributed.py does)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "shiftsr", "upscale", str(folder), "-o",
              str(tmp_path / "two"), "--model", str(tiny_model), "-q", "--json"]
    done = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(record["input"] for record in records) == sorted(str(path) for path in folder.iterdir())
    one, two = pixels(tmp_path / "one"), pixels(tmp_path / "two")
    assert sorted(two) == sorted(one) and len(one) == len(SIZES)
    assert all(np.array_equal(two[name], one[name]) for name in one)


def test_a_killed_job_resumes_with_skip_existing_without_redoing_any(tiny_model, tmp_path):
    folder, out = inputs(tmp_path / "in"), tmp_path / "out"
    slow = ("--steps", 50, "--samples", 4)  # a few tenths of a second an image: the kill lands mid-job
    job = subprocess.Popen(command(tiny_model, folder, "-o", out, *slow), env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(path.suffix == ".png" for path in out.iterdir())) and job.poll() is None:
        assert time.monotonic() < deadline, "no output within two minutes"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.communicate()
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.suffix == ".png"}
    assert 1 <= len(before) < len(SIZES)
    done = subprocess.run(command(tiny_model, folder, "-o", out, *slow, "--skip-existing"), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {os.path.basename(r["output"]): r for r in map(json.loads, done.stdout.splitlines())}
    assert len(records) == len(SIZES)
    assert {name for name, record in records.items() if record.get("skipped") == "exists"} == set(before)
    after = {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.suffix == ".png"}
    assert len(after) == len(SIZES) and all(after[name] == before[name] for name in before)  # none redone
    assert all(Image.open(out / name).size == (64, 48) or Image.open(out / name).size == (56, 40) for name in after)


def test_batched_inputs_give_the_single_results(tiny_model, tmp_path):
    folder = inputs(tmp_path / "in")
    cli("upscale", folder, "-o", tmp_path / "single", "--model", tiny_model, "-q", "--samples", 2)
    cli("upscale", folder, "-o", tmp_path / "batched", "--model", tiny_model, "-q", "--samples", 2, "--batch", 3)
    single, batched = pixels(tmp_path / "single"), pixels(tmp_path / "batched")
    assert sorted(batched) == sorted(single)
    assert max(np.abs(batched[n].astype(int) - single[n].astype(int)).max() for n in single) <= 1


def test_skip_existing_is_not_an_error_and_overwrite_still_replaces(tiny_model, tmp_path):
    folder, out = inputs(tmp_path / "in"), tmp_path / "out"
    cli("upscale", folder / "img_0.png", "-o", out, "--model", tiny_model, "-q")
    result = cli("upscale", folder, "-o", out, "--model", tiny_model, "-q", "--json", "--skip-existing")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("skipped") for r in records].count("exists") == 1 and len(os.listdir(out)) == len(SIZES)
    refused = CliRunner().invoke(main, ["upscale", str(folder / "img_0.png"), "-o", str(out), "--model",
                                        str(tiny_model), "-q"])
    assert refused.exit_code == 1 and "already exists" in refused.stderr


def test_onnx_export_runs_in_onnx_runtime_like_torch(tiny_model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    exported = cli("export", "--onnx", tiny_model, "-o", tmp_path / "net.onnx").stdout.strip()
    assert exported == str(tmp_path / "net.onnx")
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(image)
    cli("upscale", image, "-o", tmp_path / "torch", "--model", tiny_model, "-q")
    cli("upscale", image, "-o", tmp_path / "onnx", "--model", tiny_model, "-q", "--onnx", exported)
    a, b = (np.asarray(Image.open(tmp_path / kind / "a_out.png"), dtype=int) for kind in ("torch", "onnx"))
    assert np.abs(a - b).max() <= 1
