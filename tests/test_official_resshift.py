"""ResShift / SinSR: the released layouts load strictly, and networks and samplers reproduce the official code.

Fixtures: tests/fixtures/official/resshift/, written by scripts/official_fixtures/resshift/record.py from
zsyOAOA/ResShift and wyf0912/SinSR (reduced widths, re-drawn weights, every Gaussian draw of each run).
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from shiftsr.convert.checkpoint import CheckpointError, load_strict
from shiftsr.convert.resshift import (infer_unet_config, infer_vq_config, load_resshift_unet, load_unet_state,
                                      load_vq_f4, variant_facts, variant_from_name)
from shiftsr.denoisers import PredictionDenoiser, ddpm_index
from shiftsr.networks.resshift_unet import ResShiftUNet, shift_mask
from shiftsr.networks.vq_f4 import VQF4Autoencoder
from shiftsr.processes import ResShiftProcess
from shiftsr.processes.start import start_state
from shiftsr.samplers import sample_resshift
from shiftsr.samplers.common import Draws, randn_like

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official" / "resshift"
CONFIG = json.loads((FIXTURES / "config.json").read_text())
LAYOUT = json.loads((FIXTURES / "official_layout.json").read_text())
NETWORK = load_file(FIXTURES / "network.safetensors")
RUN_VARIANTS = {"resshift_v3": "resshift-v3", "resshift_v1": "resshift-v1", "sinsr": "sinsr"}


def _record_module():
    path = ROOT / "scripts/official_fixtures/resshift/record.py"
    spec = importlib.util.spec_from_file_location("resshift_record", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


redraw = _record_module().redraw


@pytest.fixture(autouse=True)
def one_thread():
    """The recording ran on one thread; float32 kernels with more threads reorder sums (about 1e-6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _plain(config) -> dict:
    """A config as JSON holds it: lists for tuples, no private diffusers keys."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(config).items() if not k.startswith("_")}


def _meta(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def _meta_unet(state: dict[str, torch.Tensor]) -> ResShiftUNet:
    with torch.device("meta"):
        return ResShiftUNet(**infer_unet_config(state, "official.pth"))


def _redrawn(module, branch_scale: float):
    """A module at the fixture's reduced config with the recording's weights (re-drawn; the codebook stored)."""
    state = module.state_dict()
    state.update(redraw({k: v.shape for k, v in state.items()}, CONFIG["seed"], branch_scale))
    if "quantize.embedding.weight" in state:
        state["quantize.embedding.weight"] = NETWORK["codebook"]
    module.load_state_dict(state)
    return module.eval()


@pytest.fixture(scope="module")
def vq() -> VQF4Autoencoder:
    return _redrawn(VQF4Autoencoder(**CONFIG["vq"]), CONFIG["sampler_branch_scale"])


@pytest.fixture(scope="module")
def net() -> ResShiftUNet:
    """The network-level UNet: every residual branch at full strength."""
    return _redrawn(ResShiftUNet(**CONFIG["unet"]), 1.0)


@pytest.fixture(scope="module")
def sampler_net() -> ResShiftUNet:
    """The sampler runs' UNet: residual branches scaled down so round-off is not amplified 1e4-fold."""
    return _redrawn(ResShiftUNet(**CONFIG["unet"]), CONFIG["sampler_branch_scale"])


# 1. layouts of the released files, strict loads -------------------------------------------------------------


def test_released_unet_layout_loads_strictly_with_the_official_counts():
    state = _meta(LAYOUT["unet"])
    net = load_unet_state(_meta_unet(state), state, "official.pth")
    params = dict(net.named_parameters())
    assert len(state) == 564 and len(params) == 540
    assert sum(p.numel() for p in params.values()) == 118_593_583
    assert sorted(k.rsplit(".", 1)[1] for k in state if k not in params) == ["attn_mask"] * 6 + [
        "relative_position_index"] * 18
    assert net.config.image_size == 64 and net.size_multiple == 64
    with torch.device("meta"):
        defaults = ResShiftUNet().config
    assert _plain(infer_unet_config(state)) == _plain(defaults)


def test_released_vq_layout_loads_strictly_with_the_official_counts():
    state = _meta(LAYOUT["vq"])
    with torch.device("meta"):
        vq = VQF4Autoencoder(**infer_vq_config(state, "vq.pth"))
    load_strict(vq, state, "vq.pth")
    assert len(state) == 205 and sum(p.numel() for p in vq.parameters()) == 55_322_782
    assert (vq.scale, vq.channels, vq.config.n_embed) == (4, 3, 8192)


@pytest.mark.parametrize("change, key", [
    ("missing", "middle_block.1.blocks.0.attn.qkv.bias"),
    ("unexpected", "input_blocks.1.0.extra.weight"),
    ("wrong shape", "output_blocks.3.0.out_layers.3.weight"),
    ("missing", "time_embed.0.weight"),  # one the config is read from
    ("missing", "input_blocks.4.1.blocks.1.attn_mask"),  # a shifted block without its mask
])
def test_unet_checkpoint_errors_name_the_key(change, key):
    state = _meta(LAYOUT["unet"])
    if change == "missing":
        del state[key]
    elif change == "unexpected":
        state[key] = torch.empty(3, device="meta")
    else:
        state[key] = torch.empty(1, 2, 3, 3, device="meta")
    with pytest.raises(CheckpointError, match=re.escape(key.removesuffix(".attn_mask"))):
        load_unet_state(_meta_unet(state), state, "official.pth")


def test_vq_checkpoint_errors_name_the_key():
    state = _meta(LAYOUT["vq"])
    del state["decoder.up.1.upsample.conv.bias"]
    with torch.device("meta"):
        vq = VQF4Autoencoder(**infer_vq_config(state, "vq.pth"))
    with pytest.raises(CheckpointError, match=re.escape("decoder.up.1.upsample.conv.bias")):
        load_strict(vq, state, "vq.pth")


def test_official_files_load_from_disk(net, vq, tmp_path):
    """A reduced checkpoint in the official layout (with the unused attn_mask buffers) round-trips through .pth."""
    state = net.state_dict()
    for name in net.shifted_blocks():  # the official buffer: the mask of the size the layer was built for
        block, size = net.get_submodule(name), net.get_submodule(name.rsplit(".blocks.", 1)[0]).resolution
        state[f"{name}.attn_mask"] = shift_mask(size, size, block.window, block.shift)
    torch.save({"state_dict": state}, tmp_path / "resshift_realsrx4_s4_v3.pth")
    torch.save(vq.state_dict(), tmp_path / "autoencoder_vq_f4.pth")
    loaded, loaded_vq = load_resshift_unet(tmp_path / "resshift_realsrx4_s4_v3.pth"), load_vq_f4(
        tmp_path / "autoencoder_vq_f4.pth")
    assert _plain(loaded.config) == CONFIG["unet"] and _plain(loaded_vq.config) == CONFIG["vq"]
    assert variant_from_name(tmp_path / "resshift_realsrx4_s4_v3.pth") == "resshift-v3"
    x, t, lq = NETWORK["unet_x"].float(), NETWORK["unet_t"], NETWORK["unet_lq"].float()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, lq), net(x, t, lq))


