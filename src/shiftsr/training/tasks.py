"""What a run trains: a diffusion model in a codec's space (pixels or latents), or the autoencoder that is a codec."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..bundle import save_bundle
from ..denoisers.prediction import PredictionDenoiser
from ..metrics.stlpips import STLPIPS
from .autoencoder import autoencoder_loss, build_autoencoder, latent_scaling_factor, reconstruction_psnr_y
from .config import TrainConfig
from .models import build_network, build_training_codec, build_training_process, bundle_settings, training_horizon
from .validation import HeldOutSet, center_crop

SCALING_CROPS = 16  # training crops whose latent spread sets an autoencoder's scaling factor


@torch.no_grad()
def to_model_space(images: Tensor, codec, device: torch.device) -> Tensor:
    """[0, 1] images to the codec's space, encoded on device and returned on the CPU."""
    return codec.encode(images.to(device)).cpu()


def training_loss(denoiser: PredictionDenoiser, process, cfg: TrainConfig, x0: Tensor, xh: Tensor | None,
                  generator: torch.Generator, device: torch.device, perceptual=None, codec=None) -> Tensor:
    """DoSSR Eq. 8 / ResShift Eq. 11: MSE to x0 of the net at x_t ~ q(x_t | x0, xh), drawn on the CPU, net on device.

    With a perceptual network, optim.stlpips_weight times its ST-LPIPS between decoded prediction and x0 is added.
    """
    t = process.training_times(len(x0), generator=generator, t_max=training_horizon(cfg, process))
    x_t = process.marginal(x0, xh, t, torch.randn(x0.shape, generator=generator))
    xh = None if xh is None else xh.to(device)
    x0 = x0.to(device)
    prediction = denoiser(x_t.to(device), t.to(device), xh)
    loss = F.mse_loss(prediction, x0)
    if perceptual is None:
        return loss
    images = [codec.decode(v) for v in (prediction, x0)]
    return loss + cfg.optim.stlpips_weight * perceptual(images[0].clamp(0, 1), images[1]).mean()


class DiffusionTask:
    """DoSSR, ResShift, a VP prior or a conditional VP model: x0 regression on its process's marginals."""

    def __init__(self, cfg: TrainConfig, device: torch.device, train_images: list[Tensor]):
        self.cfg = cfg
        self.process = build_training_process(cfg)
        self.codec = build_training_codec(cfg, device)
        self.network = build_network(cfg, self.codec.channels)
        self.settings = bundle_settings(cfg, self.process, self.network)
        self.perceptual = None  # ST-LPIPS for validation, loaded on first use

    def loss(self, net: torch.nn.Module, images: tuple[Tensor, Tensor], generator: torch.Generator,
             device: torch.device, perceptual=None) -> Tensor:
        """The loss of one micro-batch of (HR, xh) images in [0, 1]; the prior never sees xh."""
        x0, xh = (to_model_space(part, self.codec, device) for part in images)
        denoiser = PredictionDenoiser(net, process=self.process, prediction_type=self.cfg.model.prediction)
        return training_loss(denoiser, self.process, self.cfg, x0, None if self.cfg.model.kind == "prior" else xh,
                             generator, device, perceptual, self.codec)

    def export(self, net: torch.nn.Module, folder: Path) -> None:
        """Write net as a model bundle (with the codec's autoencoder when latent) into folder."""
        save_bundle(folder, net, self.settings, self.codec)

    def validate(self, net: torch.nn.Module, held_out: HeldOutSet, device: torch.device) -> dict:
        """PSNR-Y of the shipped sampler on the held-out images; ST-LPIPS (alex) too when the best is kept by it."""
        if self.cfg.run.keep_best == "val_stlpips" and self.perceptual is None:
            self.perceptual = STLPIPS("alex").to(device)
        return held_out.scores(net, self.settings, device, codec=self.codec, perceptual=self.perceptual)


class AutoencoderTask:
    """The first stage of latent diffusion: an AutoencoderKL that down-samples by data.scale (Rombach et al. 2022)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, train_images: list[Tensor]):
        self.cfg = cfg
        self.network = build_autoencoder(cfg)
        self.scaling_crops = torch.stack([center_crop(image, cfg.data.patch)
                                          for image in train_images[:SCALING_CROPS]]).float() / 255

    def loss(self, net: torch.nn.Module, images: tuple[Tensor, Tensor], generator: torch.Generator,
             device: torch.device, perceptual=None) -> Tensor:
        """Reconstruction loss of the HR crops of one micro-batch."""
        o = self.cfg.optim
        return autoencoder_loss(net, images[0], generator, device, o.kl_weight, perceptual, o.stlpips_weight)

    def export(self, net: torch.nn.Module, folder: Path) -> None:
        """Save in diffusers' layout, with the scaling factor that gives unit-variance latents on training crops."""
        device = next(net.parameters()).device
        net.register_to_config(scaling_factor=latent_scaling_factor(net, self.scaling_crops, device))
        net.save_pretrained(folder, safe_serialization=True)

    def validate(self, net: torch.nn.Module, held_out: HeldOutSet, device: torch.device) -> dict:
        """Mean reconstruction PSNR-Y (border data.scale) of the held-out images."""
        device, batches = next(net.parameters()).device, held_out.hr
        total = sum(reconstruction_psnr_y(net, hr, device, border=self.cfg.data.scale) * len(hr) for hr in batches)
        return {"val_psnr_y": total / sum(len(hr) for hr in batches)}


def build_task(cfg: TrainConfig, device: torch.device, train_images: list[Tensor]):
    """The task of a recipe's model.kind."""
    task = AutoencoderTask if cfg.model.kind == "autoencoder" else DiffusionTask
    return task(cfg, device, train_images)
