"""ResShift and SinSR checkpoints (Yue et al. 2023; Wang et al. 2024): config from shapes, strict load, bundle facts.

Modelled on spandrel's ArchSupport. Every released diffusion checkpoint (ResShift v1, v2, v3, bicsr; SinSR v1, v2)
is one UNetModelSwin layout: 564 tensors (540 parameters, 118,593,583 values; 18 relative_position_index and 6
attn_mask buffers); the autoencoder_vq_f4.pth they share is VQModelTorch: 205 tensors, 55,322,782 values.
Read from the shapes: model_channels, channel_mult, num_res_blocks, where the Swin layers sit, swin_embed_dim,
heads, depth, mlp_ratio, window size, scale-shift norm, in / out channels, and (from the attn_mask shapes)
the image_size the model was built for. The variant (which process it was trained for) is not in the file:
it comes from the caller or the released file name. Facts in VARIANTS are read from the official configs,
inference_resshift.py, sampler.py and models/gaussian_diffusion.py, and checked against a run of that code in
tests/test_official_resshift.py.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from ..networks.resshift_unet import ResShiftUNet
from ..networks.vq_f4 import VQF4Autoencoder
from .checkpoint import CheckpointError, load_strict, read_checkpoint

LQ_CHANNELS = 3  # every released model concatenates the RGB LR image (lq_size == image_size: no feature extractor)
RESSHIFT_LICENCE = ("S-Lab License 1.0 (zsyOAOA/ResShift LICENSE): redistribution and use for non-commercial "
                    "purposes only; commercial use needs the authors' permission")
SINSR_LICENCE = ("CC BY-NC-SA 4.0 (wyf0912/SinSR LICENSE): academic research use only, non-commercial, "
                 "share-alike; the teacher is ResShift v1 (S-Lab License 1.0)")
ETA_FORMULA = ("sqrt(eta_t) = eta_start * (etas_end / eta_start)^(((t - 1) / (T - 1))^power), t = 1..T, "
               "eta_start = min(min_noise_level / kappa, min_noise_level) (SinSR: also min with sqrt(0.001), "
               "which changes nothing for its config); models/gaussian_diffusion.py get_named_eta_schedule")
# how the official sampler (ResShiftSampler.sample_func / SinSR Sampler.sample_func) treats an LR image
LR_PATH = ("LR in [0, 1] -> y0 = 2 LR - 1 -> reflect-pad bottom/right to multiples of 64 (lq_size) -> "
           "z_y = VQ.encode(F.interpolate(y0, scale_factor=4, mode='bicubic')) * scale_factor -> "
           "x_T = z_y + kappa sqrt(eta_T) eps -> each step: net(x_t / sqrt(kappa^2 eta_t + 1), t - 1, lq=y0) "
           "predicts x0 (no clipping in latent space) -> VQ.decode(x_0 / scale_factor), quantised -> crop to "
           "4 x the LR size -> clamp to [-1, 1] -> (x + 1) / 2")
_COMMON = dict(kappa=2.0, power=0.3, etas_end=0.99, scale_factor=1.0, normalize_input=True, latent_flag=True, sf=4,
               pad_multiple=64, chop_size=512, chop_stride=448, prediction="x0 (predict_type xstart)",
               time_input="0-based index t - 1, T - 1 first (respacing is the identity)",
               input_scale="1 / sqrt(kappa^2 eta_t + 1) (normalize_input with latent_flag)",
               autoencoder="autoencoder_vq_f4.pth (github.com/zsyOAOA/ResShift releases v2.0)",
               decode_quantizes=True, lr_path=LR_PATH, eta_formula=ETA_FORMULA)
_RELEASES = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/"


def _resshift(name: str, config: str, steps: int, min_noise_level: float, description: str) -> dict:
    return dict(_COMMON, checkpoint=_RELEASES + name, config=config, num_steps=steps, min_noise_level=min_noise_level,
                sampling_steps=steps, licence=RESSHIFT_LICENCE,
                source=f"zsyOAOA/ResShift ({description}; Yue et al. 2023, NeurIPS / journal version 2024)")


VARIANTS: dict[str, dict] = {
    "resshift-v1": _resshift("resshift_realsrx4_s15_v1.pth", "configs/realsr_swinunet_realesrgan256.yaml", 15, 0.04,
                             "real-world x4, 15 steps, NeurIPS paper model"),
    "resshift-v2": _resshift("resshift_realsrx4_s15_v2.pth", "configs/realsr_swinunet_realesrgan256.yaml", 15, 0.04,
                             "real-world x4, 15 steps, a second checkpoint of the v1 configuration"),
    "resshift-v3": _resshift("resshift_realsrx4_s4_v3.pth", "configs/realsr_swinunet_realesrgan256_journal.yaml", 4,
                             0.2, "real-world x4, 4 steps, journal model trained with an LPIPS loss"),
    "resshift-bicsr": _resshift("resshift_bicsrx4_s4.pth", "configs/bicx4_swinunet_lpips.yaml", 4, 0.2,
                                "bicubic (MATLAB imresize) x4, 4 steps, LPIPS loss"),
    "sinsr": dict(_COMMON, checkpoint="https://github.com/wyf0912/SinSR/releases/download/v1.0/SinSR_v1.pth "
                  "(SinSR_v2.pth: the same layout and process)", config="configs/SinSR.yaml", num_steps=15,
                  min_noise_level=0.04, sampling_steps=1, licence=SINSR_LICENCE,
                  source="wyf0912/SinSR (one-step distillation of ResShift v1; Wang et al. 2024, CVPR): "
                  "inference.py --one_step returns the x0 prediction at t = T (the step noise is drawn and unused)"),
}
FILE_NAMES = {"resshift_realsrx4_s15_v1": "resshift-v1", "resshift_realsrx4_s15_v2": "resshift-v2",
              "resshift_realsrx4_s4_v3": "resshift-v3", "resshift_bicsrx4_s4": "resshift-bicsr",
              "sinsr_v1": "sinsr", "sinsr_v2": "sinsr"}


def variant_facts(variant: str) -> dict:
    """The facts a bundle needs for a variant, plus `process`: ResShiftProcess keyword arguments for its schedule."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ResShift variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    facts = dict(VARIANTS[variant])
    facts["process"] = dict(num_steps=facts["num_steps"], kappa=facts["kappa"], power=facts["power"],
                            variant="official", min_noise_level=facts["min_noise_level"])
    return facts


