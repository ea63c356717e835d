"""Large jobs for `shiftsr upscale`: inputs shared across processes and machines, and same-size images batched.

Under `accelerate launch` (accelerate's PartialState) every process takes every num_processes-th input of the
sorted list from its own index, so each file is done once whatever the order the inputs were given in, and runs on
its own device; a single process takes them all. `--skip-existing` then resumes a stopped job from what it wrote.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def process_state():
    """accelerate's PartialState: this process's index, the number of processes and its device (processes on
    CPUs where ACCELERATE_USE_CPU is set or no GPU is there)."""
    import torch
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def shard(files: list[Path]) -> list[Path]:
    """This process's inputs: all of them alone; under a launcher, its share of the list sorted by path."""
    state = process_state()
    if state.num_processes == 1:
        return files
    return sorted(files)[state.process_index::state.num_processes]


def process_device(device: str) -> str:
    """--device for this process: auto is the device the launcher gave it (cuda:LOCAL_RANK, or the CPU)."""
    if device != "auto" or process_state().num_processes == 1:
        return device
    given = process_state().device
    return "cpu" if given.type == "cpu" else str(given)  # "cpu", not "cpu:0": fp32 is the CPU's default


class Batcher:
    """The upscaler of run_files, upscaling up to `size` consecutive same-size inputs in one call.

    bind(path) gives the upscaler for one input: its first call reads the inputs after it that will be upscaled
    (`wanted`) while they have its size, runs them as one batch (each image keeps its own seeded generators, so
    each result is the one it gets alone) and keeps their results for their own calls.
    """

    def __init__(self, upscaler: Callable, files: list[Path], *, size: int, read: Callable, wanted: Callable):
        self.upscaler, self.files, self.size, self.read, self.wanted = upscaler, files, size, read, wanted
        self.position = {path: index for index, path in enumerate(files)}
        self.done: dict[Path, object] = {}

    def bind(self, path: Path) -> Callable:
        """The upscaler call for path's image (a result kept from a batch, or a new batch from path on)."""
        return lambda image, **kwargs: self.done.pop(path, None) or self.run(path, image, **kwargs)

    def run(self, path: Path, image, **kwargs):
        """Upscale image (path's) with the next inputs of its size as one batch; path's result, the others kept."""
        import torch

        from ..pipeline import Upscaled

        group, images = [path], [image]
        for following in self.files[self.position[path] + 1:]:
            if len(group) == self.size or not self.wanted(following):
                break
            try:
                rgb = self.read(following).rgb
            except (ValueError, OSError):  # its own call reports the problem
                break
            if rgb.shape != image.shape:
                break
            group.append(following)
            images.append(rgb)
        result = self.upscaler(torch.stack(images), **kwargs)
        self.done.clear()
        for index, member in enumerate(group):
            std = None if result.std is None else result.std[index:index + 1]
            self.done[member] = Upscaled(result.image[index:index + 1], dict(result.record), std)
        return self.done.pop(path)
