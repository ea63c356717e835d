"""DoSSR's ControlNet (official model/cldm.py ControlNet): the SD encoder on cat(x_t, c_latent), no hint block."""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import get_down_block, get_mid_block
from torch import Tensor, nn


class DoSSRControlNet(ModelMixin, ConfigMixin):
    """Zhang et al. 2023 ControlNet as DoSSR builds it: the first conv takes cat(x_t, c_latent), one zero conv per skip.

    diffusers' ControlNetModel always adds a hint embedding (ControlNetConditioningEmbedding) to conv_in's output,
    which the official network does not have; so this module assembles the same diffusers blocks without it. The
    attribute names are ControlNetModel's, so `convert_controlnet_checkpoint` output loads as it is.
    `attention_head_dim` counts heads per level, as in UNet2DConditionModel's SD-2 configs.
    """

    @register_to_config
    def __init__(self, *, in_channels: int = 4, conditioning_channels: int = 4,
                 down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                      "CrossAttnDownBlock2D", "DownBlock2D"),
                 block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280), layers_per_block: int = 2,
                 attention_head_dim: tuple[int, ...] = (5, 10, 20, 20), cross_attention_dim: int = 1024,
                 transformer_layers_per_block: int = 1, use_linear_projection: bool = True,
                 norm_num_groups: int = 32, norm_eps: float = 1e-5):
        super().__init__()
        time_dim = block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels + conditioning_channels, block_out_channels[0], 3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_dim)
        common = dict(temb_channels=time_dim, resnet_eps=norm_eps, resnet_act_fn="silu", resnet_groups=norm_num_groups,
                      cross_attention_dim=cross_attention_dim, use_linear_projection=use_linear_projection,
                      transformer_layers_per_block=transformer_layers_per_block)
        self.down_blocks = nn.ModuleList()
        skip_channels = [block_out_channels[0]]
        for i, block_type in enumerate(down_block_types):
            last = i == len(down_block_types) - 1
            self.down_blocks.append(get_down_block(
                block_type, num_layers=layers_per_block, in_channels=skip_channels[-1],
                out_channels=block_out_channels[i], add_downsample=not last, downsample_padding=1,
                num_attention_heads=attention_head_dim[i], attention_head_dim=attention_head_dim[i], **common))
            skip_channels += [block_out_channels[i]] * (layers_per_block + (0 if last else 1))
        self.mid_block = get_mid_block("UNetMidBlock2DCrossAttn", in_channels=block_out_channels[-1],
                                       num_attention_heads=attention_head_dim[-1],
                                       attention_head_dim=attention_head_dim[-1], **common)
        self.controlnet_down_blocks = nn.ModuleList(nn.Conv2d(c, c, 1) for c in skip_channels)
        self.controlnet_mid_block = nn.Conv2d(block_out_channels[-1], block_out_channels[-1], 1)

    def forward(self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor,
                c_latent: Tensor) -> tuple[list[Tensor], Tensor]:
        """The zero-conv outputs: one per UNet skip connection (input-block order) and one for the middle block."""
        timestep = torch.as_tensor(timestep, device=sample.device).expand(sample.shape[0])
        emb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        # 1. the official first input block is one conv on cat(x_t, hint)
        h = self.conv_in(torch.cat([sample, c_latent], dim=1))
        skips = [h]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, res = block(h, emb, encoder_hidden_states=encoder_hidden_states)
            else:
                h, res = block(h, emb)
            skips += res
        h = self.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states)
        # 2. a 1x1 (zero-initialised at training start) conv on every skip and on the middle output
        return [conv(s) for conv, s in zip(self.controlnet_down_blocks, skips)], self.controlnet_mid_block(h)
