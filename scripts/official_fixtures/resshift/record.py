"""Record ResShift's and SinSR's own outputs (UNetModelSwin, VQModelTorch, their samplers) at reduced widths.

Runs the OFFICIAL code, CPU, fp32, one thread, in a throw-away venv. Usage:

    mkdir /tmp/rs /tmp/sinsr   # git archive HEAD of github:zsyOAOA/ResShift and github:wyf0912/SinSR into them
    python -m venv --system-site-packages /tmp/resshift-venv
    /tmp/resshift-venv/bin/pip install --no-deps omegaconf antlr4-python3-runtime==4.9.3 loguru
    /tmp/resshift-venv/bin/python scripts/official_fixtures/resshift/record.py --resshift /tmp/rs --sinsr /tmp/sinsr

Each repository runs in its own process (both name their packages models/, ldm/, utils/), with stand-ins for
what the inference path imports but never calls (timm's layer helpers, skimage, torchvision.utils, datapipe),
`.cuda()` as a no-op and checkpoints read onto the CPU. Weights are not stored: `redraw(shapes, seed)` re-draws
every parameter and tests/test_official_resshift.py calls it again; only the small VQ codebook is stored. It is
chosen after a first pass, from the latents the decoder quantises in every recorded run, so that every latent is
nearer its best code than the second best by more than MIN_GAP (so round-off in our replay cannot flip a code);
the second pass records.

Every Gaussian draw of a sampler (torch.randn_like, the only one it makes) is recorded in call order, including
the noise the last step multiplies by zero; the draws are rounded to float16 as they are made, so the fixture
holds exactly what the official code consumed in half the bytes. Per run the fixture holds the LR (uint8), the
draws, the final latent before quantisation (z_final: the image hardly depends on it, the codebook being coarse)
and the final image in [0, 1] as uint16 (x / 65535).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "fixtures" / "official" / "resshift"
WORK = Path("/tmp/resshift-record")
SEED = 20240607  # weights
INPUT_SEED = 7  # network-level inputs
SAMPLER_SEED = 12345  # the official inference scripts' default --seed
MIN_GAP = 1e-3
N_EMBED, TAIL_CODES, ATTEMPTS = 16, 3, 200
# reduced UNetModelSwin (official keyword names); SinSR's class takes in_channels = 6 and has no lq_size
UNET = dict(image_size=32, in_channels=3, model_channels=32, out_channels=3, attention_resolutions=[32, 16, 8, 4],
            dropout=0, channel_mult=[1, 2, 2, 4], num_res_blocks=[2, 2, 2, 2], conv_resample=True, dims=2,
            use_fp16=False, num_head_channels=16, use_scale_shift_norm=True, resblock_updown=False, swin_depth=2,
            swin_embed_dim=32, window_size=4, mlp_ratio=4, cond_lq=True, lq_size=32)
OURS_UNET = dict(image_size=32, in_channels=3, lq_channels=3, out_channels=3, model_channels=32,
                 channel_mult=[1, 2, 2, 4], num_res_blocks=[2, 2, 2, 2], attention_resolutions=[32, 16, 8, 4],
                 num_head_channels=16, swin_embed_dim=32, swin_depth=2, window_size=4, mlp_ratio=4.0,
                 use_scale_shift_norm=True)
VQ = dict(embed_dim=3, n_embed=N_EMBED, ddconfig=dict(double_z=False, z_channels=3, resolution=256, in_channels=3,
                                                      out_ch=3, ch=32, ch_mult=[1, 2, 4], num_res_blocks=1,
                                                      attn_resolutions=[], dropout=0.0, padding_mode="zeros"))
OURS_VQ = dict(in_channels=3, out_channels=3, base_channels=32, channel_mult=[1, 2, 4], num_res_blocks=1,
               z_channels=3, embed_dim=3, n_embed=N_EMBED)
PAD = 32  # the sampler's padding multiple: lq_size (64 in the released models, 32 here)
# run name -> (repository, official config file, LR crop (file, top, left, height, width))
RUNS = {"resshift_v3": ("resshift", "configs/realsr_swinunet_realesrgan256_journal.yaml", ("t6.png", 40, 60, 64, 64)),
        "resshift_v1": ("resshift", "configs/realsr_swinunet_realesrgan256.yaml", ("t6.png", 40, 60, 64, 64)),
        "sinsr": ("sinsr", "configs/SinSR.yaml", ("t20.png", 10, 20, 24, 40))}
UNET_BATCH = dict(shape=(2, 3, 32, 64), timesteps=[3, 11])
VQ_IMAGE, VQ_LATENT = (1, 3, 32, 48), (1, 3, 8, 12)
BUFFERS = ("relative_position_index", "attn_mask")
# the last layer of each residual branch: UNet ResBlocks and Swin blocks, VQ ResnetBlocks and attention
BRANCH_ENDS = ("out_layers.3.weight", "attn.proj.weight", "mlp.fc2.weight", "conv2.weight", "proj_out.weight")
SAMPLER_BRANCH_SCALE = 0.1  # the sampler runs' weights and the VQ's everywhere; the network-level UNet uses 1


def redraw(shapes: dict[str, tuple[int, ...]], seed: int, branch_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Every parameter re-drawn in sorted key order: weights N(0, 1/fan_in), norm scales 1 +- 0.1, biases 0.05,
    relative-position bias tables N(0, 0.25); the buffers (index tables, masks) are skipped.

    branch_scale multiplies the last layer of every residual branch (BRANCH_ENDS; the official UNet init zeroes
    them): at 1 the random UNet amplifies a 1e-6 change of x_T about 4e4-fold over 15 steps (round-off alone then
    decides the result), at SAMPLER_BRANCH_SCALE about 5-fold, as a trained denoiser would; the random decoder's
    gain likewise turns float32 round-off into 1e-5 on an image at 1."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        if key.endswith(BUFFERS):
            continue
        shape = tuple(shapes[key])
        draw = torch.randn(shape, generator=gen, dtype=torch.float32)
        if key.endswith("relative_position_bias_table"):
            state[key] = 0.5 * draw
        elif len(shape) >= 2:
            scale = branch_scale if key.endswith(BRANCH_ENDS) else 1.0
            state[key] = scale * draw / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):
            state[key] = 1 + 0.1 * draw
        else:
            state[key] = 0.05 * draw
    return state


def network_inputs() -> dict[str, torch.Tensor]:
    """The network-level inputs, float16-exact: UNet x, lq and timesteps; VQ image and latent, drawn in this order."""
    gen = torch.Generator().manual_seed(INPUT_SEED)

    def draw(shape, clamp=False):
        x = torch.randn(shape, generator=gen)
        return (x.clamp(-1, 1) if clamp else x).half().float()

    shape = UNET_BATCH["shape"]
    return {"unet_x": draw(shape), "unet_lq": draw(shape, clamp=True),
            "unet_t": torch.tensor(UNET_BATCH["timesteps"]), "vq_image": draw(VQ_IMAGE, clamp=True),
            "vq_z": draw(VQ_LATENT)}


def code_gaps(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Per latent vector (N, D): distance to the second-nearest code minus distance to the nearest (float64)."""
    two = torch.cdist(latents.double(), codebook.double()).topk(2, dim=1, largest=False).values
    return two[:, 1] - two[:, 0]


