"""DoSSR's official checkpoint conversion against the official code's recorded outputs (official_fixtures/dossr)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from shiftsr.convert.checkpoint import CheckpointError
from shiftsr.convert.dossr import PROMPT_TOKENS, convert_dossr, dossr_process, read_dossr
from shiftsr.denoisers import PredictionDenoiser, ddpm_index
from shiftsr.networks.dossr_ldm import DoSSRControlLDM
from shiftsr.processes import VPProcess, start_state
from shiftsr.samplers import Draws, dossr_timesteps, sample_dossr

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official" / "dossr"
RECORD = ROOT / "scripts" / "official_fixtures" / "dossr" / "record.py"
# official keys per part of the released checkpoint (2,348 loaded) and the 29 no official forward reads
FULL_LOADED = {"unet": 686, "controlnet": 324, "vae": 248, "cond_encoder": 108, "preprocessor": 702, "text": 280}
TEXT_UNUSED = ["logit_scale", "text_projection"] + [f"transformer.resblocks.23.{name}" for name in (
    "attn.in_proj_bias", "attn.in_proj_weight", "attn.out_proj.bias", "attn.out_proj.weight", "ln_1.bias",
    "ln_1.weight", "ln_2.bias", "ln_2.weight", "mlp.c_fc.bias", "mlp.c_fc.weight", "mlp.c_proj.bias",
    "mlp.c_proj.weight")]


def _redraw():
    """record.py's redraw: the same seeded re-draw of every parameter that the official run used."""
    spec = importlib.util.spec_from_file_location("dossr_record", RECORD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.redraw


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread, as the official run: these small convolutions slow down many times on a shared 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official():
    meta = json.loads((FIXTURES / "official.json").read_text())
    return meta, load_file(FIXTURES / "official.safetensors")


@pytest.fixture(scope="module")
def reduced_state(official):
    meta, tensors = official
    state = _redraw()(meta["parameters"], meta["seed"])
    state.update({k: tensors[f"buffer.{k}"] for k in meta["buffers"]})
    return state


def _convert(official, state):
    meta, _ = official
    return convert_dossr(state, "reduced.ckpt", original_config=meta["original_config"],
                         text_config=meta["text_config"])


@pytest.fixture(scope="module")
def converted(official, reduced_state):
    return _convert(official, reduced_state)


def test_full_size_key_set_is_converted_completely():
    keys = json.loads((FIXTURES / "full_keys.json").read_text())
    state = {k: torch.empty(shape, device="meta") for k, shape in keys}
    result = convert_dossr(state, "dossr_default.ckpt")
    assert len(state) == 2377
    assert result.loaded == FULL_LOADED
    assert result.unused[:len(TEXT_UNUSED)] == ["cond_stage_model.model." + k for k in TEXT_UNUSED]
    assert len(result.unused) == len(TEXT_UNUSED) + 15 and sum(result.loaded.values()) + len(result.unused) == 2377
    assert result.ldm.unet.config.attention_head_dim == [5, 10, 20, 20]
    assert tuple(result.ldm.text_context.shape) == (1, 77, 1024)


@pytest.mark.parametrize("change, message", [
    ("drop", "missing conv_out.weight"),
    ("extra", "unexpected model.diffusion_model.input_blocks.99.0.weight"),
    ("shape", "wrong shape model.diffusion_model.out.2.weight"),
    ("stray", "keys of no DoSSR part: stray.weight"),
])
def test_bad_keys_are_named(official, reduced_state, change, message):
    state = dict(reduced_state)
    key = "model.diffusion_model.out.2.weight"
    if change == "drop":
        del state[key]
    elif change == "extra":
        state["model.diffusion_model.input_blocks.99.0.weight"] = torch.zeros(1)
    elif change == "shape":
        state[key] = state[key][:, :1]
    else:
        state["stray.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.")):
        _convert(official, state)


def test_schedule_buffers_and_tables_match_the_process(official, converted):
    meta, tensors = official
    process = dossr_process()
    t = torch.arange(1, 1001, dtype=torch.float64)
    assert (process.shift(t) - tensors["train.etas"]).abs().max() < 1e-12
    assert (process.alphas_cumprod(t) - tensors["train.alphas_cumprod"]).abs().max() < 1e-12
    for steps in meta["steps"]:
        grid = torch.tensor(dossr_timesteps(process, steps, official=True)[::-1], dtype=torch.float64)
        assert (grid - 1).tolist() == tensors[f"tables{steps}.timesteps"].tolist()
        a, b, s = process.coefficients(grid)
        assert torch.allclose(a + b, tensors[f"tables{steps}.sqrt_alphas_cumprod"], rtol=1e-12, atol=0)
        assert torch.allclose(s, tensors[f"tables{steps}.sigmas"], rtol=1e-12, atol=0)
        assert torch.allclose(b / (a + b), tensors[f"tables{steps}.etas"], rtol=1e-12, atol=0)
        assert torch.allclose(s / a, tensors[f"tables{steps}.lambdas"], rtol=1e-9, atol=0)
    assert tuple(meta["tokens"]) == PROMPT_TOKENS


