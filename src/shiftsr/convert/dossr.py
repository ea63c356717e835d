"""DoSSR's released ControlLDM checkpoint (AMD-AIG-AIMA/DoSSR, LDM key names) converted into diffusers components.

The checkpoint is one Lightning `{'state_dict': ...}` of 2,377 tensors: the SD-2.1 UNet, the ControlNet, the VAE, a
condition encoder of its own, the RRDB preprocessor, the OpenCLIP ViT-H/14 text tower and 15 schedule buffers. The
prompt is fixed in the official sampler, so the text tower runs once here and only its output is kept.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import (convert_controlnet_checkpoint, convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint, create_unet_diffusers_config_from_ldm,
                                                 create_vae_diffusers_config_from_ldm)
from torch import Tensor, nn

from ..networks import RRDBNet
from ..networks.dossr_ldm import DoSSRConditionEncoder, DoSSRControlLDM, OpenCLIPTextEncoder
from ..processes import DomainShiftProcess, process_config
from .checkpoint import CheckpointError, describe_keys, load_strict, read_checkpoint

SOURCE = "github.com/AMD-AIG-AIMA/DoSSR @ f637805 (model/cldm.py, model/shift_sampler.py, scripts/inference.py)"
LICENCE = ("none stated: the DoSSR repository has no LICENSE file (its esrgan/ folder is Apache-2.0); the weights "
           "are fine-tuned from Stable Diffusion 2.1 (CreativeML Open RAIL++-M) and Real-ESRNet x4plus (BSD-3-Clause)")
PROMPT = "clean, high-resolution, 8k"  # SpacedSampler.shift_sample_3_order's positive prompt; cfg_scale 1
# open_clip.tokenize([PROMPT]) (open-clip-torch 2.24): start 49406, the BPE ids, end 49407, then zeros to 77
PROMPT_TOKENS = (49406, 3772, 267, 1400, 268, 9977, 267, 279, 330, 49407)
# configs/model/cldm_v21.yaml, the parts that shape the weights (diffusers reads the LDM layout of this dict)
UNET_PARAMS = dict(in_channels=4, model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2,
                   channel_mult=[1, 2, 4, 4], num_head_channels=64, use_spatial_transformer=True,
                   use_linear_in_transformer=True, transformer_depth=1, context_dim=1024, legacy=False)
CLDM_V21 = {"model": {"params": {
    "linear_start": 0.00085, "linear_end": 0.0120, "timesteps": 1000, "scale_factor": 0.18215,
    "only_mid_control": False,
    "unet_config": {"params": {**UNET_PARAMS, "out_channels": 4}},
    "control_stage_config": {"params": {**UNET_PARAMS, "hint_channels": 4}},
    "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": {
        "double_z": True, "z_channels": 4, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}}},
    "preprocess_config": {"params": {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23,
                                     "num_grow_ch": 32, "scale": 4}},
}}}
VIT_H_14_TEXT = dict(context_length=77, vocab_size=49408, width=1024, heads=16, layers=24)  # open_clip ViT-H-14.json
PREFIXES = {"unet": "model.diffusion_model.", "controlnet": "control_model.", "vae": "first_stage_model.",
            "cond_encoder": "cond_encoder.", "preprocessor": "preprocess_model.", "text": "cond_stage_model.model."}
# DDPM.register_schedule buffers: float32 copies of the schedule, never read when sampling (SpacedSampler rebuilds
# its own float64 tables); betas, alphas_cumprod and lambdas (the eta table) are checked against the process
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "lambdas", "one_minus_lambdas", "logvar")
SCHEDULE_TOLERANCE = 1e-6  # float32 rounding of values in [0, 1]


@dataclass
class DoSSRConversion:
    """The converted modules, how many official keys each took, the keys no official forward reads, and the facts."""

    ldm: DoSSRControlLDM
    vae: AutoencoderKL
    cond_encoder: DoSSRConditionEncoder
    preprocessor: RRDBNet
    loaded: dict[str, int]
    unused: list[str]
    facts: dict = field(default_factory=dict)


def read_dossr(path: str | Path, *, original_config: dict = CLDM_V21,
               text_config: dict = VIT_H_14_TEXT) -> DoSSRConversion:
    """Read a DoSSR .ckpt (dossr_default.ckpt or dossr_onestep.ckpt) and convert it."""
    return convert_dossr(read_checkpoint(path), path, original_config=original_config, text_config=text_config)


def convert_dossr(state: Mapping[str, Tensor], path: str | Path, *, original_config: dict = CLDM_V21,
                  text_config: dict = VIT_H_14_TEXT) -> DoSSRConversion:
    """Split by prefix, convert with diffusers' LDM converters, load every part strictly, compute the text context.

    A state of meta tensors (names and shapes only) builds meta modules: the same key checks without memory.
    """
    params = original_config["model"]["params"]
    if params.get("only_mid_control", False):
        raise CheckpointError(f"{path}: only_mid_control=True is not DoSSR's ControlLDM")
    schedule_config = (params["linear_start"], params["linear_end"], params["timesteps"])
    if schedule_config != (0.00085, 0.012, 1000):
        raise CheckpointError(f"{path}: betas {schedule_config} are not DoSSR's scaled-linear 0.00085..0.012 over 1000")
    parts, schedule = split_parts(state, path)
    meta = next(iter(state.values())).is_meta
    with torch.device("meta" if meta else "cpu"):
        ldm, vae, cond_encoder, preprocessor, text = build_modules(original_config, text_config, state)
    text_unused = unused_text_keys(parts["text"], text_config["layers"])
    parts["text"] = {k: v for k, v in parts["text"].items() if k not in text_unused}
    # diffusers' LDM converters select their prefixes; the condition encoder's keys read as a VAE's without prefix
    loads: dict[str, tuple[nn.Module, Callable[[dict], dict]]] = {
        "unet": (ldm.unet, lambda p: convert_ldm_unet_checkpoint(p, ldm.unet.config)),
        "controlnet": (ldm.controlnet, lambda p: convert_controlnet_checkpoint(p, ldm.controlnet.config)),
        "vae": (vae, lambda p: convert_ldm_vae_checkpoint(p, vae.config)),
        "cond_encoder": (cond_encoder, lambda p: convert_ldm_vae_checkpoint(strip(p, "cond_encoder"), vae.config)),
        "preprocessor": (preprocessor, lambda p: strip(p, "preprocessor")),
        "text": (text, lambda p: strip(p, "text")),  # already in OpenCLIP's layout
    }
    loaded = {name: load_part(module, parts[name], convert, f"{path} ({PREFIXES[name]}*)")
              for name, (module, convert) in loads.items()}
    if schedule and not meta:
        check_schedule(schedule, path)
    with torch.no_grad():
        tokens = torch.zeros(1, text_config["context_length"], dtype=torch.long, device=ldm.text_context.device)
        tokens[0, : len(PROMPT_TOKENS)] = torch.tensor(PROMPT_TOKENS)
        ldm.text_context.copy_(text(tokens))
    unused = sorted(text_unused) + sorted(schedule)
    modules = (m.eval().requires_grad_(False) for m in (ldm, vae, cond_encoder, preprocessor))
    return DoSSRConversion(*modules, loaded=loaded, unused=unused, facts=bundle_facts(params))


def split_parts(state: Mapping[str, Tensor], path) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor]]:
    """Every key to exactly one part by its official prefix, or to the (optional) schedule buffers; else an error."""
    parts: dict[str, dict[str, Tensor]] = {name: {} for name in PREFIXES}
    schedule, stray = {}, []
    for key, value in state.items():
        name = next((n for n, prefix in PREFIXES.items() if key.startswith(prefix)), None)
        if name is not None:
            parts[name][key] = value
        elif key in SCHEDULE_BUFFERS:
            schedule[key] = value
        else:
            stray.append(key)
    missing = [name for name, part in parts.items() if not part]
    if stray or missing:
        found = [f"keys of no DoSSR part: {describe_keys(sorted(stray))}"] if stray else []
        found += [f"no keys {describe_keys([PREFIXES[m] + '*' for m in missing])}"] if missing else []
        raise CheckpointError(f"{path}: not a DoSSR ControlLDM checkpoint: " + "; ".join(found))
    return parts, schedule


def build_modules(original_config: dict, text_config: dict, state: Mapping[str, Tensor]) -> tuple[nn.Module, ...]:
    """The empty modules of the official architecture, their diffusers configs derived by diffusers from the LDM one."""
    params = original_config["model"]["params"]
    control = params["control_stage_config"]["params"]
    unet_params = params["unet_config"]["params"]
    if {k: v for k, v in control.items() if k != "hint_channels"} != {k: v for k, v in unet_params.items()
                                                                       if k != "out_channels"}:
        raise CheckpointError("the DoSSR ControlNet must copy the UNet's encoder configuration")
    unet = create_unet_diffusers_config_from_ldm(original_config, state)
    ldm = DoSSRControlLDM(unet_config=unet, conditioning_channels=control["hint_channels"],
                          context_length=text_config["context_length"])
    vae_config = create_vae_diffusers_config_from_ldm(original_config, state)
    vae = AutoencoderKL(**vae_config)
    cond_encoder = DoSSRConditionEncoder(block_out_channels=tuple(vae_config["block_out_channels"]),
                                         layers_per_block=vae_config["layers_per_block"],
                                         latent_channels=vae_config["latent_channels"],
                                         scaling_factor=vae_config["scaling_factor"])
    rrdb = params["preprocess_config"]["params"]
    if rrdb["scale"] != 4:
        raise CheckpointError(f"the DoSSR preprocessor is an x4 RRDBNet, the config asks for x{rrdb['scale']}")
    preprocessor = RRDBNet(num_in_ch=rrdb["num_in_ch"], num_out_ch=rrdb["num_out_ch"], num_feat=rrdb["num_feat"],
                           num_block=rrdb["num_block"], num_grow_ch=rrdb["num_grow_ch"])
    # FrozenOpenCLIPEmbedder(layer="penultimate") stops one block before the last
    text = OpenCLIPTextEncoder(vocab_size=text_config["vocab_size"], context_length=text_config["context_length"],
                               width=text_config["width"], heads=text_config["heads"],
                               layers=text_config["layers"] - 1)
    return ldm, vae, cond_encoder, preprocessor, text


def load_part(module: nn.Module, part: dict[str, Tensor], convert: Callable[[dict], dict], path) -> int:
    """Convert a part and load it strictly; keys the converter leaves unused or gives a wrong shape keep their names.

    Returns the number of official keys loaded. Converted tensors are the checkpoint's own or views of them (the
    VAE attention's 1x1 convolutions become linear weights), which is how each is traced back to its official key.
    """
    origin = {id(v): k for k, v in part.items()}

    def official(tensor: Tensor) -> str | None:
        return origin.get(id(tensor), origin.get(id(tensor._base)))

    try:
        converted = {k: v for k, v in convert(part).items() if v is not None}  # .get() of an absent key gives None
    except KeyError as error:
        raise CheckpointError(f"{path}: missing the official key of {error.args[0]!r}") from None
    own = module.state_dict()
    unused = sorted(set(part) - {official(v) for v in converted.values()})
    wrong = sorted(f"{official(v)} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in converted.items()
                   if k in own and v.shape != own[k].shape)
    problems = [f"{label} {describe_keys(keys)}" for label, keys in (("unexpected", unused), ("wrong shape", wrong))
                if keys]
    if problems:
        raise CheckpointError(f"{path}: does not fit {type(module).__name__}: " + "; ".join(problems))
    load_strict(module, converted, path)
    return len(converted)


def strip(part: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    """A part's keys without its official prefix."""
    return {k.removeprefix(PREFIXES[name]): v for k, v in part.items()}


