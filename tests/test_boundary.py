"""BCSR boundary conditions: the search is an argmin, resumes exactly, refuses foreign files, works at any size."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shiftsr.boundary import (apply_boundary, boundary_job, candidate_noise, center_crop_pair, start_draws,
                              load_boundary, reference_pairs, save_boundary, search_boundary, tile_noise)
from shiftsr.bundle import SamplerDefaults, save_bundle, settings_for
from shiftsr.cli.search_bc import search_bc
from shiftsr.networks import ShiftNet
from shiftsr.pipeline import load
from shiftsr.processes import ResShiftProcess, VPProcess


def tiny_bundle(folder, process, *, method, cond_channels):
    """A random ShiftNet (8 channels, 1 block) bundle for process, defaulting to method with 3 steps."""
    torch.manual_seed(1)
    net = ShiftNet(channels=8, num_blocks=1, cond_channels=cond_channels)
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)  # zero-initialised, the output would ignore the noise
    sampler = SamplerDefaults(method=method, steps=3, order=1, samples=1)
    return save_bundle(folder, net, settings_for(net, process, scale=4, prediction_type="sample", sampler=sampler))


@pytest.fixture(scope="module")
def prior_model(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("prior"), VPProcess(), method="noise-injection", cond_channels=0)


@pytest.fixture(scope="module")
def resshift_model(tmp_path_factory):
    process = ResShiftProcess(num_steps=4, variant="official", min_noise_level=0.2)
    return tiny_bundle(tmp_path_factory.mktemp("resshift"), process, method="resshift-ode", cond_channels=48)


@pytest.fixture(scope="module")
def sr3_model(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("sr3"), VPProcess(), method="ddim", cond_channels=48)


@pytest.fixture(scope="module")
def pipes(tiny_model, prior_model, resshift_model, sr3_model):
    return {name: load(path, device="cpu") for name, path in (("dossr", tiny_model), ("prior", prior_model),
                                                               ("resshift", resshift_model), ("sr3", sr3_model))}


class L1:
    """Toy metric: mean absolute error per image; optionally interrupts (like Ctrl-C) on a given call."""

    name = "toy-l1"

    def __init__(self, lower_is_better=True, interrupt_at=None):
        self.lower_is_better = lower_is_better
        self.interrupt_at = interrupt_at
        self.calls = 0

    def __call__(self, sr, hr):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return (sr - hr).abs().mean(dim=(1, 2, 3)).double()


def pairs(count=3, side=8, seed=0):
    """Random (lr, hr) pairs: LR count x 3 x side x side, HR at x4."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, side, side, generator=g), torch.rand(count, 3, 4 * side, 4 * side, generator=g)


@pytest.mark.parametrize("name,method", [("prior", "noise-injection"), ("resshift", "resshift-ode"),
                                         ("dossr", "dossr-ode"), ("dossr", "dpmpp-2m"), ("sr3", "ddim")])
