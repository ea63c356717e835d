"""Record DoSSR's outputs (model/cldm.py ControlLDM, model/shift_sampler.py, scripts/inference.py) at reduced widths.

Runs the OFFICIAL code, CPU, fp32, one thread, with the stand-ins in stubs/ (torchvision, pytorch_lightning 1.4
and transformers do not import beside torch 2.13 or are never used when sampling). Usage:

    mkdir /tmp/dossr-official && git --git-dir=DOSSR_GIT archive HEAD | tar -x -C /tmp/dossr-official
    python -m venv --system-site-packages /tmp/dossr-venv
    /tmp/dossr-venv/bin/pip install --no-deps omegaconf==2.4.0 antlr4-python3-runtime==4.9.3 \
        open-clip-torch==2.24.0 ftfy
    /tmp/dossr-venv/bin/python scripts/official_fixtures/dossr/record.py --official /tmp/dossr-official

Shims: FrozenOpenCLIPEmbedder loads ViT-H-14 from a path on the authors' cluster; here open_clip builds a small
CLIP from TEXT_CONFIG instead (the embedder deletes the visual tower anyway). Weights are not stored:
`redraw(shapes, seed)` re-draws every parameter (the official init zeroes the zero convs and output convs, which
would make a comparison blind) and tests/test_official_dossr.py calls it again. `--full-keys` writes the key
names and shapes of the full-size model (cldm_v21.yaml, parameters on meta) instead.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "official" / "dossr"
STUBS = Path(__file__).resolve().parent / "stubs"
SEED = 20
LR_IMAGE, LR_TOP, LR_LEFT, LR_SIZE = "T91/t10.png", 40, 50, 32  # a crop of a training image (never benchmark/)
TIMES = [499, 100]  # official 0-based indices for the network-level check, one per batch image
PROMPT = "clean, high-resolution, 8k"  # shift_sample_3_order's default positive prompt
STEPS = (5, 1)
# cldm_v21.yaml with every width reduced; the latent factor stays 8 (four VAE levels)
UNET = dict(use_checkpoint=False, image_size=32, in_channels=4, model_channels=32, attention_resolutions=[1],
            num_res_blocks=1, channel_mult=[1, 2], num_head_channels=16, use_spatial_transformer=True,
            use_linear_in_transformer=True, transformer_depth=1, context_dim=32, legacy=False)
ORIGINAL_CONFIG = {"model": {"target": "model.cldm.ControlLDM", "params": {
    "linear_start": 0.00085, "linear_end": 0.0120, "num_timesteps_cond": 1, "log_every_t": 200, "timesteps": 1000,
    "first_stage_key": "jpg", "cond_stage_key": "txt", "control_key": "hint", "image_size": 64, "channels": 4,
    "cond_stage_trainable": False, "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema",
    "scale_factor": 0.18215, "use_ema": False, "sd_locked": True, "only_mid_control": False, "learning_rate": 1e-4,
    "control_stage_config": {"target": "model.cldm.ControlNet", "params": {**UNET, "hint_channels": 4}},
    "unet_config": {"target": "model.cldm.ControlledUnetModel", "params": {**UNET, "out_channels": 4}},
    "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
        "embed_dim": 4, "monitor": "val/rec_loss", "lossconfig": {"target": "torch.nn.Identity"},
        "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
                     "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}},
    "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                          "params": {"freeze": True, "layer": "penultimate"}},
    "preprocess_config": {"target": "esrgan.RRDBNet_arch.RRDBNet", "params": {
        "num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "num_grow_ch": 8, "scale": 4}},
}}}
TEXT_CONFIG = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)  # ViT-H-14: 1024, 16, 24
# the random RRDB's output centres near -0.25; shifted, the preprocessed image lies mostly inside [0, 1], not clamped
OFFSETS = {"preprocess_model.conv_last.bias": 0.75}


def redraw(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Every parameter re-drawn in sorted key order: weights N(0, 1/fan_in), norm scales 1 +- 0.1, the rest 0.05.

    OFFSETS are added after the draw.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        draw = torch.randn(shape, generator=gen, dtype=torch.float32)
        if len(shape) >= 2:
            state[key] = draw / math.sqrt(math.prod(shape[1:]))
        else:
            state[key] = 1 + 0.1 * draw if key.endswith(".weight") else 0.05 * draw
        state[key] += OFFSETS.get(key, 0.0)
    return state


def lr_image() -> torch.Tensor:
    """The LR crop as inference.py makes it: uint8 RGB / 255, (1, 3, H, W) float32."""
    from PIL import Image

    rgb = np.array(Image.open(ROOT.parent / "shared" / "data" / "train" / LR_IMAGE).convert("RGB"))
    crop = rgb[LR_TOP:LR_TOP + LR_SIZE, LR_LEFT:LR_LEFT + LR_SIZE]
    return torch.tensor(crop / 255.0, dtype=torch.float32).permute(2, 0, 1)[None].contiguous()


def shim_open_clip(text_config: dict) -> None:
    """FrozenOpenCLIPEmbedder's create_model_and_transforms(pretrained=<cluster path>) -> a CLIP of text_config."""
    import ldm.modules.encoders.modules as encoders
    import open_clip

    def create(arch, device=None, pretrained=None):
        vision = dict(image_size=32, layers=1, width=32, head_width=16, patch_size=16)
        return open_clip.model.CLIP(embed_dim=text_config["width"], vision_cfg=vision, text_cfg=text_config), None, None

    encoders.open_clip.create_model_and_transforms = create


