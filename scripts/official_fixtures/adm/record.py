"""Record guided-diffusion's own outputs (UNetModel, SuperResModel, GaussianDiffusion, respace) at reduced sizes.

Runs the OFFICIAL code, CPU, fp32, one thread; nothing it imports beyond numpy and torch. Usage:

    mkdir /tmp/adm-official && git --git-dir=GUIDED_DIFFUSION_GIT archive HEAD | tar -x -C /tmp/adm-official
    python -m venv --system-site-packages /tmp/adm-venv
    /tmp/adm-venv/bin/python scripts/official_fixtures/adm/record.py --official /tmp/adm-official

Weights are not stored: `redraw(shapes, seed)` re-draws every parameter (the official init zeroes the output
convs, which would make a comparison blind) and tests/test_official_adm.py calls it again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "official" / "adm"
SIZE = 32  # input height and width
# ADMUNet keyword arguments; low_res_channels > 0 is the official SuperResModel
CASES = {
    "uncond": dict(in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=[2, 4],
                   dropout=0.0, channel_mult=[1, 2, 2], conv_resample=True, num_classes=None, num_heads=1,
                   num_head_channels=16, num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True,
                   use_new_attention_order=False, low_res_channels=0),
    "classes": dict(in_channels=3, model_channels=32, out_channels=3, num_res_blocks=2, attention_resolutions=[2],
                    dropout=0.0, channel_mult=[1, 2], conv_resample=True, num_classes=10, num_heads=2,
                    num_head_channels=-1, num_heads_upsample=-1, use_scale_shift_norm=False, resblock_updown=False,
                    use_new_attention_order=True, low_res_channels=0),
    "upsampler": dict(in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=[2],
                      dropout=0.0, channel_mult=[1, 2], conv_resample=False, num_classes=None, num_heads=4,
                      num_head_channels=-1, num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=False,
                      use_new_attention_order=False, low_res_channels=3),
}
SEEDS = {"uncond": 10, "classes": 11, "upsampler": 12}
# MODEL_FLAGS of the guided-diffusion README, verbatim
README_FLAGS = {
    "64x64_diffusion": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 "
    "--image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 "
    "--num_res_blocks 3 --resblock_updown True --use_new_attention_order True --use_fp16 True "
    "--use_scale_shift_norm True",
    "128x128_diffusion": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 128 "
    "--learn_sigma True --noise_schedule linear --num_channels 256 --num_heads 4 --num_res_blocks 2 "
    "--resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "256x256_diffusion": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 256 "
    "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 "
    "--resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "256x256_diffusion_uncond": "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 "
    "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
    "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "512x512_diffusion": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 512 "
    "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 "
    "--resblock_updown True --use_fp16 False --use_scale_shift_norm True",
    "64_256_upsampler": "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --large_size 256 "
    "--small_size 64 --learn_sigma True --noise_schedule linear --num_channels 192 --num_heads 4 --num_res_blocks 2 "
    "--resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "128_512_upsampler": "--attention_resolutions 32,16 --class_cond True --diffusion_steps 1000 --large_size 512 "
    "--small_size 128 --learn_sigma True --noise_schedule linear --num_channels 192 --num_head_channels 64 "
    "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "lsun": "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout 0.1 --image_size 256 "
    "--learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 "
    "--resblock_updown True --use_fp16 True --use_scale_shift_norm True",
    "lsun_horse_nodropout": "--attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --dropout 0.0 "
    "--image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 "
    "--num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True",
}
TIMESTEPS = [0, 437, 999]  # official 0-based indices, one per batch image
RESPACING = "5"  # space_timesteps(1000, "5") -> indices 0, 250, 500, 749, 999


def redraw(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Every parameter re-drawn in sorted key order: weights N(0, 1/fan_in), norm scales 1 +- 0.1, biases 0.05."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        draw = torch.randn(shape, generator=gen, dtype=torch.float32)
        if len(shape) >= 2:
            state[key] = draw / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):
            state[key] = 1 + 0.1 * draw
        else:
            state[key] = 0.05 * draw
    return state


def inputs(seed: int, case: dict) -> dict[str, torch.Tensor]:
    """x, the DDIM start noise and the optional labels / low-res image, drawn in this order."""
    gen = torch.Generator().manual_seed(1000 + seed)
    n = len(TIMESTEPS)
    drawn = {"x": torch.randn(n, 3, SIZE, SIZE, generator=gen), "noise": torch.randn(n, 3, SIZE, SIZE, generator=gen)}
    if case["num_classes"]:
        drawn["y"] = torch.randint(0, case["num_classes"], (n,), generator=gen)
    if case["low_res_channels"]:
        drawn["low_res"] = torch.randn(n, case["low_res_channels"], SIZE // 2, SIZE // 2, generator=gen).clamp(-1, 1)
    return drawn


def official_model(case: dict):
    """The official network for a case, every parameter re-drawn."""
    from guided_diffusion.unet import SuperResModel, UNetModel

    kwargs = {k: v for k, v in case.items() if k != "low_res_channels"}
    kwargs["attention_resolutions"] = tuple(kwargs["attention_resolutions"])
    kwargs["channel_mult"] = tuple(kwargs["channel_mult"])
    model = (SuperResModel if case["low_res_channels"] else UNetModel)(image_size=SIZE, **kwargs)
    return model.eval()


def record_case(name: str, case: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Model outputs, p_mean_variance x0 (clipped and not) and 5-step DDIM (clipped and not, every step's sample)."""
    from guided_diffusion.script_util import create_gaussian_diffusion

    model = official_model(case)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(redraw(shapes, SEEDS[name]), strict=True)
    drawn = inputs(SEEDS[name], case)
    kwargs = {k: drawn[k] for k in ("y", "low_res") if k in drawn}
    t = torch.tensor(TIMESTEPS)
    out = {f"{name}.{k}": v for k, v in drawn.items()}
    with torch.no_grad():
        out[f"{name}.model_out"] = model(drawn["x"], t, **kwargs)
        if case["out_channels"] == 6 and not case["low_res_channels"]:
            full = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear")
            spaced = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear",
                                               timestep_respacing=RESPACING)
            for clip in (False, True):
                tag = "clipped" if clip else "unclipped"
                pmv = full.p_mean_variance(model, drawn["x"], t, clip_denoised=clip)
                out[f"{name}.pred_xstart_{tag}"] = pmv["pred_xstart"]
                steps = spaced.ddim_sample_loop_progressive(model, tuple(drawn["x"].shape), noise=drawn["noise"],
                                                            clip_denoised=clip, eta=0.0)
                out[f"{name}.ddim_{tag}"] = torch.stack([step["sample"] for step in steps])  # [-1]: ddim_sample_loop
            out["timestep_map"] = torch.tensor(spaced.timestep_map)
    return out, {"keys": shapes}


