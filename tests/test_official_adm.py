"""guided-diffusion ADM: layouts of every release, flag inference, strict loads, `shiftsr convert adm`, and the
converted prior against the official code, through upscale (noise injection), search-bc and upscale --bc.

Fixtures: tests/fixtures/official/adm/, written by scripts/official_fixtures/adm/record.py from openai/guided-diffusion.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

import shiftsr
from shiftsr.boundary import apply_boundary, load_boundary
from shiftsr.bundle import BundleSettings, SamplerDefaults, read_settings
from shiftsr.cli import main
from shiftsr.convert import convert
from shiftsr.convert.adm import (DEFAULT_FLAGS, RELEASES, describe, infer_config, load_adm, release_config,
                                 release_line)
from shiftsr.convert.checkpoint import CheckpointError
from shiftsr.methods import METHODS
from shiftsr.networks.adm_unet import ADMUNet
from shiftsr.pipeline import network_denoiser
from shiftsr.processes import VPProcess

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official" / "adm"
META = json.loads((FIXTURES / "official.json").read_text())
RECORDED = load_file(FIXTURES / "official.safetensors")
README_ENTRY = {"lsun_bedroom": "lsun", "lsun_cat": "lsun", "lsun_horse": "lsun"}  # one MODEL_FLAGS line for all
# flags that decide the network or the diffusion; the rest (use_fp16, use_checkpoint, ...) change neither
MODEL_FLAGS = ("image_size", "small_size", "num_channels", "num_res_blocks", "num_heads", "num_heads_upsample",
               "num_head_channels", "attention_resolutions", "dropout", "class_cond", "use_scale_shift_norm",
               "resblock_updown", "use_new_attention_order", "learn_sigma", "noise_schedule")


def _record_module():
    spec = importlib.util.spec_from_file_location("adm_record", ROOT / "scripts/official_fixtures/adm/record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


redraw = _record_module().redraw


pytestmark = pytest.mark.usefixtures("one_thread")


def _meta_state(config: dict) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return ADMUNet(**config).state_dict()


def _layout(state: dict[str, torch.Tensor]) -> dict:
    lines = "\n".join(f"{k} {list(v.shape)}" for k, v in sorted(state.items()))
    return {"keys": len(state), "parameters": sum(v.numel() for v in state.values()),
            "sha256": hashlib.sha256(lines.encode()).hexdigest()}


def _case_net(name: str) -> ADMUNet:
    """Our module at a recorded reduced config, with the recording's re-drawn weights."""
    net = ADMUNet(**META["cases"][name]).eval()
    net.load_state_dict(redraw({k: v.shape for k, v in net.state_dict().items()}, META["seeds"][name]))
    return net


def test_256_uncond_full_size_layout_and_flags():
    state = _meta_state(release_config(RELEASES["256x256_diffusion_uncond"]))
    assert len(state) == 566 and sum(v.numel() for v in state.values()) == 552_814_086
    info = describe(state)
    assert info.config == release_config(RELEASES["256x256_diffusion_uncond"])
    assert info.releases[0] == "256x256_diffusion_uncond" and set(info.releases[1:]) == {
        "lsun_bedroom", "lsun_cat", "lsun_horse", "lsun_horse_nodropout"}
    assert (info.config["num_head_channels"], info.config["use_new_attention_order"]) == (64, False)
    assert (info.noise_schedule, info.image_size, info.size_multiple, info.learn_sigma) == ("linear", 256, 32, True)
    assert info.process == dict(kind="vp", beta_schedule="linear", num_train_timesteps=1000, beta_start=1e-4,
                                beta_end=0.02)