def choose_codebook(latents: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Code 0 at the latents' mean, TAIL_CODES codes 5 std away (their cells start 2.5 std out, where latents are
    sparse), the rest 50 std away: of ATTEMPTS seeded directions that use every tail code, the one with the largest
    smallest gap, which must exceed MIN_GAP. Returns the codebook and its seed."""
    centre, spread = latents.mean(0), latents.std(0).max()
    radius = torch.full((N_EMBED, 1), 50.0)
    radius[0], radius[1:1 + TAIL_CODES] = 0.0, 5.0
    best, best_gap, best_attempt = None, 0.0, -1
    for attempt in range(ATTEMPTS):
        dirs = torch.randn(N_EMBED, latents.shape[1], generator=torch.Generator().manual_seed(attempt))
        codebook = (centre + spread * radius * dirs / dirs.norm(dim=1, keepdim=True)).float()
        used = torch.cdist(latents, codebook).argmin(1).unique().numel()
        gap = float(code_gaps(latents, codebook).min())
        if gap > best_gap and used == 1 + TAIL_CODES:
            best, best_gap, best_attempt = codebook, gap, attempt
    if best_gap <= MIN_GAP:
        raise RuntimeError(f"no codebook with a gap above {MIN_GAP} in {ATTEMPTS} attempts (best {best_gap:.3g})")
    return best, best_attempt


# ---------------------------------------------------------------------------------------------- worker side


def install_stand_ins(repo: Path, part: str) -> None:
    """Make the official inference path importable on a CPU-only machine without its unused dependencies."""
    sys.path.insert(0, str(repo))
    timm = types.ModuleType("timm")
    timm.models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = torch.nn.Identity  # only built for drop_path > 0, never here
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (list, tuple)) else (x, x)
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    skimage = types.ModuleType("skimage")
    skimage.img_as_ubyte = skimage.img_as_float32 = None  # used by image-file helpers only
    torchvision = types.ModuleType("torchvision")
    torchvision.utils = types.ModuleType("torchvision.utils")
    torchvision.utils.save_image = None  # SinSR imports it for debugging
    datapipe = types.ModuleType("datapipe")
    datapipe.datasets = types.ModuleType("datapipe.datasets")
    datapipe.datasets.create_dataset = None  # folder inference only
    sys.modules.update({"timm": timm, "timm.models": timm.models, "timm.models.layers": layers, "skimage": skimage,
                        "torchvision": torchvision, "torchvision.utils": torchvision.utils, "datapipe": datapipe,
                        "datapipe.datasets": datapipe.datasets})
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    load = torch.load
    torch.load = lambda path, map_location=None, **kwargs: load(path, map_location="cpu", **kwargs)
    if part == "sinsr":
        torch.cuda.device_count = lambda: 1  # its BaseSampler asserts exactly one GPU


def unet_params(part: str) -> dict:
    """Official keyword arguments of the reduced network for a repository."""
    if part == "resshift":
        return dict(UNET)
    params = {k: v for k, v in UNET.items() if k != "lq_size"}
    return {**params, "in_channels": 6}


def layout(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def full_layouts(repo: Path, config: str) -> dict[str, dict[str, list[int]]]:
    """Keys and shapes of the full-size official networks of a config, built on the meta device."""
    from omegaconf import OmegaConf
    from utils import util_common

    configs = OmegaConf.load(repo / config)
    with torch.device("meta"):
        return {"unet": layout(util_common.instantiate_from_config(configs.model)),
                "vq": layout(util_common.instantiate_from_config(configs.autoencoder))}


def write_checkpoints(part: str, codebook: torch.Tensor) -> tuple[Path, Path]:
    """Reduced official networks with re-drawn weights (and the codebook), saved where the sampler reads them."""
    from ldm.models.autoencoder import VQModelTorch
    from models.unet import UNetModelSwin

    paths = WORK / f"{part}_unet.pth", WORK / f"{part}_vq.pth"
    for module, path in ((UNetModelSwin(**unet_params(part)), paths[0]), (VQModelTorch(**VQ), paths[1])):
        state = module.state_dict()
        state.update(redraw(layout(module), SEED, SAMPLER_BRANCH_SCALE))
        if "quantize.embedding.weight" in state:
            state["quantize.embedding.weight"] = codebook
        torch.save(state, path)
    return paths


class Recorder:
    """Patches torch's random functions: randn_like draws (float16-exact) are kept, any other draw is an error."""

    OTHERS = ("randn", "rand", "randint", "normal", "rand_like", "randint_like", "multinomial")

    def __init__(self):
        self.draws: list[torch.Tensor] = []
        self.saved = {name: getattr(torch, name) for name in ("randn_like", *self.OTHERS)}

    def __enter__(self):
        def randn_like(x, *args, **kwargs):
            draw = self.saved["randn_like"](x, *args, **kwargs).half().to(x.dtype)
            self.draws.append(draw.clone())
            return draw

        def forbidden(name):
            def call(*args, **kwargs):
                raise RuntimeError(f"the official sampler called torch.{name}: record it too")
            return call

        torch.randn_like = randn_like
        for name in self.OTHERS:
            setattr(torch, name, forbidden(name))
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(torch, name, fn)