def layout(state: dict[str, torch.Tensor]) -> dict:
    """Key count, parameter count and a hash of the sorted "key shape" lines of a state dict."""
    lines = "\n".join(f"{k} {list(v.shape)}" for k, v in sorted(state.items()))
    return {"keys": len(state), "parameters": sum(v.numel() for v in state.values()),
            "sha256": hashlib.sha256(lines.encode()).hexdigest()}


def release_layouts() -> dict:
    """Each README MODEL_FLAGS parsed and built as image_sample.py / super_res_sample.py do, on the meta device."""
    from guided_diffusion import script_util as su

    releases = {}
    for name, flags in README_FLAGS.items():
        upsampler = "--large_size" in flags
        defaults = su.sr_model_and_diffusion_defaults() if upsampler else su.model_and_diffusion_defaults()
        build = su.sr_create_model_and_diffusion if upsampler else su.create_model_and_diffusion
        parser = argparse.ArgumentParser()
        su.add_dict_to_argparser(parser, defaults)
        args = su.args_to_dict(parser.parse_args(flags.split()), defaults.keys())
        with torch.device("meta"):
            model, _ = build(**args)
        releases[name] = {"flags": args, **layout(model.state_dict())}
    return releases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="an extracted openai/guided-diffusion tree")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(args.official))
    torch.set_num_threads(1)
    from guided_diffusion.gaussian_diffusion import get_named_beta_schedule
    from safetensors.torch import save_file

    import numpy as np

    tensors, layouts = {}, {}
    for name, case in CASES.items():
        recorded, layout = record_case(name, case)
        tensors.update(recorded)
        layouts[name] = layout
    for schedule in ("linear", "cosine"):
        abar = np.cumprod(1.0 - get_named_beta_schedule(schedule, 1000))
        tensors[f"alphas_cumprod_{schedule}"] = torch.from_numpy(abar)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, args.out / "official.safetensors")
    meta = {"source": "openai/guided-diffusion 22e0df8 (unet.py, gaussian_diffusion.py, respace.py, script_util.py)",
            "size": SIZE, "timesteps": TIMESTEPS, "respacing": RESPACING, "seeds": SEEDS, "cases": CASES,
            "official_keys": layouts, "releases": release_layouts()}
    (args.out / "official.json").write_text(json.dumps(meta, indent=1) + "\n")
    print({k: tuple(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
