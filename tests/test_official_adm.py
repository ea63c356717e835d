"""guided-diffusion ADM: layouts of every release, flag inference, strict loads, and parity with the official code.

Fixtures: tests/fixtures/official/adm/, written by scripts/official_fixtures/adm/record.py from openai/guided-diffusion.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shiftsr.convert.adm import (DEFAULT_FLAGS, RELEASES, ADMCheckpoint, describe, epsilon_fn, infer_config,
                                 load_adm, release_config)
from shiftsr.convert.checkpoint import CheckpointError
from shiftsr.denoisers import PredictionDenoiser
from shiftsr.networks.adm_unet import ADMUNet
from shiftsr.processes import VPProcess
from shiftsr.samplers import sample_ddim

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


@pytest.fixture(autouse=True)
def one_thread():
    """The recording ran on one thread; so run, our module is bit-identical to the official one. With more threads
    the float32 kernels reorder sums (about 2e-6 on the model output), and x0 = (x - s eps) / a multiplies that by
    s / a = 156 at t = 1000."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="module")
def uncond_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("adm") / "model.pt"
    torch.save(_case_net("uncond").state_dict(), path)
    return path


UNCOND_FLAGS = dict(num_heads=1, num_head_channels=16, use_new_attention_order=False, noise_schedule="linear")


def test_load_adm_strict_and_official_output(uncond_file):
    net, info = load_adm(uncond_file, **UNCOND_FLAGS)
    assert info.config == META["cases"]["uncond"] | {"attention_resolutions": (2, 4), "channel_mult": (1, 2, 2)}
    with torch.no_grad():
        out = net(RECORDED["uncond.x"], torch.tensor(META["timesteps"]))
    torch.testing.assert_close(out, RECORDED["uncond.model_out"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("output_blocks.1.0.skip_connection.weight"), "missing output_blocks.1.0.skip_connection.weight"),
    (lambda s: s.update({"label_emb.weight_extra": torch.zeros(1)}), "unexpected label_emb.weight_extra"),
    (lambda s: s.update({"middle_block.1.qkv.bias": torch.zeros(5)}), r"wrong shape middle_block.1.qkv.bias \(5,\)"),
    (lambda s: s.pop("time_embed.0.weight"), "no time_embed.0.weight"),
])
def test_bad_checkpoints_name_the_key(uncond_file, tmp_path, edit, named):
    state = torch.load(uncond_file, weights_only=True)
    edit(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=f"{path}: .*{named}"):
        load_adm(path, **UNCOND_FLAGS)


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


def _assert_close(ours: torch.Tensor, official: torch.Tensor, *, clipped: bool, tol: float = 1e-4) -> None:
    """Clipped: max |ours - official| <= tol. Unclipped x0 estimates reach hundreds and float32 rounding grows with
    them: per leading index, max |ours - official| <= tol * max(1, max |official|)."""
    if clipped:
        torch.testing.assert_close(ours, official, atol=tol, rtol=0)
    for a, b in zip(ours, official):
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def _denoiser(clip: bool):
    """shiftsr's epsilon denoiser on the ADM net; clip=True clamps x0 as the official clip_denoised does."""
    process = VPProcess(beta_schedule="linear")
    denoiser = PredictionDenoiser(epsilon_fn(_case_net("uncond")), process=process, prediction_type="epsilon",
                                  timestep_fn=ADMCheckpoint.network_time)
    return (lambda x, t, cond: denoiser(x, t, cond).clamp(-1, 1)) if clip else denoiser, process


@pytest.mark.parametrize("clip", [False, True], ids=["unclipped", "clipped"])
def test_denoiser_and_ddim_reproduce_official(clip):
    tag = "clipped" if clip else "unclipped"
    denoiser, process = _denoiser(clip)
    t = torch.tensor(META["timesteps"], dtype=torch.float32) + 1  # shiftsr time = official index + 1
    with torch.no_grad():
        x0 = denoiser(RECORDED["uncond.x"], t, None)
    _assert_close(x0, RECORDED[f"uncond.pred_xstart_{tag}"], clipped=clip)
    # the official respaced grid (indices 999, 749, 500, 250, 0), then the clean state
    ts = [float(i) + 1 for i in reversed(RECORDED["timestep_map"].tolist())] + [0.0]
    assert ts == [1000.0, 750.0, 501.0, 251.0, 1.0, 0.0]
    states = []
    out = sample_ddim(denoiser, RECORDED["uncond.noise"], ts, process=process, eta=0.0,
                      callback=lambda info: states.append(info["x"]))
    trajectory = torch.stack(states[1:] + [out])  # the state after each of the 5 steps
    _assert_close(trajectory, RECORDED[f"uncond.ddim_{tag}"], clipped=clip)
