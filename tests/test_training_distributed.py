"""Two real CPU processes through `accelerate launch`: each draws its own data and the gradients are averaged."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from shiftsr.bundle import load_bundle
from shiftsr.training.train import train
from test_training import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_cpu_processes(tmp_path):
    cfg = tiny_config(tmp_path, iterations=2, output="two")
    cfg.save(tmp_path / "tiny.yaml")
    # `accelerate launch --cpu` starts one process; torchrun-style workers (--multi_gpu) join on CPUs through gloo
    # when ACCELERATE_USE_CPU is set
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "shiftsr.training.train", "tiny.yaml"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(tmp_path / "two" / "model")]  # printed by the main process only
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and (log[0]["world_size"], log[0]["effective_batch"]) == (2, 4)
    assert [r["step"] for r in log if r["event"] == "train"] == [1, 2] and log[-1]["event"] == "end"
    streams = torch.load(tmp_path / "two" / "checkpoint" / "custom_checkpoint_1.pkl")["streams"]
    assert len(streams) == 2 and not torch.equal(streams[0]["data"], streams[1]["data"])
    two = load_bundle(tmp_path / "two" / "model")[0].state_dict()
    # process 0 of the pair draws exactly what a single process draws: only the averaged gradients can differ
    one = load_bundle(train(cfg.updated({"run": {"output": str(tmp_path / "one")}})))[0].state_dict()
    assert any(not torch.equal(two[k], one[k]) for k in one)