def test_a_stored_noise_is_the_draw_of_its_seed(pipes, name, method):
    # the pipeline with seed s starts from the noise candidate_noise(s) through the method's start formula
    pipe, (lr, _) = pipes[name], pairs(2)
    shape = (pipe.codec.channels, *(4 * n // pipe.codec.scale for n in lr.shape[-2:]))
    assert shape == pipe.plan(tuple(lr.shape[-2:])).model_shape
    noise = start_draws(candidate_noise(11, shape), shape, len(lr))
    assert torch.equal(pipe(lr, method=method, steps=3, noise=noise), pipe(lr, method=method, steps=3, seed=11))


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_search_picks_the_best_of_a_brute_force(pipes, lower_is_better):
    pipe, (lr, hr) = pipes["prior"], pairs()
    bc = search_boundary(pipe, lr, hr, L1(lower_is_better), candidates=5, seed=20)
    # brute force through the pipeline's own seeding: candidate k is seed 20 + k
    brute = [L1()(pipe(lr, seed=20 + k), hr).mean().item() for k in range(5)]
    best = int(np.argmin(brute) if lower_is_better else np.argmax(brute))
    assert bc.meta["scores"] == pytest.approx(brute, abs=1e-7)
    assert (bc.meta["best"], bc.seed, bc.kind) == (best, 20 + best, "noise")
    assert torch.equal(bc.noise, torch.randn(48, 8, 8, generator=torch.Generator().manual_seed(20 + best)))


def test_resume_after_an_interruption_gives_the_uninterrupted_result(pipes, tmp_path):
    pipe, (lr, hr) = pipes["resshift"], pairs()
    whole = search_boundary(pipe, lr, hr, L1(), candidates=5, path=tmp_path / "whole.safetensors")
    path = tmp_path / "cut.safetensors"
    with pytest.raises(KeyboardInterrupt):
        search_boundary(pipe, lr, hr, L1(interrupt_at=3), candidates=5, path=path)
    partial = load_boundary(path)
    assert len(partial.meta["scores"]) == 2 and not partial.meta["complete"]
    counting = L1()
    resumed = search_boundary(pipe, lr, hr, counting, candidates=5, path=path, resume=True)
    assert counting.calls == 3  # only the candidates not done
    assert resumed.meta == whole.meta and torch.equal(resumed.noise, whole.noise)
    assert load_boundary(path).meta == whole.meta


def test_existing_output_and_foreign_resume_are_refused(pipes, tmp_path):
    pipe, (lr, hr) = pipes["prior"], pairs()
    path = tmp_path / "bc.safetensors"
    search_boundary(pipe, lr, hr, L1(), candidates=2, path=path)
    with pytest.raises(FileExistsError, match="bc.safetensors.*--resume"):
        search_boundary(pipe, lr, hr, L1(), candidates=3, path=path)
    with pytest.raises(ValueError, match="bc.safetensors.*base_seed"):
        search_boundary(pipe, lr, hr, L1(), candidates=3, seed=5, path=path, resume=True)
    with pytest.raises(ValueError, match="bc.safetensors.*more than"):
        search_boundary(pipe, lr, hr, L1(), candidates=1, path=path, resume=True)


def test_load_refuses_another_model_method_steps_or_channels(pipes, tmp_path):
    pipe, (lr, hr) = pipes["prior"], pairs()
    path = save_boundary(search_boundary(pipe, lr, hr, L1(), candidates=2, info={"model": "tiny-prior"}),
                         tmp_path / "bc.safetensors")
    assert load_boundary(path, pipe, method="noise-injection", steps=3).seed in (0, 1)
    with pytest.raises(ValueError, match=r"bc.safetensors: made for model 'tiny-prior'"):
        load_boundary(path, pipes["resshift"])
    with pytest.raises(ValueError, match="bc.safetensors: made for method noise-injection, not ddim"):
        load_boundary(path, pipe, method="ddim")
    with pytest.raises(ValueError, match="bc.safetensors: made for steps 3, not 4"):
        load_boundary(path, pipe, steps=4)
    wrong = load_boundary(path)
    wrong.noise = wrong.noise[:3]
    wrong.meta["shape"] = [3, 8, 8]
    save_boundary(wrong, tmp_path / "rgb.safetensors")
    with pytest.raises(ValueError, match="rgb.safetensors: noise has 3 channels, the model's space has 48"):
        load_boundary(tmp_path / "rgb.safetensors", pipe)
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_boundary(tmp_path / "nothing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable safetensors file"):
        load_boundary(tmp_path / "junk.safetensors")


def test_tiled_noise_is_periodic_and_the_stored_noise_on_its_region():
    noise = torch.randn(48, 5, 7, generator=torch.Generator().manual_seed(0))
    big = tile_noise(noise, (12, 16))
    assert big.shape == (48, 12, 16)
    assert torch.equal(big[:, :5, :7], noise)
    assert torch.equal(big[:, 5:10, 7:14], noise) and torch.equal(big[:, 10:, 14:], noise[:, :2, :2])
    assert torch.equal(tile_noise(noise, (3, 4)), noise[:, :3, :4])


def test_a_boundary_noise_at_any_size(pipes):
    pipe, (lr, hr) = pipes["resshift"], pairs(2)
    bc = search_boundary(pipe, lr, hr, L1(), candidates=2)
    # ResShift start x_T = xh + kappa sqrt(eta_T) eps: recover eps from the start of a larger and a smaller image
    std = pipe.process.kappa * float(pipe.process.shift(pipe.process.t_max)) ** 0.5
    for size in ((13, 21), (5, 6)):
        other = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(3))
        (eps,) = start_draws(bc.noise, (48, *size), 1)
        assert torch.equal(eps[0], tile_noise(bc.noise, size))
        h, w = min(8, size[0]), min(8, size[1])
        assert torch.equal(eps[0, :, :h, :w], bc.noise[:, :h, :w])
        xh = pipe.encode(pipe.source_image(other))
        out = apply_boundary(pipe, bc, other).image
        assert out.shape == (1, 3, 4 * size[0], 4 * size[1])
        expected = pipe(other, method=bc.method, steps=bc.steps, samples=1, start=xh + std * eps)
        assert torch.allclose(out, expected, atol=1e-6)


def test_noise_boundary_at_the_reference_size_is_its_seed(pipes):
    pipe, (lr, hr) = pipes["prior"], pairs()
    bc = search_boundary(pipe, lr, hr, L1(), candidates=3, seed=7)
    new = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    assert torch.equal(apply_boundary(pipe, bc, new, samples=4).image, pipe(new, seed=bc.seed))
    # another scale: the native-scale result resized
    assert torch.equal(apply_boundary(pipe, bc, new, scale=2).image, pipe(new, seed=bc.seed, scale=2, strategy="resize"))
    with pytest.raises(ValueError, match="strategy 'direct'"):
        apply_boundary(pipe, bc, new, scale=2, strategy="direct")
    with pytest.raises(ValueError, match="boundary condition: was searched with steps 3, not 5"):
        apply_boundary(pipe, bc, new, steps=5)


def test_stored_seed_reproduces_the_stochastic_sampler(pipes, tmp_path):
    pipe, (lr, hr) = pipes["dossr"], pairs()
    bc = search_boundary(pipe, lr, hr, L1(), method="dossr", steps=2, order=2, candidates=3, seed=40)
    assert bc.kind == "seed" and bc.noise is None and 40 <= bc.seed < 43
    bc = load_boundary(save_boundary(bc, tmp_path / "seed.safetensors"), pipe)
    new = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(4))
    expected = pipe(new, method="dossr", steps=2, order=2, samples=1, seed=bc.seed)
    assert torch.equal(apply_boundary(pipe, bc, new).image, expected)
    assert boundary_job(bc) == {"method": "dossr", "steps": 2, "order": 2, "samples": 1, "seed": bc.seed}
    with pytest.raises(ValueError, match="seed.safetensors: was searched with samples 1, not 8"):
        apply_boundary(pipe, bc, new, samples=8)


