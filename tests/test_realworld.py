"""Real photos (issue 13): x4plus alone as a model, the colour fix, the uncertainty maps, the identity start."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shiftsr import load
from shiftsr.bundle import BundleSettings, bundled_models
from shiftsr.cli import main
from shiftsr.cli.upscale import COLOR_FIXES
from shiftsr.imageio import read_image
from shiftsr.ops.colour import COLOUR_FIXES, wavelet_colour_fix
from shiftsr.pipeline import SAMPLE_SEED_STRIDE
from shiftsr.uncertainty import STD16_FULL_SCALE, STD_MAP_MAX, colour_mapped, sample_spread

ROOT = Path(__file__).resolve().parents[1]
IDENTITY_RECIPE = ROOT / "configs" / "dossr_x4_realworld_identity.yaml"


def smooth_lr(height: int = 12, width: int = 16) -> torch.Tensor:
    """A 1x3xHxW image well inside (0, 1), so that no sample is clamped."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([0.3 + 0.4 * x, 0.3 + 0.3 * y, 0.5 + 0.2 * x * y])[None]


@pytest.fixture(scope="module")
def x4plus():
    return load("realesrgan-x4plus", device="cpu")


def test_x4plus_alone_is_a_bundled_regressor_returning_its_preprocessor_output(x4plus):
    assert "realesrgan-x4plus" in bundled_models()
    assert x4plus.family == "regressor" and x4plus.methods == ("regression",)
    lr = smooth_lr()
    result = x4plus.run(lr)
    assert torch.equal(result.image, x4plus.preprocess(lr))
    assert result.record["nfe"] == 0 and result.record["t_start"] == 0.0 and result.record["method"] == "regression"
    assert x4plus.run(lr, scale=2.5).image.shape == (1, 3, 30, 40)
    with pytest.raises(ValueError, match="strategy: a regressor"):
        x4plus.run(lr, scale=2.5, strategy="direct")


def test_a_bundle_without_network_must_say_so_with_a_null_process():
    base = {"network": "none", "process": None, "scale": 4, "preprocessor": "realesrgan_x4plus",
            "sampler": {"method": "regression"}}
    assert BundleSettings.from_dict(base).process is None
    with pytest.raises(ValueError, match="process: null exactly when network is 'none'"):
        BundleSettings.from_dict({**base, "network": "ShiftNet"})
    with pytest.raises(ValueError, match="process: null exactly when network is 'none'"):
        BundleSettings.from_dict({**base, "process": {"kind": "domain_shift"}})


