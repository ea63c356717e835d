"""Memory for tile 0 (auto): what the device has free, what a network call costs per pixel, and out-of-memory.

The tile is chosen from the memory free now (the CUDA allocator's view, or MemAvailable and the cgroup limit on
Linux) and the model's own cost per model-space pixel, measured once per pipeline on a small probe call: the CUDA
allocator's peak, or on the CPU glibc's bytes in use sampled after every operation of the call (the resident set
would miss memory the allocator reuses). A run that still runs out of memory halves the tile, down to FLOOR.
"""
from __future__ import annotations

import ctypes
import math
import os
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

FRACTION = 0.5  # of the free memory an upscale plans to use: room for the allocator, the OS and other processes
FLOOR = 32  # model-space pixels: no auto tile is smaller (halving stops here)
MULTIPLE = 8  # auto tiles are multiples of this (the networks' down-sampling factors)
PROBE = 64  # model-space side of the probe call that measures a network's bytes per pixel
DEFAULT_BYTES_PER_PIXEL = 4096.0  # where nothing can be measured (no glibc, a condition the probe cannot make)
IN_MEMORY_TENSORS = 10  # model-space-sized float32 tensors an untiled run holds besides the network's activations
STREAM_BANDS = 4  # tile-high, image-wide float32 bands a streamed run holds (x0 sums, tile inputs, update bands)
UNLIMITED = 1 << 60  # cgroup "max"
KEEP_FREED = 1 << 25  # bytes: glibc serves and keeps blocks up to this size in its heap (keep_freed_memory)


def free_bytes(device: torch.device | str) -> int:
    """Bytes an upscale can still allocate on device: CUDA's free memory plus what its allocator caches unused; on
    the CPU MemAvailable, capped by the cgroup's limit minus its usage (containers)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    available = _meminfo_available()
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        cap, used = _cgroup_value(limit), _cgroup_value(usage)
        if cap is not None and used is not None and cap < UNLIMITED:
            available = min(available, max(cap - used, 0))
    return available


def _meminfo_available() -> int:
    """MemAvailable of /proc/meminfo in bytes; elsewhere psutil's view, or 4 GiB when neither exists."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 4 << 30


def _cgroup_value(name: str) -> int | None:
    """A number from /sys/fs/cgroup/NAME ("max" as UNLIMITED), None if the file is not there."""
    try:
        text = (Path("/sys/fs/cgroup") / name).read_text().strip()
    except OSError:
        return None
    return UNLIMITED if text == "max" else int(text) if text.isdigit() else None


def _libc(name: str):
    """The C library's function `name` (glibc's mallopt, malloc_trim, mallinfo2), None where it is not there."""
    if os.name != "posix":
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Let glibc reuse freed blocks of up to KEEP_FREED bytes instead of unmapping them (mallopt M_MMAP_THRESHOLD
    and M_TRIM_THRESHOLD): else each image-sized tensor is a fresh mapping whose pages fault in again, which costs
    more than the sampler's arithmetic on it (about 2.5 ms for 3 MB on a VM) and slows the network by about 13%.
    Freed memory then stays with the process for its next tensors. False where glibc is not there."""
    mallopt = _libc("mallopt")
    if mallopt is None:
        return False
    trim, mmap = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    return bool(mallopt(mmap, KEEP_FREED)) and bool(mallopt(trim, KEEP_FREED))


def release_freed_memory() -> None:
    """Hand the memory glibc keeps for reuse back to the system (malloc_trim): a streamed run calls it between its
    steps, so what keep_freed_memory keeps does not add to its peak."""
    malloc_trim = _libc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


def is_out_of_memory(error: BaseException) -> bool:
    """torch's out-of-memory error, or the CPU allocator's RuntimeError when it cannot allocate."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


class _Mallinfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _heap_in_use():
    """A function returning glibc's bytes in use (heap plus mapped chunks), or None without glibc 2.33+."""
    mallinfo2 = _libc("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _Mallinfo

    def in_use() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


class _PeakAfterEachOp(TorchDispatchMode):
    """Samples a counter after every aten operation and keeps the largest value."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.peak = counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.counter())
        return out


def peak_bytes(function, device: torch.device | str) -> int | None:
    """Bytes function() allocates at its peak above what was in use before; None where that cannot be measured."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        function()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    counter = _heap_in_use()
    if counter is None:
        return None
    before = counter()
    meter = _PeakAfterEachOp(counter)
    with meter:
        function()
    return meter.peak - before


@torch.no_grad()
def network_bytes_per_pixel(denoiser, channels: int, device: torch.device | str, *, probe: int = PROBE) -> float:
    """Working bytes of one denoiser call per model-space pixel of one image, from a probe call with x = cond of
    probe x probe pixels (DEFAULT_BYTES_PER_PIXEL where it cannot be measured)."""
    x = torch.randn(1, channels, probe, probe, device=device).contiguous(memory_format=torch.channels_last)
    t = torch.full((1,), 1.0, device=device)
    measured = peak_bytes(lambda: denoiser(x, t, x), device)
    return DEFAULT_BYTES_PER_PIXEL if not measured else measured / (probe * probe)


def auto_side(*, batch: int, channels: int, height: int, width: int, bytes_per_pixel: float, free: int,
              out_channels: int = 3, scale: int = 1) -> int:
    """The tile side of tile 0 (auto), 0 for no tiles.

    No tiles when the network on the whole image and the in-memory sampler fit FRACTION of free; else the largest
    multiple of MULTIPLE (at least FLOOR) whose tile fits beside the bands of a streamed run and its output image
    (out_channels x scale^2 values per model-space pixel).
    """
    budget = FRACTION * free
    pixels = batch * height * width
    if pixels * (bytes_per_pixel + IN_MEMORY_TENSORS * channels * 4) <= budget:
        return 0
    room = max(budget - pixels * out_channels * scale * scale * 4, 0.0)
    a, b = batch * bytes_per_pixel, STREAM_BANDS * batch * channels * 4 * width  # a side^2 + b side <= room
    side = max(FLOOR, int((-b + math.sqrt(b * b + 4 * a * room)) / (2 * a)) // MULTIPLE * MULTIPLE)
    return 0 if side >= max(height, width) else side


def halved(tried: int, height: int, width: int) -> int | None:
    """The tile side to retry with after running out of memory at `tried` (0: untiled); None below FLOOR."""
    side = (tried or max(height, width)) // 2 // MULTIPLE * MULTIPLE
    return side if side >= FLOOR else None


def decode_side(*, batch: int, height: int, width: int, bytes_per_pixel: float, free: int) -> int:
    """The latent tile side a codec decodes in, 0 for the whole latent: the largest multiple of MULTIPLE (at least
    FLOOR) whose decoding fits FRACTION of free, at bytes_per_pixel per latent pixel."""
    budget = FRACTION * free
    if batch * height * width * bytes_per_pixel <= budget:
        return 0
    side = max(FLOOR, math.isqrt(int(budget / (batch * bytes_per_pixel))) // MULTIPLE * MULTIPLE)
    return 0 if side >= max(height, width) else side