def test_center_crops_stay_aligned():
    lr = torch.arange(3 * 9 * 11, dtype=torch.float32).reshape(3, 9, 11)
    hr = lr.repeat_interleave(4, -2).repeat_interleave(4, -1)
    hr_crop, lr_crop = center_crop_pair(hr, lr, scale=4, patch=16, name="x")
    assert lr_crop.shape == (3, 4, 4) and torch.equal(lr_crop, lr[:, 2:6, 3:7])
    assert torch.equal(hr_crop, lr_crop.repeat_interleave(4, -2).repeat_interleave(4, -1))
    with pytest.raises(ValueError, match="x: HR is 44x36, not x2"):
        center_crop_pair(hr, lr, scale=2, patch=8, name="x")


def write_pairs(root, names, side=12):
    """PNG HR/LR folders: random LR side x side and its nearest-neighbour x4 HR."""
    rng = np.random.default_rng(0)
    for folder in ("HR", "LR"):
        (root / folder).mkdir()
    for name in names:
        lr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(lr).save(root / "LR" / f"{name}.png")
        Image.fromarray(lr.repeat(4, 0).repeat(4, 1)).save(root / "HR" / f"{name}.png")


def test_reference_pairs_match_stems(tmp_path):
    write_pairs(tmp_path, ["a", "b"])
    hr, lr, names = reference_pairs(tmp_path / "HR", tmp_path / "LR", scale=4, patch=32)
    assert names == ["a", "b"] and hr.shape == (2, 3, 32, 32) and lr.shape == (2, 3, 8, 8)
    (tmp_path / "HR" / "b.png").rename(tmp_path / "HR" / "c.png")
    with pytest.raises(ValueError, match=r"LR.b.png: no HR image named b"):
        reference_pairs(tmp_path / "HR", tmp_path / "LR", scale=4, patch=32)