def unused_text_keys(part: Mapping[str, Tensor], layers: int) -> set[str]:
    """Text-tower keys the penultimate-layer forward never reads: the last block, text_projection, logit_scale."""
    prefix = PREFIXES["text"]
    unused = (f"{prefix}transformer.resblocks.{layers - 1}.", f"{prefix}text_projection", f"{prefix}logit_scale")
    return {k for k in part if k.startswith(unused)}


def dossr_process() -> DomainShiftProcess:
    """The official schedule: SD scaled-linear betas 0.00085..0.012 over 1000 steps, trunc_12 eta, t1 = 500."""
    return DomainShiftProcess(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              num_train_timesteps=1000, t1=500, eta="official")


def check_schedule(buffers: Mapping[str, Tensor], path) -> None:
    """The checkpoint's float32 schedule buffers equal DoSSR's process (index i is process time i + 1)."""
    process = dossr_process()
    buffers = {k: v for k, v in buffers.items() if k in ("alphas_cumprod", "betas", "lambdas")}
    t = torch.arange(1, process.config["num_train_timesteps"] + 1, dtype=torch.float64)
    abar = process.alphas_cumprod(t)
    expected = {"alphas_cumprod": abar, "betas": 1 - abar / process.alphas_cumprod(t - 1), "lambdas": process.shift(t)}
    for name, tensor in buffers.items():
        error = (tensor.double() - expected[name]).abs().max().item()
        if error > SCHEDULE_TOLERANCE:
            raise CheckpointError(f"{path}: buffer {name!r} differs from DoSSR's schedule by {error:.3g}; the model "
                                  "was trained with another beta or eta schedule")


