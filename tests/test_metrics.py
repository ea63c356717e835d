import math

import numpy as np
import pytest
import torch

from shiftsr.metrics import psnr_y, rgb_to_y, ssim_y


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