def build_sampler(part: str, repo: Path, config: str, paths: tuple[Path, Path]):
    """The official sampler class of a repository on the reduced networks, no chopping, no fp16."""
    from omegaconf import OmegaConf

    configs = OmegaConf.load(repo / config)
    configs.model.params = OmegaConf.create(unet_params(part))
    configs.model.ckpt_path = str(paths[0])
    configs.autoencoder.params = OmegaConf.create(VQ)
    configs.autoencoder.ckpt_path = str(paths[1])
    configs.autoencoder.use_fp16 = False
    big = 10**6  # chop_size above any input: sample_func sees the whole image
    if part == "resshift":
        from sampler import ResShiftSampler

        return ResShiftSampler(configs, sf=4, use_amp=False, chop_size=big, chop_stride=big, chop_bs=1,
                               padding_offset=PAD, seed=SAMPLER_SEED)
    from sampler import Sampler

    return Sampler(configs, chop_size=big, chop_stride=big, chop_bs=1, desired_min_size=PAD, use_fp16=False,
                   seed=SAMPLER_SEED)


def lr_image(crop) -> torch.Tensor:
    """A (1, 3, h, w) uint8 crop of a training image (never a benchmark one)."""
    import numpy as np
    from PIL import Image

    name, top, left, h, w = crop
    image = np.asarray(Image.open(ROOT.parent / "shared/data/train/T91" / name).convert("RGB"))
    return torch.from_numpy(image[top:top + h, left:left + w].copy()).permute(2, 0, 1)[None]


