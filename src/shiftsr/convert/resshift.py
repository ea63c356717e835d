"""ResShift and SinSR checkpoints (Yue et al. 2023; Wang et al. 2024): config from shapes, strict load, the bundle.

Modelled on spandrel's ArchSupport. Every released diffusion checkpoint (ResShift v1, v2, v3, bicsr; SinSR v1, v2)
is one UNetModelSwin layout: 564 tensors (540 parameters, 118,593,583 values; 18 relative_position_index and 6
attn_mask buffers); the autoencoder_vq_f4.pth they share is VQModelTorch: 205 tensors, 55,322,782 values, a plain
state dict (the official trainer.py:457 loads it with load_state_dict(ckpt, True)).
Read from the shapes: model_channels, channel_mult, num_res_blocks, where the Swin layers sit, swin_embed_dim,
heads, depth, mlp_ratio, window size, scale-shift norm, in / out channels, and (from the attn_mask shapes)
the image_size the model was built for. The variant (which process it was trained for) is not in the file: it is
the architecture name given to `shiftsr convert`; a released file name that names another variant is refused.
Facts in VARIANTS are read from the official configs, inference scripts, sampler.py and
models/gaussian_diffusion.py (lines in the model card), and checked against runs of that code in
tests/test_official_resshift.py.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from .. import __version__
from ..bundle import BundleSettings, SamplerDefaults
from ..denoisers.codecs import VQF4Codec
from ..networks.resshift_unet import ResShiftUNet
from ..networks.vq_f4 import VQF4Autoencoder
from . import Converted
from .checkpoint import CheckpointError, load_strict, read_checkpoint

LQ_CHANNELS = 3  # every released model concatenates the RGB LR image (lq_size == image_size: no feature extractor)
# bf16 autocast of the UNet on a CPU moves the final latent of the tests' reduced random models by 1-2% of its std
# on average (max 0.03-0.08 against std 0.57), in line with the official scripts, which run the UNet under fp16
# autocast (ResShift inference_resshift.py:176, sampler.py:185; SinSR inference.py:118, sampler.py:86-88); fp16 is
# not listed: the pipeline runs fp32 or bf16, and many CPU kernels lack fp16
DTYPES = ["fp32", "bf16"]


@dataclass(frozen=True)
class Repo:
    """An official repository: where its code is, its licence, and the lines each step of its sampler sits on."""

    name: str
    commit: str
    licence: str
    paper: str
    code: tuple[tuple[str, str], ...]  # (what the official code does, file:lines)


_GD = "models/gaussian_diffusion.py"
RESSHIFT = Repo(
    "zsyOAOA/ResShift", "3ce1d81e8402fd50083809ae288a3977f6921bdd",
    "S-Lab License 1.0 (zsyOAOA/ResShift LICENSE): redistribution and use for non-commercial purposes only; "
    "commercial use needs the authors' permission",
    "Yue et al., ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting, NeurIPS 2023 "
    "(journal version TPAMI 2024)",
    (("LR in [-1, 1] reflect-padded bottom/right to a multiple of lq_size", "sampler.py:130-137, "
      "inference_resshift.py:178"),
     ("z_y = VQ.encode(F.interpolate(y0, scale_factor=sf, mode='bicubic')) * scale_factor", f"{_GD}:500-515"),
     ("x_T = z_y + kappa sqrt(eta_T) eps (the first draw)", f"{_GD}:442-449, 517-529"),
     ("sqrt(eta_t) = eta_start * (etas_end / eta_start)^(((t - 1) / (T - 1))^power), "
      "eta_start = min(min_noise_level / kappa, min_noise_level)", f"{_GD}:53-58"),
     ("steps at indices T - 1 .. 0: x0 = net(x_t / sqrt(kappa^2 eta_t + 1), index, lq=y0)",
      f"{_GD}:451-458, 266, 598-603"),
     ("posterior mean (eta_{t-1} / eta_t) x_t + (alpha_t / eta_t) x0, variance kappa^2 eta_{t-1} alpha_t / eta_t",
      f"{_GD}:150-161, 219-220"),
     ("one draw per step, multiplied by 0 at index 0", f"{_GD}:358-364"),
     ("VQ.decode(x0 / scale_factor) through the codebook", f"{_GD}:474-498, ldm/models/autoencoder.py:33-40"),
     ("cropped to sf x the LR, clamped to [-1, 1]", "sampler.py:162-166")))
SINSR = Repo(
    "wyf0912/SinSR", "f1735490e980162435391162ddd18c0642327c5b",
    "CC BY-NC-SA 4.0 (wyf0912/SinSR LICENSE): non-commercial, share-alike; the teacher it is distilled from is "
    "ResShift v1 (S-Lab License 1.0)",
    "Wang et al., SinSR: Diffusion-Based Image Super-Resolution in a Single Step, CVPR 2024",
    (("LR in [-1, 1] reflect-padded bottom/right to a multiple of desired_min_size = 64", "sampler.py:30, 123-131"),
     ("z_y = VQ.encode(F.interpolate(y0, scale_factor=sf, mode='bicubic')) * scale_factor", f"{_GD}:692-704"),
     ("x_T = z_y + kappa sqrt(eta_T) eps (the first draw)", f"{_GD}:640-647, 705-717"),
     ("sqrt(eta_t) as ResShift, eta_start also min'ed with sqrt(0.001) (no effect for this config)",
      f"{_GD}:51-56"),
     ("--one_step: x0 = net(x_T / sqrt(kappa^2 eta_T + 1), T - 1, lq=y0) is the answer; the step's draw is unused",
      f"inference.py:21, {_GD}:649-672, 271, 948-953"),
     ("VQ.decode(x0 / scale_factor) through the codebook", f"{_GD}:676-690"),
     ("cropped to sf x the LR, clamped to [-1, 1]", "sampler.py:163-168")))

# the released config's constants the bundle rests on: (config key, value or None = the variant's, shiftsr use)
CONSTANTS = (
    ("diffusion.params.steps", None, "process.num_steps (T)"),
    ("diffusion.params.kappa", 2.0, "process.kappa"),
    ("diffusion.params.schedule_kwargs.power", 0.3, "process.power"),
    ("diffusion.params.etas_end", 0.99, "process variant official: eta_T = 0.99^2"),
    ("diffusion.params.min_noise_level", None, "process.min_noise_level: eta_1 = min(m / kappa, m)^2"),
    ("diffusion.params.schedule_name", "exponential", "process variant official (ResShift Eq. 10)"),
    ("diffusion.params.predict_type", "xstart", "prediction_type sample"),
    ("diffusion.params.timestep_respacing", "~ (none)", "timestep index: the network sees t - 1"),
    ("diffusion.params.scale_factor", 1.0, "codec vq_f4: the latent unscaled"),
    ("diffusion.params.normalize_input", True, "input_scale resshift"),
    ("diffusion.params.latent_flag", True, "input_scale resshift: 1 / sqrt(kappa^2 eta_t + 1)"),
    ("diffusion.params.sf", 4, "scale; preprocessor torch_bicubic (x sf, unclamped)"),
    ("model.params.lq_size", 64, "lr_multiple (the sampler pads the LR to it)"),
    ("autoencoder.use_fp16", True, "not followed: shiftsr runs the VQ-f4 in fp32"),
)
SF = 4
RELEASES = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/"
AUTOENCODER_URL = RELEASES + "autoencoder_vq_f4.pth"


@dataclass(frozen=True)
class Variant:
    """One released model: its file, the config it was trained with (lines of CONSTANTS in it) and its sampler."""

    title: str
    repo: Repo
    files: tuple[str, ...]  # released file names
    url: str
    config: str
    num_steps: int
    min_noise_level: float
    sampling_steps: int
    lines: tuple[int | None, ...]  # the line of each CONSTANTS key in config; None: not in the file

    @property
    def process(self) -> dict:
        """The shiftsr process of the config: ResShiftProcess with the official eta table."""
        return {"kind": "resshift", "num_steps": self.num_steps, "kappa": CONSTANTS[1][1],
                "power": CONSTANTS[2][1], "variant": "official", "min_noise_level": self.min_noise_level}


_REALSR, _JOURNAL = "configs/realsr_swinunet_realesrgan256.yaml", "configs/realsr_swinunet_realesrgan256_journal.yaml"
_V1_LINES = (37, 39, 35, 36, 38, 33, 41, 42, 43, 44, 45, 32, 27, 50)
VARIANTS: dict[str, Variant] = {
    "resshift-v1": Variant("ResShift v1: real-world x4, 15 steps (the NeurIPS paper model)", RESSHIFT,
                           ("resshift_realsrx4_s15_v1.pth",), RELEASES + "resshift_realsrx4_s15_v1.pth", _REALSR,
                           15, 0.04, 15, _V1_LINES),
    "resshift-v2": Variant("ResShift v2: real-world x4, 15 steps (a second checkpoint of the v1 configuration)",
                           RESSHIFT, ("resshift_realsrx4_s15_v2.pth",), RELEASES + "resshift_realsrx4_s15_v2.pth",
                           _REALSR, 15, 0.04, 15, _V1_LINES),
    "resshift-v3": Variant("ResShift v3: real-world x4, 4 steps (the journal model, trained with an LPIPS loss)",
                           RESSHIFT, ("resshift_realsrx4_s4_v3.pth",), RELEASES + "resshift_realsrx4_s4_v3.pth",
                           _JOURNAL, 4, 0.2, 4, (61, 63, 59, 60, 62, 57, 65, 66, 67, 68, 69, 56, 51, 7)),
    "resshift-bicsr": Variant("ResShift bicsr: bicubic (MATLAB imresize) x4, 4 steps, LPIPS loss", RESSHIFT,
                              ("resshift_bicsrx4_s4.pth",), RELEASES + "resshift_bicsrx4_s4.pth",
                              "configs/bicx4_swinunet_lpips.yaml", 4, 0.2, 4,
                              (60, 62, 58, 59, 61, 56, 64, 65, 66, 67, 68, 55, 50, 7)),
    "sinsr": Variant("SinSR: real-world x4 in one step (distilled from ResShift v1)", SINSR,
                     ("SinSR_v1.pth", "SinSR_v2.pth"),
                     "https://github.com/wyf0912/SinSR/releases/download/v1.0/SinSR_v1.pth (or SinSR_v2.pth)",
                     "configs/SinSR.yaml", 15, 0.04, 1, (34, 36, 32, 33, 35, 30, 38, 39, 40, 41, 42, 29, None, 47)),
}


def variant_from_name(path: str | Path) -> str | None:
    """The variant a released file name stands for (resshift_realsrx4_s4_v3.pth -> resshift-v3), else None."""
    name = Path(path).name.lower()
    return next((arch for arch, v in VARIANTS.items() if name in (f.lower() for f in v.files)), None)


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


def to_bundle(arch: str, checkpoint: Path, autoencoder: Path | None, **flags) -> Converted:
    """The shiftsr bundle of an official ResShift / SinSR checkpoint and its VQ-f4: the official sampler's settings."""
    variant = VARIANTS[arch]
    if flags:
        raise ValueError(f"{arch}: takes no --flag (got {', '.join(flags)}); the variant fixes every setting")
    if autoencoder is None:
        raise ValueError(f"{arch}: needs --autoencoder, the VQ-f4 file the model works in (autoencoder_vq_f4.pth, "
                         f"{AUTOENCODER_URL})")
    named = variant_from_name(checkpoint)
    if named not in (None, arch):
        raise ValueError(f"{checkpoint}: the file name is that of the released {named}, not {arch}; convert it "
                         f"as {named} (the variant fixes the process and the steps)")
    net, vq = load_resshift_unet(checkpoint), load_vq_f4(autoencoder)
    if vq.scale != SF or vq.config.in_channels != 3 or vq.channels != net.config.in_channels:
        raise CheckpointError(f"{autoencoder}: a {vq.channels}-channel autoencoder down-sampling by {vq.scale} does "
                              f"not fit {checkpoint} (x{SF}, {net.config.in_channels}-channel latents)")
    settings = BundleSettings(
        network="ResShiftUNet", process=variant.process, scale=SF, prediction_type="sample", timestep="index",
        input_scale="resshift", preprocessor="torch_bicubic", condition="lr", codec={"kind": "vq_f4",
                                                                                      "folder": "codec"},
        lr_multiple=net.config.image_size, dtypes=list(DTYPES),
        sampler=SamplerDefaults(method="resshift", steps=variant.sampling_steps, order=1, samples=1))
    return Converted(net, settings, model_card(arch, checkpoint, autoencoder, net, vq), codec=VQF4Codec(vq))


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while piece := stream.read(1 << 24):
            digest.update(piece)
    return digest.hexdigest()