# 2. networks against the official ones -------------------------------------------------------------------------


def test_unet_matches_official(net):
    with torch.no_grad():
        out = net(NETWORK["unet_x"].float(), NETWORK["unet_t"], NETWORK["unet_lq"].float())
    assert (out - NETWORK["unet_out"]).abs().max() < 1e-5


def test_vq_matches_official(vq):
    with torch.no_grad():
        latent = vq.encode(NETWORK["vq_image"].float())
        image = vq.decode(NETWORK["vq_z"].float())
    assert (latent - NETWORK["vq_latent"]).abs().max() < 1e-5
    assert (image - NETWORK["vq_out"]).abs().max() < 1e-5


def test_unet_any_size_pads_and_crops(net):
    x, lq = torch.randn(1, 3, 20, 36), torch.rand(1, 3, 20, 36) * 2 - 1
    m = net.size_multiple
    padded = F.pad(torch.cat([x, lq]), (0, -36 % m, 0, -20 % m), mode="reflect")
    with torch.no_grad():
        out = net(x, torch.tensor([2]), lq)
        ref = net(padded[:1], torch.tensor([2]), padded[1:])[..., :20, :36]
    assert out.shape == x.shape and torch.equal(out, ref)


def test_save_pretrained_round_trip(net, vq, tmp_path):
    for module, cls in ((net, ResShiftUNet), (vq, VQF4Autoencoder)):
        module.save_pretrained(tmp_path / cls.__name__, safe_serialization=True)
        again = cls.from_pretrained(tmp_path / cls.__name__).eval()
        assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), again.state_dict().values()))


