"""The latent space for latent DoSSR and ResShift: a small diffusers AutoencoderKL (Rombach et al. 2022) trained here."""
from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from ..metrics import psnr_y
from .config import TrainConfig


def _groups(channels: int) -> int:
    """GroupNorm groups of 4 channels, as in Stable Diffusion's VAE (128 channels, 32 groups); one-channel groups
    would normalise away each channel's mean and contrast, which a small autoencoder then fails to reconstruct."""
    return max(1, math.gcd(channels, channels // 4))


def build_autoencoder(cfg: TrainConfig) -> AutoencoderKL:
    """A KL autoencoder that down-samples by data.scale into model.latent_channels, without attention (any size)."""
    m, levels = cfg.model, int(math.log2(cfg.data.scale)) + 1
    widths = (m.channels,) + (2 * m.channels,) * (levels - 1)
    return AutoencoderKL(block_out_channels=widths, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, layers_per_block=m.num_blocks,
                         latent_channels=m.latent_channels, norm_num_groups=_groups(m.channels),
                         mid_block_add_attention=False, scaling_factor=1.0)


def autoencoder_loss(vae: AutoencoderKL, images: Tensor, generator: torch.Generator, device: torch.device,
                     kl_weight: float, perceptual=None, perceptual_weight: float = 0.0) -> Tensor:
    """LDM's first stage (Rombach et al. 2022, App. G) without its GAN term: L1 of a posterior sample's decoding + KL.

    The posterior sample's noise is drawn on the CPU from generator; perceptual adds its weight times ST-LPIPS.
    """
    x = images.to(device) * 2 - 1
    posterior = vae.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(device)
    decoded = vae.decode(z).sample
    loss = (decoded - x).abs().mean() + kl_weight * posterior.kl().mean()
    if perceptual is None:
        return loss
    return loss + perceptual_weight * perceptual(((decoded + 1) / 2).clamp(0, 1), images.to(device)).mean()


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: Tensor, device: torch.device) -> float:
    """LDM Sec. 4.3 / App. G: 1 / std of the posterior means, so that the diffusion model sees unit-variance latents."""
    return 1.0 / vae.encode(images.to(device) * 2 - 1).latent_dist.mean.float().std().item()


@torch.no_grad()
def reconstruction_psnr_y(vae: AutoencoderKL, hr: Tensor, device: torch.device, border: int) -> float:
    """Mean PSNR-Y of the decoded posterior mean against hr (B, 3, H, W) in [0, 1]."""
    decoded = vae.decode(vae.encode(hr.to(device) * 2 - 1).latent_dist.mean).sample
    return float(psnr_y(((decoded.float().cpu() + 1) / 2).clamp(0, 1), hr, border=border).mean())

