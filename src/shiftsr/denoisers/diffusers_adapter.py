"""Run a diffusers ``UNet2DModel`` under the shiftsr denoiser conventions."""

from collections.abc import Callable

import torch
from torch import Tensor

from shiftsr.denoisers.prediction import PredictionDenoiser, _require_tensor, ddpm_index

TIME_EMBEDDING_TYPES = ("positional", "learned")


def _learned_index(num_train_timesteps: int) -> Callable[[Tensor], Tensor]:
    """Integer DDPM index round(t - 1) for a UNet with a learned (nn.Embedding) time embedding."""

    def index(t: Tensor) -> Tensor:
        i = torch.round(ddpm_index(t)).long()
        if bool(((i < 0) | (i >= num_train_timesteps)).any()):
            raise ValueError(f"DDPM index t - 1 must lie in [0, {num_train_timesteps - 1}], got {i.tolist()}")
        return i

    return index


def _default_timestep_fn(config) -> Callable[[Tensor], Tensor]:
    """DDPM index t - 1: float for sinusoidal embeddings, rounded integer for learned ones."""
    if config.time_embedding_type not in TIME_EMBEDDING_TYPES:
        raise ValueError(
            f"UNet2DModel time_embedding_type must be one of {TIME_EMBEDDING_TYPES}, got {config.time_embedding_type!r}"
        )
    if config.time_embedding_type == "learned":
        return _learned_index(config.num_train_timesteps)
    return ddpm_index


class UNet2DDenoiser(PredictionDenoiser):
    """x0 denoiser from a diffusers UNet2DModel trained on DDPM indices t - 1 (Ho et al. 2020)."""

    def __init__(
        self,
        unet,
        *,
        process,
        prediction_type: str = "epsilon",
        concat_cond: bool = True,
        timestep_fn: Callable[[Tensor], Tensor] | None = None,
        input_scale_fn: Callable[[Tensor], Tensor] | None = None,
    ):
        """Wrap ``unet``; UNet2DModel's config does not store the prediction type, so pass it.

        With ``concat_cond`` (the usual LR conditioning) the UNet sees ``cat([x_t, cond], dim=1)``
        and needs ``in_channels > out_channels``; without it ``in_channels == out_channels`` and
        cond goes to the UNet as ``class_labels`` (None unless the UNet is class-conditional).
        ``timestep_fn`` defaults to the DDPM index t - 1 (rounded to int for a learned time embedding).
        """
        config = unet.config
        if concat_cond and config.in_channels <= config.out_channels:
            raise ValueError(
                f"concat_cond=True needs UNet in_channels > out_channels, got in_channels={config.in_channels}, "
                f"out_channels={config.out_channels}; use concat_cond=False for an unconditioned UNet"
            )
        if not concat_cond and config.in_channels != config.out_channels:
            raise ValueError(
                f"concat_cond=False needs UNet in_channels == out_channels, got in_channels={config.in_channels}, "
                f"out_channels={config.out_channels}; use concat_cond=True for an LR-concatenating UNet"
            )
        super().__init__(
            unet,
            process=process,
            prediction_type=prediction_type,
            timestep_fn=timestep_fn if timestep_fn is not None else _default_timestep_fn(config),
            input_scale_fn=input_scale_fn,
            concat_cond=concat_cond,
        )

    def forward(self, x_t: Tensor, t: Tensor, cond) -> Tensor:
        """Check channels against the UNet config, then predict x0."""
        in_channels = self.net.config.in_channels
        cond_channels = _require_tensor(cond, "concat_cond=True").shape[1] if self.concat_cond else 0
        if x_t.shape[1] + cond_channels != in_channels:
            raise ValueError(
                f"UNet in_channels={in_channels} but x_t has {x_t.shape[1]} channels"
                f" and the concatenated cond {cond_channels} (concat_cond={self.concat_cond})"
            )
        if not self.concat_cond and cond is not None and self.net.class_embedding is None:
            raise ValueError(
                "concat_cond=False passes cond as class_labels, but this UNet has no class embedding; pass cond=None"
            )
        return super().forward(x_t, t, cond)
