from pathlib import Path

import kornia
import pytest
import torch

from shiftsr.metrics import STLPIPS, create, psnr_y, ssim_y
from shiftsr.metrics.stlpips import BlurPool, weights_path

BENCHMARK = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark" / "Set5" / "x4"


@pytest.fixture(scope="module")
def alex():
    return STLPIPS("alex")


def _shapes(size=40, count=10, seed=0):
    """A 1x3xsize x size image of random flat-coloured rectangles: sharp edges, like a drawing."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 1, 1, generator=generator).expand(3, size, size).clone()
    for _ in range(count):
        top, left = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        height, width = torch.randint(4, size // 2, (2,), generator=generator).tolist()
        image[:, top : top + height, left : left + width] = torch.rand(3, 1, 1, generator=generator)
    return image[None]


def _blur(image, sigma):
    return kornia.filters.gaussian_blur2d(image, (9, 9), (sigma, sigma), border_type="reflect")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_weights_load_strictly_and_every_tensor_is_used(net):
    state = torch.load(weights_path(net), map_location="cpu", weights_only=True)
    model = STLPIPS(net)  # built on the meta device, then every tensor assigned by a strict load
    assert model.state_dict().keys() == state.keys()
    assert all(tensor.device.type == "cpu" for tensor in model.state_dict().values())
    owners = {key.rsplit(".", 1)[0] for key in state}
    called = set()
    for name, module in model.named_modules():
        if name in owners:
            module.register_forward_hook(lambda module, args, out, name=name: called.add(name))
    with torch.inference_mode():
        model(torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24))
    assert called == owners


def test_blur_pool_is_the_normalised_binomial_filter_with_two_pixels_of_reflection():
    pool = BlurPool(2)
    assert pool.filt[0, 0].tolist() == [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]]
    image = torch.zeros(1, 2, 9, 9)
    image[0, :, 4, 4] = 1.0
    out = pool(image)
    # Padded to 13x13 (centre at 6), 3x3 windows at stride 2: (13 - 3) // 2 + 1 = 6 outputs; 2 and 3 see the centre.
    assert out.shape == (1, 2, 6, 6)
    assert out[0, 0, 2:4, 2:4].tolist() == [[1 / 16, 1 / 16], [1 / 16, 1 / 16]]
    assert out.sum().item() == pytest.approx(2 * 4 / 16)
    assert torch.allclose(pool(torch.full((1, 2, 10, 7), 0.3)), torch.tensor(0.3))


def test_identical_images_have_zero_distance(alex):
    image = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert alex(image, image).abs().max().item() < 1e-6


def test_more_blur_scores_worse(alex):
    image = _shapes()
    blurred = torch.cat([_blur(image, sigma) for sigma in (0.3, 0.8, 2.0)])
    with torch.inference_mode():
        sharp, mild, strong = alex(image.expand_as(blurred), blurred).tolist()
    assert 0 < sharp < mild < strong


def test_one_pixel_shift_is_tolerated_unlike_a_plain_distance(alex):
    # Relative to the same image blurred with sigma 1, a 1-pixel shift is almost 3x worse for the mean squared
    # error, but a small fraction for ST-LPIPS.
    image = _shapes()
    blurred = _blur(image, 1.0)
    left, right = image[..., :, 1:], image[..., :, :-1]
    mse = lambda a, b: (a - b).pow(2).mean().item()  # noqa: E731
    with torch.inference_mode():
        st_ratio = alex(left, right).item() / alex(image, blurred).item()
    mse_ratio = mse(left, right) / mse(image, blurred)
    assert mse_ratio > 1
    assert st_ratio < mse_ratio / 10


def test_gradients_reach_the_images_but_not_the_weights(alex):
    # Training adds ST-LPIPS to its loss: the distance must be differentiable in the first image.
    generator = torch.Generator().manual_seed(3)
    sr = torch.rand(1, 3, 32, 32, generator=generator, requires_grad=True)
    alex(sr, torch.rand(1, 3, 32, 32, generator=generator)).sum().backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in alex.parameters())

def test_registry_metric_gives_one_float64_value_per_image(alex):
    metric = create("stlpips")
    generator = torch.Generator().manual_seed(2)
    hr = torch.rand(2, 3, 32, 32, generator=generator)
    sr = (hr + 0.1 * torch.randn(hr.shape, generator=generator)).clamp(0, 1)
    values = metric(sr, hr)
    assert values.dtype == torch.float64 and values.shape == (2,)
    with torch.inference_mode():
        assert values[1].item() == pytest.approx(alex(sr[1:], hr[1:]).item(), rel=1e-5)


def test_bad_inputs_are_rejected(alex):
    with pytest.raises(ValueError, match="at least 21x21"):
        alex(torch.rand(1, 3, 20, 40), torch.rand(1, 3, 20, 40))
    with pytest.raises(ValueError, match="equal shape"):
        alex(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 30))
    with pytest.raises(ValueError, match="unknown ST-LPIPS trunk"):
        STLPIPS("squeeze")
    with pytest.raises(ValueError, match="full-reference"):
        create("stlpips")(torch.rand(1, 3, 32, 32))


@pytest.mark.slow
@pytest.mark.skipif(not (BENCHMARK / "HR").is_dir(), reason="benchmark data not present")
def test_set5_bicubic_calibration():
    # Known values for MATLAB-bicubic x4 on Set5: PSNR-Y 28.42 dB and SSIM-Y 0.8104 as published in SR papers;
    # ST-LPIPS (alex) 0.326 as measured by the project with the reference stlpips-pytorch implementation.
    from shiftsr.ops.imresize import imresize
    from shiftsr.imageio import read_image

    metric = create("stlpips-alex")
    scores = {"psnr": [], "ssim": [], "stlpips": []}
    for path in sorted((BENCHMARK / "HR").iterdir()):
        hr = read_image(path).rgb
        sr = imresize(read_image(BENCHMARK / "LR" / path.name).rgb, scale=4).clamp(0, 1)
        scores["psnr"].append(psnr_y(sr, hr, border=4).item())
        scores["ssim"].append(ssim_y(sr, hr, border=4).item())
        scores["stlpips"].append(metric(sr[None], hr[None]).item())
    means = {name: sum(values) / len(values) for name, values in scores.items()}
    assert means["stlpips"] == pytest.approx(0.326, abs=0.003)
    assert means["psnr"] == pytest.approx(28.42, abs=0.02)
    assert means["ssim"] == pytest.approx(0.8104, abs=0.002)