def bundle_facts(params: dict) -> dict:
    """How the official code samples with these modules (model/shift_sampler.py, scripts/inference.py)."""
    return {
        "source": SOURCE,
        "licence": LICENCE,
        "process": process_config(dossr_process()),
        "grid": "dossr_timesteps(process, steps, official=True): process times [500, 400, 300, 201, 101, 1] at 5 "
                "steps, [500, 1] at 1; the chain ends at t = 1 (index 0, noisy) and that latent is decoded",
        "network_time": "official 0-based index = process time - 1 (the network sees 499, 399, 299, 200, 100)",
        "denoiser": "PredictionDenoiser(ldm, process=VPProcess(same betas), prediction_type='epsilon', "
                    "timestep_fn=ddpm_index) with cond = c_latent; sample_dossr(process=domain shift, xh=xh, order=3)",
        "prediction_type": "epsilon of the VP marginal: x0 = (x_t - sqrt(1 - abar) out) / sqrt(abar), i.e. "
                           "PredictionDenoiser over VPProcess with the same betas, not over the domain-shift (a, b)",
        "latent_scale_factor": params["scale_factor"],
        "preprocessing": "RRDBNet x4 on the LR in [0, 1] (uint8 / 255), clamped to [0, 1]; that image p gives "
                         "c_latent = cond_encoder(2 p - 1) (posterior mode) and xh = VAE posterior sample of 2 p - 1",
        "draws": "posterior sample of xh (1 x 4 x H/8 x W/8), then the start noise, then one per step (same shape)",
        "start": "x_t1 = sqrt(abar_500) xh + sqrt(1 - abar_500) eps",
        "colour_fix": "wavelet (StableSR): high frequencies (5 levels, dilated 3x3 binomial blur, replicate pad) of "
                      "(decode(x) + 1) / 2, low frequency of p",
        "output": "clamp to [0, 1]; the official script then writes uint8 by truncation (x * 255).astype(uint8)",
        "control_scale": 1.0,
        "sampler": {"method": "dossr", "steps": 5, "order": 3},
        "prompt": PROMPT,
    }