# 3. the official samplers replayed with shiftsr's process, denoiser and sampler --------------------------------


@pytest.mark.parametrize("run", RUN_VARIANTS)
def test_eta_schedule_and_process_facts_match_official(run):
    recorded, facts = CONFIG["runs"][run], variant_facts(RUN_VARIANTS[run])
    process = ResShiftProcess(**facts["process"])
    assert torch.allclose(process.etas[1:], torch.tensor(recorded["etas"], dtype=torch.float64), rtol=1e-12, atol=0)
    assert (recorded["kappa"], recorded["scale_factor"], recorded["sf"], recorded["num_timesteps"]) == (
        facts["kappa"], facts["scale_factor"], facts["sf"], facts["num_steps"])
    assert recorded["normalize_input"] and recorded["latent_flag"]


def replay(run: str, net: ResShiftUNet, vq: VQF4Autoencoder) -> tuple[torch.Tensor, torch.Tensor, list, Draws]:
    """The official sample_func for one LR image through our modules and the recorded draws."""
    recorded, tensors = CONFIG["runs"][run], load_file(FIXTURES / f"{run}.safetensors")
    facts = variant_facts(RUN_VARIANTS[run])
    process = ResShiftProcess(**facts["process"])
    draws = Draws([tensors[f"draw_{i:02d}"].float() for i in range(len(recorded["draw_shapes"]))])
    # 1. LR in [-1, 1], reflect-padded to the network's multiple (the official lq_size), x4 bicubic, encoded
    y0 = tensors["lr"].float() / 255 * 2 - 1
    height, width = y0.shape[-2:]
    m = net.size_multiple
    y0 = F.pad(y0, (0, -width % m, 0, -height % m), mode="reflect")
    times = []

    def network(x, t, lq):
        times.append(t.tolist())
        return net(x, t, lq)

    with torch.no_grad():
        z_y = vq.encode(F.interpolate(y0, scale_factor=facts["sf"], mode="bicubic")) * facts["scale_factor"]
        # 2. the prior sample x_T = z_y + kappa sqrt(eta_T) eps, then T steps (SinSR: one, from T straight to 0)
        x = start_state(process, z_y, z_y, process.t_max, randn_like(z_y, draws))
        denoiser = PredictionDenoiser(network, process=process, prediction_type="sample", timestep_fn=ddpm_index,
                                      input_scale_fn=process.input_scale)
        T = int(process.t_max)
        ts = list(range(T, -1, -1)) if facts["sampling_steps"] == T else [T, 0]
        z0 = sample_resshift(denoiser, x, ts, process=process, cond=y0, generator=draws)
        # 3. decoded through the codebook, cropped to 4x the LR, clamped, to [0, 1]
        image = vq.decode(z0 / facts["scale_factor"])[..., :4 * height, :4 * width].clamp(-1, 1) * 0.5 + 0.5
    return z0 / facts["scale_factor"], image, times, draws


@pytest.mark.parametrize("run", RUN_VARIANTS)
def test_official_inference_replayed(sampler_net, vq, run):
    z_final, image, times, draws = replay(run, sampler_net, vq)
    recorded = load_file(FIXTURES / f"{run}.safetensors")
    official = recorded["image"].float() / 65535  # stored to 7.6e-6
    assert draws.used == len(draws.tensors)  # every official draw consumed, in order, shapes checked by Draws
    assert [[int(t) for t in step] for step in times] == CONFIG["runs"][run]["timesteps"]
    assert (z_final - recorded["z_final"]).abs().max() < 1e-4
    assert image.shape == official.shape
    assert (image - official).abs().max() < 1e-4
