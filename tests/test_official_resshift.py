"""ResShift / SinSR: the released layouts load strictly, the networks reproduce the official ones, and a bundle made
by `shiftsr convert` from files in the official layouts reproduces the official samplers through shiftsr.load().

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
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

import shiftsr
from shiftsr.bundle import read_settings
from shiftsr.cli import main
from shiftsr.convert.checkpoint import CheckpointError, load_strict
from shiftsr.convert.resshift import VARIANTS, infer_unet_config, infer_vq_config, load_unet_state, variant_from_name
from shiftsr.networks.resshift_unet import ResShiftUNet, shift_mask
from shiftsr.networks.vq_f4 import VQF4Autoencoder
from shiftsr.processes import build_process

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


pytestmark = pytest.mark.usefixtures("one_thread")


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


# 3. `shiftsr convert` on files in the official layouts, then the bundle against the official samplers ----------


def official_unet_state(net: ResShiftUNet) -> dict[str, torch.Tensor]:
    """net's state dict as an official UNetModelSwin file holds it: with each shifted block's attn_mask buffer."""
    state = net.state_dict()
    for name in net.shifted_blocks():  # the official buffer: the mask of the size the layer was built for
        block, size = net.get_submodule(name), net.get_submodule(name.rsplit(".blocks.", 1)[0]).resolution
        state[f"{name}.attn_mask"] = shift_mask(size, size, block.window, block.shift)
    return state


def convert(arch: str, checkpoint: Path, autoencoder: Path | None, output: Path):
    args = ["convert", arch, "--checkpoint", str(checkpoint), "-o", str(output)]
    return CliRunner().invoke(main, args + ([] if autoencoder is None else ["--autoencoder", str(autoencoder)]))


@pytest.fixture(scope="module")
def official_files(sampler_net, vq, tmp_path_factory) -> dict[str, Path]:
    """The sampler runs' reduced weights saved as the released files are: plain state dicts in .pth files."""
    folder = tmp_path_factory.mktemp("official")
    files = {"autoencoder": folder / "autoencoder_vq_f4.pth"}
    torch.save(vq.state_dict(), files["autoencoder"])
    state = official_unet_state(sampler_net)
    for arch in RUN_VARIANTS.values():
        files[arch] = folder / VARIANTS[arch].files[0]
        torch.save(state, files[arch])
    return files


@pytest.fixture(scope="module")
def bundles(official_files, tmp_path_factory) -> dict[str, Path]:
    """`shiftsr convert ARCH --checkpoint ... --autoencoder ... -o FOLDER` for each recorded variant."""
    root = tmp_path_factory.mktemp("bundles")
    folders = {}
    for arch in RUN_VARIANTS.values():
        result = convert(arch, official_files[arch], official_files["autoencoder"], root / arch)
        assert result.exit_code == 0, result.output
        folders[arch] = root / arch
    return folders


def recorded_run(run: str) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
    """(LR in [0, 1], the official draws in call order, the recording) of one official sampler run."""
    tensors = load_file(FIXTURES / f"{run}.safetensors")
    draws = [tensors[f"draw_{i:02d}"].float() for i in range(len(CONFIG["runs"][run]["draw_shapes"]))]
    return tensors["lr"].float() / 255, draws, tensors


@pytest.mark.parametrize("arch, run", [("resshift-v1", "resshift_v1"), ("resshift-v2", "resshift_v1"),
                                       ("resshift-v3", "resshift_v3"), ("resshift-bicsr", "resshift_v3"),
                                       ("sinsr", "sinsr")])
def test_process_equals_the_official_eta_table(arch, run):
    recorded, variant = CONFIG["runs"][run], VARIANTS[arch]
    process = build_process(variant.process)
    assert torch.allclose(process.etas[1:], torch.tensor(recorded["etas"], dtype=torch.float64), rtol=1e-12, atol=0)
    assert (recorded["kappa"], recorded["scale_factor"], recorded["sf"], recorded["num_timesteps"]) == (
        variant.process["kappa"], 1.0, 4, variant.num_steps)
    assert recorded["normalize_input"] and recorded["latent_flag"]


