"""Denoisers: callables ``(x_t, t, cond) -> x0`` built from networks, plus model-space codecs and tiling."""

from shiftsr.denoisers.codecs import AutoencoderKLCodec, IdentityCodec, SpaceToDepthCodec, VQModelCodec
from shiftsr.denoisers.diffusers_adapter import UNet2DDenoiser
from shiftsr.denoisers.prediction import PREDICTION_TYPES, PredictionDenoiser, ddpm_index
from shiftsr.denoisers.tiling import TiledDenoiser, auto_tile_size

__all__ = [
    "PREDICTION_TYPES",
    "AutoencoderKLCodec",
    "IdentityCodec",
    "PredictionDenoiser",
    "SpaceToDepthCodec",
    "TiledDenoiser",
    "UNet2DDenoiser",
    "VQModelCodec",
    "auto_tile_size",
    "ddpm_index",
]
