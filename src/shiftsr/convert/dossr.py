"""DoSSR's released ControlLDM checkpoint (AMD-AIG-AIMA/DoSSR, LDM key names) converted into a shiftsr bundle.

The checkpoint is one Lightning `{'state_dict': ...}` of 2,377 tensors: the SD-2.1 UNet, the ControlNet, the VAE, a
condition encoder of its own, the RRDB preprocessor, the OpenCLIP ViT-H/14 text tower and 15 schedule buffers. The
prompt is fixed in the official sampler, so the text tower runs once here and only its output is kept. The two
released files share one architecture and one process; they differ in the preprocessor's weights (Real-ESRNet in
dossr_default.ckpt, Real-ESRGAN in dossr_onestep.ckpt) and in the steps the README runs them with (5 and 1), which
only the file name tells.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import (convert_controlnet_checkpoint, convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint, create_unet_diffusers_config_from_ldm,
                                                 create_vae_diffusers_config_from_ldm)
from torch import Tensor, nn

from ..bundle import BundleSettings, SamplerDefaults, settings_for
from ..denoisers.codecs import AutoencoderKLCodec
from ..networks import RRDBNet
from ..networks.dossr_ldm import DoSSRConditionEncoder, DoSSRControlLDM, OpenCLIPTextEncoder
from ..processes import DomainShiftProcess
from . import Converted
from .checkpoint import CheckpointError, describe_keys, load_strict, read_checkpoint

SOURCE = "github.com/AMD-AIG-AIMA/DoSSR @ f637805 (model/cldm.py, model/shift_sampler.py, scripts/inference.py)"
LICENCE = ("none stated: the DoSSR repository has no LICENSE file (only its esrgan/ folder, ESRGAN's code, carries "
           "Apache-2.0); the weights are fine-tuned from Stable Diffusion 2.1 (CreativeML Open RAIL++-M, whose use "
           "restrictions pass on to derivatives) and Real-ESRNet / Real-ESRGAN x4plus (BSD-3-Clause)")
PROMPT = "clean, high-resolution, 8k"  # SpacedSampler.shift_sample_3_order's positive prompt; cfg_scale 1
# open_clip.tokenize([PROMPT]) (open-clip-torch 2.24): start 49406, the BPE ids, end 49407, then zeros to 77
PROMPT_TOKENS = (49406, 3772, 267, 1400, 268, 9977, 267, 279, 330, 49407)
# README.md: the released files and the --steps its commands run them with; any other name gets the first
RELEASE_STEPS = {"dossr_default": 5, "dossr_onestep": 1}
FLAGS = {"steps": "sampling steps (default: 5, or 1 for dossr_onestep.ckpt)",
         "config": "an official model config (configs/model/cldm_v21.yaml layout, YAML or JSON) for other widths; "
                   "a top-level text_config gives its OpenCLIP text tower (default ViT-H-14)"}
SCALE = 4  # the RRDB preprocessor is x4
# model/cldm.py ControlNet (SD-2.1 UNet encoder): 3 down-samplings of the /8 latent, so image sides are multiples of
# 64 and LR sides (x4) of 16; the official script has no padding for the RRDB input, shiftsr reflect-pads the LR
LR_MULTIPLE = 16
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
# what convert_dossr reads of a model config's params
CONFIG_KEYS = ("linear_start", "linear_end", "timesteps", "scale_factor", "unet_config", "control_stage_config",
               "first_stage_config", "preprocess_config")
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
    """The converted modules, how many official keys each took and the keys no official forward reads."""

    ldm: DoSSRControlLDM
    vae: AutoencoderKL
    cond_encoder: DoSSRConditionEncoder
    preprocessor: RRDBNet
    loaded: dict[str, int]
    unused: list[str]


def to_bundle(arch: str, checkpoint: Path, autoencoder: Path | None = None, **flags) -> Converted:
    """The shiftsr bundle of a DoSSR checkpoint: the composite, its VAE codec, the condition encoder and the RRDB."""
    unknown = sorted(set(flags) - set(FLAGS))
    if unknown:
        raise ValueError(f"--flag {unknown[0]}: not a {arch} flag; allowed: "
                         + "; ".join(f"{k} ({v})" for k, v in FLAGS.items()))
    if autoencoder is not None:
        raise ValueError(f"{autoencoder}: {arch} takes no --autoencoder, its VAE is inside the checkpoint")
    steps = flags.get("steps", RELEASE_STEPS.get(checkpoint.stem.lower(), RELEASE_STEPS["dossr_default"]))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--flag steps: must be a whole number of at least 1, got {steps!r}")
    original_config, text_config = read_config(Path(flags["config"]) if "config" in flags else None)
    conversion = convert_dossr(read_checkpoint(checkpoint), checkpoint, original_config=original_config,
                               text_config=text_config)
    settings = bundle_settings(conversion.ldm, steps)
    return Converted(net=conversion.ldm, settings=settings, card=model_card(conversion, checkpoint, settings, flags),
                     codec=AutoencoderKLCodec(conversion.vae, sample=True),
                     parts={"cond_encoder": conversion.cond_encoder, "preprocessor": conversion.preprocessor})


def read_config(path: Path | None) -> tuple[dict, dict]:
    """(original_config, text_config) of an official model config file, the released ones without a file."""
    if path is None:
        return CLDM_V21, VIT_H_14_TEXT
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not a readable YAML or JSON model config ({error})") from None
    params = data.get("params") if isinstance(data, dict) else None
    text_config = data.pop("text_config", VIT_H_14_TEXT) if isinstance(data, dict) else None
    missing = [k for k in CONFIG_KEYS if not isinstance(params, dict) or k not in params]
    missing += [f"text_config.{k}" for k in VIT_H_14_TEXT if not isinstance(text_config, dict) or k not in text_config]
    if missing:
        raise ValueError(f"{path}: not a DoSSR model config (configs/model/cldm_v21.yaml layout): no "
                         + ", ".join(missing))
    return {"model": data}, text_config


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
    return DoSSRConversion(*modules, loaded=loaded, unused=unused)


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


# trained in fp32 (configs/train_cldm.yaml precision: 32); measured on the reduced model of
# tests/test_official_dossr.py with the recorded draws, CPU autocast: the network in bf16 moves the 5-step output by
# 0.0104 at most, 0.0013 on average (PSNR 55.1 dB against fp32; another seed moves it by 0.245 on average); fp16 is
# not measured (the codec, condition encoder and RRDB run in fp32 either way)
DTYPES = ("fp32", "bf16")


def bundle_settings(ldm: DoSSRControlLDM, steps: int) -> BundleSettings:
    """How the official sampler runs these modules (model/shift_sampler.py shift_sample_3_order, inference.py)."""
    return settings_for(ldm, dossr_process(), scale=SCALE, prediction_type="epsilon", prediction_path="vp",
                        timestep="index", preprocessor="rrdb", condition="encoder",
                        codec={"kind": "autoencoder_kl", "folder": "codec", "sample": True}, grid="official",
                        color_fix="wavelet", lr_multiple=LR_MULTIPLE, dtypes=list(DTYPES),
                        sampler=SamplerDefaults(method="dossr", steps=steps, order=3, samples=1))


# (what, value, official source) for the model card; every setting of bundle_settings has its row
CONSTANTS = (
    ("betas", "scaled linear: linspace(sqrt 0.00085, sqrt 0.012, 1000)^2", "configs/model/cldm_v21.yaml "
     "linear_start, linear_end, timesteps; ldm/modules/diffusionmodules/util.py make_beta_schedule('linear')"),
    ("eta (shift) schedule", "trunc_12: (1 - cos(pi linspace(0.001, 0.999, 500))) / 2 for t = 1..500, then 1; "
     "t1 = 500", "ldm/modules/diffusionmodules/util.py make_eta_schedule; model/shift_sampler.py make_schedule"),
    ("time grid", "space_timesteps(500, steps + 1): process times [500, 400, 300, 201, 101, 1] at 5 steps, [500, 1] "
     "at 1; the chain ends at t = 1 and that (slightly noisy) latent is decoded", "model/shift_sampler.py "
     "make_schedule, space_timesteps"),
    ("network time", "0-based index = process time - 1 (499, 399, 299, 200, 100 at 5 steps)",
     "model/shift_sampler.py shift_sample_3_order (ts = time_range[i])"),
    ("prediction", "eps of the VP marginal of the same betas: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)",
     "model/shift_sampler.py _predict_xstart_from_eps (sqrt_recip_alphas_cumprod of the spaced grid)"),
    ("sampler", "DoS-SDE solver of order 3 (shift_sample_3_order), a Gaussian draw every step",
     "model/shift_sampler.py shift_sample_3_order; scripts/inference.py process"),
    ("latent scale", "0.18215", "configs/model/cldm_v21.yaml scale_factor"),
    ("preprocessor", "RRDBNet x4 on the LR in [0, 1] (uint8 / 255), clamped to [0, 1]: the source image p",
     "configs/model/cldm_v21.yaml preprocess_config; scripts/inference.py process"),
    ("condition", "c_latent = cond_encoder(2 p - 1), posterior mode x 0.18215 (an encoder of its own)",
     "model/cldm.py ControlLDM.apply_condition_encoder"),
    ("start", "xh = VAE posterior sample of 2 p - 1 (mean + std eps) x 0.18215; x_500 = sqrt(abar_500) xh + "
     "sqrt(1 - abar_500) eps", "model/shift_sampler.py shift_sample_3_order; ldm/modules/distributions"),
    ("draws", "posterior sample, start, one per step: steps + 2 Gaussian draws of the latent's shape",
     "model/shift_sampler.py shift_sample_3_order"),
    ("control scale", "1.0 on all 13 ControlNet outputs", "scripts/inference.py process (strength=1)"),
    ("guidance", "none: cfg_scale 1, the negative prompt's context is computed and never used",
     "scripts/inference.py process; model/shift_sampler.py predict_noise"),
    ("colour fix", "wavelet (StableSR): 5 levels of dilated 3x3 binomial blurs; the sample's high frequencies on "
     "p's low frequency", "scripts/inference.py --color_fix_type default; utils/image/align_color.py "
     "wavelet_reconstruction"),
    ("output", "clamped to [0, 1]; the official script then writes uint8 by truncation ((x * 255).astype(uint8)), "
     "shiftsr rounds", "scripts/inference.py process"),
    ("sizes", f"x{SCALE}; image sides must be multiples of 64 (LR of 16): shiftsr reflect-pads the LR to "
     f"{LR_MULTIPLE} and crops, the official code needs such sizes", "model/cldm.py (SD-2.1 UNet, 3 down-samplings)"),
    ("steps", "5 for dossr_default.ckpt (Real-ESRNet preprocessor), 1 for dossr_onestep.ckpt (Real-ESRGAN)",
     "README.md, Inference"),
    ("precision", f"{', '.join(DTYPES)}: trained in fp32; the network under bf16 autocast moves a 5-step output by "
     "0.0013 on average (55 dB), measured on a reduced random model", "configs/train_cldm.yaml precision: 32"),
)
def model_card(conversion: DoSSRConversion, checkpoint: Path, settings: BundleSettings, flags: dict) -> str:
    """MODEL_CARD.md: the source, the licence, every constant with its official source, the prompt and the keys."""
    given = "".join(f" --flag {k}={v}" for k, v in flags.items())
    rows = "\n".join(f"| {what} | {value} | {source} |" for what, value, source in CONSTANTS)
    loaded = ", ".join(f"{name} {count}" for name, count in conversion.loaded.items())
    return f"""# DoSSR ({checkpoint.name}), converted

