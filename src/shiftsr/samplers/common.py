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
    Without `then`, a draw past the given tensors is an error. mirrored: every draw handed out is negated, the
    antithetic partner of the sample drawn from the same generators (see pipeline.sample_draws).
    """

    def __init__(self, tensors: Sequence[Tensor], then: torch.Generator | Sequence[torch.Generator] | None = None, *,
                 mirrored: bool = False):
        self.tensors = list(tensors)
        self.used = 0
        self.then = then
        self.sign = -1.0 if mirrored else 1.0

    def take(self, shape) -> Tensor | None:
        """The next given draw, checked against shape; None once they are used (fresh draws come from `then`)."""
        if self.used == len(self.tensors):
            if self.then is None:
                raise ValueError(f"noise: all {len(self.tensors)} given draws are used; the method needs more")
            return None
        draw = self.tensors[self.used]
        if tuple(draw.shape) != tuple(shape):
            raise ValueError(f"noise: draw {self.used} has shape {tuple(draw.shape)}, the method draws "
                             f"{tuple(shape)} there")
        self.used += 1
        return draw

    def like(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """The next draw, of x's shape, on x's device and dtype (a fresh one may be drawn into out, see randn_like)."""
        draw = self.take(x.shape)
        if draw is not None:
            return draw.to(device=x.device, dtype=x.dtype) * self.sign
        fresh = randn_like(x, self.then, out=out)
        return fresh if self.sign > 0 else fresh.neg_()


Generators = torch.Generator | Sequence[torch.Generator] | Draws | None


def randn_like(x: Tensor, generator: Generators, *, out: Tensor | None = None) -> Tensor:
    """Standard normal noise drawn on the CPU, one generator per image, so results ignore batch and device.

    Draws in place of the generators hands out draws made already (a replay, or a stored boundary condition).
    out: a contiguous float32 CPU buffer of x's shape that a fresh draw is written into (the same numbers, no new
    allocation); the result is then out itself where x is a float32 CPU tensor.
    """
    if isinstance(generator, Draws):
        return generator.like(x, out)
    fits = out is not None and out.shape == x.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    noise = out if fits and out.is_contiguous() else torch.empty(x.shape, dtype=torch.float32)
    if generator is None or isinstance(generator, torch.Generator):
        torch.randn(x.shape, generator=generator, dtype=torch.float32, out=noise)
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
        for image, g in zip(noise, generator):
            torch.randn(x.shape[1:], generator=g, dtype=torch.float32, out=image)
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


def ddim_coefficients(cs, ct, *, eta: float) -> tuple[float, float, float, float]:
    """(c_x, c_0, c_y, c_noise) of the DDIM step x_t = c_x x_s + c_0 x0 + c_y y + c_noise eps (Song et al. 2021 Eq. 12).

    The step a_t x0 + b_t y + s_t (sqrt(1 - spread^2) eps_hat + spread eps), eps_hat = (x_s - a_s x0 - b_s y) / s_s,
    written out: one linear combination, so a sampler's step is one fused pass per term.
    """
    (a_s, b_s, s_s), (a_t, b_t, s_t) = cs, ct
    r = step_ratio(cs, ct)
    spread = eta * math.sqrt(max(1.0 - r * r, 0.0))
    keep = s_t * math.sqrt(1.0 - spread * spread) / s_s
    return keep, a_t - keep * a_s, b_t - keep * b_s, s_t * spread


def check_shift(y: Tensor | None, cs, ct) -> None:
    """A path with b(t) != 0 shifts its mean to y: refuse a step on it without y."""
    if y is None and (cs[1] != 0 or ct[1] != 0):
        raise ValueError("this process has b(t) != 0 (DoSSR, ResShift): pass y, the image the mean shifts to")


def ddim_step(x: Tensor, x0: Tensor, y: Tensor | None, cs, ct, *, eta: float, noise: Tensor | None) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12) on any (a, b, s) path; eta = 1 is DoSSR Solver-1 (Eq. 42), eta = 0 its ODE."""
    check_shift(y, cs, ct)
    keep, c0, cy, cn = ddim_coefficients(cs, ct, eta=eta)
    return combine(x, keep, [(c0, x0), (cy, y), (cn, noise)], fresh=True)


def combine(x: Tensor, scale: float, terms: Sequence[tuple[float, Tensor | None]], *, fresh: bool) -> Tensor:
    """scale x + the sum of c t over terms (zero coefficients and absent tensors skipped), one pass per term.

    Written into x's own buffer, or into a new tensor when fresh (x is the caller's, or a callback holds it).
    """
    out = torch.mul(x, scale) if fresh else x if scale == 1 else x.mul_(scale)
    for coefficient, tensor in terms:
        if coefficient != 0 and tensor is not None:
            out.add_(tensor, alpha=coefficient)
    return out


def report(callback: Callback, i: int, t: float, x: Tensor, denoised: Tensor) -> None:
    """Call the per-step callback, k-diffusion style."""
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "denoised": denoised})
