"""ResShift ancestral sampling (Yue et al. 2023, Eq. 6-7); its deterministic variant is sample_ddim(eta=0)."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .chain import Step, run_chain
from .common import Callback, Denoiser, Generators, check_times, combine


def _posterior_update(x: Tensor, x0: Tensor, y: Tensor | None, memory: dict, noise: Tensor | None, fresh: bool, *,
                      coefficients: tuple[float, float, float]) -> Tensor:
    """x' = (eta_t / eta_s) x + (alpha / eta_s) f + kappa sqrt(eta_t alpha / eta_s) noise (Eq. 6-7)."""
    keep, c0, cn = coefficients
    return combine(x, keep, [(c0, x0), (cn, noise)], fresh=fresh)


def resshift_chain(process, ts: Sequence[float]) -> list[Step]:
    """The steps of the ResShift reverse chain (Eq. 6-7) on any decreasing times; see sample_resshift."""
    ts = check_times(ts)
    steps = []
    for t_s, t_t in zip(ts, ts[1:]):
        eta_s, eta_t = float(process.shift(t_s)), float(process.shift(t_t))
        if eta_s <= 0:
            raise ValueError(f"a ResShift step cannot start from the clean state (eta = 0 at t = {t_s})")
        # posterior mean (Eq. 7) with alpha = eta_s - eta_t, noise kappa^2 eta_t alpha / eta_s (Eq. 6): zero on a
        # step to eta = 0, which returns f
        alpha = eta_s - eta_t
        terms = (eta_t / eta_s, alpha / eta_s, process.kappa * math.sqrt(eta_t * alpha / eta_s))
        steps.append(Step(t_s, True, functools.partial(_posterior_update, coefficients=terms)))
    return steps


@torch.no_grad()
def sample_resshift(denoiser: Denoiser, x: Tensor, ts: Sequence[float], *, process, cond=None,
                    generator: Generators = None, callback: Callback = None, driver=run_chain) -> Tensor:
    """ResShift reverse chain (Eq. 6-7) from x at ts[0] on any decreasing times, eta taken at those times.

    driver runs the steps (samplers.chain.run_chain in memory, or shiftsr.streaming's banded driver).
    """
    return driver(resshift_chain(process, ts), denoiser, x, cond=cond, generator=generator, callback=callback)
