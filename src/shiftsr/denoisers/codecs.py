"""Codecs between images in [-1, 1] (B, 3, H, W) and a model space (B, channels, H / scale, W / scale).

Every codec has ``encode(x)``, ``decode(z)``, ``scale`` (spatial down-sampling factor) and
``channels`` (model-space channels). Decoded images are not clamped.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

CODEC_KINDS = ("space_to_depth", "identity", "autoencoder_kl")


class IdentityCodec(torch.nn.Module):
    """Pixel space as model space: encode and decode return their input."""

    def __init__(self, *, image_channels: int = 3):
        super().__init__()
        self.scale = 1
        self.channels = image_channels

    def encode(self, x: Tensor) -> Tensor:
        """Return the image unchanged."""
        return x

    def decode(self, z: Tensor) -> Tensor:
        """Return the model-space tensor unchanged."""
        return z


class SpaceToDepthCodec(torch.nn.Module):
    """Exact pixel (un)shuffle (Shi et al. 2016): factor x factor pixel blocks become channels."""

    def __init__(self, *, factor: int, image_channels: int = 3):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.scale = factor
        self.channels = image_channels * factor * factor

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C * factor^2, H / factor, W / factor); H and W must be multiples of factor."""
        height, width = x.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"image size {height}x{width} is not a multiple of the space-to-depth factor {self.scale}")
        return F.pixel_unshuffle(x, self.scale)

    def decode(self, z: Tensor) -> Tensor:
        """Inverse of ``encode``."""
        return F.pixel_shuffle(z, self.scale)


class AutoencoderKLCodec(torch.nn.Module):
    """Latent space of a diffusers AutoencoderKL (Rombach et al. 2022, z = (mode - shift) * scaling_factor)."""

    def __init__(self, vae, *, scaling_factor: float | None = None):
        """Use ``vae.config.scaling_factor`` unless ``scaling_factor`` is given.

        ``vae.config.shift_factor`` (SD3-style VAEs; None means 0) is subtracted before scaling.
        ``encode`` takes the posterior mode (its mean), so encoding is deterministic.
        """
        super().__init__()
        self.vae = vae
        self.scaling_factor = vae.config.scaling_factor if scaling_factor is None else scaling_factor
        self.shift_factor = vae.config.shift_factor or 0.0
        self.scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.latent_channels

    def encode(self, x: Tensor) -> Tensor:
        """Image -> scaled latent (posterior mode)."""
        return (self.vae.encode(x).latent_dist.mode() - self.shift_factor) * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent -> image."""
        return self.vae.decode(z / self.scaling_factor + self.shift_factor).sample


class VQModelCodec(torch.nn.Module):
    """Latent space of a diffusers VQModel (Esser et al. 2021); ResShift uses VQ-f4 with scale factor 1."""

    def __init__(self, vq, *, scaling_factor: float = 1.0, quantize: bool = True):
        """Latents are the pre-quantisation encoder output times ``scaling_factor``.

        The default 1.0 follows ResShift and diffusers' LDM super-resolution pipeline, which do not
        scale VQ latents; ``vq.config.scaling_factor`` is not used. ``decode`` snaps latents to the
        codebook first unless ``quantize=False``.
        """
        super().__init__()
        self.vq = vq
        self.scaling_factor = scaling_factor
        self.quantize = quantize
        self.scale = 2 ** (len(vq.config.block_out_channels) - 1)
        self.channels = vq.config.vq_embed_dim or vq.config.latent_channels

    def encode(self, x: Tensor) -> Tensor:
        """Image -> scaled pre-quantisation latent."""
        return self.vq.encode(x).latents * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent -> image (through the codebook when ``quantize``)."""
        return self.vq.decode(z / self.scaling_factor, force_not_quantize=not self.quantize).sample


def build_codec(spec: dict, root: str | Path | None = None) -> torch.nn.Module:
    """The codec a bundle's settings name; an autoencoder is read from spec["folder"] inside the model folder root."""
    kind = spec.get("kind")
    if kind == "space_to_depth":
        return SpaceToDepthCodec(factor=spec["factor"])
    if kind == "identity":
        return IdentityCodec()
    if kind == "autoencoder_kl":
        if root is None:
            raise ValueError("an autoencoder codec is read from its model folder; none was given")
        return AutoencoderKLCodec(load_autoencoder(Path(root) / spec["folder"]))
    raise ValueError(f"unknown codec {kind!r}; allowed: {', '.join(CODEC_KINDS)}")


def load_autoencoder(folder: Path):
    """A frozen diffusers AutoencoderKL in eval mode, with a clear error when the folder holds none."""
    from diffusers import AutoencoderKL

    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no autoencoder here (no config.json); train one with model.kind autoencoder")
    vae = AutoencoderKL.from_pretrained(folder)
    return vae.requires_grad_(False).eval()
