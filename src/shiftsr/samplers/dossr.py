"""DoSSR DoS-SDE solvers of order 1, 2 and 3 (Cui et al. 2024, Algorithms 1-3, App. A.6)."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .chain import Step, run_chain
from .common import (Callback, Denoiser, Generators, check_shift, check_times, coefficients, combine,
                     ddim_coefficients)


def dossr_timesteps(process, steps: int, *, official: bool = False) -> list[float]:
    """Uniform times from t1 to 0 (paper), or the official code's indices [499, 399, 299, 200, 100] -> 0 plus one."""
    t1 = process.t1
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not official:
        return torch.linspace(t1, 0, steps + 1, dtype=torch.float64).tolist()
    # guided-diffusion space_timesteps(int(t1), [steps + 1]): round(i * stride) with stride (t1 - 1) / steps
    stride = (t1 - 1) / steps
    indices = sorted({round(i * stride) for i in range(steps + 1)}, reverse=True)
    return [float(i + 1) for i in indices]


def _path(process, t: float, guidance: bool) -> tuple[float, float, float]:
    """(a, b, s) at t; without guidance the eta_t = 0 case of DoSSR Eq. 2: (a + b, 0, s) = (sqrt(abar), 0, s)."""
    a, b, s = coefficients(process, t)
    return (a, b, s) if guidance else (a + b, 0.0, s)


def _taylor_coefficients(ls: Sequence[float], l_t: float, order: int) -> tuple[float, float]:
    """(e1, e2): the Taylor terms of Eq. 44 / Eq. 47 as e1 d + e2 d_prev, d = x0 - x0_prev, d_prev = x0_prev - x0_prev2.

    ls: l = s / a at this step and the ones before (newest last); a term needs every l it divides by finite.
    First order: d1 = d / (l_s - l_1), term -(l_s - l_t)^2 / l_s d1. Third: d2 = 2 (d1 - d_prev / (l_1 - l_2)) /
    (l_s - l_2), term ((l_s - 3 l_t)(l_s - l_t) / 2 - l_t^2 log(l_t / l_s)) d2.
    """
    if order < 2 or len(ls) < 2 or not math.isfinite(ls[-2]):
        return 0.0, 0.0
    l_s, l_1 = ls[-1], ls[-2]
    e1 = -((l_s - l_t) ** 2) / l_s / (l_s - l_1)
    if order < 3 or len(ls) < 3 or not math.isfinite(ls[-3]):
        return e1, 0.0
    l_2 = ls[-3]
    log_term = 0.0 if l_t == 0 else l_t**2 * math.log(l_t / l_s)
    second = 2 * ((l_s - 3 * l_t) * (l_s - l_t) / 2 - log_term) / (l_s - l_2)
    return e1 + second / (l_s - l_1), -second / (l_1 - l_2)


def _dossr_update(x: Tensor, x0: Tensor, xh: Tensor | None, memory: dict, noise: Tensor | None, fresh: bool, *,
                  first: tuple[float, float, float, float], taylor: tuple[float, float], keep: tuple[bool, bool]
                  ) -> Tensor:
    """One DoS-SDE step: the first-order step (DoSG + linear + PAT + noise) and the higher-order PAT corrections.

    memory holds x0 of the step before and d = x0_prev - x0_prev2 while a later step reads them (keep).
    """
    keep_x, c0, cy, cn = first
    e1, e2 = taylor
    x = combine(x, keep_x, [(c0, x0), (cy, xh), (cn, noise), (e2, memory.get("d"))], fresh=fresh)
    d = None
    if e1 != 0 or keep[1]:  # the newest divided difference, written over the one just used
        d = torch.sub(x0, memory["x0"], out=memory.pop("d")) if "d" in memory else x0 - memory["x0"]
        x.add_(d, alpha=e1)
    memory.clear()
    memory.update({name: value for name, value, kept in (("x0", x0, keep[0]), ("d", d, keep[1])) if kept})
    return x


def dossr_chain(process, ts: Sequence[float], *, xh: Tensor | None, order: int = 3, deterministic: bool = False,
                guidance: bool = True) -> list[Step]:
    """The steps of DoS-SDE Solver-k (DoSSR Eq. 42, 44, 47) on the grid ts; see sample_dossr."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if deterministic and order != 1:
        raise ValueError("the deterministic DoSSR step is first order; use order=1 or sample_dpmpp_2m")
    ts = check_times(ts)
    paths = [_path(process, t, guidance) for t in ts]
    ls = [s / a if a > 0 else math.inf for a, _, s in paths]
    taylor = []
    for i, (cs, ct) in enumerate(zip(paths, paths[1:])):
        check_shift(xh, cs, ct)
        first = ddim_coefficients(cs, ct, eta=0.0 if deterministic else 1.0)
        taylor.append((first, tuple(ct[0] * e for e in _taylor_coefficients(ls[max(0, i - 2): i + 1],
                                                                             ct[2] / ct[0], order))))
    reads = [(e1 != 0, e2 != 0) for _, (e1, e2) in taylor] + [(False, False)]
    return [Step(t, not deterministic, functools.partial(_dossr_update, first=first, taylor=terms, keep=reads[i + 1]))
            for i, (t, (first, terms)) in enumerate(zip(ts, taylor))]


@torch.no_grad()
def sample_dossr(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, xh: Tensor, cond=None,
                 order: int = 3, deterministic: bool = False, guidance: bool = True, generator: Generators = None,
                 callback: Callback = None, driver=run_chain) -> Tensor:
    """DoS-SDE Solver-k (DoSSR Eq. 42, 44, 47) from x at ts[0]; deterministic=True is the first-order ODE step.

    guidance=False is the "w/o DoSG" ablation of DoSSR Sec. 4.3 (Table 2, row DDPM): the original diffusion
    equation as the eta_t = 0 special case of Eq. 2 under the same solver, so k_t = 0 and the DoSG term
    (k_t - r^2 k_s) xh vanishes; the paper pairs it with a model trained on that equation and ts[0] = T.
    driver runs the steps (samplers.chain.run_chain in memory, or shiftsr.streaming's banded driver).
    """
    steps = dossr_chain(process, ts, xh=xh, order=order, deterministic=deterministic, guidance=guidance)
    return driver(steps, denoiser, x, y=xh, cond=cond, generator=generator, callback=callback)