class DrawRecorder:
    """Wraps torch.randn / torch.randn_like while the official sampler runs and keeps every draw in call order."""

    def __init__(self):
        self.draws: list[torch.Tensor] = []
        self.originals = (torch.randn, torch.randn_like)

    def __enter__(self):
        randn, randn_like = self.originals

        def keep(draw):
            self.draws.append(draw.detach().clone())
            return draw

        torch.randn = lambda *a, **k: keep(randn(*a, **k))
        torch.randn_like = lambda *a, **k: keep(randn_like(*a, **k))
        return self

    def __exit__(self, *exc):
        torch.randn, torch.randn_like = self.originals


def official_model(config: dict):
    """ControlLDM of a config with every parameter re-drawn; the schedule buffers stay the official ones."""
    from omegaconf import OmegaConf
    from utils.common import instantiate_from_config

    model = instantiate_from_config(OmegaConf.create(config)["model"])
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    model.load_state_dict(redraw(shapes, SEED), strict=False)
    return model.eval(), shapes


def official_tables(sampler, steps: int) -> dict[str, torch.Tensor]:
    """The float64 tables of SpacedSampler.make_schedule (trunc_12 etas, scaled-linear betas) at `steps`."""
    sampler.make_schedule(num_steps=steps)
    names = ("timesteps", "etas", "alphas_cumprod", "sqrt_alphas_cumprod", "sigmas", "lambdas")
    return {f"tables{steps}.{n}": torch.from_numpy(np.asarray(getattr(sampler, n), dtype=np.float64)) for n in names}