def run_sampler(part: str, sampler, lr: torch.Tensor) -> dict:
    """sample_func on the LR in [-1, 1], as _process_per_image calls it (without chopping); the image in [0, 1]."""
    quantized, timesteps = [], []
    quantize, forward = sampler.autoencoder.quantize.forward, sampler.model.forward

    def record_quantize(z, *args, **kwargs):
        quantized.append(z.detach().clone())
        return quantize(z, *args, **kwargs)

    def record_forward(x, t, *args, **kwargs):
        timesteps.append(t.tolist())
        return forward(x, t, *args, **kwargs)

    sampler.autoencoder.quantize.forward, sampler.model.forward = record_quantize, record_forward
    y0 = (lr.float() / 255 - 0.5) / 0.5
    with Recorder() as recorder, torch.no_grad():
        kwargs = dict(one_step=True) if part == "sinsr" else dict(mask=None)  # as _process_per_image
        image = sampler.sample_func(y0, noise_repeat=False, **kwargs) * 0.5 + 0.5
    diffusion = sampler.base_diffusion
    return dict(image=image, draws=recorder.draws, quantized=quantized, timesteps=timesteps,
                etas=diffusion.etas.tolist(), kappa=diffusion.kappa, scale_factor=diffusion.scale_factor,
                normalize_input=diffusion.normalize_input, latent_flag=diffusion.latent_flag, sf=diffusion.sf,
                num_timesteps=diffusion.num_timesteps)


def worker(part: str, repo: Path, codebook_path: Path, result_path: Path) -> None:
    """One repository's recordings: its full-size layout, network-level outputs (ResShift), its sampler runs."""
    torch.set_num_threads(1)
    install_stand_ins(repo, part)
    codebook = torch.load(codebook_path)
    paths = write_checkpoints(part, codebook)
    result = {"layout": full_layouts(repo, next(c for p, c, _ in RUNS.values() if p == part)), "runs": {}}
    if part == "resshift":
        from ldm.models.autoencoder import VQModelTorch
        from models.unet import UNetModelSwin

        net, vq = UNetModelSwin(**unet_params(part)), VQModelTorch(**VQ)
        state = net.state_dict()
        state.update(redraw(layout(net), SEED))  # full-strength branches; the VQ is the sampler runs' one
        net.load_state_dict(state)
        vq.load_state_dict(torch.load(paths[1]))
        x = network_inputs()
        with torch.no_grad():
            result["network"] = {"unet_out": net.eval()(x["unet_x"], x["unet_t"], lq=x["unet_lq"]),
                                 "vq_latent": vq.eval().encode(x["vq_image"]), "vq_out": vq.decode(x["vq_z"])}
    for name, (owner, config, crop) in RUNS.items():
        if owner == part:
            lr = lr_image(crop)
            result["runs"][name] = {"lr": lr, **run_sampler(part, build_sampler(part, repo, config, paths), lr)}
    torch.save(result, result_path)


