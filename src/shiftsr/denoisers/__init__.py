"""Denoisers: callables ``(x_t, t, cond) -> x0`` built from networks, plus model-space codecs and tiling."""

from shiftsr.denoisers.codecs import AutoencoderKLCodec, Codec, IdentityCodec, SpaceToDepthCodec
from shiftsr.denoisers.network import NetworkCall
from shiftsr.denoisers.prediction import PREDICTION_TYPES, PredictionDenoiser, ddpm_index
from shiftsr.denoisers.tiling import TiledDenoiser, auto_tile_size

__all__ = [
    "PREDICTION_TYPES",
    "AutoencoderKLCodec",
    "Codec",
    "IdentityCodec",
    "NetworkCall",
    "PredictionDenoiser",
    "SpaceToDepthCodec",
    "TiledDenoiser",
    "auto_tile_size",
    "ddpm_index",
]
