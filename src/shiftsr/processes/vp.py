"""Variance-preserving (DDPM) forward process: a = sqrt(abar), b = 0, s = sqrt(1 - abar)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import GaussianProcess, _interp, as_time

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")


def make_betas(schedule: str, num_train_timesteps: int = 1000, *, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> Tensor:
    """DDPM betas (Ho et al. 2020 linear; Stable Diffusion scaled-linear; Nichol & Dhariwal 2021 cosine, Eq. 17)."""
    n = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if schedule == "cosine":
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {schedule!r}; allowed: {', '.join(BETA_SCHEDULES)}")


def alphas_cumprod_table(betas: Tensor) -> Tensor:
    """abar at process times 0..T: abar(0) = 1 (clean), abar(t) = prod_{i<t} (1 - beta_i)."""
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


class VPProcess(GaussianProcess):
    """DDPM forward marginal q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) (Ho et al. 2020, Eq. 4)."""

    def __init__(self, *, beta_schedule: str = "linear", num_train_timesteps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02):
        self.config = dict(beta_schedule=beta_schedule, num_train_timesteps=num_train_timesteps,
                           beta_start=beta_start, beta_end=beta_end)
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start=beta_start, beta_end=beta_end)
        self.log_abar = alphas_cumprod_table(betas).log()
        self.t_max = float(num_train_timesteps)

    def alphas_cumprod(self, t: Tensor | float) -> Tensor:
        """abar(t), log-linear between integer times."""
        return _interp(self.log_abar, as_time(t)).exp()

    def coefficients(self, t):
        abar = self.alphas_cumprod(t)
        return abar.sqrt(), torch.zeros_like(abar), (1 - abar).sqrt()