# ---------------------------------------------------------------------------------------------- orchestrator


def record_pass(repos: dict[str, Path], codebook: torch.Tensor, tag: str) -> dict:
    torch.save(codebook, WORK / f"codebook_{tag}.pt")
    results = {}
    for part, repo in repos.items():
        path = WORK / f"{part}_{tag}.pt"
        subprocess.run([sys.executable, __file__, "--worker", part, "--repo", str(repo),
                        "--codebook", str(WORK / f"codebook_{tag}.pt"), "--result", str(path)], check=True)
        results[part] = torch.load(path)
    return results


def quantizer_inputs(results: dict) -> torch.Tensor:
    """Every latent vector the decoder quantises: the network-level latent and each run's final latent."""
    runs = [run for result in results.values() for run in result["runs"].values()]
    zs = [network_inputs()["vq_z"]] + [z for run in runs for z in run["quantized"]]
    return torch.cat([z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) for z in zs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resshift", type=Path, help="an extracted github:zsyOAOA/ResShift")
    parser.add_argument("--sinsr", type=Path, help="an extracted github:wyf0912/SinSR")
    parser.add_argument("--worker", choices=("resshift", "sinsr"), help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--codebook", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.repo, args.codebook, args.result)
    from safetensors.torch import save_file

    WORK.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    repos = {"resshift": args.resshift, "sinsr": args.sinsr}
    # 1. a first pass collects the latents the decoder quantises (they do not depend on the codebook)
    first = record_pass(repos, torch.randn(N_EMBED, 3, generator=torch.Generator().manual_seed(0)), "first")
    latents = quantizer_inputs(first)
    codebook, attempt = choose_codebook(latents)
    # 2. the recording pass, with the codebook that keeps every latent away from a decision boundary
    final = record_pass(repos, codebook, "final")
    again = quantizer_inputs(final)
    if not torch.equal(latents, again):
        raise RuntimeError("the official runs are not deterministic: the quantised latents changed between passes")
    gap = float(code_gaps(again, codebook).min())
    layouts = {part: r["layout"] for part, r in final.items()}
    net = final["resshift"]["network"]
    inputs = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in network_inputs().items()}
    save_file({**inputs, **{k: v.contiguous() for k, v in net.items()}, "codebook": codebook},
              OUT / "network.safetensors")
    facts = {}
    for part in final.values():
        for name, run in part["runs"].items():
            tensors = {"lr": run["lr"].contiguous(), "z_final": run["quantized"][-1].contiguous(),
                       "image": (run["image"].clamp(0, 1) * 65535).round().to(torch.uint16).contiguous()}
            tensors.update({f"draw_{i:02d}": d.half().contiguous() for i, d in enumerate(run["draws"])})
            save_file(tensors, OUT / f"{name}.safetensors")
            facts[name] = {k: run[k] for k in ("timesteps", "etas", "kappa", "scale_factor", "normalize_input",
                                                "latent_flag", "sf", "num_timesteps")}
            facts[name]["draw_shapes"] = [list(d.shape) for d in run["draws"]]
            facts[name]["config"] = RUNS[name][1]
    config = dict(seed=SEED, input_seed=INPUT_SEED, sampler_seed=SAMPLER_SEED, unet=OURS_UNET, vq=OURS_VQ,
                  official_unet=UNET, official_vq=VQ, pad=PAD, unet_batch=UNET_BATCH, min_code_gap=gap,
                  sampler_branch_scale=SAMPLER_BRANCH_SCALE,
                  codebook_attempt=attempt, runs=facts,
                  sinsr_layout_equals_resshift=layouts["sinsr"] == layouts["resshift"])
    (OUT / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (OUT / "official_layout.json").write_text(json.dumps(layouts["resshift"]) + "\n")
    print(f"wrote {OUT}: min code gap {gap:.3g} (attempt {attempt}), "
          f"SinSR layout == ResShift layout: {config['sinsr_layout_equals_resshift']}")


if __name__ == "__main__":
    main()
