"""Wrap a network with an epsilon / x0 / v / residual head into an x0 denoiser.

The forward process is ``q(x_t | x0, y) = N(a(t) x0 + b(t) y, s(t)^2 I)`` with
``(a, b, s) = process.coefficients(t)``; ``y`` is the conditioning image ``cond``.
"""

from collections.abc import Callable

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "residual")

# Tolerance on a(t)^2 + s(t)^2 = 1 when converting a v-prediction.
_VP_TOLERANCE = 1e-4


def ddpm_index(t: Tensor) -> Tensor:
    """Network index of a DDPM step: process time t in 1..T is index t - 1 (Ho et al. 2020, Alg. 1)."""
    return t - 1


def _per_sample(value: Tensor, like: Tensor) -> Tensor:
    """Reshape a scalar or per-sample [B] tensor so it broadcasts against an image batch."""
    return value.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1, 1)


def _require_tensor(cond: object, why: str) -> Tensor:
    """Return ``cond`` if it is a Tensor, else raise naming the reason one is needed."""
    if not torch.is_tensor(cond):
        raise TypeError(f"{why} needs cond to be a Tensor (the LR image in model space), got {type(cond).__name__}")
    return cond


class PredictionDenoiser(torch.nn.Module):
    """x0 from an epsilon / x0 / v (Salimans & Ho 2022) / residual prediction of x_t = a x0 + b y + s eps."""

    def __init__(
        self,
        net: Callable,
        *,
        process,
        prediction_type: str,
        timestep_fn: Callable[[Tensor], Tensor] | None = None,
        input_scale_fn: Callable[[Tensor], Tensor] | None = None,
        concat_cond: bool = False,
        clip: bool = False,
    ):
        """Wrap ``net(x_in, t_net, cond_in)``.

        ``timestep_fn`` maps process time to the network's time input (identity if None; see
        ``ddpm_index``). ``input_scale_fn(t)`` (scalar or [B]) multiplies x_t before the network,
        e.g. ResShift's ``1 / sqrt(kappa^2 eta_t + 1)``; cond is never scaled. With ``concat_cond``
        the network input is ``cat([x_in, cond], dim=1)`` and ``cond_in`` is None; otherwise
        ``cond_in`` is ``cond`` unchanged. The network may return a Tensor or an object with
        ``.sample`` (diffusers outputs). ``clip`` clamps x0 to [-1, 1], as guided-diffusion's samplers do
        (``clip_denoised=True``).
        """
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.net = net
        self.process = process
        self.prediction_type = prediction_type
        self.timestep_fn = timestep_fn
        self.input_scale_fn = input_scale_fn
        self.concat_cond = concat_cond
        self.clip = clip

    def forward(self, x_t: Tensor, t: Tensor, cond) -> Tensor:
        """Predict x0 from x_t at process time t (shape [B])."""
        x_in = x_t if self.input_scale_fn is None else x_t * _per_sample(self.input_scale_fn(t), x_t)
        cond_in = cond
        if self.concat_cond:
            x_in = torch.cat([x_in, _require_tensor(cond, "concat_cond=True")], dim=1)
            cond_in = None
        t_net = t if self.timestep_fn is None else self.timestep_fn(t)
        out = self.net(x_in, t_net, cond_in)
        out = out.sample if hasattr(out, "sample") else out
        if not torch.is_tensor(out) or out.shape != x_t.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"network output must match x_t shape {tuple(x_t.shape)}, got {shape}")
        x0 = self._to_x0(out, x_t, t, cond)
        return x0.clamp(-1, 1) if self.clip else x0

    def _to_x0(self, out: Tensor, x_t: Tensor, t: Tensor, cond) -> Tensor:
        """Invert the prediction parametrisation; epsilon and v need the marginal coefficients a, b, s at t."""
        if self.prediction_type == "sample":
            return out
        if self.prediction_type == "residual":
            return _require_tensor(cond, "prediction_type='residual'") + out
        a, b, s = (_per_sample(c, x_t) for c in self.process.coefficients(t))
        if self.prediction_type == "epsilon":
            if bool((a <= 0).any()):
                raise ValueError("epsilon prediction needs a(t) > 0 to recover x0; the process has a(t) <= 0 here")
            if bool((b != 0).any()):
                x_t = x_t - b * _require_tensor(cond, "epsilon prediction with b(t) != 0")
            return (x_t - s * out) / a
        if bool((b != 0).any()) or not torch.allclose(a * a + s * s, torch.ones_like(a), atol=_VP_TOLERANCE):
            raise ValueError("v_prediction needs a variance-preserving process: b(t) = 0 and a(t)^2 + s(t)^2 = 1")
        return a * x_t - s * out
