"""What each kind of training run builds: its forward process, its network and the sampler it ships with."""
from __future__ import annotations

from pathlib import Path

import torch

from ..bundle import BundleSettings, SamplerDefaults, load_bundle, settings_for
from ..denoisers.codecs import AutoencoderKLCodec, SpaceToDepthCodec, load_autoencoder
from ..networks import ShiftNet
from ..processes import DomainShiftProcess, ResShiftProcess, VPProcess
from .config import ConfigError, TrainConfig


def build_training_process(cfg: TrainConfig):
    """The forward process of a run: DoSSR's domain shift, a VP path (prior or conditional), or ResShift's shift."""
    p = cfg.process
    if cfg.model.kind in ("prior", "vp"):
        return VPProcess(beta_schedule=p.beta_schedule, **_sd_betas(cfg))
    if cfg.model.kind == "resshift":
        return ResShiftProcess(num_steps=p.resshift_steps, kappa=p.kappa, power=p.power)
    return DomainShiftProcess(beta_schedule=p.beta_schedule, t1=p.t1)


def _sd_betas(cfg: TrainConfig) -> dict:
    """The prior shares DoSSR's (Stable Diffusion) beta range so a fine-tuned prior sees the noise it knows."""
    return {"beta_start": 0.00085, "beta_end": 0.012} if cfg.process.beta_schedule == "scaled_linear" else {}


def training_horizon(cfg: TrainConfig, process) -> float:
    """Training times are drawn on (0, horizon]: DoSSR trains only below t1 (DoSSR Eq. 8)."""
    return process.t1 if cfg.model.kind == "dossr" else process.t_max


def build_training_codec(cfg: TrainConfig, device: torch.device):
    """The space a diffusion model trains in: an autoencoder's latents (model.codec) or unshuffled pixels."""
    if not cfg.model.codec:
        return SpaceToDepthCodec(factor=cfg.data.scale)
    try:
        codec = AutoencoderKLCodec(load_autoencoder(Path(cfg.model.codec)))
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.codec: {error}") from None
    if codec.scale != cfg.data.scale:
        raise ConfigError(f"model.codec: {cfg.model.codec} down-samples by {codec.scale}, but data.scale is "
                          f"{cfg.data.scale}; the latent of an HR crop must have the LR's size")
    return codec.to(device)


def build_network(cfg: TrainConfig, channels: int) -> ShiftNet:
    """A fresh ShiftNet; a prior loaded into a zero-initialised conditioning branch; or a model to fine-tune."""
    m = cfg.model
    net = ShiftNet(in_channels=channels, cond_channels=0 if m.kind == "prior" else channels,
                   out_channels=channels, channels=m.channels, num_blocks=m.num_blocks, cond_mode=m.cond_mode)
    if not m.init_from:
        return net
    try:
        source, settings = load_bundle(m.init_from)
    except (OSError, ValueError) as error:  # a missing or broken model folder: the recipe's problem
        raise ConfigError(f"model.init_from: {error}") from None
    if not isinstance(source, ShiftNet):
        raise ConfigError(f"model.init_from: {m.init_from}: holds a {settings.network} network; only ShiftNet models "
                          "are trained further")
    if settings.process["kind"] == "vp":
        if m.cond_mode != "branch":
            raise ConfigError(f"{m.init_from}: is an unconditional prior; fine-tuning it needs model.cond_mode branch")
        net.load_prior(source)
        return net
    different = sorted(k for k in net.config if not k.startswith("_") and source.config.get(k) != net.config[k])
    if different:
        raise ConfigError(f"{m.init_from}: its network differs from this recipe's in {', '.join(different)}")
    net.load_state_dict(source.state_dict())
    if m.identity_init:  # the residual starts at 0: the model returns its source image until training moves it
        torch.nn.init.zeros_(net.conv_out.weight)
        torch.nn.init.zeros_(net.conv_out.bias)
    return net


def shipped_sampler(cfg: TrainConfig) -> SamplerDefaults:
    """The sampler a trained model defaults to."""
    if cfg.model.kind == "prior":
        return SamplerDefaults(method="noise-injection", steps=10, order=1, samples=1)
    if cfg.model.kind == "vp":
        return SamplerDefaults(method="ddim", steps=50, order=1, samples=cfg.model.default_samples)
    if cfg.model.kind == "resshift":
        return SamplerDefaults(method="resshift", steps=cfg.process.resshift_steps, order=1,
                               samples=cfg.model.default_samples)
    return SamplerDefaults(method="dossr", steps=5, order=3, samples=cfg.model.default_samples)


def bundle_settings(cfg: TrainConfig, process, net: ShiftNet) -> BundleSettings:
    """What a trained network is exported with: its process, scale, prediction, codec and shipped sampler."""
    return settings_for(net, process, scale=cfg.data.scale, prediction_type=cfg.model.prediction,
                        preprocessor=cfg.model.preprocessor,
                        codec=codec_settings(cfg), sampler=shipped_sampler(cfg))


def codec_settings(cfg: TrainConfig) -> dict:
    """The codec entry of an exported bundle: its autoencoder is copied into the bundle's "codec" folder."""
    if cfg.model.codec:
        return {"kind": "autoencoder_kl", "folder": "codec"}
    return {"kind": "space_to_depth", "factor": cfg.data.scale}
