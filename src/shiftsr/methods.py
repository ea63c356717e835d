"""Method names users pick, and how each runs on a model's process."""
from __future__ import annotations

from .processes import DomainShiftProcess, ResShiftProcess, VPProcess
from .samplers import dossr_start, dossr_timesteps, sample_dossr
from .samplers.noise_injection import inject_noise, recoverable_time
from .samplers.resshift import resshift_start, resshift_timesteps, sample_resshift
from .samplers.common import randn_like
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
               start=None, callback=None, conditional: bool = False):
    """Sample x0 in model space from the LR brought to HR (xh) with the named method; start overrides the noise."""
    allowed = methods_for(process, conditional=conditional)
    if method not in allowed:
        raise ValueError(f"method {method!r} does not apply to this model; allowed: {', '.join(allowed)}")
    common = dict(generator=generator, callback=callback)
    if isinstance(process, DomainShiftProcess):
        ts = dossr_timesteps(process, steps)
        x = dossr_start(process, xh, ts[0], generator) if start is None else start
        if method == "dpmpp-2m":
            return sample_dpmpp_2m(denoiser, x, ts, process=process, y=xh, cond=xh, **common)
        return sample_dossr(denoiser, x, ts, process=process, xh=xh, cond=xh, order=1 if method == "dossr-ode" else order,
                            deterministic=method == "dossr-ode", **common)
    if isinstance(process, ResShiftProcess):
        ts = resshift_timesteps(process)
        x = resshift_start(process, xh, generator) if start is None else start
        if method == "resshift":
            return sample_resshift(denoiser, x, ts, process=process, cond=xh, **common)
        return sample_ddim(denoiser, x, ts, process=process, y=xh, cond=xh, eta=0.0, **common)
    if conditional:
        ts = vp_timesteps(process, steps)
        x = randn_like(xh, generator) if start is None else start
        return VP_SAMPLERS[method](denoiser, x, ts, process=process, cond=xh, **common)
    if scale <= 1:
        raise ValueError(f"noise injection upscales: the scale must exceed 1, got {scale}")
    # the paper's per-scale field covers 1x-8x; beyond it, the KL rule measured on the image itself
    t_start = (recoverable_time(process, scale) if scale <= 8
               else recoverable_time(process, scale, rule="kl", x_up=xh))
    ts = vp_timesteps(process, steps, t_start=t_start)
    x = inject_noise(process, xh, ts[0], generator) if start is None else start
    return sample_ddim(denoiser, x, ts, process=process, cond=None, eta=0.0, **common)