def _count(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()):,}"


def model_card(arch: str, checkpoint: Path, autoencoder: Path, net: ResShiftUNet, vq: VQF4Autoencoder) -> str:
    """The Markdown card of a converted model: source, files, licence, each constant and the line it comes from."""
    v, repo = VARIANTS[arch], VARIANTS[arch].repo
    config = {k: list(x) if isinstance(x, tuple) else x for k, x in net.config.items() if not k.startswith("_")}
    rows = []
    for (key, value, use), line in zip(CONSTANTS, v.lines):
        value = {"diffusion.params.steps": v.num_steps, "diffusion.params.min_noise_level": v.min_noise_level}.get(
            key, value)
        where = f"{v.config}:{line}" if line else f"absent; sampler.py:30 desired_min_size={value}"
        rows.append(f"| `{key}` | {value} | {where} | {use} |")
    steps = (f"{v.sampling_steps} steps, every step of the chain ({_GD}:451)" if v.sampling_steps == v.num_steps
             else f"{v.sampling_steps} step: the x0 prediction at t = T (inference.py --one_step)")
    code = [f"| {what} | {where} |" for what, where in repo.code]
    command = (f"shiftsr convert {arch} --checkpoint {checkpoint.name} --autoencoder {autoencoder.name} "
               "-o MODEL_FOLDER")
    return "\n".join([
        f"# {v.title}, converted", "",
        f"The authors' released weights, converted by `shiftsr convert` (shiftsr {__version__}) and loaded strictly "
        "into shiftsr's own networks (`ResShiftUNet`, `VQF4Autoencoder`); `shiftsr upscale -m MODEL_FOLDER` runs "
        "the official sampler.", "",
        f"- Source: [{repo.name}](https://github.com/{repo.name}) at commit {repo.commit}; {repo.paper}.",
        f"- Checkpoint: `{checkpoint.name}` (SHA-256 {sha256(checkpoint)}), released at {v.url}.",
        f"- Autoencoder: `{autoencoder.name}` (SHA-256 {sha256(autoencoder)}), released at {AUTOENCODER_URL}.",
        f"- Licence: {repo.licence}. The conversion changes nothing about it.",
        f"- Networks: ResShiftUNet, {_count(net)} parameters, read from the checkpoint's shapes: `{config}`; "
        f"VQF4Autoencoder, {_count(vq)} parameters.",
        f"- Made with: `{command}`.", "",
        "## Sampling", "",
        f"Method `resshift` (ResShift Eq. 6-7), {steps}; one sample, noise drawn on the CPU from the seed. "
        f"The LR is reflect-padded to a multiple of {net.config.image_size} (the network's build size, the "
        "multiple the official sampler pads to), brought x4 with torch's bicubic (unclamped), encoded without "
        "quantisation; the result is decoded through the codebook, cropped and clamped. Network precision: fp32 "
        "(the default on a CPU) or "
        "bf16 (the official scripts run the UNet under fp16 autocast on a GPU). One difference: the official "
        "scripts cut an LR larger than --chop_size 512 into 512-pixel pieces with stride 448 and blend the "
        "results; shiftsr samples the whole image, or the tiles of --tile blended at every step.", "",
        f"## Constants ({repo.name} `{v.config}`)", "",
        "| official key | value | source | shiftsr |", "|---|---|---|---|", *rows, "",
        "## The official inference path", "",
        "| step | official code |", "|---|---|", *code, "",
        "Checked by tests/test_official_resshift.py: a bundle converted from reduced random weights in this layout "
        "reproduces the image of the official sampler run on the same weights and draws within 1e-4.", ""])