def sample(model, sampler, pre: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    """shift_sample_3_order exactly as scripts/inference.py process() calls it, with and without the colour fix."""
    out = {}
    for fix in ("none", "wavelet"):
        torch.manual_seed(0)
        with DrawRecorder() as recorder:
            image = sampler.shift_sample_3_order(steps=steps, shape=(1, 4) + tuple(s // 8 for s in pre.shape[-2:]),
                                                 cond_img=pre, x_T=pre, cfg_scale=1.0, color_fix_type=fix)
        out[f"steps{steps}.{fix}"] = image
        draws = recorder.draws
    out.update({f"steps{steps}.draw{i}": d for i, d in enumerate(draws)})  # same seed: the same draws both times
    return out


def record(official: Path) -> None:
    sys.path[:0] = [str(STUBS), str(official)]
    torch.set_num_threads(1)
    shim_open_clip(TEXT_CONFIG)
    from ldm.xformers_state import disable_xformers
    from model.shift_sampler import SpacedSampler

    disable_xformers()
    model, shapes = official_model(ORIGINAL_CONFIG)
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        # 1. preprocessing (inference.py process): RRDB x4 on the LR in [0, 1], clamped
        lr = lr_image()
        pre = model.preprocess_model(lr).float().clamp_(0, 1)
        # 2. the pieces: text context, condition latent, VAE moments, UNet + ControlNet at two times
        context = model.get_learned_conditioning([PROMPT])
        c_latent = model.apply_condition_encoder(pre)
        moments = model.first_stage_model.quant_conv(model.first_stage_model.encoder(pre * 2 - 1))
        gen = torch.Generator().manual_seed(SEED + 1)
        x_t = torch.randn((len(TIMES),) + tuple(c_latent.shape[1:]), generator=gen)
        c_pair = torch.randn(x_t.shape, generator=gen)
        cond = {"c_latent": [c_pair], "c_crossattn": [context.expand(len(TIMES), -1, -1)]}
        eps = model.apply_model(x_t, torch.tensor(TIMES), cond)
        tensors.update(lr=lr, preprocessed=pre, context=context, c_latent=c_latent, moments=moments, x_t=x_t,
                       c_pair=c_pair, eps=eps)
        # 3. full official sampling at 5 and 1 steps, every Gaussian draw in call order
        sampler = SpacedSampler(model, var_type="fixed_small")
        for steps in STEPS:
            tensors.update(sample(model, sampler, pre, steps))
            tensors.update(official_tables(sampler, steps))
    from ldm.modules.diffusionmodules.util import make_beta_schedule, make_eta_schedule
    from safetensors.torch import save_file

    betas = make_beta_schedule("linear", 1000, linear_start=0.00085, linear_end=0.012)
    tensors["train.etas"] = torch.from_numpy(make_eta_schedule("trunc_12", 1000))
    tensors["train.alphas_cumprod"] = torch.from_numpy(np.cumprod(1.0 - betas, axis=0))
    state = model.state_dict()
    buffers = [k for k in state if k not in shapes]
    tensors.update({f"buffer.{k}": state[k] for k in buffers})
    tokens = __import__("open_clip").tokenize([PROMPT])[0]
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "official.safetensors")
    meta = {"seed": SEED, "lr_image": LR_IMAGE, "lr_crop": [LR_TOP, LR_LEFT, LR_SIZE], "times": TIMES,
            "prompt": PROMPT, "tokens": tokens[tokens != 0].tolist(), "steps": list(STEPS),
            "original_config": ORIGINAL_CONFIG, "text_config": TEXT_CONFIG,
            "parameters": {k: list(v) for k, v in shapes.items()}, "buffers": buffers}
    (OUT / "official.json").write_text(json.dumps(meta, separators=(",", ":")) + "\n")
    print(f"{len(state)} keys ({len(buffers)} buffers), {len(tensors)} tensors -> {OUT}")


def record_full_keys(official: Path) -> None:
    """Key names and shapes of the released architecture (configs/model/cldm_v21.yaml), parameters on meta."""
    sys.path[:0] = [str(STUBS), str(official)]
    import open_clip
    from accelerate import init_empty_weights
    from omegaconf import OmegaConf
    from utils.common import instantiate_from_config

    shim_open_clip(open_clip.get_model_config("ViT-H-14")["text_cfg"])
    with init_empty_weights():
        model = instantiate_from_config(OmegaConf.load(official / "configs" / "model" / "cldm_v21.yaml"))
    keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    (OUT / "full_keys.json").write_text(json.dumps(keys, separators=(",", ":")) + "\n")
    print(f"{len(keys)} keys of the full-size model -> {OUT / 'full_keys.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of AMD-AIG-AIMA/DoSSR")
    parser.add_argument("--full-keys", action="store_true", help="write full_keys.json instead")
    args = parser.parse_args()
    (record_full_keys if args.full_keys else record)(args.official.resolve())


if __name__ == "__main__":
    main()
