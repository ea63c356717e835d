"""DoSSR latent networks (official model/cldm.py ControlLDM): controlled SD-2.1 UNet, condition encoder, text tower."""
from __future__ import annotations

from collections import OrderedDict

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Encoder
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from .dossr_controlnet import DoSSRControlNet

# UNet2DConditionModel keywords the ControlNet shares (it is a copy of the UNet's encoder half)
SHARED_KEYS = ("down_block_types", "block_out_channels", "layers_per_block", "attention_head_dim",
               "cross_attention_dim", "transformer_layers_per_block", "use_linear_projection", "norm_num_groups",
               "norm_eps")


class DoSSRControlLDM(ModelMixin, ConfigMixin):
    """ControlLDM.apply_model of DoSSR: the SD UNet's output (its 'eps') with ControlNet residuals times control_scale.

    The official sampler always uses one prompt, so its text context (FrozenOpenCLIPEmbedder, penultimate layer) is
    computed once at conversion and kept here as the buffer `text_context`.
    """

    @register_to_config
    def __init__(self, *, unet_config: dict, conditioning_channels: int = 4, context_length: int = 77,
                 control_scale: float = 1.0):
        super().__init__()
        self.unet = UNet2DConditionModel(**unet_config)
        shared = {key: self.unet.config[key] for key in SHARED_KEYS}
        self.controlnet = DoSSRControlNet(in_channels=self.unet.config.in_channels,
                                          conditioning_channels=conditioning_channels, **shared)
        self.register_buffer("text_context", torch.zeros(1, context_length, self.unet.config.cross_attention_dim))

    def forward(self, sample: Tensor, timestep: Tensor, c_latent: Tensor, context: Tensor | None = None) -> Tensor:
        """UNet output at x_t = sample for the official 0-based timestep index; context defaults to the stored one."""
        if context is None:
            context = self.text_context.to(sample.dtype).expand(sample.shape[0], -1, -1)
        down, mid = self.controlnet(sample, timestep, context, c_latent)
        scale = self.config.control_scale
        return self.unet(sample, timestep, encoder_hidden_states=context,
                         down_block_additional_residuals=[r * scale for r in down],
                         mid_block_additional_residual=mid * scale).sample


class DoSSRConditionEncoder(ModelMixin, ConfigMixin):
    """ControlLDM.apply_condition_encoder: c_latent = mode(quant_conv(Encoder(x))) * scaling_factor, x in [-1, 1].

    The official cond_encoder is a copy of the VAE encoder and quant_conv with weights of its own (fine-tuned).
    """

    @register_to_config
    def __init__(self, *, block_out_channels: tuple[int, ...] = (128, 256, 512, 512), layers_per_block: int = 2,
                 latent_channels: int = 4, norm_num_groups: int = 32, scaling_factor: float = 0.18215):
        super().__init__()
        self.encoder = Encoder(in_channels=3, out_channels=latent_channels,
                               down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
                               block_out_channels=block_out_channels, layers_per_block=layers_per_block,
                               norm_num_groups=norm_num_groups, double_z=True)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """The scaled posterior mean (the official DiagonalGaussianDistribution(...).mode())."""
        moments = self.quant_conv(self.encoder(x))
        return moments[:, : self.config.latent_channels] * self.config.scaling_factor


class _TextBlock(nn.Module):
    """OpenCLIP ResidualAttentionBlock (pre-LN attention and GELU MLP), in OpenCLIP's key names."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(),
                                             c_proj=nn.Linear(4 * width, width)))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    """Holds the blocks under OpenCLIP's `transformer.resblocks` names."""

    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList(_TextBlock(width, heads) for _ in range(layers))


class OpenCLIPTextEncoder(ModelMixin, ConfigMixin):
    """FrozenOpenCLIPEmbedder.encode_with_transformer (Radford et al. 2021 text tower): `layers` blocks, then ln_final.

    With layers = depth - 1 it is the official layer="penultimate" output; keys are OpenCLIP's, without the unused
    last block, text_projection and logit_scale.
    """

    @register_to_config
    def __init__(self, *, vocab_size: int = 49408, context_length: int = 77, width: int = 1024, heads: int = 16,
                 layers: int = 23):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.transformer = _Transformer(width, heads, layers)
        self.ln_final = nn.LayerNorm(width)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, context_length) token ids -> (B, context_length, width) context, causal attention."""
        n = tokens.shape[1]
        mask = torch.full((n, n), float("-inf"), device=tokens.device).triu(1)
        x = (self.token_embedding(tokens) + self.positional_embedding).permute(1, 0, 2)
        for block in self.transformer.resblocks:
            x = block(x, mask.to(x.dtype))
        return self.ln_final(x.permute(1, 0, 2))
