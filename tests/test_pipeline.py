"""The pipeline: bundle round trips, seeds, batch and tiling invariance, input kinds, the bundled model."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shiftsr.bundle import load_bundle, save_bundle
from shiftsr.bundle import bundled_models
from shiftsr.pipeline import load

BENCHMARK = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return load(tiny_model, device="cpu")


def image(seed=0, size=(12, 16)):
    return torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))


def test_output_size_and_range(pipe):
    out = pipe(image())
    assert out.shape == (1, 3, 48, 64) and 0 <= out.min() and out.max() <= 1
    assert pipe(image(), scale=2).shape == (1, 3, 24, 32)
    assert pipe(image(), scale=3).shape == (1, 3, 36, 48)


def test_same_seed_same_image_other_seed_another(pipe):
    assert torch.equal(pipe(image(), seed=3), pipe(image(), seed=3))
    assert not torch.equal(pipe(image(), seed=3), pipe(image(), seed=4))


def test_batch_equals_singles(pipe):
    batch = torch.stack([image(0), image(1)])
    together = pipe(batch, seed=5)
    assert torch.allclose(together[0], pipe(image(0), seed=5)[0], atol=1e-5)
    assert torch.allclose(together[1], pipe(image(1), seed=5)[0], atol=1e-5)


def test_tiling_one_tile_is_exact_and_real_tiles_are_close(pipe):
    untiled = pipe(image(size=(24, 24)), seed=1, tile=64)
    assert torch.equal(untiled, pipe(image(size=(24, 24)), seed=1, tile=24))
    tiled = pipe(image(size=(24, 24)), seed=1, tile=16, tile_overlap=8)
    assert (tiled - untiled).abs().mean() < 2 / 255


def test_pil_and_uint16_inputs_match_the_tensor(pipe):
    pixels = (image().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    as_tensor = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)
    reference = pipe(as_tensor)
    assert torch.equal(pipe(Image.fromarray(pixels)), reference)
    assert torch.allclose(pipe(pixels.astype(np.uint16) * 257), reference, atol=1e-6)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        pipe(pixels.astype(np.float64))


def test_bundle_round_trip_gives_identical_outputs(pipe, tmp_path):
    net, settings = load_bundle(pipe_folder(pipe))
    copy = save_bundle(tmp_path / "copy", net, settings)
    assert torch.equal(load(copy, device="cpu")(image(), seed=2), pipe(image(), seed=2))


def pipe_folder(pipe):
    folder = Path(pipe.net.config._name_or_path)
    assert (folder / "shiftsr.json").is_file()
    return folder


def test_unknown_model_names_the_bundled_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundled models"):
        load(tmp_path / "nowhere")


def test_stored_start_replaces_the_starting_noise(pipe):
    """BCSR: a deterministic sampler given a stored x_T no longer depends on the seed; an SDE still does."""
    start = torch.randn(1, 48, 12, 16, generator=torch.Generator().manual_seed(9))
    ode_a = pipe(image(), method="dossr-ode", seed=1, start=start)
    assert torch.equal(ode_a, pipe(image(), method="dossr-ode", seed=2, start=start))
    assert not torch.equal(ode_a, pipe(image(), method="dossr-ode", seed=1))
    assert not torch.equal(pipe(image(), seed=1, start=start), pipe(image(), seed=2, start=start))


def test_the_default_model_is_bundled_and_upscales():
    assert "default" in bundled_models()
    default = load("default", device="cpu")
    out = default(image(size=(16, 16)))
    assert default.scale == 4 and out.shape == (1, 3, 64, 64)


@pytest.mark.slow
@pytest.mark.skipif(not BENCHMARK.is_dir(), reason="benchmark images absent")
@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_default_model_beats_bicubic_by_one_db(name):
    from shiftsr.eval import benchmark_pairs, bicubic_upscaler, create_metrics, evaluate, metric_infos, model_upscaler

    upscalers = [bicubic_upscaler(scale=4), model_upscaler(load("default", device="cpu"), "default")]
    metrics = create_metrics(metric_infos(["psnr"]), crop_border=4)
    bicubic, model = (np.mean([values["psnr"] for values in images.values()])
                      for images in evaluate(benchmark_pairs(BENCHMARK, name, 4), upscalers, metrics))
    assert model >= bicubic + 1.0


def test_independent_samples_average_the_single_samples_of_their_seeds(pipe):
    from shiftsr.pipeline import SAMPLE_SEED_STRIDE

    singles = torch.stack([pipe(image(), seed=5 + k * SAMPLE_SEED_STRIDE, samples=1) for k in range(3)])
    # the pipeline clamps the mean, not each sample: compare where no sample was clamped
    inside = ((singles > 0) & (singles < 1)).all(0)
    assert inside.float().mean() > 0.5
    mean = pipe(image(), seed=5, samples=3, antithetic=False)
    assert torch.allclose(mean[inside], singles.mean(0)[inside], atol=1e-5)
    assert torch.equal(pipe(image(), seed=5, samples=1), singles[0])
    assert not torch.allclose(mean, singles[0])


@pytest.mark.parametrize("model", bundled_models())
@pytest.mark.parametrize("scale", [1.5, 2.0, 3.0, 4.0, 8.0])
def test_the_start_time_the_chain_uses_is_the_one_reported(model, scale):
    """The first network call happens at the reported t_start (ResShift: its first whole step); t_start 0: none."""
    pipe = load(model, device="cpu")
    pipe.run(image(size=(8, 8)), samples=1, steps=1)  # the first run may probe the network's memory once
    times = []
    handle = pipe.net.register_forward_pre_hook(lambda module, args: times.append(float(args[1][0])))
    try:
        result = pipe.run(image(size=(8, 8)), scale=scale, samples=1, steps=2)
    finally:
        handle.remove()
    record, planned = result.record, pipe.plan((8, 8), scale=scale, samples=1, steps=2).t_start
    whole = pipe.family == "resshift"  # the chain starts at its first whole step at or above the planned time
    assert planned is None or (-(-planned // 1) if whole else planned) == record["t_start"]
    assert len(times) == record["nfe"] == (record["steps"] if record["t_start"] > 0 else 0)
    if times:
        assert times[0] == pytest.approx(record["t_start"])


def test_settings_a_method_cannot_honour_are_errors_and_resshift_honours_steps():
    pipe = load("resshift-x4", device="cpu")
    assert pipe.run(image(size=(8, 8)), steps=3).record["nfe"] == 3
    with pytest.raises(ValueError, match="order: method 'resshift' has no solver order"):
        pipe(image(size=(8, 8)), order=2)
    with pytest.raises(ValueError, match="steps: this ResShift chain has 15 steps"):
        pipe(image(size=(8, 8)), steps=16)
    with pytest.raises(ValueError, match="noise: given draws replay one sample"):
        load("default", device="cpu")(image(size=(8, 8)), noise=[torch.zeros(1, 48, 8, 8)])


def test_encode_decode_and_plan_are_public_and_pure(pipe):
    x = image(size=(8, 8))[None]
    assert torch.allclose(pipe.decode(pipe.encode(x)), x, atol=1e-6)
    plan = pipe.plan((12, 16), scale=2.5)
    assert (plan.size_out, plan.strategy, plan.method, plan.t_start) == ((30, 40), "resize", "dossr", 500.0)
    assert plan.model_shape == (48, 12, 16)


def test_a_shortened_resshift_chain_takes_its_whole_length_unless_steps_are_given():
    pipe = load("resshift-x4", device="cpu")
    record = pipe.run(image(size=(8, 8)), scale=2.5, strategy="direct").record
    assert record["steps"] == record["nfe"] == record["t_start"] < 15  # the chain from its start time
    with pytest.raises(ValueError, match="steps: this ResShift chain has"):
        pipe.run(image(size=(8, 8)), scale=2.5, strategy="direct", steps=15)


def test_an_odd_sample_draws_the_negated_noise_of_the_even_one_before():
    from shiftsr.pipeline import sample_draws
    from shiftsr.samplers import randn_like

    like = torch.empty(2, 3, 4, 4)
    first, mirror, second = (randn_like(like, sample_draws(5, k, 2, None, antithetic=True)) for k in (0, 1, 2))
    assert torch.equal(mirror, -first) and not torch.equal(second.abs(), first.abs())
    assert torch.equal(second, randn_like(like, sample_draws(5, 1, 2, None, antithetic=False)))
    assert torch.equal(first, randn_like(like, sample_draws(5, 0, 2, None, antithetic=False)))


@pytest.mark.parametrize("tile", [-1, 8])
def test_antithetic_pairs_cancel_the_noise_of_a_chain_affine_in_its_draws(tiny_model, tile):
    """Through a denoiser affine in x every DoSSR step is affine in x, x0 and the noise, so the mean of a pair of
    samples (pipeline.sample_draws) is exactly the run whose every draw is zero; two independent samples are not."""
    pipe = load(tiny_model, device="cpu")
    pipe.denoiser = lambda x, t, cond: 0.6 * x + 0.3 * cond
    pipe.bytes_per_pixel = 1.0  # no memory probe of the stand-in
    lr = 0.3 + 0.4 * image(2)
    shape = (1, *pipe.plan(tuple(lr.shape[-2:])).model_shape)
    settings = {"tile": tile, "tile_overlap": 2, "stream": False}
    zero = pipe.run_tiled(lr, samples=1, noise=[torch.zeros(shape)] * 8, **settings).image
    pair = pipe.run_tiled(lr, samples=2, seed=3, **settings)
    independent = pipe.run_tiled(lr, samples=2, seed=3, antithetic=False, **settings)
    assert (pair.image - zero).abs().max() < 1e-5 < (independent.image - zero).abs().max()
    assert pair.record["antithetic"] and not independent.record["antithetic"]
