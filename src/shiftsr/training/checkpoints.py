"""Exact, crash-safe checkpoints: everything a run needs to go on bit for bit, swapped in only once fully written."""
from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from .files import recover_folder, replace_folder, staging_folder, write_text_atomic

INFO_FILE = "shiftsr_checkpoint.json"
# settings a checkpoint's weights depend on: resuming with other values would load into the wrong network or process
FIXED_SETTINGS = {"data": ("scale",), "model": ("kind", "prediction", "cond_mode", "codec", "channels", "num_blocks",
                                                 "latent_channels"),
                  "process": ("t1", "beta_schedule", "resshift_steps", "kappa", "power")}


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names its folder and what to do."""


def stream_seed(seed: int, rank: int, step: int, stream: int) -> int:
    """A well-mixed seed for random stream `stream` of process `rank` starting at `step` (numpy SeedSequence)."""
    return int(np.random.SeedSequence([seed, rank, step, stream]).generate_state(1)[0])


class TrainState:
    """What a checkpoint holds besides weights, optimizer and EMA: step, training seconds, every process's streams."""

    def __init__(self, streams: dict[str, torch.Generator], *, seed: int, rank: int, world_size: int):
        self.step, self.seconds = 0, 0.0
        self.streams, self.seed, self.rank, self.world_size = streams, seed, rank, world_size
        self.gathered: list[dict] = []
        self.exact = True
        self.seed_streams()

    def seed_streams(self) -> None:
        """Seed the streams for this process and step: each process draws its own data and noise."""
        for index, generator in enumerate(self.streams.values()):
            generator.manual_seed(stream_seed(self.seed, self.rank, self.step, index))

    def gather(self) -> None:
        """Collect the generator states of all processes into this one (a collective call: every process makes it)."""
        self.gathered = gather_object([{name: g.get_state() for name, g in self.streams.items()}])

    def state_dict(self) -> dict:
        """Step, seconds and the gathered stream states, one dict per process."""
        return {"step": self.step, "seconds": self.seconds, "streams": self.gathered}

    def load_state_dict(self, state: dict) -> None:
        """Restore; with no saved streams for this number of processes, reseed them from the step (not exact)."""
        self.step, self.seconds = state["step"], state.get("seconds", 0.0)
        streams = state.get("streams", [])
        self.exact = len(streams) == self.world_size
        if not self.exact:
            self.seed_streams()
            return
        for name, generator in self.streams.items():
            generator.set_state(streams[self.rank][name])


def save_checkpoint(accelerator: Accelerator, state: TrainState, folder: Path, config: dict) -> None:
    """accelerate's save_state into FOLDER.tmp, then swapped in: a crash or a full disk keeps the last good one."""
    staging = staging_folder(folder)
    state.gather()
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # the leftover of a crash while saving
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(staging))
        if accelerator.is_main_process:
            info = {"step": state.step, "world_size": state.world_size, "config": config}
            write_text_atomic(staging / INFO_FILE, json.dumps(info, indent=2) + "\n")
    except OSError as error:
        raise OSError(error.errno, f"{folder}: saving the checkpoint failed ({error.strerror or error}); "
                                   "the last good checkpoint is kept") from error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(staging, folder)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, folder: Path, config: dict) -> bool:
    """Resume everything registered with the accelerator from folder; False when there is no checkpoint yet."""
    if accelerator.is_main_process:
        recover_folder(folder)
    accelerator.wait_for_everyone()
    if not folder.is_dir():
        return False
    check_settings(folder, config)
    check_pickles(folder)
    try:
        accelerator.load_state(str(folder))
    except Exception as error:  # safetensors, pickle, zip and shape errors all mean: this folder cannot be resumed
        raise CheckpointError(f"{folder}: the checkpoint is damaged or incomplete ({type(error).__name__}: "
                              f"{' '.join(str(error).split())[:200]}); delete the folder to train from scratch, "
                              "or resume from a copy of the output folder") from None
    accelerator.step = 0  # micro-batches since the last optimizer step: a checkpoint is taken right after one
    return True


def check_pickles(folder: Path) -> None:
    """Refuse custom states that would run code when unpickled: accelerate reads them with weights_only=False, ours
    hold only tensors, numbers and lists (a damaged file is left to load_state, which reports it)."""
    for path in sorted(folder.glob("custom_checkpoint_*.pkl")):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            found = re.search(r"GLOBAL (\S+)", str(error))
            if found:
                raise CheckpointError(f"{path}: refused: unpickling it would call {found[1]}, which could run any "
                                      "code; a shiftsr checkpoint holds only tensors and numbers") from None
        except Exception:  # noqa: BLE001 - damaged: load_state names it below
            continue


def check_settings(folder: Path, config: dict) -> None:
    """Refuse a checkpoint whose network or process settings differ from the recipe, naming the first difference."""
    info_path = folder / INFO_FILE
    if not info_path.exists():  # written before the info file existed: the weights' shapes are checked on loading
        return
    try:
        saved = json.loads(info_path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{info_path}: cannot be read ({error}); delete {folder} to train from scratch") from None
    for section, keys in FIXED_SETTINGS.items():
        for key in (key for key in keys if key in saved.get(section, {})):  # older checkpoints lack newer keys
            old, new = saved[section][key], config[section][key]
            if old != new:
                raise CheckpointError(f"{folder}: was trained with {section}.{key} = {old!r} but the recipe says "
                                      f"{new!r}; resume with the same setting, or set run.output to a new folder")