Source: {SOURCE}; Cui et al. 2024, Taming Diffusion Prior for Image Super-Resolution with Domain Shift SDEs
(NeurIPS). Weights: the checkpoint {checkpoint.name}, read with torch.load(weights_only=True) and loaded strictly.

Licence: {LICENCE}.

Converted with `shiftsr convert dossr --checkpoint {checkpoint.name} -o FOLDER{given}`. It samples as the official
`python scripts/inference.py --config configs/model/cldm_v21.yaml --ckpt {checkpoint.name} --steps
{settings.sampler.steps} --sr_scale 4 --color_fix_type wavelet` does, draw for draw when given the same draws
(`pipe.run(lr, samples=1, noise=[...])`); the default here is `shiftsr upscale IMAGE -m FOLDER` with
{settings.sampler.steps} steps, order 3, one sample.

## Prompt

The official sampler always conditions on the prompt "{PROMPT}" (open_clip.tokenize: {list(PROMPT_TOKENS)}, then
zeros to 77), encoded by the OpenCLIP ViT-H/14 text tower at its penultimate layer
(ldm/modules/encoders/modules.py FrozenOpenCLIPEmbedder, layer="penultimate"). That context is computed once here
and stored in the network as the buffer `text_context` ({tuple(conversion.ldm.text_context.shape)}); the text tower
itself is not part of this folder.

## Constants

| what | value | official source |
| --- | --- | --- |
{rows}

## Keys

Official tensors loaded per part: {loaded} ({sum(conversion.loaded.values())} in all). Read by no official forward,
and not kept ({len(conversion.unused)}): {describe_keys(conversion.unused, shown=len(conversion.unused))}.

Folders: the composite (UNet + ControlNet + text context) at the top, `codec/` (the SD-2.1 VAE, diffusers
AutoencoderKL), `cond_encoder/` (DoSSRConditionEncoder), `preprocessor/` (RRDBNet).
"""
