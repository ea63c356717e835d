"""DoSSR domain-shift process: x_t = sqrt(abar_t) (eta_t xh + (1 - eta_t) x0) + sqrt(1 - abar_t) eps."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import _interp, as_time
from .vp import VPProcess

ETA_KINDS = ("paper", "official")


def shift_eta_paper(t: Tensor, t1: float) -> Tensor:
    """DoSSR Eq. 4: eta_t = (1 - cos(pi t / t1)) / 2 on [0, t1], and 1 on [t1, T]."""
    return torch.where(t < t1, (1 - torch.cos(math.pi * t.clamp(max=t1) / t1)) / 2, torch.ones_like(t))


def shift_eta_official_table(num_train_timesteps: int, t1: int) -> Tensor:
    """DoSSR official code: eta[:t1] = (1 - cos(pi linspace(0.001, 0.999, t1))) / 2, 1 after; at times 0..T."""
    rising = (1 - torch.cos(math.pi * torch.linspace(0.001, 0.999, t1, dtype=torch.float64))) / 2
    after = torch.ones(num_train_timesteps - t1, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), rising, after])


class DomainShiftProcess(VPProcess):
    """DoSSR forward marginal (Eq. 2): a = sqrt(abar)(1 - eta), b = sqrt(abar) eta, s = sqrt(1 - abar)."""

    def __init__(self, *, beta_schedule: str = "scaled_linear", num_train_timesteps: int = 1000,
                 beta_start: float = 0.00085, beta_end: float = 0.012, t1: float | None = None,
                 eta: str = "paper"):
        super().__init__(beta_schedule=beta_schedule, num_train_timesteps=num_train_timesteps,
                         beta_start=beta_start, beta_end=beta_end)
        if eta not in ETA_KINDS:
            raise ValueError(f"unknown eta kind {eta!r}; allowed: {', '.join(ETA_KINDS)}")
        self.t1 = float(num_train_timesteps // 2 if t1 is None else t1)
        if not 0 < self.t1 <= num_train_timesteps:
            raise ValueError(f"t1 must lie in (0, {num_train_timesteps}], got {self.t1}")
        if eta == "official" and self.t1 != int(self.t1):
            raise ValueError(f"the official eta table needs an integer t1, got {self.t1}")
        self.config.update(t1=self.t1, eta=eta)
        self.eta_table = shift_eta_official_table(num_train_timesteps, int(self.t1)) if eta == "official" else None

    def shift(self, t: Tensor | float) -> Tensor:
        """The shifting sequence eta_t (paper Eq. 4, or the official discrete table)."""
        t = as_time(t)
        return shift_eta_paper(t, self.t1) if self.eta_table is None else _interp(self.eta_table, t)

    def coefficients(self, t):
        abar = self.alphas_cumprod(t)
        eta = self.shift(t)
        root = abar.sqrt()
        return root * (1 - eta), root * eta, (1 - abar).sqrt()
