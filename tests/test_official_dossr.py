"""DoSSR: the released checkpoint layout converts strictly, and `shiftsr convert dossr` gives the official outputs.

Fixtures: tests/fixtures/official/dossr/, written by scripts/official_fixtures/dossr/record.py from
AMD-AIG-AIMA/DoSSR (reduced widths, re-drawn weights, every Gaussian draw of each run). The official sampler returns
its image unclamped and scripts/inference.py clamps it to [0, 1]; shiftsr's output is compared with that clamp.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

import shiftsr
from shiftsr.bundle import read_settings
from shiftsr.cli import main
from shiftsr.convert.checkpoint import CheckpointError
from shiftsr.convert.dossr import PROMPT, PROMPT_TOKENS, convert_dossr, dossr_process
from shiftsr.samplers import dossr_timesteps

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official" / "dossr"
RECORD = ROOT / "scripts" / "official_fixtures" / "dossr" / "record.py"
# official keys per part of the released checkpoint (2,348 loaded) and the 29 no official forward reads
FULL_LOADED = {"unet": 686, "controlnet": 324, "vae": 248, "cond_encoder": 108, "preprocessor": 702, "text": 280}
TEXT_UNUSED = ["logit_scale", "text_projection"] + [f"transformer.resblocks.23.{name}" for name in (
    "attn.in_proj_bias", "attn.in_proj_weight", "attn.out_proj.bias", "attn.out_proj.weight", "ln_1.bias",
    "ln_1.weight", "ln_2.bias", "ln_2.weight", "mlp.c_fc.bias", "mlp.c_fc.weight", "mlp.c_proj.bias",
    "mlp.c_proj.weight")]
TOLERANCE = 1e-4  # max abs against the official output
TILE_TOLERANCE = 0.05  # mean abs, tiled against untiled (measured 0.024; another seed: 0.24)


def _redraw():
    """record.py's redraw: the same seeded re-draw of every parameter that the official run used."""
    spec = importlib.util.spec_from_file_location("dossr_record", RECORD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.redraw


pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.fixture(scope="module")
def converted(official, reduced_state):
    meta, _ = official
    return convert_dossr(reduced_state, "reduced.ckpt", original_config=meta["original_config"],
                         text_config=meta["text_config"])


@pytest.fixture(scope="module")
def files(official, reduced_state, tmp_path_factory) -> dict[str, Path]:
    """The reduced model as an official Lightning checkpoint, its model config (cldm_v21.yaml layout) and the LR."""
    meta, tensors = official
    folder = tmp_path_factory.mktemp("dossr")
    torch.save({"state_dict": reduced_state, "epoch": 7, "global_step": 70000}, folder / "dossr_default.ckpt")
    config = dict(meta["original_config"]["model"], text_config=meta["text_config"])
    (folder / "cldm_reduced.json").write_text(json.dumps(config))
    lr = (tensors["lr"][0].permute(1, 2, 0) * 255).round().byte().numpy()
    Image.fromarray(lr).save(folder / "lr.png")
    return {"checkpoint": folder / "dossr_default.ckpt", "config": folder / "cldm_reduced.json",
            "lr": folder / "lr.png", "folder": folder}


def convert(checkpoint: Path, output: Path, *flags: str):
    args = ["convert", "dossr", "--checkpoint", str(checkpoint), "-o", str(output)]
    return CliRunner().invoke(main, args + [arg for flag in flags for arg in ("--flag", flag)])


@pytest.fixture(scope="module")
def bundle(files) -> Path:
    output = files["folder"] / "bundle"
    result = convert(files["checkpoint"], output, f"config={files['config']}")
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture(scope="module")
def pipe(bundle):
    return shiftsr.load(bundle, device="cpu")


def recorded(official, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(LR in [0, 1], every official draw of the run in call order: posterior sample, start, one per step)."""
    _, tensors = official
    return tensors["lr"], [tensors[f"steps{steps}.draw{i}"] for i in range(steps + 2)]


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
    assert tuple(meta["tokens"]) == PROMPT_TOKENS and meta["prompt"] == PROMPT


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


def test_bundle_has_the_official_settings_and_no_text_tower(bundle, pipe, converted):
    settings = read_settings(bundle)
    assert (settings.network, settings.prediction_type, settings.prediction_path, settings.timestep) == (
        "DoSSRControlLDM", "epsilon", "vp", "index")
    assert (settings.preprocessor, settings.condition, settings.grid, settings.color_fix, settings.lr_multiple) == (
        "rrdb", "encoder", "official", "wavelet", 16)
    assert settings.codec == {"kind": "autoencoder_kl", "folder": "codec", "sample": True}
    assert settings.process == {"kind": "domain_shift", "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                                "beta_start": 0.00085, "beta_end": 0.012, "t1": 500.0, "eta": "official"}
    assert (settings.sampler.method, settings.sampler.steps, settings.sampler.order, settings.sampler.samples) == (
        "dossr", 5, 3, 1)
    saved = [key for path in bundle.rglob("*.safetensors") for key in load_file(path)]
    assert len(saved) > 500 and not [key for key in saved if "resblocks" in key or "token_embedding" in key]
    assert torch.equal(pipe.net.text_context, converted.ldm.text_context)
    card = (bundle / "MODEL_CARD.md").read_text()
    assert all(text in card for text in ("AMD-AIG-AIMA/DoSSR", "no LICENSE file", "CreativeML Open RAIL++-M",
                                         PROMPT, str(list(PROMPT_TOKENS)), "make_eta_schedule", "cldm_v21.yaml",
                                         "shiftsr convert dossr --checkpoint dossr_default.ckpt"))


@pytest.mark.parametrize("steps", [5, 1])
def test_converted_bundle_reproduces_official_sampling(official, pipe, steps):
    _, o = official
    lr, draws = recorded(official, steps)
    given = {} if steps == 5 else {"steps": 1}  # 5 is the bundle's default
    run = pipe.run(lr, samples=1, noise=draws, **given)
    assert run.record["nfe"] == steps and run.record["t_start"] == 500
    for fix in ("wavelet", "none"):
        image = run.image if fix == "wavelet" else pipe.run(lr, samples=1, noise=draws, color_fix=fix, **given).image
        expected = o[f"steps{steps}.{fix}"]
        assert ((expected > 0) & (expected < 1)).float().mean() > 0.5  # most pixels lie inside the clamp
        assert (image - expected.clamp(0, 1)).abs().max() < TOLERANCE


def test_the_network_in_bf16_stays_close(official, bundle, pipe):
    lr, draws = recorded(official, 5)
    full = pipe.run(lr, samples=1, noise=draws).image
    half = shiftsr.load(bundle, device="cpu", dtype=torch.bfloat16).run(lr, samples=1, noise=draws).image
    assert 0 < (half - full).abs().mean() < 0.005  # measured 0.0013 (convert/dossr.py DTYPES)


def test_upscale_command_reports_nfe_and_writes_what_the_api_gives(files, bundle, pipe, tmp_path):
    result = CliRunner().invoke(main, ["upscale", str(files["lr"]), "-m", str(bundle), "-o", str(tmp_path),
                                       "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["nfe"] == 5 and record["size"] == [128, 128] and record["method"] == "dossr"
    written = torch.from_numpy(np.array(Image.open(record["output"]))).permute(2, 0, 1).float()
    lr = torch.from_numpy(np.array(Image.open(files["lr"]))).permute(2, 0, 1)[None] / 255
    levels = (written - (pipe.run(lr, seed=0).image[0] * 255).round()).abs()
    assert levels.max() <= 1 and levels.mean() < 0.01  # the same draws; float sums of the CLI's run may differ


def test_tiled_stays_close_to_untiled_and_any_size_runs(official, pipe):
    lr, draws = recorded(official, 5)
    whole = pipe.run(lr, samples=1, noise=draws).image
    tiled = pipe.run(lr, samples=1, noise=draws, tile=12, tile_overlap=4).image  # latent 16 x 16: 2 x 2 tiles
    assert whole.shape == tiled.shape == (1, 3, 128, 128)
    assert 0 < (tiled - whole).abs().mean() < TILE_TOLERANCE
    assert pipe.run(lr, seed=3, scale=2.5).image.shape == (1, 3, 80, 80)
    assert pipe.run(lr[..., :30, :21], seed=3, steps=1).image.shape == (1, 3, 120, 84)  # padded to 32 x 32 inside


@pytest.mark.slow
def test_steps_follow_the_released_file_name_or_the_flag(files, tmp_path):
    onestep = tmp_path / "dossr_onestep.ckpt"
    onestep.symlink_to(files["checkpoint"])
    assert convert(onestep, tmp_path / "one", f"config={files['config']}").exit_code == 0
    assert read_settings(tmp_path / "one").sampler.steps == 1
    assert convert(files["checkpoint"], tmp_path / "three", f"config={files['config']}", "steps=3").exit_code == 0
    assert read_settings(tmp_path / "three").sampler.steps == 3


class RunsCode:
    """Pickles as a call of print: torch.load(weights_only=True) must refuse it before anything runs."""

    def __reduce__(self):
        return print, ("a checkpoint ran code",)


@pytest.mark.parametrize("change, message", [
    ("missing", "missing conv_out.weight"),
    ("unexpected", "unexpected model.diffusion_model.input_blocks.99.0.weight"),
    ("shape", "wrong shape model.diffusion_model.out.2.weight"),
    ("prefix", "keys of no DoSSR part: ema.model.diffusion_model.out.2.weight"),
    ("code", "refused: unpickling it would call"),
    ("flag", "--flag stride: not a dossr flag"),
])
def test_convert_refuses_a_bad_checkpoint_in_one_line(files, reduced_state, tmp_path, change, message):
    state, key = dict(reduced_state), "model.diffusion_model.out.2.weight"
    if change == "missing":
        del state[key]
    elif change == "unexpected":
        state["model.diffusion_model.input_blocks.99.0.weight"] = torch.zeros(1)
    elif change == "shape":
        state[key] = state[key][:, :1]
    elif change == "prefix":
        state["ema." + key] = state.pop(key)
    path = tmp_path / "dossr_default.ckpt"
    torch.save(RunsCode() if change == "code" else {"state_dict": state}, path)
    flags = [f"config={files['config']}"] + (["stride=2"] if change == "flag" else [])
    result = convert(path, tmp_path / "bundle", *flags)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert change == "flag" or str(path) in lines[0]
    assert "ran code" not in result.output and not (tmp_path / "bundle").exists()
    assert not list(tmp_path.glob(".bundle*"))


def test_a_bad_config_file_is_named(files, tmp_path):
    config = tmp_path / "cldm.yaml"
    config.write_text("model: [unclosed\n")
    result = convert(files["checkpoint"], tmp_path / "bundle", f"config={config}")
    assert result.exit_code == 2 and str(config) in result.stderr and not (tmp_path / "bundle").exists()
    with pytest.raises(CheckpointError, match="only_mid_control"):
        convert_dossr({}, "x.ckpt", original_config={"model": {"params": {"only_mid_control": True}}})
