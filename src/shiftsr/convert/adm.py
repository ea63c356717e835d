"""guided-diffusion ADM checkpoints (Dhariwal & Nichol 2021): flags from keys and shapes, strict load, bundle facts.

Modelled on spandrel's ArchSupport: the key layout fixes the architecture except for attention heads and
attention order, which come from the table of released configurations (openai/guided-diffusion README) or
from the caller. Rules, checked in tests/test_official_adm.py:

- from keys: model_channels (time_embed.0 input width), channel_mult (decoder ResBlock widths / model_channels),
  num_res_blocks and the number of levels (position of the up-samplers in output_blocks, else of the
  parameter-free average-pool gaps in input_blocks), attention_resolutions (levels whose decoder blocks hold
  qkv), use_scale_shift_norm (emb_layers width 2 x channels), resblock_updown (up-samplers that are ResBlocks),
  conv_resample (False only where the encoder has parameter-free gaps), num_classes (label_emb rows), learn_sigma
  (6 output channels), an upsampler (6 input channels; low_res_channels = 3); a one-level net has no resamplers,
  so it reads as resblock_updown False, conv_resample True (both without effect there);
- from the table, or passed: num_heads / num_head_channels / num_heads_upsample, use_new_attention_order,
  noise_schedule, image_size;
- dropout acts in training only: 0.0 unless passed.

`to_bundle` (shiftsr convert adm) makes the bundle of an unconditional prior, sampled by noise injection (Diff-SR)
and BCSR: epsilon on the VP betas of the schedule, time input t - 1, the eps half of a learn_sigma output, x0
clipped, pixels through the identity codec. A class-conditional model becomes one for a class label passed by
flag; an upsampler is refused.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..bundle import BundleSettings, SamplerDefaults
from ..networks.adm_unet import ADMUNet
from . import Converted
from .checkpoint import CheckpointError, load_strict, read_checkpoint

RGB = 3  # every released ADM model works on RGB images in [-1, 1]
NUM_CLASSES = 1000  # ImageNet, as script_util.NUM_CLASSES
# script_util.create_model / sr_create_model: channel_mult by (large) image size when the flag is empty
CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
SR_CHANNEL_MULT = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}
# script_util.model_and_diffusion_defaults for the flags the README leaves out
DEFAULT_FLAGS = dict(num_heads=4, num_head_channels=-1, num_heads_upsample=-1, use_new_attention_order=False,
                     dropout=0.0, small_size=None)
_IMAGENET_256 = dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                     num_head_channels=64, learn_sigma=True, noise_schedule="linear", resblock_updown=True,
                     use_scale_shift_norm=True)
# MODEL_FLAGS of the guided-diffusion README, one entry per released diffusion checkpoint
RELEASES: dict[str, dict] = {
    "64x64_diffusion": dict(image_size=64, num_channels=192, num_res_blocks=3, attention_resolutions="32,16,8",
                            num_head_channels=64, class_cond=True, learn_sigma=True, noise_schedule="cosine",
                            resblock_updown=True, use_new_attention_order=True, use_scale_shift_norm=True,
                            dropout=0.1),
    "128x128_diffusion": dict(image_size=128, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                              num_heads=4, class_cond=True, learn_sigma=True, noise_schedule="linear",
                              resblock_updown=True, use_scale_shift_norm=True),
    "256x256_diffusion": dict(_IMAGENET_256, class_cond=True),
    "256x256_diffusion_uncond": dict(_IMAGENET_256, class_cond=False),
    "512x512_diffusion": dict(_IMAGENET_256, image_size=512, class_cond=True),
    "64_256_upsampler": dict(_IMAGENET_256, small_size=64, num_channels=192, num_heads=4, num_head_channels=-1,
                             class_cond=True),
    "128_512_upsampler": dict(_IMAGENET_256, image_size=512, small_size=128, num_channels=192,
                              attention_resolutions="32,16", class_cond=True),
    "lsun_bedroom": dict(_IMAGENET_256, class_cond=False, dropout=0.1),
    "lsun_cat": dict(_IMAGENET_256, class_cond=False, dropout=0.1),
    "lsun_horse": dict(_IMAGENET_256, class_cond=False, dropout=0.1),
    "lsun_horse_nodropout": dict(_IMAGENET_256, class_cond=False, dropout=0.0),
}
HIDDEN = ("num_heads", "num_head_channels", "num_heads_upsample", "use_new_attention_order")  # not in the keys
FACTS = ("noise_schedule", "image_size")  # not network config, taken from the release too
NOISE_SCHEDULES = ("linear", "cosine")
LICENCE = ("MIT (openai/guided-diffusion LICENSE, Copyright (c) 2021 OpenAI); the model card states the released "
           "models are intended for research, not commercial deployment")
SOURCE = "openai/guided-diffusion @ 22e0df8 (Dhariwal & Nichol 2021, Diffusion Models Beat GANs on Image Synthesis)"
FLAG_TYPES = {"num_heads": int, "num_head_channels": int, "num_heads_upsample": int, "use_new_attention_order": bool,
              "dropout": float, "noise_schedule": str, "image_size": int, "class_label": int}  # shiftsr convert --flag
NATIVE_SCALE = 4  # the scale the pipeline's size rules call native; noise injection itself runs at any scale
STEPS = 10
STEPS_REASON = ("from x4's injection time 400 = 0.4 T, a stride of 40 indices: the density of the README's ddim25 "
                "(25 DDIM steps over T = 1000), and the default of shiftsr's own prior-x4")
DTYPES = ("fp32", "bf16")
DTYPE_MEASURE = ("measured: bf16 CPU autocast against fp32 on the reduced random-weight model of "
                 "tests/test_official_adm.py, x4 noise injection of a 16 px LR, mean absolute difference 0.29 / 255, "
                 "max 6.6 / 255; the released models were trained with an fp16 torso (README use_fp16 True, 512x512 "
                 "False)")
_BLOCK = re.compile(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.([a-z_]+)")


def release_config(flags: Mapping) -> dict:
    """ADMUNet keyword arguments for README-style flags (script_util.create_model / sr_create_model)."""
    f = {**DEFAULT_FLAGS, **flags}
    size, upsampler = f["image_size"], f["small_size"] is not None
    return dict(in_channels=RGB, low_res_channels=RGB if upsampler else 0, model_channels=f["num_channels"],
                out_channels=2 * RGB if f["learn_sigma"] else RGB, num_res_blocks=f["num_res_blocks"],
                attention_resolutions=tuple(sorted(size // int(r) for r in f["attention_resolutions"].split(","))),
                dropout=f["dropout"], channel_mult=(SR_CHANNEL_MULT if upsampler else CHANNEL_MULT)[size],
                conv_resample=True, num_classes=NUM_CLASSES if f["class_cond"] else None, num_heads=f["num_heads"],
                num_head_channels=f["num_head_channels"], num_heads_upsample=f["num_heads_upsample"],
                use_scale_shift_norm=f["use_scale_shift_norm"], resblock_updown=f["resblock_updown"],
                use_new_attention_order=f["use_new_attention_order"])


def _layers(state: Mapping[str, Tensor], part: str) -> dict[int, dict[int, str]]:
    """block index -> layer index -> kind (res, attn, down, up, conv) of input_blocks or output_blocks."""
    kinds = {"in_layers": "res", "qkv": "attn", "op": "down", "conv": "up", "weight": "conv"}
    blocks: dict[int, dict[int, str]] = defaultdict(dict)
    for key in state:
        found = _BLOCK.match(key)
        if found and found[1] == part and found[4] in kinds:
            blocks[int(found[2])][int(found[3])] = kinds[found[4]]
    return blocks


def _shape(state: Mapping[str, Tensor], key: str, source: str) -> torch.Size:
    if key not in state:
        prefixed = next((k for k in state if k.endswith("." + key)), None)
        why = f" (its keys carry an unknown prefix {prefixed[: -len(key)]!r})" if prefixed else ""
        raise CheckpointError(f"{source}: not a guided-diffusion ADM UNet state dict: no {key}{why}")
    return state[key].shape


def _levels(state: Mapping[str, Tensor], source: str) -> tuple[int, int, bool, bool]:
    """(levels, num_res_blocks, resblock_updown, conv_resample) from where the resamplers sit."""
    outputs, inputs = _layers(state, "output_blocks"), _layers(state, "input_blocks")
    count = len(outputs)
    # 1. a decoder block that closes a level holds a second ResBlock (resblock_updown) or an Upsample conv
    ups = sorted(k for k, layers in outputs.items() if any(i > 0 and kind in ("res", "up")
                                                           for i, kind in layers.items()))
    # 2. parameter-free resampling (average pool, nearest) leaves only gaps in the encoder's block indices
    gaps = [n for n in range(max(inputs, default=0) + 1) if n not in inputs]
    updown = bool(ups) and any(kind == "res" for i, kind in outputs[ups[0]].items() if i > 0)
    if ups:
        blocks, levels = ups[0] + 1, len(ups) + 1
    else:
        blocks, levels = (gaps[0], len(gaps) + 1) if gaps else (count, 1)
    if count != levels * blocks or any(k != blocks * j + blocks - 1 for j, k in enumerate(ups)):
        raise CheckpointError(f"{source}: output_blocks do not form {levels} levels of {blocks} blocks "
                              f"(up-samplers at {ups}, {count} blocks)")
    return levels, blocks - 1, updown, not gaps


def infer_config(state: Mapping[str, Tensor], source: str = "state dict", **flags) -> tuple[dict, tuple[str, ...]]:
    """ADMUNet config and the matching releases, from a guided-diffusion state dict (shapes only, meta is fine).

    flags: values for the flags the keys cannot reveal (HIDDEN, dropout); needed where no release matches.
    Raises CheckpointError naming the key or the missing flag.
    """
    unknown = set(flags) - {*HIDDEN, "dropout"}
    if unknown:
        raise ValueError(f"unknown flags {sorted(unknown)}; allowed: {', '.join((*HIDDEN, 'dropout'))}")
    mc = _shape(state, "time_embed.0.weight", source)[1]
    in_total = _shape(state, "input_blocks.0.0.weight", source)[1]
    out_channels = _shape(state, "out.2.weight", source)[0]
    if in_total not in (RGB, 2 * RGB) or out_channels not in (RGB, 2 * RGB):
        raise CheckpointError(f"{source}: {in_total} input / {out_channels} output channels: not an RGB ADM model "
                              "(3 or 6 each)")
    levels, blocks, updown, conv = _levels(state, source)
    outputs = _layers(state, "output_blocks")
    first = [(levels - 1 - level) * (blocks + 1) for level in range(levels)]  # first decoder block per level
    widths = [_shape(state, f"output_blocks.{k}.0.out_layers.3.weight", source)[0] for k in first]
    emb = _shape(state, "output_blocks.0.0.emb_layers.1.weight", source)[0]
    config = dict(in_channels=RGB, low_res_channels=in_total - RGB, model_channels=mc, out_channels=out_channels,
                  num_res_blocks=blocks,
                  attention_resolutions=tuple(2**lv for lv, k in enumerate(first) if "attn" in outputs[k].values()),
                  dropout=0.0, channel_mult=tuple(int(w / mc) if w % mc == 0 else w / mc for w in widths),
                  conv_resample=conv, num_classes=state["label_emb.weight"].shape[0] if "label_emb.weight" in state
                  else None, use_scale_shift_norm=emb == 2 * widths[-1], resblock_updown=updown)
    matches = tuple(name for name, f in RELEASES.items()
                    if all(release_config(f)[k] == v for k, v in config.items() if k != "dropout"))
    hidden = {k: release_config(RELEASES[matches[0]])[k] for k in HIDDEN} if matches else {}
    needed = {"num_heads or num_head_channels": {"num_heads", "num_head_channels"},
              "use_new_attention_order": {"use_new_attention_order"}}
    missing = [name for name, keys in needed.items() if not matches and not keys & set(flags)]
    if missing:
        raise CheckpointError(f"{source}: no released guided-diffusion configuration has these keys and shapes "
                              f"({config}); pass {' and '.join(missing)}")
    config.update({**{k: DEFAULT_FLAGS[k] for k in HIDDEN}, **hidden, **flags})
    return config, matches


@dataclass(frozen=True)
class ADMCheckpoint:
    """What a guided-diffusion checkpoint is: its ADMUNet config, the releases it fits and its diffusion facts."""

    config: dict  # ADMUNet keyword arguments
    releases: tuple[str, ...]  # released configurations with these keys and shapes; () if none
    noise_schedule: str  # guided-diffusion get_named_beta_schedule name, over 1000 steps
    image_size: int | None  # the training resolution; any multiple of size_multiple runs

    @property
    def learn_sigma(self) -> bool:
        """Whether the output carries the learned-range variance after epsilon."""
        return self.config["out_channels"] == 2 * RGB

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (len(self.config["channel_mult"]) - 1)

    @property
    def process(self) -> dict:
        """shiftsr process config: VP betas as get_named_beta_schedule(schedule, 1000); t = index + 1, 0 clean."""
        return dict(kind="vp", beta_schedule=self.noise_schedule, num_train_timesteps=1000, beta_start=1e-4,
                    beta_end=0.02)


def describe(state: Mapping[str, Tensor], source: str = "state dict", *, noise_schedule: str | None = None,
             image_size: int | None = None, **flags) -> ADMCheckpoint:
    """The descriptor of a state dict; noise_schedule is needed where no release matches."""
    config, matches = infer_config(state, source, **flags)
    facts = {k: {RELEASES[m][k] for m in matches} for k in FACTS}
    if noise_schedule is None and len(facts["noise_schedule"]) != 1:
        raise CheckpointError(f"{source}: no released configuration fixes the noise schedule; pass noise_schedule "
                              f"({' or '.join(NOISE_SCHEDULES)})")
    if noise_schedule is not None and noise_schedule not in NOISE_SCHEDULES:
        raise ValueError(f"unknown noise_schedule {noise_schedule!r}; allowed: {', '.join(NOISE_SCHEDULES)}")
    schedule = noise_schedule or facts["noise_schedule"].pop()
    sizes = facts["image_size"]
    return ADMCheckpoint(config=config, releases=matches, noise_schedule=schedule,
                         image_size=image_size or (sizes.pop() if len(sizes) == 1 else None))


def load_adm(path: str | Path, **flags) -> tuple[ADMUNet, ADMCheckpoint]:
    """Build the ADMUNet a guided-diffusion .pt describes and load it strictly (every tensor used), in eval mode.

    flags: as for describe (noise_schedule, image_size, HIDDEN, dropout); needed only where no release matches.
    """
    state = read_checkpoint(path)
    info = describe(state, str(path), **flags)
    with torch.device("meta"):
        net = ADMUNet(**info.config)
    net = net.to_empty(device="cpu")
    load_strict(net, state, path)
    return net.eval(), info


def fold_class(net: ADMUNet, info: ADMCheckpoint, label: int) -> ADMUNet:
    """The unconditional ADMUNet equal to a class-conditional one at class `label` (unet.py UNetModel.forward).

    The official emb = time_embed(t) + label_emb(y) adds one constant vector after time_embed's last Linear, so the
    label's row joins that Linear's bias; the output differs from the official one by float32 rounding only.
    """
    state = net.state_dict()
    row = state.pop("label_emb.weight")[label]
    state["time_embed.2.bias"] = state["time_embed.2.bias"] + row
    with torch.device("meta"):
        folded = ADMUNet(**{**info.config, "num_classes": None})
    folded.load_state_dict(state, strict=True, assign=True)  # takes the loaded tensors over, no copy
    return folded.eval()


def check_flags(flags: Mapping) -> None:
    """Refuse a --flag that is unknown or of the wrong type (ValueError naming it and what it takes)."""
    for key, value in flags.items():
        if key not in FLAG_TYPES:
            raise ValueError(f"--flag {key}: unknown for adm; allowed: {', '.join(FLAG_TYPES)}")
        kind = FLAG_TYPES[key]
        if not (type(value) is kind or (kind is float and type(value) is int)):
            raise ValueError(f"--flag {key}: expected {kind.__name__}, got {value!r}")


def to_bundle(arch: str, checkpoint: Path, autoencoder: Path | None = None, **flags) -> Converted:
    """The shiftsr bundle of an unconditional (or label-folded class-conditional) guided-diffusion checkpoint.

    flags: the keys' gaps (HIDDEN, noise_schedule, image_size, dropout) and class_label for a class-conditional
    model. An upsampler (SuperResModel) is refused: it needs its low_res image as a second input, which no
    shiftsr family feeds an ADMUNet (the bundle network is unconditional: the prior, sampled by noise injection).
    """
    if autoencoder is not None:
        raise ValueError(f"{autoencoder}: ADM works on pixels; adm takes no --autoencoder")
    check_flags(flags)
    given = dict(flags)
    label = flags.pop("class_label", None)
    net, info = load_adm(checkpoint, **flags)
    if info.config["low_res_channels"]:
        raise CheckpointError(f"{checkpoint}: an ADM upsampler (SuperResModel, {2 * RGB} input channels): it is "
                              "conditioned on a low_res image it takes as a second input, which no shiftsr family "
                              "feeds; adm converts unconditional and class-conditional priors only")
    classes = info.config["num_classes"]
    if classes is not None:
        if label is None or not 0 <= label < classes:
            raise ValueError(f"{checkpoint}: class-conditional ({classes} classes in label_emb.weight): pass "
                             f"--flag class_label=N with N in 0..{classes - 1} (ImageNet class index), got {label}")
        net = fold_class(net, info, label)
    elif label is not None:
        raise ValueError(f"--flag class_label: {checkpoint} is not class-conditional (no label_emb.weight)")
    settings = BundleSettings(
        network="ADMUNet", process=info.process, scale=NATIVE_SCALE, prediction_type="epsilon", timestep="index",
        output_channels=RGB if info.learn_sigma else None, clip_denoised=True, preprocessor="bicubic",
        codec={"kind": "identity"}, multiple=info.size_multiple, dtypes=list(DTYPES),
        sampler=SamplerDefaults(method="noise-injection", steps=STEPS, order=1, samples=1))
    return Converted(net, settings, model_card(checkpoint, info, release_line(checkpoint, info.releases), label, given))


def release_line(checkpoint: Path, releases: tuple[str, ...]) -> str:
    """Which release a file is, for its card: the one its name names, the only one its layout fits, or why not."""
    if checkpoint.stem in releases:
        return f"`{checkpoint.stem}` (its file name; the layout fits {', '.join(releases)})"
    if len(releases) == 1:
        return f"`{releases[0]}` (the only release with these keys and shapes)"
    if releases:
        return (f"one of {', '.join(releases)}: the keys cannot tell them apart (name the file after its release "
                "to record which)")
    return "none: an unreleased layout (attention heads, attention order and noise schedule passed as --flag)"


def model_card(checkpoint: Path, info: ADMCheckpoint, release: str, label: int | None, flags: dict) -> str:
    """MODEL_CARD.md of a converted checkpoint: source, licence and caveat, release, every constant and its source."""
    cfg = info.config
    command = " ".join(["shiftsr convert adm --checkpoint", checkpoint.name, "-o FOLDER",
                        *(f"--flag {k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flags.items())])
    heads = (f"{cfg['num_head_channels']} channels per head" if cfg["num_head_channels"] > 0
             else f"{cfg['num_heads']} heads")
    rows = [
        ("source", f"{SOURCE}; `{checkpoint.name}`"),
        ("licence", LICENCE),
        ("release", release),
        ("network", f"`ADMUNet` (unet.py UNetModel): {cfg['model_channels']} channels x {cfg['channel_mult']}, "
                    f"{cfg['num_res_blocks']} ResBlocks per level, attention at downsample rates "
                    f"{cfg['attention_resolutions']} with {heads}, new attention order "
                    f"{cfg['use_new_attention_order']}, scale-shift norm {cfg['use_scale_shift_norm']}, "
                    f"resblock up/down {cfg['resblock_updown']}; read from the keys and shapes, heads and order "
                    "from the release's README MODEL_FLAGS or --flag"),
        ("classes", "unconditional" if label is None else
         f"class-conditional, class {label} folded into time_embed.2.bias (label_emb(y) is added after that Linear)"),
        ("process", f"VP, get_named_beta_schedule('{info.noise_schedule}', 1000) (gaussian_diffusion.py; T = 1000 "
                    "is diffusion_steps of every README MODEL_FLAGS)" + (
                        ": betas linspace(1e-4, 0.02)" if info.noise_schedule == "linear" else
                        ": betas 1 - abar(t+1)/abar(t), abar = cos((t/T + 0.008)/1.008 pi/2)^2, at most 0.999")),
        ("prediction", "epsilon (predict_xstart False, script_util defaults)" + (
            "; channels 3..5 are the learned variance (learn_sigma), dropped: DDIM reads epsilon only"
            if info.learn_sigma else "")),
        ("time input", "0-based index t - 1 (rescale_timesteps False, script_util defaults)"),
        ("image range", "[-1, 1] on RGB pixels (image_datasets.py: x / 127.5 - 1); codec identity"),
        ("clip_denoised", "x0 clamped to [-1, 1] at every step (image_sample.py default clip_denoised True)"),
        ("multiple", f"{info.size_multiple}: sides are padded to a multiple of 2^(levels - 1)"),
        ("training size", f"{f'{info.image_size} px' if info.image_size else 'unknown'}; any multiple of "
                          f"{info.size_multiple} runs"),
        ("scale", f"{NATIVE_SCALE}: the prior's native scale for the size rules; noise injection runs at any scale "
                  "above 1, starting at the time the scale asks (Diff-SR Sec. 3.4 fractions of T)"),
        ("sampler", f"noise-injection, {STEPS} DDIM steps ({STEPS_REASON})"),
        ("dtypes", f"{', '.join(DTYPES)} ({DTYPE_MEASURE})"),
        ("command", f"`{command}`"),
    ]
    lines = [f"# guided-diffusion ADM prior `{checkpoint.stem}`, converted for shiftsr", "",
             "An unconditional diffusion prior on RGB pixels for Diff-SR noise injection and BCSR "
             "(`shiftsr upscale -m FOLDER -s SCALE`, `shiftsr search-bc -m FOLDER`).", "", "| | |", "|---|---|",
             *(f"| {key} | {value} |" for key, value in rows), "",
             "The guided-diffusion model card (model-card.md): the released models are intended for research "
             "only, not for commercial deployment, nor for propaganda or offensive imagery; trained on ImageNet "
             "or single LSUN classes, they can produce unrealistic faces and may reflect the datasets' biases.", ""]
    return "\n".join(lines)
