"""ResShift residual-shifting process: x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import GaussianProcess, _interp, as_time

RESSHIFT_VARIANTS = ("paper", "official")


def resshift_etas(num_steps: int, *, kappa: float, power: float, eta_1: float, eta_T: float) -> Tensor:
    """ResShift Eq. 9-10: sqrt(eta_t) = sqrt(eta_1) b0^beta_t, beta_t = ((t-1)/(T-1))^p (T-1); at times 0..T."""
    T = num_steps
    if T == 1:
        return torch.tensor([0.0, eta_T], dtype=torch.float64)
    b0 = math.exp(math.log(eta_T / eta_1) / (2 * (T - 1)))
    t = torch.arange(1, T + 1, dtype=torch.float64)
    beta = ((t - 1) / (T - 1)) ** power * (T - 1)
    sqrt_eta = math.sqrt(eta_1) * b0**beta
    return torch.cat([torch.zeros(1, dtype=torch.float64), sqrt_eta**2])


class ResShiftProcess(GaussianProcess):
    """ResShift forward marginal (Eq. 2): a = 1 - eta, b = eta, s = kappa sqrt(eta), t = 0..T."""

    def __init__(self, *, num_steps: int = 15, kappa: float = 2.0, power: float = 0.3,
                 variant: str = "paper", min_noise_level: float = 0.04,
                 eta_1: float | None = None, eta_T: float | None = None):
        if variant not in RESSHIFT_VARIANTS:
            raise ValueError(f"unknown ResShift variant {variant!r}; allowed: {', '.join(RESSHIFT_VARIANTS)}")
        if variant == "paper":
            default_1, default_T = min((min_noise_level / kappa) ** 2, 0.001), 0.99
        else:
            default_1, default_T = min(min_noise_level / kappa, min_noise_level) ** 2, 0.99**2
        self.config = dict(num_steps=num_steps, kappa=kappa, power=power, variant=variant,
                           min_noise_level=min_noise_level, eta_1=eta_1, eta_T=eta_T)
        self.kappa = kappa
        self.etas = resshift_etas(num_steps, kappa=kappa, power=power,
                                  eta_1=default_1 if eta_1 is None else eta_1,
                                  eta_T=default_T if eta_T is None else eta_T)
        self.t_max = float(num_steps)

    def shift(self, t: Tensor | float) -> Tensor:
        """eta_t, linear between integer steps; eta_0 = 0."""
        return _interp(self.etas, as_time(t))

    def coefficients(self, t):
        eta = self.shift(t)
        return 1 - eta, eta, self.kappa * eta.sqrt()

    def input_scale(self, t: Tensor) -> Tensor:
        """Official-code network input scaling 1 / sqrt(kappa^2 eta_t + 1)."""
        return (self.kappa**2 * self.shift(t) + 1).rsqrt()
