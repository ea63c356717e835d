"""DoSSR DoS-SDE solvers of order 1, 2 and 3 (Cui et al. 2024, Algorithms 1-3, App. A.6)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .common import (Callback, Denoiser, Generators, batch_time, check_times, coefficients, ddim_step,
                     randn_like, report)


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


def _higher_order_terms(x0s: list[Tensor], ls: list[float], l_t: float, order: int) -> Tensor | float:
    """The Taylor terms of Eq. 44 / Eq. 47 in y-space, from the finite-l history (newest last)."""
    l_s = ls[-1]
    if order < 2 or len(ls) < 2 or not math.isfinite(ls[-2]):
        return 0.0
    d1 = (x0s[-1] - x0s[-2]) / (l_s - ls[-2])
    out = -((l_s - l_t) ** 2) / l_s * d1
    if order < 3 or len(ls) < 3 or not math.isfinite(ls[-3]):
        return out
    d1_prev = (x0s[-2] - x0s[-3]) / (ls[-2] - ls[-3])
    d2 = 2 * (d1 - d1_prev) / (l_s - ls[-3])
    log_term = 0.0 if l_t == 0 else l_t**2 * math.log(l_t / l_s)
    return out + ((l_s - 3 * l_t) * (l_s - l_t) / 2 - log_term) * d2


@torch.no_grad()
def sample_dossr(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, xh: Tensor, cond=None,
                 order: int = 3, deterministic: bool = False, guidance: bool = True, generator: Generators = None,
                 callback: Callback = None) -> Tensor:
    """DoS-SDE Solver-k (DoSSR Eq. 42, 44, 47) from x at ts[0]; deterministic=True is the first-order ODE step.

    guidance=False is the "w/o DoSG" ablation of DoSSR Sec. 4.3 (Table 2, row DDPM): the original diffusion
    equation as the eta_t = 0 special case of Eq. 2 under the same solver, so k_t = 0 and the DoSG term
    (k_t - r^2 k_s) xh vanishes; the paper pairs it with a model trained on that equation and ts[0] = T.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if deterministic and order != 1:
        raise ValueError("the deterministic DoSSR step is first order; use order=1 or sample_dpmpp_2m")
    ts = check_times(ts)
    x0s: list[Tensor] = []
    ls: list[float] = []
    for i, (t_s, t_t) in enumerate(zip(ts, ts[1:])):
        cs, ct = _path(process, t_s, guidance), _path(process, t_t, guidance)
        # 1. predict x0 and keep the history for the divided differences
        x0 = denoiser(x, batch_time(t_s, x), cond)
        x0s, ls = (x0s + [x0])[-3:], (ls + [cs[2] / cs[0] if cs[0] > 0 else math.inf])[-3:]
        report(callback, i, t_s, x, x0)
        # 2. first-order step (DoSG + linear + PAT + noise), then the higher-order PAT corrections
        noise = None if deterministic else randn_like(x, generator)
        x_next = ddim_step(x, x0, xh, cs, ct, eta=0.0 if deterministic else 1.0, noise=noise)
        correction = _higher_order_terms(x0s, ls, ct[2] / ct[0], order)
        x = x_next + ct[0] * correction
    return x