def variant_from_name(path: str | Path) -> str | None:
    """The variant a released file name stands for (resshift_realsrx4_s4_v3.pth -> resshift-v3), else None."""
    return FILE_NAMES.get(Path(path).stem.lower())


def _shape(state: Mapping[str, Tensor], key: str, *, source: str, what: str) -> torch.Size:
    """The shape of state[key]; a missing key is a CheckpointError naming it."""
    if key not in state:
        raise CheckpointError(f"{source}: not a {what} state dict: no {key}")
    return state[key].shape


def _blocks(state: Mapping[str, Tensor], part: str) -> int:
    """How many entries input_blocks / output_blocks has."""
    return 1 + max((int(k.split(".")[1]) for k in state if k.startswith(part + ".")), default=-1)


def infer_unet_config(state: Mapping[str, Tensor], source: str = "state dict") -> dict:
    """ResShiftUNet keyword arguments from an official UNetModelSwin state dict (shapes only; meta tensors work)."""
    shape = partial(_shape, state, source=source, what="ResShift UNetModelSwin")
    mc = shape("time_embed.0.weight")[1]
    # 1. encoder: levels end at the stride-2 convs (`.0.op`); each ResBlock's output width gives the level's mult
    mult, blocks, swin_levels, level = [], [], set(), 0
    for index in range(1, _blocks(state, "input_blocks")):
        if f"input_blocks.{index}.0.op.weight" in state:
            level += 1
            continue
        width = shape(f"input_blocks.{index}.0.out_layers.3.weight")[0]
        if level == len(mult):
            mult.append(width // mc)
            blocks.append(0)
        blocks[level] += 1
        if f"input_blocks.{index}.1.patch_embed.proj.weight" in state:
            swin_levels.add(level)
    if not mult:
        raise CheckpointError(f"{source}: not a ResShift UNetModelSwin state dict: no ResBlocks in input_blocks")
    # 2. the Swin layers: width, heads, depth and MLP ratio from the middle block; the window from the largest table
    embed = shape("middle_block.1.patch_embed.proj.weight")[0]
    heads = shape("middle_block.1.blocks.0.attn.relative_position_bias_table")[1]
    depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("middle_block.1.blocks."))
    rows = max(v.shape[0] for k, v in state.items() if k.endswith("relative_position_bias_table"))
    window = (math.isqrt(rows) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        raise CheckpointError(f"{source}: a relative_position_bias_table has {rows} rows, not (2 w - 1)^2")
    # 3. the build size: the first shifted block's attn_mask is (windows, w^2, w^2) with windows = (size / w)^2 at
    #    its level; without masks, the smallest size whose deepest level still fills one window
    masks = [(k, v.shape) for k, v in state.items() if k.startswith("input_blocks.") and k.endswith("attn_mask")]
    if masks:
        key, (count, tokens, _) = masks[0]
        level_of = sum(f"input_blocks.{i}.0.op.weight" in state for i in range(int(key.split(".")[1])))
        image_size = math.isqrt(count) * math.isqrt(tokens) * 2**level_of
    else:
        image_size = window * 2 ** (len(mult) - 1)
    emb = shape("input_blocks.1.0.emb_layers.1.weight")[0]
    return dict(image_size=image_size, in_channels=shape("input_blocks.0.0.weight")[1] - LQ_CHANNELS,
                lq_channels=LQ_CHANNELS, out_channels=shape("out.2.weight")[0], model_channels=mc,
                channel_mult=tuple(mult), num_res_blocks=tuple(blocks),
                attention_resolutions=tuple(image_size // 2**lv for lv in sorted(swin_levels)),
                num_head_channels=embed // heads, swin_embed_dim=embed, swin_depth=depth, window_size=window,
                mlp_ratio=shape("middle_block.1.blocks.0.mlp.fc1.weight")[0] / embed,
                use_scale_shift_norm=emb == 2 * mult[0] * mc)


def load_unet_state(net: ResShiftUNet, state: Mapping[str, Tensor], source: str = "state dict") -> ResShiftUNet:
    """Load an official state dict strictly; its attn_mask buffers must sit exactly on net's shifted blocks."""
    masks = {k.removesuffix(".attn_mask") for k in state if k.endswith(".attn_mask")}
    expected = set(net.shifted_blocks())
    if masks != expected:
        odd = sorted(masks ^ expected)
        raise CheckpointError(f"{source}: attn_mask buffers do not match the shifted Swin blocks of this config "
                              f"(differ at {', '.join(odd[:5])})")
    load_strict(net, state, source, ignore=("attn_mask",))
    return net


def infer_vq_config(state: Mapping[str, Tensor], source: str = "state dict") -> dict:
    """VQF4Autoencoder keyword arguments from an official VQModelTorch state dict (shapes only)."""
    shape = partial(_shape, state, source=source, what="ResShift VQModelTorch")
    base = shape("encoder.conv_in.weight")[0]
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down."))
    blocks = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("encoder.down.0.block."))
    return dict(in_channels=shape("encoder.conv_in.weight")[1], out_channels=shape("decoder.conv_out.weight")[0],
                base_channels=base, num_res_blocks=blocks, z_channels=shape("encoder.conv_out.weight")[0],
                channel_mult=tuple(shape(f"encoder.down.{i}.block.0.conv1.weight")[0] // base for i in range(levels)),
                embed_dim=shape("quant_conv.weight")[0], n_embed=shape("quantize.embedding.weight")[0])


def load_resshift_unet(path: str | Path) -> ResShiftUNet:
    """The network of an official ResShift / SinSR checkpoint, strictly loaded, frozen, in eval mode."""
    state = read_checkpoint(path)
    net = load_unet_state(ResShiftUNet(**infer_unet_config(state, str(path))), state, str(path))
    return net.requires_grad_(False).eval()


def load_vq_f4(path: str | Path) -> VQF4Autoencoder:
    """The autoencoder of an official autoencoder_vq_f4.pth, strictly loaded, frozen, in eval mode."""
    state = read_checkpoint(path)
    vq = VQF4Autoencoder(**infer_vq_config(state, str(path)))
    load_strict(vq, state, path)
    return vq.requires_grad_(False).eval()


def load_official(checkpoint: str | Path, autoencoder: str | Path, variant: str | None = None
                  ) -> tuple[ResShiftUNet, VQF4Autoencoder, dict]:
    """(network, autoencoder, facts) for an official checkpoint; variant defaults to the one its file name names."""
    variant = variant or variant_from_name(checkpoint)
    if variant is None:
        raise ValueError(f"{checkpoint}: cannot tell the variant from the file name; pass one of "
                         f"{', '.join(VARIANTS)}")
    return load_resshift_unet(checkpoint), load_vq_f4(autoencoder), variant_facts(variant)