def test_networks_match_official_outputs(official, converted):
    _, o = official
    with torch.no_grad():
        assert torch.allclose(converted.preprocessor(o["lr"]).clamp(0, 1), o["preprocessed"], atol=1e-5)
        assert torch.allclose(converted.ldm.text_context, o["context"], atol=1e-5)
        assert torch.allclose(converted.cond_encoder(o["preprocessed"] * 2 - 1), o["c_latent"], atol=1e-5)
        vae = converted.vae
        assert torch.allclose(vae.quant_conv(vae.encoder(o["preprocessed"] * 2 - 1)), o["moments"], atol=1e-5)
        eps = converted.ldm(o["x_t"], torch.tensor([499.0, 100.0]), o["c_pair"])
    assert (eps - o["eps"]).abs().max() < 1e-5 and o["eps"].abs().mean() > 0.1


def test_read_dossr_unwraps_a_lightning_checkpoint(official, reduced_state, converted, tmp_path):
    meta, _ = official
    path = tmp_path / "dossr_default.ckpt"
    torch.save({"state_dict": reduced_state, "epoch": 7, "global_step": 70000}, path)
    again = read_dossr(path, original_config=meta["original_config"], text_config=meta["text_config"])
    assert torch.equal(again.ldm.text_context, converted.ldm.text_context)
    assert again.facts["process"] == {"kind": "domain_shift", "beta_schedule": "scaled_linear",
                                      "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                                      "t1": 500.0, "eta": "official"}


def test_composite_round_trips(converted, tmp_path):
    converted.ldm.save_pretrained(tmp_path, safe_serialization=True)
    again = DoSSRControlLDM.from_pretrained(tmp_path)
    assert torch.equal(again.text_context, converted.ldm.text_context)
    assert again.state_dict().keys() == converted.ldm.state_dict().keys()


def wavelet_colour_fix(image: torch.Tensor, source: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """StableSR's wavelet colour fix: image's high frequencies on source's low frequency (dilated binomial blurs)."""
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None] / 16).to(image.dtype).expand(image.shape[1], 1, 3, 3)

    def split(x):
        high = torch.zeros_like(x)
        for level in range(levels):
            radius = 2**level
            low = F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=x.shape[1], dilation=radius)
            high, x = high + x - low, low
        return high, x

    return split(image)[0] + split(source)[1]


@pytest.mark.parametrize("steps", [5, 1])
def test_replay_reproduces_official_sampling(official, converted, steps):
    _, o = official
    draws = [o[f"steps{steps}.draw{i}"] for i in range(steps + 2)]
    scale = converted.vae.config.scaling_factor
    process = dossr_process()
    vp = VPProcess(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    with torch.no_grad():
        # 1. RRDB x4, then the condition latent (mode) and xh (a posterior sample, the first draw)
        pre = converted.preprocessor(o["lr"]).clamp(0, 1)
        c_latent = converted.cond_encoder(pre * 2 - 1)
        posterior = converted.vae.encode(pre * 2 - 1).latent_dist
        xh = (posterior.mean + posterior.std * draws[0]) * scale
        # 2. start at t1 from xh with the second draw, then DoS-SDE Solver-3 with a draw per step
        ts = dossr_timesteps(process, steps, official=True)
        x = start_state(process, xh, xh, ts[0], draws[1])
        denoiser = PredictionDenoiser(converted.ldm, process=vp, prediction_type="epsilon", timestep_fn=ddpm_index)
        x = sample_dossr(denoiser, x, ts, process=process, xh=xh, cond=c_latent, order=3,
                         generator=Draws(draws[2:]))
        image = (converted.vae.decode(x / scale).sample + 1) / 2
    fixed = wavelet_colour_fix(image, pre)
    assert (fixed - o[f"steps{steps}.wavelet"]).abs().max() < 1e-4
    assert (image - o[f"steps{steps}.none"]).abs().max() < 1e-4
