"""Arbitrary scales and target sizes: output sizes, the fitting rule, padding, noise tables and shortened paths."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shiftsr.bundle import SamplerDefaults, save_bundle, settings_for
from shiftsr.cli import main
from shiftsr.bundle import bundled_models, resolve_model
from shiftsr.methods import METHODS
from shiftsr.ops.padding import pad_to_multiple
from shiftsr.ops.sizes import output_size, round_half_up
from shiftsr.pipeline import load
from shiftsr.processes import DomainShiftProcess, ResShiftProcess, VPProcess, start_state
from shiftsr.processes.start import NOISE_TABLE_FILE, NoiseTable, isotonic, load_noise_table

SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """An unconditional VP model folder (noise injection), x4, space-to-depth 4, two DDIM steps by default."""
    from shiftsr.networks import ShiftNet

    torch.manual_seed(0)
    net = ShiftNet(channels=8, num_blocks=1, cond_channels=0)
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)
    settings = settings_for(net, VPProcess(**SD_BETAS), scale=4, prediction_type="sample",
                            sampler=SamplerDefaults(method="noise-injection", steps=2, order=1, samples=1))
    return save_bundle(tmp_path_factory.mktemp("tiny_prior"), net, settings)


@pytest.fixture(scope="module")
def pipes(tiny_model, tiny_prior):
    return {"dossr": load(tiny_model, device="cpu"), "prior": load(tiny_prior, device="cpu")}


def image(height=7, width=11, seed=0):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


# sizes: scale and target


def test_scale_rounds_each_side_half_up():
    assert output_size(7, 11, scale=2.7) == (19, 30)  # 18.9 and 29.7
    assert output_size(5, 3, scale=2.5) == (13, 8)  # 12.5 and 7.5: halves go up (Python's round gives 12)
    assert output_size(1, 1, scale=0.1) == (1, 1)  # never below one pixel
    assert round_half_up(2.5) == 3 and round_half_up(3.5) == 4 and round_half_up(2.49) == 2


@pytest.mark.parametrize(("lr", "box", "expected"), [
    ((7, 11), (101, 53), (53, 83)),    # height limits (53 / 7 < 101 / 11): W = 11 * 53 / 7 = 83.29 -> 83
    ((7, 11), (30, 100), (19, 30)),    # width limits: H = 7 * 30 / 11 = 19.09 -> 19
    ((1080, 1920), (1920, 1080), (1080, 1920)),  # the box's own aspect ratio: met exactly
    ((10, 20), (40, 20), (20, 40)),
    ((3, 4), (6, 1000), (5, 6)),       # 4.5 rounds half up, still inside the box
])
def test_target_fits_the_largest_same_aspect_size_inside_the_box(lr, box, expected):
    assert output_size(*lr, target=box) == expected


def test_target_fitting_rule_on_random_sizes():
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w, box_w, box_h = (int(v) for v in rng.integers(1, 400, 4))
        out_h, out_w = output_size(h, w, target=(box_w, box_h))
        assert out_h <= box_h and out_w <= box_w
        factor = min(box_w / w, box_h / h)  # the largest scale whose exact size fits
        assert (out_w == box_w and out_h == max(1, round_half_up(h * factor))) or \
               (out_h == box_h and out_w == max(1, round_half_up(w * factor)))


@pytest.mark.parametrize("bad", [(0, 5), (5, -1), (1.5, 2), (3,), ("3", 4), (True, 4)])
def test_bad_targets_and_scales_are_errors(bad):
    with pytest.raises(ValueError, match="target must be two positive ints"):
        output_size(7, 11, target=bad)
    with pytest.raises(ValueError, match="exactly one of"):
        output_size(7, 11, scale=2.0, target=(4, 4))
    with pytest.raises(ValueError, match="scale must be positive"):
        output_size(7, 11, scale=0.0)


@pytest.mark.parametrize("model", ["dossr", "prior"])
@pytest.mark.parametrize("strategy", [None, "resize", "direct"])
def test_pipeline_gives_exactly_the_size_asked_on_odd_sizes(pipes, model, strategy):
    pipe = pipes[model]
    assert pipe(image(), scale=2.7, strategy=strategy).shape == (1, 3, 19, 30)
    assert pipe(image(), target=(101, 53), strategy=strategy).shape == (1, 3, 53, 83)
    assert pipe(image(9, 5), scale=1.5, strategy=strategy).shape == (1, 3, 14, 8)  # 13.5 -> 14, 7.5 -> 8


def test_native_scale_and_scale_none_are_the_same_call(pipes):
    pipe = pipes["dossr"]
    assert torch.equal(pipe(image(), seed=3), pipe(image(), scale=4, seed=3))
    assert torch.equal(pipe(image(), seed=3), pipe(image(), target=(44, 28), seed=3))
    assert torch.equal(pipe(image(), seed=3), pipe(image(), scale=4, strategy="direct", seed=3))


def test_resize_strategy_is_the_native_upscale_resized(pipes):
    from shiftsr.ops.imresize import imresize

    pipe = pipes["dossr"]
    native = pipe(image(), seed=2)
    torch.testing.assert_close(pipe(image(), scale=2.7, seed=2), imresize(native, size=(19, 30)).clamp(0, 1))


def test_unknown_strategy_is_an_error(pipes):
    with pytest.raises(ValueError, match="allowed: resize, direct"):
        pipes["dossr"](image(), scale=2, strategy="bilinear")


def test_noise_injection_needs_a_scale_above_one(pipes):
    with pytest.raises(ValueError, match="must exceed 1"):
        pipes["prior"](image(), scale=0.9)


def test_pad_to_multiple_mirrors_the_bottom_and_right_edges():
    x = torch.arange(5 * 6, dtype=torch.float32).view(1, 1, 5, 6)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 8, 8)
    assert torch.equal(padded[..., :5, :6], x)
    torch.testing.assert_close(padded[..., 5:, :6], x[..., [3, 2, 1], :])  # reflect: the edge row is not repeated
    torch.testing.assert_close(padded[..., :5, 6:], x[..., :, [4, 3]])
    assert pad_to_multiple(x[..., :4, :4], 4) is not None and pad_to_multiple(x[..., :4, :4], 4).shape[-1] == 4
    assert pad_to_multiple(x[..., :1, :1], 4).shape == (1, 1, 4, 4)  # too small to mirror: edge copies


# the noise-level table


def table():
    return NoiseTable(scales=(2.0, 4.0, 8.0), times=(100.0, 300.0, 400.0), t_max=1000.0)


def test_table_is_exact_at_its_scales_and_log_linear_between():
    t = table()
    assert [t.time(s) for s in (2, 4, 8)] == [100, 300, 400]
    assert t.time(math.sqrt(8)) == pytest.approx(200)  # halfway between 2 and 4 in log(scale)
    assert t.time(2 ** 2.25) == pytest.approx(325)
    assert t.time(1) == 0 and t.time(math.sqrt(2)) == pytest.approx(50)  # anchored at (1, 0)
    dense = [t.time(s) for s in np.geomspace(1, 8, 200)]
    assert all(b >= a for a, b in zip(dense, dense[1:]))


def test_table_refuses_scales_outside_its_range_and_bad_tables():
    with pytest.raises(ValueError, match=r"outside the noise table's range \[1, 8.0\]"):
        table().time(8.5)
    with pytest.raises(ValueError, match="outside"):
        table().time(0.5)
    with pytest.raises(ValueError, match="must not fall"):
        NoiseTable((2.0, 4.0), (300.0, 100.0), 1000.0)
    with pytest.raises(ValueError, match="must rise and exceed 1"):
        NoiseTable((4.0, 2.0), (100.0, 300.0), 1000.0)
    with pytest.raises(ValueError, match="measured for T = 1000"):
        table().time(2, ResShiftProcess())


def test_calibration_picks_the_argmin_per_scale_and_makes_it_monotone():
    scores = [[0.5, 0.2, 0.3, 0.9],   # scale 2: best at t = 50
              [0.5, 0.4, 0.1, 0.2],   # scale 4: best at t = 100
              [0.9, 0.1, 0.5, 0.6]]   # scale 8: best at t = 50, below scale 4's
    fitted, best = NoiseTable.from_scores([2, 4, 8], [0, 50, 100, 200], scores, t_max=1000)
    assert best == [50.0, 100.0, 50.0]
    assert fitted.times == (50.0, 75.0, 75.0)  # the violating pair pooled to its mean
    assert isotonic([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]
    assert isotonic([3.0, 1.0, 2.0]) == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="scores must be 3 x 4"):
        NoiseTable.from_scores([2, 4, 8], [0, 50, 100, 200], [[0.0] * 4], t_max=1000)


def test_table_file_round_trip_and_errors(tmp_path):
    path = tmp_path / NOISE_TABLE_FILE
    path.write_text(json.dumps({"scales": [2, 4, 8], "t_start": [100, 300, 400], "t_max": 1000}))
    assert load_noise_table(path) == table()
    path.write_text(json.dumps({"scales": [2, 4]}))
    with pytest.raises(ValueError, match=f"{NOISE_TABLE_FILE}: not a noise-level table"):
        load_noise_table(path)


def test_pipeline_uses_the_table_in_the_model_folder_else_the_paper(tiny_prior, tmp_path):
    import shutil

    assert load(tiny_prior, device="cpu").plan((8, 8), scale=2.0).t_start == pytest.approx(200)  # paper: 20% at 2x
    folder = shutil.copytree(tiny_prior, tmp_path / "with_table")
    (folder / NOISE_TABLE_FILE).write_text(json.dumps({"scales": [2, 4, 8], "t_start": [100, 300, 400],
                                                       "t_max": 1000}))
    pipe = load(folder, device="cpu")
    assert pipe.plan((8, 8), scale=2.0).t_start == pytest.approx(100)
    assert pipe.plan((1000, 1000), scale=math.sqrt(8)).t_start == pytest.approx(200, abs=0.1)  # sides round
    assert pipe.plan((8, 8), scale=16.0).t_start is None  # beyond the table: the KL rule, decided per image
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert pipe.run(flat, scale=16.0).record["t_start"] == 0  # a flat image has lost nothing


def test_a_start_at_the_clean_state_returns_the_upsampled_lr(pipes):
    from shiftsr.ops.imresize import imresize

    for pipe in pipes.values():
        expected = imresize(image()[None], size=(19, 30)).clamp(0, 1)
        torch.testing.assert_close(pipe(image(), scale=2.7, strategy="direct", t_start=0), expected)


@pytest.mark.skipif("prior-x4" not in bundled_models(), reason="prior-x4 not bundled")
def test_the_bundled_prior_ships_a_rising_table():
    shipped = load_noise_table(resolve_model("prior-x4") / NOISE_TABLE_FILE)
    assert shipped.scales[0] <= 2 and shipped.scales[-1] >= 8
    assert list(shipped.times) == sorted(shipped.times)


# shortened paths: start at t_start from the forward marginal around an estimate


@pytest.mark.parametrize("process", [DomainShiftProcess(), ResShiftProcess(), VPProcess(**SD_BETAS)])
def test_shortened_path_starts_at_the_forward_marginal_and_an_oracle_returns_x0(process):
    x0, xh, est = (torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3))
    calls = []

    def oracle(x, t, cond):
        calls.append((float(t[0]), x))
        return x0

    t_start = 0.3 * process.t_max + 0.5
    conditional = type(process) is not VPProcess
    row = METHODS[{DomainShiftProcess: "dossr", ResShiftProcess: "resshift", VPProcess: "noise-injection"}[type(process)]]
    y = xh if conditional else None
    ts = row.grid(process, 3, t_start)
    eps = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    out = row.sample(oracle, start_state(process, est, y, ts[0], eps), ts, process=process, y=y, cond=y, order=1,
                     generator=torch.Generator().manual_seed(6), callback=None)
    torch.testing.assert_close(out, x0)
    first_t, first_x = calls[0]
    expected_t = math.ceil(t_start) if isinstance(process, ResShiftProcess) else t_start  # ResShift: whole steps
    assert first_t == pytest.approx(expected_t)
    a, b, s = (float(c) for c in process.coefficients(torch.tensor(expected_t, dtype=torch.float64)))
    torch.testing.assert_close(first_x, a * est + (b * xh if b else 0) + s * eps)


# the command line


def save_png(path, height=7, width=11):
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def run_cli(model, *args):
    return CliRunner().invoke(main, ["upscale", *map(str, args), "--model", str(model), "-q"])


@pytest.mark.parametrize("model", ["tiny_model", "tiny_prior"])
def test_cli_scale_and_target_give_exact_sizes(request, tmp_path, model):
    folder = request.getfixturevalue(model)
    image_path = save_png(tmp_path / "a.png")
    result = run_cli(folder, image_path, "-o", tmp_path / "s", "-s", "2.7")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "s" / "a_out.png").size == (30, 19)
    result = run_cli(folder, image_path, "-o", tmp_path / "t", "--target", "101x53", "--json")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "t" / "a_out.png").size == (83, 53)
    assert json.loads(result.stdout)["target"] == [101, 53]


@pytest.mark.parametrize("value", ["1920", "1920x", "x1080", "0x10", "19.5x10", "1920*1080", "-5x5"])
def test_cli_bad_target_is_a_usage_error_naming_the_value(tiny_model, tmp_path, value):
    result = run_cli(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path, "--target", value)
    assert result.exit_code == 2
    assert f"'{value}' is not WIDTHxHEIGHT" in result.stderr
    assert not (tmp_path / "a_out.png").exists()


def test_cli_scale_with_target_is_a_usage_error(tiny_model, tmp_path):
    result = run_cli(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path, "-s", "2", "--target", "30x20")
    assert result.exit_code == 2 and "not both" in result.stderr
