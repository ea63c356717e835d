"""Samplers: plain functions sample_x(denoiser, x, ts, *, ..., generator, callback) on (a, b, s) paths."""
from .common import ddim_step, randn_like
from .dossr import dossr_start, dossr_timesteps, sample_dossr
from .noise_injection import inject_noise, lost_energy, recoverable_time, sample_noise_injection
from .resshift import resshift_start, resshift_timesteps, sample_resshift
from .vp import sample_ddim, sample_ddpm, sample_dpmpp_2m, vp_timesteps

__all__ = ["ddim_step", "randn_like", "dossr_start", "dossr_timesteps", "sample_dossr",
           "inject_noise", "lost_energy", "recoverable_time", "sample_noise_injection",
           "resshift_start", "resshift_timesteps", "sample_resshift",
           "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "vp_timesteps"]