def bands(image: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (low-pass, high-pass) spectra of a 1x3xHxW image: radial frequencies below low and above high."""
    spectrum = torch.fft.fft2(image.double())
    fy = torch.fft.fftfreq(image.shape[-2], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(image.shape[-1], dtype=torch.float64)[None]
    radius = (fy.square() + fx.square()).sqrt()
    return spectrum * (radius < low), spectrum * (radius > high)


def test_wavelet_colour_fix_keeps_the_source_low_frequencies_and_the_sample_detail():
    y, x = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="ij")
    source = torch.stack([0.4 + 0.2 * x, 0.5 - 0.1 * y, 0.3 + 0.2 * x * y])[None]
    detail = 0.05 * torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    shifted = source * 0.8 + torch.tensor([0.1, -0.05, 0.15]).view(1, 3, 1, 1) + detail  # a colour cast plus detail
    fixed = wavelet_colour_fix(shifted, source)
    low_fixed, high_fixed = bands(fixed, 0.01, 0.25)
    low_source, _ = bands(source, 0.01, 0.25)
    _, high_shifted = bands(shifted, 0.01, 0.25)
    assert (low_fixed - low_source).abs().max() / low_source.abs().max() < 1e-3  # the cast is gone
    assert (fixed.mean((-2, -1)) - source.mean((-2, -1))).abs().max() < 1e-3
    assert (high_fixed - high_shifted).norm() / high_shifted.norm() < 0.05  # the detail is the sample's
    assert (shifted.mean((-2, -1)) - source.mean((-2, -1))).abs().max() > 0.05  # there was a cast to remove


def test_color_fix_reaches_the_pipeline_and_the_record(tiny_model):
    pipe = load(tiny_model, device="cpu")
    plain, fixed = (pipe.run(smooth_lr(), samples=1, color_fix=fix) for fix in ("none", "wavelet"))
    assert (plain.record["color_fix"], fixed.record["color_fix"]) == ("none", "wavelet")
    assert not torch.equal(plain.image, fixed.image)
    assert set(COLOR_FIXES) == set(COLOUR_FIXES)


def test_uncertainty_is_the_spread_of_the_samples_of_the_same_seeds(tiny_model):
    pipe = load(tiny_model, device="cpu")
    lr = smooth_lr()
    plain = pipe.run(lr, samples=3, seed=4, antithetic=False)
    spread = pipe.run(lr, samples=3, seed=4, uncertainty=True, antithetic=False)
    assert torch.equal(plain.image, spread.image) and plain.std is None
    singles = torch.stack([pipe.run(lr, samples=1, seed=4 + k * SAMPLE_SEED_STRIDE).image for k in range(3)])
    inside = ((singles > 0) & (singles < 1)).all(0).all(1, keepdim=True)
    assert inside.float().mean() > 0.9
    expected = singles.var(0, unbiased=True).mean(1, keepdim=True).sqrt()
    assert spread.std.shape == (1, 1, 48, 64) and spread.std.max() > 1e-3
    assert torch.allclose(spread.std[inside], expected[inside], atol=1e-6)
    assert spread.record["std_mean"] == pytest.approx(spread.std.mean().item(), abs=1e-6)
    tiled = pipe.run(lr, samples=4, seed=4, uncertainty=True, tile=8, tile_overlap=2, scale=2.5)
    assert tiled.std.shape == (1, 1, 30, 40) and tiled.std.isfinite().all()
    with pytest.raises(ValueError, match="uncertainty: the spread of samples needs samples >= 2"):
        pipe.run(lr, samples=1, uncertainty=True)


def test_sample_spread_and_the_colour_map_scale():
    samples = torch.tensor([[0.2, 0.4], [0.6, 0.4]]).view(2, 1, 1, 2).expand(2, 3, 1, 2)
    sums = samples.sum(0, keepdim=True), samples.square().sum(0, keepdim=True)
    assert torch.allclose(sample_spread(*sums, 2), torch.tensor([[[[0.2 * 2**0.5, 0.0]]]]), atol=1e-7)
    assert torch.allclose(sample_spread(*sums, 2, antithetic=True), torch.tensor([[[[0.2, 0.0]]]]), atol=1e-7)
    coloured = colour_mapped(torch.tensor([[[0.0, STD_MAP_MAX, 1.0]]]))
    assert coloured.shape == (3, 1, 3) and coloured[:, 0, 0].sum() < 0.05  # magma starts black
    assert torch.equal(coloured[:, 0, 1], coloured[:, 0, 2])  # saturates at STD_MAP_MAX


def test_cli_uncertainty_writes_both_maps_of_the_output_size(tiny_model, tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray((smooth_lr()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(image)
    result = CliRunner().invoke(main, ["upscale", str(image), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                                       "--samples", "2", "--uncertainty", "--color-fix", "wavelet", "--json", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["color_fix"] == "wavelet" and record["std_mean"] > 0
    coloured, raw = Image.open(record["std_map"]), read_image(record["std16"])
    assert coloured.size == (64, 48) and coloured.mode == "RGB"
    assert raw.bit_depth == 16 and raw.is_gray and raw.rgb.shape == (3, 48, 64)
    assert (raw.rgb[0] * STD16_FULL_SCALE).mean().item() == pytest.approx(record["std_mean"], abs=1e-4)
    again = CliRunner().invoke(main, ["upscale", str(image), "-o", str(tmp_path / "out"), "--model", str(tiny_model),
                                      "--samples", "2", "--uncertainty", "--suffix", "other", "-q"])
    assert again.exit_code == 0 and (tmp_path / "out" / "a_other_std16.png").is_file()
    refused = CliRunner().invoke(main, ["upscale", str(image), "-o", str(tmp_path / "x"), "--model", str(tiny_model),
                                        "--samples", "1", "--uncertainty"])
    assert refused.exit_code == 2 and "--uncertainty" in refused.stderr and not (tmp_path / "x" / "a_out.png").exists()


def test_identity_start_returns_the_x4plus_image_before_training(x4plus):
    """The identity recipe's network, before any step, through the pipeline: exactly Real-ESRGAN x4plus's output."""
    from shiftsr.pipeline import ShiftSRPipeline
    from shiftsr.training.config import TrainConfig
    from shiftsr.training.models import build_network, build_training_process, bundle_settings

    cfg = TrainConfig.load(IDENTITY_RECIPE)
    cfg.check()
    cfg.model = dataclasses.replace(cfg.model, init_from=str(ROOT / cfg.model.init_from))
    process = build_training_process(cfg)
    lr = smooth_lr()
    expected = x4plus.preprocess(lr)
    outputs = {}
    for identity in (True, False):
        cfg.model = dataclasses.replace(cfg.model, identity_init=identity)
        net = build_network(cfg, 48)
        pipe = ShiftSRPipeline(net, bundle_settings(cfg, process, net), device="cpu")
        pipe.preprocess = lambda image: expected  # x4plus's output for this LR, computed once
        outputs[identity] = pipe(lr, samples=2, seed=0)
    assert (outputs[True] - expected).abs().max() <= 1e-6
    assert (outputs[False] - expected).abs().max() > 1e-3  # the bundled default network alone does change it
