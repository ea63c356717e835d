"""NIQE (shiftsr.metrics.niqe): the AGGD fit, the MSCN map, the distance, an independent implementation, MATLAB.

The pinned values were recorded with BasicSR 1.4.2's numpy NIQE core (basicsr/metrics/niqe.py: niqe(), itself
calibrated against the official MATLAB release) on the gray levels of the synthetic images below and the seeded
random model, so they need no parameter file (see test_matches_basicsr_niqe_core).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from shiftsr.metrics import create, metric_info
from shiftsr.metrics.niqe import aggd_fit, gray_levels, mscn, niqe, niqe_features

# (size, seed) -> NIQE by BasicSR's niqe() core with random_model(seed)
BASICSR_VALUES = {((192, 288), 0): 7.381881592936153, ((200, 300), 1): 9.973123458511953}
# the official MATLAB release (niqe_release.zip) on pyiqa's calibration images (ResultsCalibra/results_official.csv);
# measured here: 15.7357, 3.6549, 3.2357, 3.2025, 9.0220 (pyiqa's own port: 15.6538, 3.6549, 3.2342, 3.1922, 9.0722)
MATLAB_VALUES = {"I03": 15.7536293917814, "I04": 3.65492152353770, "I06": 3.23547743716998,
                 "I08": 3.18403333858339, "I19": 8.63519663862637}
CALIBRATION = os.environ.get("SHIFTSR_NIQE_CALIBRATION")  # a folder with pyiqa's ResultsCalibra/dist_dir images


def synthetic_image(size: tuple[int, int], seed: int) -> torch.Tensor:
    """A 1x3xHxW 8-bit image in [0, 1]: smooth waves, an edge and seeded noise, the same on every machine."""
    height, width = size
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    noise = torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    base = 120 + 50 * torch.sin(x / 7) * torch.cos(y / 11) + 40 * (x > width / 2) + 12 * noise
    return (base.clamp(0, 255).round() / 255).float()[None]


def random_model(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 36-d mean and a positive definite covariance drawn from a seed (a stand-in for the pristine model)."""
    generator = torch.Generator().manual_seed(100 + seed)
    mu = torch.rand(36, generator=generator, dtype=torch.float64)
    factor = torch.randn(36, 36, generator=generator, dtype=torch.float64) / 6
    return mu, factor @ factor.T + 0.1 * torch.eye(36, dtype=torch.float64)


def aggd_samples(scale_left: float, scale_right: float, count: int) -> torch.Tensor:
    """Draws of an AGGD of shape 2, density exp(-(x / scale)^2) on each side: half-normals of std scale / sqrt(2),
    the side chosen in proportion to its scale (its mass)."""
    generator = torch.Generator().manual_seed(0)
    magnitude = torch.randn(count, generator=generator, dtype=torch.float64).abs()
    left = torch.rand(count, generator=generator, dtype=torch.float64) < scale_left / (scale_left + scale_right)
    return torch.where(left, -scale_left, scale_right) * magnitude / math.sqrt(2)


def test_aggd_fit_recovers_shape_and_scales_of_known_distributions():
    gaussian = aggd_samples(1.0, 1.0, 400_000)  # N(0, 1/2): shape 2, both scales 1
    shape, left, right = aggd_fit(gaussian[None])
    assert shape.item() == pytest.approx(2.0, abs=0.02)
    assert left.item() == pytest.approx(1.0, abs=0.01) and right.item() == pytest.approx(1.0, abs=0.01)
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((400_000,)).double()
    assert aggd_fit(laplace[None])[0].item() == pytest.approx(1.0, abs=0.02)
    skewed = aggd_samples(0.5, 2.0, 400_000)
    shape, left, right = aggd_fit(skewed[None])
    assert shape.item() == pytest.approx(2.0, abs=0.03)
    assert left.item() == pytest.approx(0.5, abs=0.01) and right.item() == pytest.approx(2.0, abs=0.03)


def test_aggd_fit_without_negative_values_takes_matlabs_first_shape():
    shape, left, right = aggd_fit(torch.rand(1, 100, dtype=torch.float64))
    assert shape.item() == pytest.approx(0.2) and left.isnan().item() and right.isfinite().item()


def test_mscn_of_a_constant_image_is_zero_and_of_any_image_bounded():
    assert mscn(torch.full((1, 1, 20, 30), 77.0, dtype=torch.float64)).abs().max() < 1e-12
    gray = gray_levels(synthetic_image((96, 96), 3))[None]
    coefficients = mscn(gray)
    assert coefficients.shape == gray.shape and coefficients.abs().max() < 10


def test_an_image_scored_against_its_own_features_is_at_distance_zero():
    rgb = synthetic_image((192, 288), 0)
    features = niqe_features(gray_levels(rgb)[0])
    assert features.shape == (6, 36)
    own = (features.nanmean(0), torch.eye(36, dtype=torch.float64))
    assert niqe(rgb, model=own).item() == pytest.approx(0.0, abs=1e-6)
    blurred = torch.nn.functional.avg_pool2d(rgb, 5, stride=1, padding=2, count_include_pad=False)
    assert niqe(blurred, model=own).item() > 1.0


def test_matches_basicsr_niqe_core():
    """Recorded with BasicSR 1.4.2's niqe(gray, mu[None], cov, gaussian_window) (its module loaded with the basicsr,
    basicsr.metrics and basicsr.utils packages stubbed in sys.modules, so no torchvision), gray = gray_levels(image),
    the window the one in its niqe_pris_params.npz; the difference (2e-7) is its float32 imresize weights."""
    for (size, seed), value in BASICSR_VALUES.items():
        assert niqe(synthetic_image(size, seed), model=random_model(seed)).item() == pytest.approx(value, abs=1e-5)


def test_small_images_and_the_registry():
    info = metric_info("niqe")
    assert not info.full_reference and info.lower_is_better and info.per_image
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        niqe(synthetic_image((100, 150), 0), model=random_model(0))


def official_model_installed() -> bool:
    try:
        from shiftsr.metrics.niqe import params_path

        return params_path().is_file()
    except (ImportError, FileNotFoundError):
        return False


@pytest.mark.skipif(not official_model_installed(), reason="NIQE's pristine model: pip install --no-deps basicsr")
def test_the_registry_metric_reads_the_official_model():
    metric = create("niqe")
    values = metric(torch.cat([synthetic_image((192, 288), 0), synthetic_image((192, 288), 1)]))
    assert values.shape == (2,) and values.dtype == torch.float64 and (values > 0).all()


@pytest.mark.skipif(not (CALIBRATION and official_model_installed()),
                    reason="set SHIFTSR_NIQE_CALIBRATION to pyiqa's ResultsCalibra/dist_dir, install basicsr --no-deps")
def test_official_matlab_values_on_pyiqas_calibration_images():
    from shiftsr.imageio import read_image

    metric = create("niqe")
    for name, value in MATLAB_VALUES.items():
        # I19's features lie where 1e-4 of noise on the half-scale image moves NIQE by 0.07 (pyiqa's port: 9.07)
        tolerance = 0.4 if name == "I19" else 0.02
        assert metric(read_image(Path(CALIBRATION) / f"{name}.bmp").rgb[None]).item() == pytest.approx(
            value, abs=tolerance)
