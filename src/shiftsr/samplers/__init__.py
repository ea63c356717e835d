"""Samplers: plain functions sample_x(denoiser, x, ts, *, ..., generator, callback) on (a, b, s) paths."""
from .common import Draws, ddim_step, randn_like
from .dossr import dossr_timesteps, sample_dossr
from .resshift import sample_resshift
from .vp import sample_ddim, sample_ddpm, sample_dpmpp_2m, vp_timesteps

__all__ = ["Draws", "ddim_step", "randn_like", "dossr_timesteps", "sample_dossr", "sample_resshift",
           "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "vp_timesteps"]
