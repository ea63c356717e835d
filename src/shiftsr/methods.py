"""Method names users pick, and how each runs on a model's process."""
from __future__ import annotations

import math

import torch

from .processes import DomainShiftProcess, ResShiftProcess, VPProcess
from .samplers import dossr_start, dossr_timesteps, sample_dossr
from .samplers.common import randn_like
from .samplers.noise_injection import forward_start, inject_noise, recoverable_time
from .samplers.resshift import resshift_start, resshift_timesteps, sample_resshift
from .samplers.vp import sample_ddim, sample_ddpm, sample_dpmpp_2m, vp_timesteps

METHODS = {
    DomainShiftProcess: ("dossr", "dossr-ode", "dpmpp-2m"),
    ResShiftProcess: ("resshift", "resshift-ode"),
    VPProcess: ("noise-injection",),
}
CONDITIONAL_VP_METHODS = ("ddim", "ddpm", "dpmpp-2m")  # SR3-style: from pure noise at T, the LR as condition
VP_SAMPLERS = {"ddim": sample_ddim, "ddpm": sample_ddpm, "dpmpp-2m": sample_dpmpp_2m}


def methods_for(process, *, conditional: bool = False) -> tuple[str, ...]:
    """The method names a model with this process can run; a VP model that sees the LR starts from pure noise."""
    if type(process) is VPProcess and conditional:
        return CONDITIONAL_VP_METHODS
    return METHODS[type(process)]


def run_method(method: str, denoiser, xh, *, process, steps: int, order: int, scale: float, generator,
               start=None, callback=None, conditional: bool = False, t_start: float | None = None, estimate=None,
               noise=None):
    """Sample x0 in model space from the LR brought to HR (xh) with the named method; start overrides the noise.

    noise, a standard-normal tensor of xh's shape, is the draw of the starting state (BCSR's boundary condition)
    in place of one from generator; start overrides the whole starting state.
    t_start shortens the path: the chain starts at t_start from the forward marginal around `estimate`
    (default xh), x_t = a estimate + b xh + s eps, instead of at the method's own start (SDEdit, Meng et al.
    2022; CCDF, Chung et al. 2022). For noise injection t_start replaces the paper's per-scale time.
    """
    allowed = methods_for(process, conditional=conditional)
    if method not in allowed:
        raise ValueError(f"method {method!r} does not apply to this model; allowed: {', '.join(allowed)}")
    common = dict(generator=generator, callback=callback)
    estimate = xh if estimate is None else estimate
    first = generator if noise is None else noise  # the starting state's draw
    if isinstance(process, DomainShiftProcess):
        ts = (dossr_timesteps(process, steps) if t_start is None
              else torch.linspace(t_start, 0, steps + 1, dtype=torch.float64).tolist())
        x = start if start is not None else (dossr_start(process, xh, ts[0], first) if t_start is None
                                             else forward_start(process, estimate, xh, ts[0], first))
        if method == "dpmpp-2m":
            return sample_dpmpp_2m(denoiser, x, ts, process=process, y=xh, cond=xh, **common)
        return sample_dossr(denoiser, x, ts, process=process, xh=xh, cond=xh, order=1 if method == "dossr-ode" else order,
                            deterministic=method == "dossr-ode", **common)
    if isinstance(process, ResShiftProcess):
        ts = resshift_timesteps(process)
        if t_start is not None:  # the network knows integer steps only: start at the first one at or above t_start
            ts = [t for t in ts if t <= max(1, math.ceil(t_start))]
        x = start if start is not None else (resshift_start(process, xh, first) if t_start is None
                                             else forward_start(process, estimate, xh, ts[0], first))
        if method == "resshift":
            return sample_resshift(denoiser, x, ts, process=process, cond=xh, **common)
        return sample_ddim(denoiser, x, ts, process=process, y=xh, cond=xh, eta=0.0, **common)
    if conditional:
        ts = vp_timesteps(process, steps, t_start=t_start)
        x = start if start is not None else (randn_like(xh, first) if t_start is None
                                             else forward_start(process, estimate, None, ts[0], first))
        return VP_SAMPLERS[method](denoiser, x, ts, process=process, cond=xh, **common)
    if t_start is None:
        if scale <= 1:
            raise ValueError(f"noise injection upscales: the scale must exceed 1, got {scale}")
        # the paper's per-scale field covers 1x-8x; beyond it, the KL rule measured on the image itself
        t_start = (recoverable_time(process, scale) if scale <= 8
                   else recoverable_time(process, scale, rule="kl", x_up=xh))
    ts = vp_timesteps(process, steps, t_start=t_start)
    x = inject_noise(process, estimate, ts[0], first) if start is None else start
    return sample_ddim(denoiser, x, ts, process=process, cond=None, eta=0.0, **common)
