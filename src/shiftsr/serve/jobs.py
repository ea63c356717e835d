"""One upscale job: `shiftsr upscale --uncertainty`'s own read-upscale-write (cli.upscale.upscale_file) in a
temporary folder.

prepare() runs before the queue (decode, limits, settings checked against the model); run_job() runs in the
worker thread and returns the bytes of the response. The folder is removed as soon as the job has ended or
will never run (Worker.submit), so nothing of a request outlives it.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from torch import Tensor

from ..cli.limits import Limits as FileLimits
from ..cli.upscale import upscale_file
from ..imageio import ImageReadError, ImageTooLargeError, LoadedImage, read_image, write_image
from ..ops.sizes import output_size
from ..pipeline import Plan, ShiftSRPipeline
from ..uncertainty import std_paths
from .models import ModelCache
from .params import Limits, RequestError, Settings
from .watch import Monitor, watching

UPLOAD = "upload"
RESULT = "result.png"
TILING = {"tile": 0, "tile_overlap": 0}  # what `shiftsr upscale` runs without --tile: auto


@dataclass
class Prepared:
    """A checked request: its pipeline, decoded input, plan, and the job dict and limits upscale_file takes."""

    pipe: ShiftSRPipeline
    image: LoadedImage
    plan: Plan
    job: dict
    checks: FileLimits  # what upscale_file checks again (and the free memory on a CPU)
    folder: Path
    settings: Settings


@dataclass
class JobResult:
    """What a finished job sends: the result PNG, the input as the model saw it, the colour-mapped uncertainty map
    of `shiftsr upscale --uncertainty` (samples >= 2) and the record."""

    png: bytes
    preview: bytes
    uncertainty: bytes | None
    record: dict


def prepare(cache: ModelCache, settings: Settings, folder: Path, limits: Limits) -> Prepared:
    """Decode the upload in folder and check it and the settings against the limits and the model."""
    path = folder / UPLOAD
    try:
        image = read_image(path, max_pixels=limits.input_pixels)
    except ImageTooLargeError as error:
        raise RequestError(413, str(error).replace(str(path), settings.name)) from None
    except ImageReadError as error:
        raise RequestError(415, str(error).replace(str(path), settings.name)) from None
    height, width = image.rgb.shape[-2:]
    pipe = cache.get(settings.model)
    size = dict(scale=settings.scale or pipe.scale) if settings.target is None else dict(target=settings.target)
    out_height, out_width = output_size(height, width, **size)
    if out_height * out_width > limits.output_pixels:
        raise RequestError(413, f"{settings.name}: the output would be {out_width}x{out_height}, over this "
                                f"server's {limits.output_pixels:,} pixels; ask for a smaller scale or target")
    sampler = dict(method=None, steps=settings.steps, order=None, samples=settings.samples)
    try:
        plan = pipe.plan((height, width), **size, **sampler)
    except ValueError as error:
        raise RequestError(400, str(error)) from None
    job = dict(**size, seed=settings.seed, **sampler, uncertainty=plan.samples >= 2)
    checks = FileLimits(input_pixels=limits.input_pixels, output_pixels=limits.output_pixels,
                        check_memory=pipe.device.type == "cpu")
    return Prepared(pipe, image, plan, job, checks, folder, settings)


def run_job(prepared: Prepared, monitor: Monitor) -> JobResult:
    """Upscale as `shiftsr upscale --ext png [--uncertainty]` would, watched by monitor; the bytes to send."""
    monitor.check()
    folder, pipe = prepared.folder, prepared.pipe
    try:
        with watching(pipe, monitor, prepared.plan):
            record = upscale_file(pipe.run, folder / UPLOAD, folder / RESULT, overwrite=False, job=prepared.job,
                                  tiling=TILING, progress=False, limits=prepared.checks)
    except torch.OutOfMemoryError:
        raise RequestError(503, f"{prepared.settings.name}: out of memory on {pipe.device}; try a smaller image, "
                                "scale or target") from None
    except (ValueError, OSError) as error:
        raise RequestError(400, str(error).replace(str(folder / UPLOAD), prepared.settings.name)) from None
    coloured = std_paths(folder / RESULT)[0]
    for key in ("std_map", "std16"):  # paths in the temporary folder, of no use to the client
        record.pop(key, None)
    image = prepared.image
    preview = png_bytes(folder / "input.png", image.rgb, alpha=image.alpha)
    return JobResult(png=(folder / RESULT).read_bytes(), preview=preview,
                     uncertainty=coloured.read_bytes() if coloured.is_file() else None, record=record)


def png_bytes(path: Path, rgb: Tensor, **options) -> bytes:
    """The bytes of rgb written as an 8-bit PNG at path (through shiftsr.imageio)."""
    write_image(path, rgb, **options)
    return path.read_bytes()


class Worker:
    """One thread that runs the jobs in arrival order, so that two jobs never share the device."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shiftsr-job")
        self.lock = threading.Lock()
        self.unfinished = 0

    def submit(self, prepared: Prepared, monitor: Monitor, scratch: TemporaryDirectory) -> Future:
        """Queue a job; its folder is removed when it has ended, or when it is cancelled before it starts."""
        with self.lock:
            self.unfinished += 1
        future = self.executor.submit(run_job, prepared, monitor)
        future.add_done_callback(lambda done: self.finished(scratch))
        return future

    def finished(self, scratch: TemporaryDirectory) -> None:
        scratch.cleanup()
        with self.lock:
            self.unfinished -= 1

    @property
    def ahead(self) -> int:
        """How many jobs are queued or running."""
        with self.lock:
            return self.unfinished

    def shutdown(self) -> None:
        """Drop the queued jobs (their folders go) and let the running one end."""
        self.executor.shutdown(wait=False, cancel_futures=True)
