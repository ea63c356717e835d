"""DDIM, DDPM and DPM-Solver++(2M) on any (a, b, s) path, and the usual VP time grids."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .common import (Callback, Denoiser, Generators, batch_time, check_times, coefficients, ddim_step,
                     randn_like, report)

SPACINGS = ("uniform", "leading", "trailing")


def vp_timesteps(process, steps: int, *, t_start: float | None = None, spacing: str = "uniform") -> list[float]:
    """Times t_start > ... > 0 (Lin et al. 2024, Table 2 spacings), in process time where t = index + 1."""
    t_start = process.t_max if t_start is None else float(t_start)
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    if not 0 < t_start <= process.t_max:
        raise ValueError(f"t_start must lie in (0, {process.t_max}], got {t_start}")
    if steps < 1 or (spacing != "uniform" and steps > int(t_start)):
        raise ValueError(f"steps must lie in [1, {int(t_start)}] for {spacing!r} spacing, got {steps}")
    if spacing == "uniform":
        return torch.linspace(t_start, 0, steps + 1, dtype=torch.float64).tolist()
    if spacing == "leading":
        # diffusers "leading": indices k * (T // N) for k < N, i.e. times k * stride + 1, then the clean state
        stride = int(t_start) // steps
        return [float(k * stride + 1) for k in reversed(range(steps))] + [0.0]
    # diffusers "trailing": round(T - k T / N) for k < N, then the clean state
    return [float(round(t_start - k * t_start / steps)) for k in range(steps)] + [0.0]


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, y: Tensor | None = None,
                cond=None, eta: float = 0.0, generator: Generators = None, callback: Callback = None) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12 and 16) from x at ts[0]; eta = 0 is the ODE, eta = 1 ancestral."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0 = deterministic, 1 = ancestral), got {eta}")
    ts = check_times(ts)
    for i, (t_s, t_t) in enumerate(zip(ts, ts[1:])):
        cs, ct = coefficients(process, t_s), coefficients(process, t_t)
        # 1. predict x0
        x0 = denoiser(x, batch_time(t_s, x), cond)
        report(callback, i, t_s, x, x0)
        # 2. keep the predicted noise, re-noise a fraction eta of it with fresh noise
        noise = randn_like(x, generator) if eta > 0 else None
        x = ddim_step(x, x0, y, cs, ct, eta=eta, noise=noise)
    return x


def sample_ddpm(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, y: Tensor | None = None,
                cond=None, generator: Generators = None, callback: Callback = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Eq. 6-7): DDIM with eta = 1 draws from q(x_t' | x_t, x0)."""
    return sample_ddim(denoiser, x, ts, process=process, y=y, cond=cond, eta=1.0, generator=generator,
                       callback=callback)


def _half_log_snr(c: tuple[float, float, float]) -> float:
    """lambda = -log(l) = log(a / s), -inf where a = 0 and +inf at the clean state s = 0."""
    a, _, s = c
    if s == 0:
        return math.inf
    return -math.inf if a == 0 else math.log(a / s)


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, y: Tensor | None = None,
                    cond=None, generator: Generators = None, callback: Callback = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in lambda = -log(s / a) on any (a, b, s) path."""
    ts = check_times(ts)
    old_x0, h_last = None, math.inf
    for i, (t_s, t_t) in enumerate(zip(ts, ts[1:])):
        cs, ct = coefficients(process, t_s), coefficients(process, t_t)
        # 1. predict x0
        x0 = denoiser(x, batch_time(t_s, x), cond)
        report(callback, i, t_s, x, x0)
        # 2. step size in lambda: infinite on a step from l = inf or onto the clean state l = 0
        h = _half_log_snr(ct) - _half_log_snr(cs)
        # 3. second order where both steps are finite: extrapolate x0 linearly in lambda (D_i of Alg. 2)
        x0_d = x0
        if old_x0 is not None and math.isfinite(h) and math.isfinite(h_last):
            r = h_last / h
            x0_d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * old_x0
        # 4. the exponential-integrator step x_t = (s_t/s_s) x_s + a_t (1 - e^-h) D is the DDIM step with x0 = D
        x = ddim_step(x, x0_d, y, cs, ct, eta=0.0, noise=None)
        old_x0, h_last = x0, h
    return x