@pytest.mark.parametrize("name", list(RELEASES))
def test_release_layout_matches_official_and_flags_come_back(name):
    recorded = META["releases"][README_ENTRY.get(name, name)]
    flags = dict(recorded["flags"])
    if "large_size" in flags:
        flags["image_size"] = flags.pop("large_size")
    ours = {**DEFAULT_FLAGS, **RELEASES[name]}
    assert {k: ours[k] for k in MODEL_FLAGS if k in flags} == {k: flags[k] for k in MODEL_FLAGS if k in flags}
    assert not flags["rescale_timesteps"] and not flags["predict_xstart"] and flags["diffusion_steps"] == 1000
    config = release_config(RELEASES[name])
    state = _meta_state(config)
    assert _layout(state) == {k: recorded[k] for k in ("keys", "parameters", "sha256")}
    inferred, matches = infer_config(state)
    assert inferred == {**config, "dropout": 0.0} and name in matches
    assert describe(state).noise_schedule == RELEASES[name]["noise_schedule"]


VARIANTS = {  # not released: the keys fix the layout, the caller names the heads and the attention order
    "conv-resample": dict(resblock_updown=False, use_scale_shift_norm=False, num_classes=7),
    "avg-pool": dict(resblock_updown=False, conv_resample=False, num_res_blocks=1),
    "one-level": dict(channel_mult=(2,), attention_resolutions=(1,), num_res_blocks=3, resblock_updown=False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_unreleased_layouts_need_the_hidden_flags(variant):
    config = dict(in_channels=3, low_res_channels=0, model_channels=32, out_channels=3, num_res_blocks=2,
                  attention_resolutions=(2, 4), dropout=0.0, channel_mult=(1, 2, 2), conv_resample=True,
                  num_classes=None, num_heads=2, num_head_channels=-1, num_heads_upsample=-1,
                  use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=True)
    config.update(VARIANTS[variant])
    state = _meta_state(config)
    with pytest.raises(CheckpointError, match="pass num_heads or num_head_channels and use_new_attention_order"):
        infer_config(state, "x.pt")
    hidden = dict(num_heads=2, use_new_attention_order=True)
    inferred, matches = infer_config(state, **hidden)
    assert matches == () and inferred == config
    with pytest.raises(CheckpointError, match="x.pt: .*pass noise_schedule"):
        describe(state, "x.pt", **hidden)
    assert describe(state, noise_schedule="cosine", **hidden).process["beta_schedule"] == "cosine"


@pytest.mark.parametrize("name", list(META["cases"]))
def test_module_reproduces_official_outputs(name):
    net = _case_net(name)
    kwargs = {k: RECORDED[f"{name}.{k}"] for k in ("y", "low_res") if f"{name}.{k}" in RECORDED}
    with torch.no_grad():
        out = net(RECORDED[f"{name}.x"], torch.tensor(META["timesteps"], dtype=torch.float32), **kwargs)
    torch.testing.assert_close(out, RECORDED[f"{name}.model_out"], atol=1e-5, rtol=0)


def test_checks_and_config_round_trip(tmp_path):
    net = _case_net("classes")
    x, t, y = RECORDED["classes.x"], torch.tensor(META["timesteps"]), RECORDED["classes.y"]
    with pytest.raises(ValueError, match="class-conditional"):
        net(x, t)
    with pytest.raises(ValueError, match="multiples of 2"):
        net(x[..., :31], t, y)
    net.save_pretrained(tmp_path, safe_serialization=True)
    with torch.no_grad():
        torch.testing.assert_close(ADMUNet.from_pretrained(tmp_path)(x, t, y), RECORDED["classes.model_out"],
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vp_process_matches_official_alphas_cumprod(schedule):
    index = torch.arange(1000, dtype=torch.float64)
    ours = VPProcess(beta_schedule=schedule).alphas_cumprod(index + 1)
    assert (ours - RECORDED[f"alphas_cumprod_{schedule}"]).abs().max().item() < 1e-12



CONVERTED_FLAGS = {  # the hidden flags of the reduced cases (no release has their layouts)
    "uncond": dict(num_heads=1, num_head_channels=16, use_new_attention_order=False, noise_schedule="linear"),
    "classes": dict(num_heads=2, use_new_attention_order=True, noise_schedule="linear"),
    "upsampler": dict(num_heads=4, use_new_attention_order=False, noise_schedule="linear"),
}


def _flag_args(flags: dict) -> list[str]:
    return [arg for k, v in flags.items() for arg in ("--flag", f"{k}={str(v).lower() if type(v) is bool else v}")]


def _save_official(name: str, path: Path, edit=None) -> Path:
    """A reduced case's re-drawn weights as an official guided-diffusion .pt: a plain state dict."""
    state = _case_net(name).state_dict()
    if edit is not None:
        edit(state)
    torch.save(state, path)
    return path


def _convert(checkpoint: Path, out: Path, flags: dict):
    return CliRunner().invoke(main, ["convert", "adm", "--checkpoint", str(checkpoint), "-o", str(out),
                                     *_flag_args(flags)])


@pytest.fixture(scope="module")
def uncond_file(tmp_path_factory):
    return _save_official("uncond", tmp_path_factory.mktemp("adm") / "model.pt")


@pytest.fixture(scope="module")
def bundle(uncond_file):
    """`shiftsr convert adm` of the reduced unconditional checkpoint."""
    out = uncond_file.parent / "adm-prior"
    result = _convert(uncond_file, out, CONVERTED_FLAGS["uncond"])
    assert result.exit_code == 0, result.output
    return out


def test_load_adm_strict_and_official_output(uncond_file):
    net, info = load_adm(uncond_file, **CONVERTED_FLAGS["uncond"])
    assert info.config == META["cases"]["uncond"] | {"attention_resolutions": (2, 4), "channel_mult": (1, 2, 2)}
    with torch.no_grad():
        out = net(RECORDED["uncond.x"], torch.tensor(META["timesteps"]))
    torch.testing.assert_close(out, RECORDED["uncond.model_out"], atol=1e-5, rtol=0)


def test_converted_settings_and_card(bundle):
    settings = read_settings(bundle)
    assert settings == BundleSettings(
        network="ADMUNet", process=dict(kind="vp", beta_schedule="linear", num_train_timesteps=1000, beta_start=1e-4,
                                        beta_end=0.02),
        scale=4, prediction_type="epsilon", timestep="index", output_channels=3, clip_denoised=True,
        preprocessor="bicubic", codec={"kind": "identity"}, multiple=4, dtypes=["fp32", "bf16"],
        sampler=SamplerDefaults(method="noise-injection", steps=10, order=1, samples=1))
    card = (bundle / "MODEL_CARD.md").read_text()
    for fact in ("openai/guided-diffusion @ 22e0df8", "MIT", "research only", "none: an unreleased layout",
                 "get_named_beta_schedule('linear', 1000)", "0-based index t - 1", "clip_denoised True",
                 "shiftsr convert adm --checkpoint model.pt -o FOLDER --flag num_heads=1 --flag num_head_channels=16 "
                 "--flag use_new_attention_order=false --flag noise_schedule=linear"):
        assert fact in card, fact
    assert all(line.count("|") == 3 for line in card.splitlines() if line.startswith("|"))  # one table cell each


def test_card_names_the_release_by_file_name_or_says_why_not():
    releases = describe(_meta_state(release_config(RELEASES["256x256_diffusion_uncond"]))).releases
    assert release_line(Path("lsun_cat.pt"), releases).startswith("`lsun_cat` (its file name")
    assert release_line(Path("prior.pt"), releases).startswith("one of 256x256_diffusion_uncond, lsun_bedroom")
    only = describe(_meta_state(release_config(RELEASES["64x64_diffusion"]))).releases
    assert release_line(Path("prior.pt"), only) == "`64x64_diffusion` (the only release with these keys and shapes)"


LAYOUT_EPS = 1e-5  # |eps| channels-last against the official contiguous layout: <= 6e-6, measured
DDIM_TOLERANCE = 2.5e-4  # that rounding after the 5 steps of the random net: 1.3e-4 (1.6e-4 on 2 threads)


def _layout_tolerance(process, t: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """Per image: tol + (s / a) LAYOUT_EPS. The pipeline runs the network channels-last, whose float32 kernels sum in
    another order than the official contiguous ones (|eps| differs by <= 6e-6, measured); x0 = (x - s eps) / a
    multiplies that by s / a = 157 at t = 1000."""
    a, _, s = process.coefficients(t)
    return (tol + s / a * LAYOUT_EPS).float().reshape(-1, 1, 1, 1)


def _unclipped(pipe):
    """The bundle's denoiser with clip_denoised off: guided-diffusion's clip_denoised=False."""
    return network_denoiser(pipe.net, dataclasses.replace(pipe.settings, clip_denoised=False), pipe.process,
                            dtype=torch.float32)


def _assert_relative(ours: torch.Tensor, official: torch.Tensor, tol: float) -> None:
    """Unclipped x0 estimates reach hundreds and float32 rounding grows with them: per leading index,
    max |ours - official| <= tol * max(1, max |official|)."""
    for a, b in zip(ours, official):
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def test_bundle_denoiser_reproduces_official_pred_xstart(bundle):
    """pipe.denoiser, the converted bundle's x0 denoiser, against p_mean_variance's pred_xstart (clipped and not)."""
    pipe = shiftsr.load(bundle, device="cpu")
    t = torch.tensor(META["timesteps"], dtype=torch.float32) + 1  # shiftsr time = official index + 1
    x = RECORDED["uncond.x"]
    with torch.no_grad():
        clipped, unclipped = pipe.denoiser(x, t, None), _unclipped(pipe)(x, t, None)
    error = (clipped - RECORDED["uncond.pred_xstart_clipped"]).abs().amax(dim=(1, 2, 3), keepdim=True)
    assert (error <= _layout_tolerance(pipe.process, t)).all(), error.flatten()
    assert error.flatten()[:2].max() <= 1e-4  # s / a <= 2.5: 1e-4 holds as it is
    _assert_relative(unclipped, RECORDED["uncond.pred_xstart_unclipped"], tol=1e-4)


def test_bundle_ddim_reproduces_official_5_step_run(bundle):
    """The noise-injection row's sampler (DDIM, eta 0) with pipe.denoiser on the official respaced grid from x_T.

    The official run is not a noise injection from a start: it begins at x_T = the noise itself at index 999, on
    the grid space_timesteps(1000, "5"), where pipe.run would start at a(t) x_up + s(t) eps on its uniform grid.
    """
    pipe = shiftsr.load(bundle, device="cpu")
    ts = [float(i) + 1 for i in reversed(RECORDED["timestep_map"].tolist())] + [0.0]
    assert ts == [1000.0, 750.0, 501.0, 251.0, 1.0, 0.0]
    row = METHODS["noise-injection"]
    for denoiser, tag in ((pipe.denoiser, "clipped"), (_unclipped(pipe), "unclipped")):
        states = []
        out = row.sample(denoiser, RECORDED["uncond.noise"], ts, process=pipe.process, y=None, cond=None,
                         order=None, generator=None, callback=lambda info: states.append(info["x"]))
        trajectory = torch.stack(states[1:] + [out])  # the state after each of the 5 steps
        official = RECORDED[f"uncond.ddim_{tag}"]
        if tag == "clipped":
            torch.testing.assert_close(trajectory, official, atol=DDIM_TOLERANCE, rtol=0)
        else:
            _assert_relative(trajectory, official, tol=DDIM_TOLERANCE)


@pytest.mark.slow  # bf16 autocast on this CPU: 9 s
def test_bf16_against_fp32(bundle):
    """The dtypes the bundle lists, measured: x4 noise injection of a 16 px LR in bf16 (CPU autocast) against fp32."""
    lr = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0)),
                                         size=(16, 16), mode="bicubic").clamp(0, 1)
    runs = [shiftsr.load(bundle, device="cpu", dtype=dtype).run(lr, seed=0).image
            for dtype in (torch.float32, torch.bfloat16)]
    difference = (runs[0] - runs[1]).abs() * 255
    assert difference.mean() < 0.5 and difference.max() < 10  # measured: 0.29 and 6.6 (of 255)


def _png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((width, height), Image.BICUBIC).save(path)
    return path


def _upscale(*args) -> list[dict]:
    result = CliRunner().invoke(main, ["upscale", *map(str, args), "--device", "cpu", "--json", "-q"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_cli_upscale_by_noise_injection_any_scale_and_tiled(bundle, tmp_path):
    lr = _png(tmp_path / "lr.png", 10, 6)
    (x4,) = _upscale(lr, "-m", bundle, "-s", 4, "-o", tmp_path / "x4")
    assert (x4["method"], x4["t_start"], x4["steps"], x4["nfe"]) == ("noise-injection", 400.0, 10, 10)
    assert x4["size_out"] == [40, 24] and Image.open(x4["output"]).size == (40, 24)
    (odd,) = _upscale(lr, "-m", bundle, "-s", 2.5, "-o", tmp_path / "x2.5")  # 25 x 15, padded to 28 x 16 inside
    assert odd["size_out"] == [25, 15] and Image.open(odd["output"]).size == (25, 15)
    assert odd["t_start"] == round((0.2 + 0.2 * math.log2(1.25)) * 1000)  # Diff-SR fractions, at a whole step
    (tiled,) = _upscale(lr, "-m", bundle, "-s", 4, "-t", 4, "-o", tmp_path / "tiled")  # 16 px tiles, overlap 8
    assert tiled["size_out"] == [40, 24] and tiled["nfe"] == 10
    whole, parts = (np.asarray(Image.open(r["output"]), dtype=np.float64) for r in (x4, tiled))
    assert 0 < np.abs(whole - parts).max()  # the tiles were denoised apart


def test_search_bc_on_the_adm_prior_then_upscale_with_it(bundle, tmp_path):
    """BCSR on the ADM prior: search-bc over 2 reference pairs, 2 candidates; upscale --bc replays its start."""
    for folder in ("HR", "LR"):
        (tmp_path / folder).mkdir()
    for k, name in enumerate(("a", "b")):
        Image.open(_png(tmp_path / "HR" / f"{name}.png", 32, 32, seed=k)).resize((8, 8), Image.BICUBIC).save(
            tmp_path / "LR" / f"{name}.png")
    out = tmp_path / "adm.bc.safetensors"
    search = CliRunner().invoke(main, ["search-bc", "-m", str(bundle), "--hr", str(tmp_path / "HR"), "--lr",
                                       str(tmp_path / "LR"), "--candidates", "2", "--metric", "psnr", "--device",
                                       "cpu", "-o", str(out), "-q"])
    assert search.exit_code == 0, search.output
    pipe = shiftsr.load(bundle, device="cpu")
    bc = load_boundary(out, pipe)
    assert (bc.kind, bc.method, bc.steps, bc.meta["shape"], len(bc.meta["scores"])) == (
        "noise", "noise-injection", 10, [3, 32, 32], 2)
    image = tmp_path / "LR" / "a.png"
    (record,) = _upscale(image, "-m", bundle, "--bc", out, "-o", tmp_path / "up")
    assert record["nfe"] == 10 and record["size_out"] == [32, 32]
    expected = apply_boundary(pipe, bc, np.asarray(Image.open(image))).image[0]
    written = torch.from_numpy(np.array(Image.open(record["output"]))).permute(2, 0, 1) / 255
    assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert bc.score == pytest.approx(max(bc.meta["scores"]))


class RunsCode:
    """A pickle that would call print on load: weights_only refuses it before anything runs."""

    def __reduce__(self):
        return print, ("this ran",)


BAD_CHECKPOINTS = {
    "missing key": (lambda s: s.pop("output_blocks.1.0.skip_connection.weight"),
                    "missing output_blocks.1.0.skip_connection.weight"),
    "unknown prefix": (lambda s: s.update({f"model.{k}": s.pop(k) for k in list(s)}),
                       "no time_embed.0.weight .its keys carry an unknown prefix 'model.'"),
    "wrong shape": (lambda s: s.update({"middle_block.1.qkv.bias": torch.zeros(5)}),
                    r"wrong shape middle_block.1.qkv.bias \(5,\)"),
    "unexpected key": (lambda s: s.update({"label_emb.weight_extra": torch.zeros(1)}),
                       "unexpected label_emb.weight_extra"),
    "code-running pickle": (lambda s: s.update({"extra": RunsCode()}), "refused: unpickling it would call"),
}


def _assert_refused(result, out: Path, named: str) -> None:
    """exit 2, one stderr line `shiftsr: error: ...` matching `named`, and nothing written."""
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert re.search(named, lines[0]) and lines[0].startswith("shiftsr: error: "), lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_cli_refuses_bad_checkpoints(tmp_path, case):
    edit, named = BAD_CHECKPOINTS[case]
    path = _save_official("uncond", tmp_path / "bad.pt", edit)
    out = tmp_path / "out"
    _assert_refused(_convert(path, out, CONVERTED_FLAGS["uncond"]), out, f"{re.escape(str(path))}: .*{named}")


@pytest.mark.parametrize("drop, named", [
    (("num_heads", "num_head_channels"), "pass num_heads or num_head_channels$"),
    (("use_new_attention_order",), "pass use_new_attention_order$"),
    (("noise_schedule",), r"pass noise_schedule \(linear or cosine\)"),
])
def test_cli_names_the_flag_no_release_fixes(uncond_file, tmp_path, drop, named):
    flags = {k: v for k, v in CONVERTED_FLAGS["uncond"].items() if k not in drop}
    out = tmp_path / "out"
    _assert_refused(_convert(uncond_file, out, flags), out, f"{re.escape(str(uncond_file))}: .*{named}")


@pytest.mark.parametrize("flags, named", [
    ({"num_heads": "four"}, "--flag num_heads: expected int, got 'four'"),
    ({"heads": 2}, "--flag heads: unknown for adm; allowed: num_heads, "),
    ({"class_label": 3}, "--flag class_label: .* is not class-conditional"),
])
def test_cli_refuses_bad_flags(uncond_file, tmp_path, flags, named):
    out = tmp_path / "out"
    _assert_refused(_convert(uncond_file, out, {**CONVERTED_FLAGS["uncond"], **flags}), out, named)


def test_class_conditional_model_for_one_label(tmp_path):
    """A class label folded into time_embed.2.bias gives the official class-conditional output for that label."""
    path = _save_official("classes", tmp_path / "classes.pt")
    out = tmp_path / "out"
    _assert_refused(_convert(path, out, CONVERTED_FLAGS["classes"]), out,
                    r"class-conditional \(10 classes in label_emb.weight\): pass --flag class_label=N")
    x, t, labels = RECORDED["classes.x"], torch.tensor(META["timesteps"]), RECORDED["classes.y"]
    for row, label in enumerate(labels.tolist()):
        net = convert("adm", path, **CONVERTED_FLAGS["classes"], class_label=label).net
        assert net.config.num_classes is None
        with torch.no_grad():
            torch.testing.assert_close(net(x[row:row + 1], t[row:row + 1]), RECORDED["classes.model_out"][row:row + 1],
                                       atol=1e-5, rtol=0)
    result = _convert(path, out, {**CONVERTED_FLAGS["classes"], "class_label": labels[0].item()})
    assert result.exit_code == 0, result.output
    assert f"class {labels[0].item()} folded into time_embed.2.bias" in (out / "MODEL_CARD.md").read_text()
    assert shiftsr.load(out, device="cpu").methods == ("noise-injection",)


def test_upsampler_is_refused(tmp_path):
    path = _save_official("upsampler", tmp_path / "64_256_upsampler.pt")
    out = tmp_path / "out"
    _assert_refused(_convert(path, out, CONVERTED_FLAGS["upsampler"]), out,
                    f"{re.escape(str(path))}: an ADM upsampler .* conditioned on a low_res image")

