"""What each kind of training run builds: its forward process, its network and the sampler it ships with."""
from __future__ import annotations

from ..bundle import SamplerDefaults, load_bundle
from ..networks import ShiftNet
from ..processes import DomainShiftProcess, ResShiftProcess, VPProcess
from .config import TrainConfig

MODEL_KINDS = ("dossr", "prior", "resshift")


def build_training_process(cfg: TrainConfig):
    """The forward process of a run: DoSSR's domain shift, the prior's VP path, or ResShift's residual shift."""
    if cfg.model == "prior":
        return VPProcess(beta_schedule=cfg.beta_schedule, **_sd_betas(cfg))
    if cfg.model == "resshift":
        return ResShiftProcess(num_steps=cfg.resshift_steps, kappa=cfg.kappa, power=cfg.power)
    return DomainShiftProcess(beta_schedule=cfg.beta_schedule, t1=cfg.t1)


def _sd_betas(cfg: TrainConfig) -> dict:
    """The prior shares DoSSR's (Stable Diffusion) beta range so a fine-tuned prior sees the noise it knows."""
    return {"beta_start": 0.00085, "beta_end": 0.012} if cfg.beta_schedule == "scaled_linear" else {}


def training_horizon(cfg: TrainConfig, process) -> float:
    """Training times are drawn on (0, horizon]: DoSSR trains only below t1 (DoSSR Eq. 8)."""
    return process.t1 if cfg.model == "dossr" else process.t_max


def build_network(cfg: TrainConfig, channels: int) -> ShiftNet:
    """A fresh ShiftNet for the run, or a prior loaded into a zero-initialised conditioning branch."""
    net = ShiftNet(in_channels=channels, cond_channels=0 if cfg.model == "prior" else channels,
                   out_channels=channels, channels=cfg.channels, num_blocks=cfg.num_blocks, cond_mode=cfg.cond_mode)
    if cfg.init_from:
        prior, settings = load_bundle(cfg.init_from)
        if settings.process["kind"] != "vp":
            raise ValueError(f"{cfg.init_from}: init_from must name an unconditional prior (a vp model), "
                             f"got a {settings.process['kind']} model")
        net.load_prior(prior)
    return net


def shipped_sampler(cfg: TrainConfig) -> SamplerDefaults:
    """The sampler a trained model defaults to."""
    if cfg.model == "prior":
        return SamplerDefaults(method="noise-injection", steps=10, order=1, samples=1)
    if cfg.model == "resshift":
        return SamplerDefaults(method="resshift", steps=cfg.resshift_steps, order=1, samples=cfg.default_samples)
    return SamplerDefaults(method="dossr", steps=5, order=3, samples=cfg.default_samples)
