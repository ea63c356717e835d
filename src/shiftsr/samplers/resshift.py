"""ResShift ancestral sampling (Yue et al. 2023, Eq. 6-7); its deterministic variant is sample_ddim(eta=0)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .common import Callback, Denoiser, Generators, batch_time, check_times, randn_like, report


@torch.no_grad()
def sample_resshift(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, cond=None,
                    generator: Generators = None, callback: Callback = None) -> Tensor:
    """ResShift reverse chain (Eq. 6-7) from x at ts[0] on any decreasing times, eta taken at those times."""
    ts = check_times(ts)
    for i, (t_s, t_t) in enumerate(zip(ts, ts[1:])):
        eta_s, eta_t = float(process.shift(t_s)), float(process.shift(t_t))
        if eta_s <= 0:
            raise ValueError(f"a ResShift step cannot start from the clean state (eta = 0 at t = {t_s})")
        # 1. predict x0 (f in the paper)
        x0 = denoiser(x, batch_time(t_s, x), cond)
        report(callback, i, t_s, x, x0)
        # 2. posterior mean (Eq. 7): (eta_t / eta_s) x_s + (alpha / eta_s) f, with alpha = eta_s - eta_t
        alpha = eta_s - eta_t
        mean = (eta_t / eta_s) * x + (alpha / eta_s) * x0
        # 3. posterior noise kappa^2 eta_t alpha / eta_s (Eq. 6); zero on a step to eta = 0, which returns f
        x = mean + process.kappa * math.sqrt(eta_t * alpha / eta_s) * randn_like(x, generator)
    return x
