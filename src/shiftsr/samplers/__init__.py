"""Samplers: plain functions sample_x(denoiser, x, ts, *, ..., generator, callback) on (a, b, s) paths."""
from .common import ddim_step, randn_like
from .dossr import dossr_start, dossr_timesteps, sample_dossr

__all__ = ["ddim_step", "randn_like", "dossr_start", "dossr_timesteps", "sample_dossr"]