def test_converted_bundle_holds_the_official_settings_and_weights(bundles, official_files, sampler_net, vq):
    folder = bundles["resshift-v3"]
    settings = read_settings(folder)
    assert settings.process == {"kind": "resshift", "num_steps": 4, "kappa": 2.0, "power": 0.3,
                                "variant": "official", "min_noise_level": 0.2}
    assert (settings.network, settings.prediction_type, settings.timestep, settings.input_scale) == (
        "ResShiftUNet", "sample", "index", "resshift")
    assert (settings.preprocessor, settings.condition, settings.codec, settings.lr_multiple, settings.scale) == (
        "torch_bicubic", "lr", {"kind": "vq_f4", "folder": "codec"}, CONFIG["pad"], 4)
    assert (settings.sampler.method, settings.sampler.steps, settings.sampler.samples) == ("resshift", 4, 1)
    assert [read_settings(bundles[arch]).sampler.steps for arch in ("sinsr", "resshift-v1")] == [1, 15]
    pipe = shiftsr.load(folder, device="cpu")
    assert _plain(pipe.net.config) == CONFIG["unet"] and _plain(pipe.codec.vq.config) == CONFIG["vq"]
    for ours, theirs in ((pipe.net, sampler_net), (pipe.codec.vq, vq)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    card = (folder / "MODEL_CARD.md").read_text()
    assert "S-Lab License 1.0" in card and "realsr_swinunet_realesrgan256_journal.yaml:63" in card
    assert "shiftsr convert resshift-v3 --checkpoint resshift_realsrx4_s4_v3.pth" in card
    assert "CC BY-NC-SA 4.0" in (bundles["sinsr"] / "MODEL_CARD.md").read_text()


def probed_run(pipe, lr: torch.Tensor, **settings):
    """pipe.run(lr, **settings), the time index of every network call and the latent the decoder quantises."""
    times, latents = [], []
    hooks = [pipe.net.register_forward_pre_hook(lambda m, args: times.append(args[1].tolist())),
             pipe.codec.vq.quantize.register_forward_pre_hook(lambda m, args: latents.append(args[0]))]
    try:
        result = pipe.run(lr, **settings)
    finally:
        for hook in hooks:
            hook.remove()
    return result, times, latents[-1]


@pytest.mark.parametrize("run", RUN_VARIANTS)
def test_converted_bundle_reproduces_the_official_sampler(bundles, run):
    """shiftsr.load(FOLDER).run(lr, noise=draws), the bundle's defaults: the official image, step times and latent."""
    lr, draws, recorded = recorded_run(run)
    pipe = shiftsr.load(bundles[RUN_VARIANTS[run]], device="cpu")
    result, times, latent = probed_run(pipe, lr, samples=1, noise=draws)
    official = recorded["image"].float() / 65535  # stored to 7.6e-6
    assert [[int(t) for t in step] for step in times] == CONFIG["runs"][run]["timesteps"]
    assert result.record["nfe"] == len(times) == pipe.settings.sampler.steps
    assert (latent - recorded["z_final"]).abs().max() < 1e-4
    assert result.image.shape == official.shape
    assert (result.image - official).abs().max() < 1e-4


def test_bf16_listed_in_the_bundle_stays_near_the_official_latent(bundles):
    """bf16 autocast of the UNet (the card lists it): measured 0.027 max, 0.0047 mean from the official latent."""
    lr, draws, recorded = recorded_run("sinsr")
    pipe = shiftsr.load(bundles["sinsr"], device="cpu", dtype=torch.bfloat16)
    _, _, latent = probed_run(pipe, lr, samples=1, noise=draws)
    error = (latent - recorded["z_final"]).abs()
    assert "bf16" in pipe.settings.dtypes and error.max() < 0.1 and 1e-4 < error.mean() < 0.02


def test_upscale_cli_runs_a_converted_bundle(bundles, tmp_path):
    lr, _, _ = recorded_run("resshift_v3")
    Image.fromarray((lr[0, :, :32, :24].permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / "lr.png")
    result = CliRunner().invoke(main, ["upscale", str(tmp_path / "lr.png"), "-m", str(bundles["resshift-v3"]),
                                       "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["nfe"], record["steps"], record["method"]) == (4, 4, "resshift")
    assert record["size"] == [96, 128] and Image.open(tmp_path / "out" / "lr_out.png").size == (96, 128)


def test_tiled_stays_close_to_untiled_and_any_scale_has_its_size(bundles):
    lr, _, _ = recorded_run("sinsr")
    pipe = shiftsr.load(bundles["sinsr"], device="cpu")
    whole, _, z_whole = probed_run(pipe, lr, seed=3)
    _, _, z_other = probed_run(pipe, lr, seed=4)
    tiled, calls, z_tiled = probed_run(pipe, lr, seed=3, tile=32, tile_overlap=16)  # latent 32 x 64: three tiles
    assert len(calls) == 3 and tiled.image.shape == whole.image.shape == (1, 3, 96, 160)
    # tiles see less context (measured: 5% of the change another seed makes), so the latent moves, but little
    assert 0 < (z_tiled - z_whole).abs().mean() < 0.1 * (z_other - z_whole).abs().mean()
    assert pipe.run(lr, seed=3, scale=2.5).image.shape == (1, 3, 60, 100)


class RunsCode:
    """Pickles as a call of print: torch.load(weights_only=True) must refuse it before anything runs."""

    def __reduce__(self):
        return print, ("a checkpoint ran code",)


@pytest.mark.parametrize("part, change, message", [
    ("unet", "missing", "missing middle_block.1.blocks.0.attn.qkv.bias"),
    ("unet", "prefix", "unexpected ema.output_blocks.3.0.out_layers.3.weight"),
    ("unet", "shape", "wrong shape output_blocks.3.0.out_layers.3.weight"),
    ("unet", "code", "refused: unpickling it would call print"),
    ("autoencoder", "missing", "missing decoder.up.1.upsample.conv.bias"),
    ("autoencoder", "absent", "needs --autoencoder"),
])
def test_convert_refuses_a_bad_checkpoint_in_one_line(official_files, tmp_path, part, change, message):
    path = tmp_path / ("resshift_realsrx4_s4_v3.pth" if part == "unet" else "autoencoder_vq_f4.pth")
    state = torch.load(official_files["resshift-v3" if part == "unet" else "autoencoder"], weights_only=True)
    key = message.split()[-1]
    if change == "missing":
        del state[key]
    elif change == "prefix":
        state[key] = state.pop(key.removeprefix("ema."))
    elif change == "shape":
        state[key] = state[key][:, :1]
    torch.save(RunsCode() if change == "code" else state, path)
    files = {"unet": official_files["resshift-v3"], "autoencoder": official_files["autoencoder"], part: path}
    result = convert("resshift-v3", files["unet"], None if change == "absent" else files["autoencoder"],
                     tmp_path / "bundle")
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert change == "absent" or str(path) in lines[0]
    assert "ran code" not in result.output and not (tmp_path / "bundle").exists()
    assert not list(tmp_path.glob(".bundle*"))


def test_convert_refuses_a_release_named_for_another_variant(official_files, tmp_path):
    result = convert("resshift-v1", official_files["resshift-v3"], official_files["autoencoder"], tmp_path / "b")
    assert variant_from_name("weights/SinSR_v2.pth") == "sinsr" and variant_from_name("mine.pth") is None
    assert result.exit_code == 2 and "the released resshift-v3, not resshift-v1" in result.stderr
    assert not (tmp_path / "b").exists()