def test_cli_search_refuse_and_resume(prior_model, tmp_path):
    write_pairs(tmp_path, ["a", "b"])
    out = tmp_path / "bc.safetensors"
    args = ["-m", str(prior_model), "--hr", str(tmp_path / "HR"), "--lr", str(tmp_path / "LR"), "--metric", "psnr",
            "--patch", "32", "--device", "cpu", "-o", str(out), "-q"]
    first = CliRunner().invoke(search_bc, [*args, "--candidates", "2"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(search_bc, [*args, "--candidates", "3"])
    assert again.exit_code == 1 and "bc.safetensors: already exists" in again.output
    more = CliRunner().invoke(search_bc, [*args, "--candidates", "3", "--resume"])
    assert more.exit_code == 0, more.output
    bc = load_boundary(out, load(prior_model, device="cpu"))
    assert len(bc.meta["scores"]) == 3 and bc.meta["metric"] == "psnr" and not bc.meta["lower_is_better"]
    assert bc.score == max(bc.meta["scores"]) and bc.meta["references"] == ["a", "b"]
    bad = CliRunner().invoke(search_bc, [*args[:-3], "-o", str(tmp_path / "x.safetensors"), "--metric", "fid"])
    assert bad.exit_code == 2 and "not a per-image full-reference metric" in bad.output


def test_upscale_with_bc_uses_the_stored_start_and_refuses_another_model(prior_model, tiny_model, tmp_path):
    """shiftsr upscale --bc: the output is apply_boundary's, and a file made for another model is a usage error."""
    from shiftsr.boundary import apply_boundary
    from shiftsr.cli import main as cli

    write_pairs(tmp_path, ["a", "b"])
    out = tmp_path / "bc.safetensors"
    search = ["-m", str(prior_model), "--hr", str(tmp_path / "HR"), "--lr", str(tmp_path / "LR"), "--metric", "psnr",
              "--patch", "32", "--device", "cpu", "--candidates", "2", "-o", str(out), "-q"]
    assert CliRunner().invoke(search_bc, search).exit_code == 0
    image = tmp_path / "LR" / "a.png"
    args = ["upscale", str(image), "-m", str(prior_model), "--bc", str(out), "--device", "cpu", "-q"]
    done = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "up")])
    assert done.exit_code == 0, done.output
    pipe = load(prior_model, device="cpu")
    expected = apply_boundary(pipe, load_boundary(out, pipe), np.asarray(Image.open(image))).image[0]
    written = torch.from_numpy(np.array(Image.open(tmp_path / "up" / "a_out.png"))).permute(2, 0, 1) / 255
    assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6
    wrong = CliRunner().invoke(cli, ["upscale", str(image), "-m", str(tiny_model), "--bc", str(out), "--device",
                                     "cpu", "-o", str(tmp_path / "wrong"), "-q"])
    assert wrong.exit_code == 2 and "bc.safetensors: made for model" in wrong.output


def test_given_draws_of_another_shape_are_refused_and_running_out_is_an_error():
    from shiftsr.samplers import Draws, randn_like

    x = torch.zeros(2, 3, 4, 4)
    fixed = torch.randn(2, 3, 4, 4)
    draws = Draws([fixed])
    assert torch.equal(randn_like(x, draws), fixed) and draws.used == 1
    with pytest.raises(ValueError, match="all 1 given draws are used"):
        randn_like(x, draws)
    with pytest.raises(ValueError, match=r"draw 0 has shape \(1, 3, 4, 4\), the method draws \(2, 3, 4, 4\)"):
        randn_like(x, Draws([fixed[:1]]))
    then = Draws([fixed], then=torch.Generator().manual_seed(1))
    randn_like(x, then)
    assert torch.equal(randn_like(x, then), torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)))
