import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from shiftsr.cli.degrade import degrade as degrade_command
from shiftsr.data.degradations import (
    PRESETS,
    BicubicConfig,
    DegradationConfig,
    FinalConfig,
    StageConfig,
    add_gaussian_noise,
    add_poisson_noise,
    degrade,
    jpeg,
    load_config,
    load_preset,
    seeded_generator,
)
from shiftsr.ops.imresize import imresize
from shiftsr.data.kernels import (
    KernelConfig,
    blur,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    random_kernel,
    sinc_kernel,
)
from shiftsr.data.pairs import BicubicPairs
from shiftsr.data.real_pairs import RealPairs

J1_OF_PI = 0.2846153431797527  # Bessel J1(pi), from tables


pytestmark = pytest.mark.usefixtures("one_thread")


def _gaussian_1d(size, sigma):
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _response(kernel):
    """Real DFT of a centred odd kernel (its frequency response; real because the kernel is point-symmetric)."""
    return torch.fft.fft2(torch.fft.ifftshift(kernel.double())).real


def _hr(batch=2, size=32, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize("size", [7, 21])
def test_every_kernel_sums_to_one_is_square_and_point_symmetric(size):
    kernels = [
        gaussian_kernel(size, 1.3),
        gaussian_kernel(size, 2.5, 0.7, 0.6),
        generalized_gaussian_kernel(size, 1.8, 0.9, -1.1, beta=0.6),
        generalized_gaussian_kernel(size, 1.1, beta=3.5),
        plateau_kernel(size, 2.0, 1.2, 2.2, beta=1.7),
        plateau_kernel(size, 1.5, beta=1.0),
        sinc_kernel(size, math.pi / 3),
    ]
    for kernel in kernels:
        assert kernel.shape == (size, size)
        assert kernel.dtype == torch.float32
        assert kernel.sum().item() == pytest.approx(1, abs=1e-6)
        assert torch.allclose(kernel, kernel.flip(0, 1), atol=1e-7)
        assert kernel.argmax().item() == size * size // 2  # the peak is the centre


def test_isotropic_gaussian_is_the_outer_product_of_1d_gaussians():
    expected = torch.outer(_gaussian_1d(9, 1.7), _gaussian_1d(9, 1.7))
    assert torch.allclose(gaussian_kernel(9, 1.7).double(), expected, atol=1e-7)
    assert torch.allclose(gaussian_kernel(9, 1.7), gaussian_kernel(9, 1.7).T)


def test_anisotropic_gaussian_axes_and_rotation():
    # sigma_x spreads along columns (x), sigma_y along rows (y); a quarter turn swaps them.
    kernel = gaussian_kernel(11, 2.5, 0.8, 0.0)
    assert torch.allclose(kernel.double(), torch.outer(_gaussian_1d(11, 0.8), _gaussian_1d(11, 2.5)), atol=1e-7)
    assert torch.allclose(gaussian_kernel(11, 2.5, 0.8, math.pi / 2), kernel.T, atol=1e-7)
    assert torch.allclose(gaussian_kernel(11, 2.5, 0.8, math.pi), kernel, atol=1e-7)


def test_generalized_gaussian_with_beta_one_is_the_gaussian():
    # Real-ESRGAN Eq. 3 raises the quadratic form to beta, so beta = 1 (not 2) is the Gaussian.
    assert torch.allclose(generalized_gaussian_kernel(13, 2.0, 1.1, 0.4, beta=1.0), gaussian_kernel(13, 2.0, 1.1, 0.4))
    assert not torch.allclose(generalized_gaussian_kernel(13, 2.0, beta=2.0), gaussian_kernel(13, 2.0), atol=1e-3)


def test_plateau_kernel_values_follow_one_over_one_plus_q_to_the_beta():
    sigma, beta = 1.5, 1.7
    kernel = plateau_kernel(7, sigma, beta=beta)
    # neighbours at distance 1 and sqrt(2) relative to the centre, where q = 0
    assert kernel[3, 4] / kernel[3, 3] == pytest.approx(1 / (1 + (1 / sigma**2) ** beta), rel=1e-6)
    assert kernel[4, 4] / kernel[3, 3] == pytest.approx(1 / (1 + (2 / sigma**2) ** beta), rel=1e-6)


def test_sinc_kernel_matches_the_bessel_formula_and_is_a_circular_low_pass():
    kernel = sinc_kernel(21, math.pi)
    # omega J1(omega r) / (2 pi r) at r = 1 over the centre value omega^2 / (4 pi) is 2 J1(omega) / omega
    assert kernel[10, 11] / kernel[10, 10] == pytest.approx(2 * J1_OF_PI / math.pi, rel=1e-5)
    # cutoff pi keeps every frequency inside the circle of radius pi (up to the ripple of the 21-tap window):
    # delta-like along the axes, only the corners of the spectrum are removed
    freq = torch.fft.fftfreq(21, dtype=torch.float64) * 2 * math.pi
    radius = torch.hypot(freq[:, None], freq[None, :])
    response = _response(kernel)
    assert (response[0] - 1).abs().max() < 0.05 and (response[:, 0] - 1).abs().max() < 0.05
    assert (response[radius < 0.9 * math.pi] - 1).abs().max() < 0.1
    assert response[radius > 1.1 * math.pi].abs().max() < 0.1
    # cutoff pi/2 on a wide window: pass band near 1, stop band near 0
    wide = _response(sinc_kernel(61, math.pi / 2))
    freq = torch.fft.fftfreq(61, dtype=torch.float64) * 2 * math.pi
    radius = torch.hypot(freq[:, None], freq[None, :])
    assert (wide[radius < 0.35 * math.pi] - 1).abs().max() < 0.06
    assert wide[radius > 0.65 * math.pi].abs().max() < 0.06


def test_random_kernels_are_deterministic_and_follow_the_config():
    config = KernelConfig(sizes=(7, 9), sinc_prob=0.5)
    first = [random_kernel(config, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(first[0], first[1])
    g = torch.Generator().manual_seed(4)
    kernels = [random_kernel(config, g) for _ in range(40)]
    assert {k.shape[0] for k in kernels} == {7, 9}
    assert all(k.sum().item() == pytest.approx(1, abs=1e-6) for k in kernels)
    assert any(k.min() < 0 for k in kernels)  # sinc kernels have negative lobes, the others do not
    assert len({tuple(k.flatten().tolist()) for k in kernels}) == 40


def test_blur_applies_each_image_its_own_kernel_with_reflect_padding():
    x = torch.rand(3, 3, 20, 17, dtype=torch.float64)
    kernels = torch.stack([gaussian_kernel(7, s, 0.6, 0.3 * s).double() for s in (0.8, 1.5, 2.5)])
    expected = torch.cat([
        F.conv2d(F.pad(x[i : i + 1], (3, 3, 3, 3), mode="reflect"), kernels[i].expand(3, 1, 7, 7), groups=3)
        for i in range(3)
    ])
    assert torch.allclose(blur(x, kernels), expected, atol=1e-12)
    constant = torch.full((1, 3, 5, 5), 0.3)  # smaller than the padding of a 21x21 kernel
    assert torch.allclose(blur(constant, sinc_kernel(21, 1.0)), constant, atol=1e-6)


# ---------------------------------------------------------------- noise and JPEG


def test_gaussian_noise_has_the_requested_sigma_and_gray_noise_is_shared():
    x = torch.full((2, 3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(0)
    noisy = add_gaussian_noise(x, torch.tensor([10.0, 20.0]), torch.tensor([False, True]), g)
    assert (noisy[0] - 0.5).std().item() * 255 == pytest.approx(10, rel=0.05)
    assert (noisy[1] - 0.5).std().item() * 255 == pytest.approx(20, rel=0.05)
    assert torch.equal(noisy[1, 0], noisy[1, 2]) and not torch.equal(noisy[0, 0], noisy[0, 2])


def test_poisson_noise_is_zero_mean_scaled_and_shared_when_gray():
    x = torch.full((2, 3, 64, 64), 100 / 255)
    x[:, :, :, :32] = 40 / 255  # two levels: the Poisson rate is x * 2
    g = torch.Generator().manual_seed(0)
    noisy = add_poisson_noise(x, torch.tensor([0.5, 0.5]), torch.tensor([False, True]), g)
    # Poisson(2 x) / 2 - x has variance x / 2; scaled by 0.5 its std is 0.5 sqrt(x / 2)
    right = noisy[0, :, :, 32:] - x[0, :, :, 32:]
    assert right.mean().item() == pytest.approx(0, abs=0.01)
    assert right.std().item() == pytest.approx(0.5 * math.sqrt(100 / 255 / 2), rel=0.05)
    assert torch.equal(noisy[1, 0], noisy[1, 1])


def test_jpeg_matches_pillows_codec_and_loses_more_at_lower_quality():
    y, x = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 20), indexing="ij")
    image = torch.stack([x, y, 0.5 + 0.4 * torch.sin(6 * x + 4 * y)])
    image = ((image * 255).round() / 255).expand(2, -1, -1, -1)
    low, high = jpeg(image, [10, 95]).split(1)
    assert torch.equal(low * 255, (low * 255).round())
    assert (low - image[:1]).abs().mean() > 3 * (high - image[1:]).abs().mean()
    # Pillow's JPEG (same libjpeg defaults: baseline, 4:2:0 chroma) gives the same pixels, up to a level
    stream = io.BytesIO()
    Image.fromarray((image[0] * 255).round().byte().permute(1, 2, 0).numpy()).save(stream, "JPEG", quality=10)
    pillow = torch.from_numpy(np.array(Image.open(stream).convert("RGB"))).permute(2, 0, 1) / 255
    assert (low[0] - pillow).abs().max() <= 1 / 255 + 1e-6


# ---------------------------------------------------------------- degrade


@pytest.mark.parametrize("preset", PRESETS)
def test_degrade_shape_range_dtype_and_8bit_levels(preset):
    lr = degrade(_hr(), load_preset(preset), 4, torch.Generator().manual_seed(0))
    assert lr.shape == (2, 3, 8, 8) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr * 255, (lr * 255).round())


def test_same_seed_same_output_other_seed_other_output():
    config, hr = load_preset("realesrgan"), _hr()
    first = degrade(hr, config, 4, torch.Generator().manual_seed(1))
    assert torch.equal(first, degrade(hr, config, 4, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, degrade(hr, config, 4, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("preset", ["realesrgan", "resshift-test"])
def test_images_of_a_batch_get_different_degradations(preset):
    hr = _hr(batch=1).expand(3, -1, -1, -1)
    lr = degrade(hr, load_preset(preset), 4, torch.Generator().manual_seed(0))
    assert not torch.equal(lr[0], lr[1]) and not torch.equal(lr[1], lr[2]) and not torch.equal(lr[0], lr[2])


def test_a_batch_equals_its_images_degraded_in_turn():
    config, hr = load_preset("realesrgan"), _hr(batch=3)
    batch = degrade(hr, config, 2, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(batch, torch.cat([degrade(x[None], config, 2, g) for x in hr]))


def test_the_second_order_adds_its_own_noise():
    # Both orders reduced to Gaussian noise of 10 levels (no blur, resize, JPEG or sinc; scale 1): the noise
    # of a flat image is 10 levels with the first order only and sqrt(10^2 + 10^2) with both.
    noise_only = StageConfig(
        blur_prob=0, resize_probs=(0, 0, 1), gaussian_noise_prob=1, gaussian_sigma=(10, 10), gray_noise_prob=0,
        jpeg_quality=None,
    )
    final = FinalConfig(sinc_prob=0, jpeg_quality=None)
    flat = torch.full((1, 3, 64, 64), 0.5)
    for prob, expected in ((0, 10), (1, math.sqrt(200))):
        config = DegradationConfig(stage1=noise_only, second_order_prob=prob, stage2=noise_only, final=final)
        lr = degrade(flat, config, 1, torch.Generator().manual_seed(0))
        assert (lr - 0.5).std().item() * 255 == pytest.approx(math.sqrt(expected**2 + 1 / 12), rel=0.05)


def test_bicubic_preset_is_matlab_imresize_rounded_to_8_bits():
    hr = _hr(size=24)
    lr = degrade(hr, load_preset("bicubic"), 3, torch.Generator())
    assert isinstance(load_preset("bicubic"), BicubicConfig)
    assert torch.equal(lr, (imresize(hr, scale=1 / 3) * 255).round().clamp(0, 255) / 255)


def test_degrade_refuses_sizes_that_are_not_multiples_of_the_scale():
    with pytest.raises(ValueError, match="multiple of the scale 4"):
        degrade(_hr(size=30), load_preset("realesrgan"), 4, torch.Generator())


def test_seeded_generators_of_different_keys_differ():
    draws = {tuple(torch.rand(4, generator=seeded_generator(0, i)).tolist()) for i in range(5)}
    assert len(draws) == 5
    assert torch.equal(torch.rand(3, generator=seeded_generator(7, 2)), torch.rand(3, generator=seeded_generator(7, 2)))


# ---------------------------------------------------------------- presets and YAML


def test_realesrgan_preset_has_the_published_values():
    config = load_preset("realesrgan")
    assert config == DegradationConfig()
    one, two, final = config.stage1, config.stage2, config.final
    assert one.kernel.sizes == tuple(range(7, 22, 2)) and one.kernel.sigma == (0.2, 3.0)
    assert one.kernel.kind_probs == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03) and one.kernel.sinc_prob == 0.1
    assert (one.kernel.betag, one.kernel.betap) == ((0.5, 4.0), (1.0, 2.0))
    assert (one.resize_probs, one.resize_range) == ((0.2, 0.7, 0.1), (0.15, 1.5))
    assert (one.gaussian_sigma, one.poisson_scale, one.gray_noise_prob) == ((1, 30), (0.05, 3), 0.4)
    assert one.jpeg_quality == (30, 95)
    assert (two.blur_prob, two.kernel.sigma) == (0.8, (0.2, 1.5))
    assert (two.resize_probs, two.resize_range) == ((0.3, 0.4, 0.3), (0.3, 1.2))
    assert (two.gaussian_sigma, two.poisson_scale) == ((1, 25), (0.05, 2.5))
    assert (final.sinc_prob, final.jpeg_quality) == (0.8, (30, 95))


def test_resshift_test_preset_has_the_values_of_its_appendix_b1():
    config = load_preset("resshift-test")
    stage = config.stage1
    assert config.stage2 is None and config.second_order_prob == 0
    assert stage.kernel.sizes == (13,) and stage.kernel.sinc_prob == 0
    assert dict(zip(stage.kernel.kinds, stage.kernel.kind_probs)) == {"iso": 0.6, "aniso": 0.4}
    assert stage.kernel.sigma == (0.2, 0.8)
    assert stage.resize_to == "output" and stage.resize_probs == (0, 0, 1)
    assert set(stage.resize_modes) == {"area", "bilinear", "bicubic"}
    assert (stage.gaussian_noise_prob, stage.gaussian_sigma, stage.poisson_scale) == (0.5, (1, 15), (0.05, 0.3))
    assert stage.jpeg_quality == (70, 95)
    assert config.final.sinc_prob == 0 and config.final.jpeg_quality is None


def test_yaml_keys_left_out_keep_the_defaults_of_their_place(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("stage2:\n  blur_prob: 0.5\nfinal:\n  jpeg_quality: null\n")
    config = load_config(path)
    assert config.stage2.blur_prob == 0.5 and config.stage2.kernel.sigma == (0.2, 1.5)
    assert config.final.jpeg_quality is None and config.stage1 == DegradationConfig().stage1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stage1:\n  jpeg_qualty: [30, 95]\n", "unknown key 'stage1.jpeg_qualty'"),
        ("stage1:\n  kernel:\n    sigmas: [1, 2]\n", "unknown key 'stage1.kernel.sigmas'"),
        ("second_order_prob: high\n", "key 'second_order_prob' must be a number, got str 'high'"),
        ("final:\n  sinc_prob: .nan\n", "key 'final.sinc_prob' must be a number, got float nan"),
        ("stage1:\n  kernel:\n    sizes: [7, 9.5]\n", "key 'stage1.kernel.sizes' must be an integer"),
        ("final:\n  sinc_cutoff_pi: [0.5]\n", "key 'final.sinc_cutoff_pi' must be a list of 2 numbers"),
        ("stage1:\n  resize_to: true\n", "key 'stage1.resize_to' must be a string"),
        ("stage1: [1, 2]\n", "key 'stage1' must be a mapping"),
        ("stage1:\n  gray_noise_prob: 1.5\n", "in 'stage1': gray_noise_prob must be a probability"),
        ("stage1:\n  kernel:\n    kinds: [iso, box]\n", "in 'stage1.kernel': kinds: unknown"),
        ("stage2: null\n", "second_order_prob must be 0 when stage2 is null"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("stage1: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_is_refused_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load_preset(str(path))
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_unknown_preset_and_missing_file_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown degradation preset 'realesrgan2'"):
        load_preset("realesrgan2")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_preset(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- training pairs


def test_real_pairs_reuse_bicubic_crops_and_degrade_them():
    images = [torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    hr, lr = next(iter(RealPairs(images, patch=16, scale=4, batch=3, seed=2)))
    crops = BicubicPairs(images, patch=16, scale=4, batch=3, seed=2)
    assert torch.equal(hr, torch.stack([crops.crop() for _ in range(3)]))
    assert lr.shape == (3, 3, 4, 4) and torch.equal(lr * 255, (lr * 255).round())
    again = next(iter(RealPairs(images, patch=16, scale=4, batch=3, seed=2)))
    assert torch.equal(again[1], lr)
    _, bicubic = next(iter(RealPairs(images, patch=16, scale=4, batch=3, seed=2, config=BicubicConfig())))
    assert torch.equal(bicubic, degrade(hr, BicubicConfig(), 4, torch.Generator()))


# ---------------------------------------------------------------- CLI


def _write_images(folder: Path, sizes=((30, 33), (24, 20))) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for index, (h, w) in enumerate(sizes):
        path = folder / f"img{index}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _run(*args):
    return CliRunner().invoke(degrade_command, [str(a) for a in args])


def test_cli_writes_one_lr_per_image_seeded_by_index(tmp_path):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    paths = _write_images(hr_dir)
    result = _run(hr_dir, "-o", lr_dir, "--preset", "realesrgan", "--scale", "4", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in lr_dir.iterdir()) == ["img0.png", "img1.png"]
    for index, path in enumerate(paths):
        hr = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
        hr = hr[:, : hr.shape[1] // 4 * 4, : hr.shape[2] // 4 * 4][None]  # modcrop
        expected = degrade(hr, load_preset("realesrgan"), 4, seeded_generator(3, index))[0]
        written = torch.from_numpy(np.array(Image.open(lr_dir / path.name))).permute(2, 0, 1).float() / 255
        assert torch.equal(written, expected)


def test_cli_refuses_to_overwrite_unless_asked(tmp_path):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    _write_images(hr_dir)
    assert _run(hr_dir, "-o", lr_dir, "--preset", "bicubic").exit_code == 0
    before = (lr_dir / "img0.png").read_bytes()
    result = _run(hr_dir, "-o", lr_dir, "--preset", "resshift-test")
    assert result.exit_code == 1 and "already exists" in result.output and "--overwrite" in result.output
    assert (lr_dir / "img0.png").read_bytes() == before
    assert _run(hr_dir, "-o", lr_dir, "--preset", "resshift-test", "--overwrite").exit_code == 0
    assert (lr_dir / "img0.png").read_bytes() != before


def test_cli_errors_for_empty_folder_bad_preset_and_unreadable_image(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(empty, "-o", tmp_path / "lr", "--preset", "bicubic")
    assert result.exit_code == 1 and f"{empty}: no image files" in result.output
    assert _run(tmp_path / "absent", "-o", tmp_path / "lr", "--preset", "bicubic").exit_code == 2
    hr_dir = tmp_path / "hr"
    _write_images(hr_dir)
    result = _run(hr_dir, "-o", tmp_path / "lr", "--preset", "nonesuch")
    assert result.exit_code == 2 and "unknown degradation preset" in result.output
    (hr_dir / "broken.png").write_bytes(b"not a png")
    result = _run(hr_dir, "-o", tmp_path / "lr", "--preset", "bicubic")
    assert result.exit_code == 1 and "broken.png" in result.output and "wrote 2 of 3" in result.output
    result = _run(hr_dir, "-o", hr_dir, "--preset", "bicubic", "--overwrite")
    assert result.exit_code == 1 and "is an input image" in result.output
