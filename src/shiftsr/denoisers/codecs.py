"""Codecs between images in [0, 1] (B, 3, H, W) and a model space (B, channels, H / scale, W / scale).

Every codec has ``encode(image)``, ``decode(z)``, ``scale`` (spatial down-sampling factor) and ``channels``
(model-space channels). Images go in and come out in [0, 1]; the model space sees them in [-1, 1], the
convention of every diffusion model here. Decoded images are not clamped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

CODEC_KINDS = ("space_to_depth", "identity", "autoencoder_kl", "vq_f4")
FOLDER_CODECS = ("autoencoder_kl", "vq_f4")  # codecs with weights, stored in the bundle's spec["folder"]
MAX_FACTOR = 64


@dataclass
class CodecSpec:
    """A bundle's codec record: its kind, a space-to-depth factor, the sub-folder of an autoencoder's weights, and
    whether an autoencoder_kl encodes by sampling its posterior."""

    kind: str
    factor: int | None = None
    folder: str | None = None
    sample: bool = False


def check_codec_spec(spec, source: str) -> None:
    """Raise ValueError (naming source and the key) unless spec is a codec record build_codec can use."""
    from ..typed import build_typed

    codec = build_typed(CodecSpec, spec, source, path="codec.")
    if codec.kind not in CODEC_KINDS:
        raise ValueError(f"{source}: codec.kind: {codec.kind!r} is not allowed; allowed: {', '.join(CODEC_KINDS)}")
    if codec.kind == "space_to_depth" and not 1 <= (codec.factor or 0) <= MAX_FACTOR:
        raise ValueError(f"{source}: codec.factor: space_to_depth needs a whole number from 1 to {MAX_FACTOR}, "
                         f"got {codec.factor!r}")
    if codec.kind in FOLDER_CODECS and (not codec.folder or Path(codec.folder).name != codec.folder
                                        or codec.folder.startswith(".")):
        raise ValueError(f"{source}: codec.folder: {codec.kind} needs the name of a sub-folder of the model "
                         f"folder, got {codec.folder!r}")


class Codec(torch.nn.Module):
    """Images in [0, 1] to a model space and back; subclasses map [-1, 1] images in `to_latent` / `from_latent`."""

    scale: int
    channels: int
    stochastic = False  # True: encode draws a posterior sample (from the generator it is given)

    def encode(self, image: Tensor, generator=None) -> Tensor:
        """[0, 1] image -> model space; a stochastic codec draws its sample from generator (samplers.randn_like)."""
        return self.to_latent(image * 2 - 1, generator) if self.stochastic else self.to_latent(image * 2 - 1)

    def decode(self, z: Tensor) -> Tensor:
        """Model space -> [0, 1] image (not clamped)."""
        return (self.from_latent(z) + 1) / 2

    def to_latent(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def from_latent(self, z: Tensor) -> Tensor:
        raise NotImplementedError


class IdentityCodec(Codec):
    """Pixel space as model space: the image in [-1, 1]."""

    def __init__(self, *, image_channels: int = 3):
        super().__init__()
        self.scale = 1
        self.channels = image_channels

    def to_latent(self, x: Tensor) -> Tensor:
        """The [-1, 1] image unchanged."""
        return x

    def from_latent(self, z: Tensor) -> Tensor:
        """The model-space tensor unchanged."""
        return z


class SpaceToDepthCodec(Codec):
    """Exact pixel (un)shuffle (Shi et al. 2016): factor x factor pixel blocks become channels."""

    def __init__(self, *, factor: int, image_channels: int = 3):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.scale = factor
        self.channels = image_channels * factor * factor

    def to_latent(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C * factor^2, H / factor, W / factor); H and W must be multiples of factor."""
        height, width = x.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"image size {height}x{width} is not a multiple of the space-to-depth factor {self.scale}")
        return F.pixel_unshuffle(x, self.scale)

    def from_latent(self, z: Tensor) -> Tensor:
        """Inverse of ``to_latent``."""
        return F.pixel_shuffle(z, self.scale)


class AutoencoderKLCodec(Codec):
    """Latent space of a diffusers AutoencoderKL (Rombach et al. 2022, z = (mode - shift) * scaling_factor)."""

    def __init__(self, vae, *, scaling_factor: float | None = None, sample: bool = False):
        """Use ``vae.config.scaling_factor`` unless ``scaling_factor`` is given.

        ``vae.config.shift_factor`` (SD3-style VAEs; None means 0) is subtracted before scaling.
        ``encode`` takes the posterior mode (its mean), so encoding is deterministic; with ``sample`` it draws
        mean + std eps from the posterior, as DoSSR's official sampler does before its starting noise.
        """
        super().__init__()
        self.vae = vae
        self.stochastic = sample
        self.scaling_factor = vae.config.scaling_factor if scaling_factor is None else scaling_factor
        self.shift_factor = vae.config.shift_factor or 0.0
        self.scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.latent_channels

    def to_latent(self, x: Tensor, generator=None) -> Tensor:
        """[-1, 1] image -> scaled latent (posterior mode, or a sample drawn from generator)."""
        posterior = self.vae.encode(x).latent_dist
        latent = posterior.mode()
        if self.stochastic:
            from ..samplers.common import randn_like

            latent = latent + posterior.std * randn_like(latent, generator)
        return (latent - self.shift_factor) * self.scaling_factor

    def save_pretrained(self, folder, **kwargs) -> None:
        """Save the autoencoder (diffusers layout) into folder."""
        self.vae.save_pretrained(folder, **kwargs)

    def from_latent(self, z: Tensor) -> Tensor:
        """Scaled latent -> [-1, 1] image."""
        return self.vae.decode(z / self.scaling_factor + self.shift_factor).sample


class VQF4Codec(Codec):
    """ResShift's VQ-f4 latent space: the pre-quantisation encoder output; decoding snaps to the codebook first."""

    def __init__(self, vq):
        super().__init__()
        self.vq = vq
        self.scale = vq.scale
        self.channels = vq.channels

    def to_latent(self, x: Tensor) -> Tensor:
        """[-1, 1] image -> latent (scale factor 1, as every released ResShift model)."""
        return self.vq.encode(x)

    def from_latent(self, z: Tensor) -> Tensor:
        """Latent -> [-1, 1] image through the codebook (the official decode)."""
        return self.vq.decode(z)

    def save_pretrained(self, folder, **kwargs) -> None:
        """Save the autoencoder (its ModelMixin layout) into folder."""
        self.vq.save_pretrained(folder, **kwargs)


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
        return AutoencoderKLCodec(load_autoencoder(Path(root) / spec["folder"]), sample=spec.get("sample", False))
    if kind == "vq_f4":
        from ..bundle import load_part
        from ..networks.vq_f4 import VQF4Autoencoder

        if root is None:
            raise ValueError("a VQ-f4 codec is read from its model folder; none was given")
        return VQF4Codec(load_part(VQF4Autoencoder, Path(root) / spec["folder"]))
    raise ValueError(f"unknown codec {kind!r}; allowed: {', '.join(CODEC_KINDS)}")


def load_autoencoder(folder: Path):
    """A frozen diffusers AutoencoderKL in eval mode, with a clear error when the folder holds none."""
    from diffusers import AutoencoderKL

    from ..bundle import load_part

    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no autoencoder here (no config.json); train one with model.kind autoencoder")
    return load_part(AutoencoderKL, Path(folder)).requires_grad_(False)
