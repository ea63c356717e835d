"""DDIM, DDPM and DPM-Solver++(2M) on any (a, b, s) path, and the usual VP time grids."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .chain import Step, run_chain
from .common import (Callback, Denoiser, Generators, check_shift, check_times, coefficients, combine,
                     ddim_coefficients)

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


def _linear_update(x: Tensor, x0: Tensor, y: Tensor | None, memory: dict, noise: Tensor | None, fresh: bool, *,
                   coefficients: tuple[float, float, float, float]) -> Tensor:
    """x' = c_x x + c_0 x0 + c_y y + c_noise noise: a DDIM step (ddim_coefficients) as one pass per term."""
    keep, c0, cy, cn = coefficients
    return combine(x, keep, [(c0, x0), (cy, y), (cn, noise)], fresh=fresh)


def ddim_chain(process, ts: Sequence[float], *, y: Tensor | None = None, eta: float = 0.0) -> list[Step]:
    """The steps of DDIM (Song et al. 2021, Eq. 12 and 16) on the grid ts; see sample_ddim."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0 = deterministic, 1 = ancestral), got {eta}")
    ts = check_times(ts)
    steps = []
    for t_s, t_t in zip(ts, ts[1:]):
        cs, ct = coefficients(process, t_s), coefficients(process, t_t)
        check_shift(y, cs, ct)
        terms = ddim_coefficients(cs, ct, eta=eta)
        steps.append(Step(t_s, eta > 0, functools.partial(_linear_update, coefficients=terms)))
    return steps


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, y: Tensor | None = None,
                cond=None, eta: float = 0.0, generator: Generators = None, callback: Callback = None,
                driver=run_chain) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12 and 16) from x at ts[0]; eta = 0 is the ODE, eta = 1 ancestral.

    Each step keeps the predicted noise and re-noises a fraction eta of it with fresh noise; driver runs the
    steps (samplers.chain.run_chain in memory, or shiftsr.streaming's banded driver).
    """
    return driver(ddim_chain(process, ts, y=y, eta=eta), denoiser, x, y=y, cond=cond, generator=generator,
                  callback=callback)


def sample_ddpm(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, y: Tensor | None = None,
                cond=None, generator: Generators = None, callback: Callback = None, driver=run_chain) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Eq. 6-7): DDIM with eta = 1 draws from q(x_t' | x_t, x0)."""
    return sample_ddim(denoiser, x, ts, process=process, y=y, cond=cond, eta=1.0, generator=generator,
                       callback=callback, driver=driver)


def _half_log_snr(c: tuple[float, float, float]) -> float:
    """lambda = -log(l) = log(a / s), -inf where a = 0 and +inf at the clean state s = 0."""
    a, _, s = c
    if s == 0:
        return math.inf
    return -math.inf if a == 0 else math.log(a / s)


def _dpmpp_update(x: Tensor, x0: Tensor, y: Tensor | None, memory: dict, noise: Tensor | None, fresh: bool, *,
                  coefficients: tuple[float, float, float, float], extrapolate: float, keep: bool) -> Tensor:
    """The DDIM step with x0 replaced by D = x0 + extrapolate (x0 - x0_prev) (D_i of Lu et al. 2022, Alg. 2)."""
    keep_x, c0, cy, _ = coefficients
    x = combine(x, keep_x, [(c0, x0), (cy, y)], fresh=fresh)
    if extrapolate:
        x.add_(x0 - memory["x0"], alpha=c0 * extrapolate)
    memory.clear()
    if keep:
        memory["x0"] = x0
    return x


def dpmpp_2m_chain(process, ts: Sequence[float], *, y: Tensor | None = None) -> list[Step]:
    """The steps of DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in lambda = -log(s / a); see sample_dpmpp_2m."""
    ts = check_times(ts)
    paths = [coefficients(process, t) for t in ts]
    # step size in lambda: infinite on a step from l = inf or onto the clean state l = 0
    hs = [_half_log_snr(ct) - _half_log_snr(cs) for cs, ct in zip(paths, paths[1:])]
    # second order where this step and the one before are finite: extrapolate x0 linearly in lambda, r = h_last / h
    extrapolate = [0.0] + [1 / (2 * (h_last / h)) if math.isfinite(h) and math.isfinite(h_last) else 0.0
                           for h_last, h in zip(hs, hs[1:])]
    steps = []
    for i, (cs, ct) in enumerate(zip(paths, paths[1:])):
        check_shift(y, cs, ct)
        # the exponential-integrator step x_t = (s_t/s_s) x_s + a_t (1 - e^-h) D is the DDIM step with x0 = D
        update = functools.partial(_dpmpp_update, coefficients=ddim_coefficients(cs, ct, eta=0.0),
                                   extrapolate=extrapolate[i], keep=i + 1 < len(hs) and extrapolate[i + 1] != 0)
        steps.append(Step(ts[i], False, update))
    return steps


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, y: Tensor | None = None,
                    cond=None, generator: Generators = None, callback: Callback = None, driver=run_chain) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in lambda = -log(s / a) on any (a, b, s) path."""
    return driver(dpmpp_2m_chain(process, ts, y=y), denoiser, x, y=y, cond=cond, generator=generator,
                  callback=callback)
