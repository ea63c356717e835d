"""The one shape every method here shares: a Gaussian path with a mean linear in (x0, y)."""
from __future__ import annotations

import torch
from torch import Tensor


def _interp(table: Tensor, t: Tensor) -> Tensor:
    """Piecewise-linear lookup of a table indexed by integer process time 0..len-1."""
    t = t.to(table.device, torch.float64).clamp(0, len(table) - 1)  # tables live on the CPU; t may not
    lo = t.floor().long().clamp(max=len(table) - 2)
    frac = t - lo
    return table[lo] * (1 - frac) + table[lo + 1] * frac


class GaussianProcess:
    """Marginal q(x_t | x0, y) = N(a(t) x0 + b(t) y, s(t)^2 I); t is a float in [0, t_max], t = 0 clean."""

    t_max: float

    def coefficients(self, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """Return (a, b, s) as float64 tensors shaped like t."""
        raise NotImplementedError

    def marginal(self, x0: Tensor, y: Tensor | None, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t = a x0 + b y + s noise, with t of shape (B,) broadcast over the other axes."""
        a, b, s = (c.to(x0.device, x0.dtype).view(-1, *[1] * (x0.dim() - 1)) for c in self.coefficients(t))
        x_t = a * x0 + s * noise
        return x_t if y is None else x_t + b * y

    def training_times(self, batch: int, *, generator: torch.Generator | None = None,
                       t_min: float = 0.0, t_max: float | None = None) -> Tensor:
        """Uniform training times on (t_min, t_max], float32 on CPU."""
        hi = self.t_max if t_max is None else t_max
        u = 1.0 - torch.rand(batch, generator=generator, dtype=torch.float64)
        return (t_min + u * (hi - t_min)).float()


def as_time(t: Tensor | float) -> Tensor:
    """Turn a Python number or tensor into a float64 tensor of times."""
    return torch.as_tensor(t, dtype=torch.float64)
