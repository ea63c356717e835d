"""Pieces every sampler shares: per-image noise, time tensors and the generic first-order step."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor, Any], Tensor]
Callback = Callable[[dict], None] | None


class Draws:
    """Gaussian draws made in advance, consumed in call order by randn_like; after them, fresh ones from `then`.

    An exact replay of another implementation's noise (every draw of a method: its start, each step, and the
    draws official code makes and throws away), or BCSR's stored start noise (Eq. 21) followed by fresh noise.
    Without `then`, a draw past the given tensors is an error.
    """

    def __init__(self, tensors: Sequence[Tensor], then: torch.Generator | Sequence[torch.Generator] | None = None):
        self.tensors = list(tensors)
        self.used = 0
        self.then = then

    def like(self, x: Tensor) -> Tensor:
        """The next draw, of x's shape, on x's device and dtype."""
        if self.used == len(self.tensors):
            if self.then is None:
                raise ValueError(f"noise: all {len(self.tensors)} given draws are used; the method needs more")
            return randn_like(x, self.then)
        draw = self.tensors[self.used]
        if tuple(draw.shape) != tuple(x.shape):
            raise ValueError(f"noise: draw {self.used} has shape {tuple(draw.shape)}, the method draws "
                             f"{tuple(x.shape)} there")
        self.used += 1
        return draw.to(device=x.device, dtype=x.dtype)


Generators = torch.Generator | Sequence[torch.Generator] | Draws | None


def randn_like(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise drawn on the CPU, one generator per image, so results ignore batch and device.

    Draws in place of the generators hands out draws made already (a replay, or a stored boundary condition).
    """
    if isinstance(generator, Draws):
        return generator.like(x)
    if generator is None or isinstance(generator, torch.Generator):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
        noise = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32) for g in generator])
    return noise.to(device=x.device, dtype=x.dtype)


def batch_time(t: float, x: Tensor) -> Tensor:
    """The process time t as a float32 tensor of shape (B,) on x's device, as denoisers receive it."""
    return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)


def coefficients(process, t: float) -> tuple[float, float, float]:
    """(a, b, s) of a process at one time, as Python floats; times outside [0, t_max] are an error."""
    if not 0 <= t <= process.t_max:
        raise ValueError(f"time {t} lies outside the process's range [0, {process.t_max}]")
    return tuple(float(c) for c in process.coefficients(t))


def check_times(ts: Sequence[float]) -> list[float]:
    """Validate a descending time grid with at least one step."""
    ts = [float(t) for t in ts]
    if len(ts) < 2 or any(t_next >= t for t, t_next in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly decreasing with at least 2 entries, got {ts}")
    return ts


def step_ratio(cs: tuple[float, float, float], ct: tuple[float, float, float]) -> float:
    """r = l_t / l_s with l = s / a, written as s_t a_s / (a_t s_s) so l = inf (a_s = 0) never forms."""
    (a_s, _, s_s), (a_t, _, s_t) = cs, ct
    if a_t <= 0:
        raise ValueError("a step must end where a(t) > 0 (the signal of x0 is not fully shifted away)")
    if s_s <= 0:
        raise ValueError("a step cannot start from the clean state s(t) = 0")
    return s_t * a_s / (a_t * s_s)


def ddim_step(x: Tensor, x0: Tensor, y: Tensor | None, cs, ct, *, eta: float, noise: Tensor | None) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12) on any (a, b, s) path; eta = 1 is DoSSR Solver-1 (Eq. 42), eta = 0 its ODE."""
    (a_s, b_s, s_s), (a_t, b_t, s_t) = cs, ct
    if y is None and (b_s != 0 or b_t != 0):
        raise ValueError("this process has b(t) != 0 (DoSSR, ResShift): pass y, the image the mean shifts to")
    r = step_ratio(cs, ct)
    shift_s = 0.0 if y is None else b_s * y
    shift_t = 0.0 if y is None else b_t * y
    eps = (x - a_s * x0 - shift_s) / s_s
    spread = eta * math.sqrt(max(1.0 - r * r, 0.0))
    out = a_t * x0 + shift_t + s_t * math.sqrt(1.0 - spread * spread) * eps
    return out if spread == 0.0 else out + s_t * spread * noise


def report(callback: Callback, i: int, t: float, x: Tensor, denoised: Tensor) -> None:
    """Call the per-step callback, k-diffusion style."""
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "denoised": denoised})
