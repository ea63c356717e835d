"""The evaluation engine and shiftsr eval: pairing, metrics against an independent numpy implementation, NFE
counts, statistics against hand-computed values, the result cache, outputs and errors."""
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shiftsr.cli.eval import eval_command
from shiftsr.cli.metrics import metrics as metrics_command
from shiftsr.eval import (ResultCache, Upscaler, benchmark_pairs, crop_box, evaluate, json_text, mean, pair_images,
                          paired_difference, ranks, spearman, standard_error, summarise)
from shiftsr.imageio import read_image
from shiftsr.ops.imresize import imresize
from shiftsr.pipeline import load

SCALE = 4
HR_SIZE = 32


def _save(path, image):
    """Write a 3xHxW float image in [0, 1] as an 8-bit PNG."""
    Image.fromarray((image.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()).save(path)


def _hr(seed, size=HR_SIZE):
    """A smooth random image: 8x8 noise brought up with bicubic, so that the x4 LR keeps some of it."""
    noise = torch.rand(3, size // 4, size // 4, generator=torch.Generator().manual_seed(seed))
    return imresize(noise, size=(size, size)).clamp(0, 1)


def _make_set(root, name="Tiny", images=("a", "b")):
    """ROOT/NAME/x4/{HR,LR}: HR PNGs and their MATLAB-bicubic LR PNGs."""
    folder = root / name / f"x{SCALE}"
    (folder / "HR").mkdir(parents=True)
    (folder / "LR").mkdir()
    for index, stem in enumerate(images):
        hr = _hr(seed=index)
        _save(folder / "HR" / f"{stem}.png", hr)
        _save(folder / "LR" / f"{stem}.png", imresize(hr, scale=1 / SCALE))
    return folder


def _run(root, out, *args):
    return CliRunner().invoke(eval_command, ["--root", str(root), "--sets", "Tiny", "--device", "cpu",
                                             "-o", str(out), *args])


def _numpy_y(image):
    """MATLAB rgb2ycbcr luma in [0, 255] of an image first rounded to 8 bits, as float64 (Y itself unrounded)."""
    rgb = np.clip(np.round(image.permute(1, 2, 0).double().numpy() * 255), 0, 255)
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


def _numpy_psnr(sr, hr, border):
    a, b = (_numpy_y(x)[border:-border, border:-border] for x in (sr, hr))
    return 10 * math.log10(255**2 / np.mean((a - b) ** 2))


def _numpy_ssim(sr, hr, border):
    """Wang et al. 2004 SSIM as MATLAB ssim_index: 11x11 Gaussian window (sigma 1.5), 'valid' filtering."""
    a, b = (_numpy_y(x)[border:-border, border:-border] for x in (sr, hr))
    taps = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / np.outer(taps, taps).sum()

    def filt(x):  # 'valid' weighted means over every 11x11 window
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(x, (11, 11)), window)

    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


# pairing -------------------------------------------------------------------------------------------------------

def test_pairing_names_every_bad_file_and_keeps_the_good_pairs(tmp_path):
    lr_dir, hr_dir = tmp_path / "LR", tmp_path / "HR"
    lr_dir.mkdir()
    hr_dir.mkdir()
    hr = _hr(0)
    for stem in ("good", "small", "lonely_lr", "twin"):
        _save(lr_dir / f"{stem}.png", imresize(hr, scale=1 / SCALE))
    _save(lr_dir / "twin.bmp", imresize(hr, scale=1 / SCALE))  # two LR files share the stem 'twin'
    for stem in ("good", "small", "lonely_hr", "twin"):
        _save(hr_dir / f"{stem}.png", hr[:, :28] if stem == "small" else hr)
    (lr_dir / "readme.txt").write_text("not an image")
    pairs, problems = pair_images(lr_dir, hr_dir, scale=SCALE, labels=("LR image", "HR image"))
    assert [(p.name, p.image.name, p.reference.name) for p in pairs] == [("good", "good.png", "good.png")]
    assert len(problems) == 5  # the HR twin.png is unpaired too, since both LR twins are left out
    assert any(str(lr_dir / "small.png") in line and "8x8, times 4 32x32" in line and "32x28" in line
               for line in problems)
    assert any(str(lr_dir / "lonely_lr.png") in line and "no HR image named lonely_lr.*" in line for line in problems)
    assert any(str(hr_dir / "lonely_hr.png") in line and f"no LR image named lonely_hr.* in {lr_dir}" in line
               for line in problems)
    assert any("twin.bmp, twin.png share the name 'twin'" in line for line in problems)
    assert any(str(hr_dir / "twin.png") in line and "no LR image named twin.*" in line for line in problems)
    assert all("\n" not in line for line in problems)


def test_benchmark_pairs_refuse_mismatched_folders_naming_each_file(tmp_path):
    folder = _make_set(tmp_path, images=("a", "b", "c"))
    (folder / "LR" / "b.png").unlink()
    _save(folder / "LR" / "c.png", _hr(5, size=12))
    with pytest.raises(ValueError) as error:
        benchmark_pairs(tmp_path, "Tiny", SCALE)
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == 2
    assert str(folder / "HR" / "b.png") in lines[0] and str(folder / "LR" / "c.png") in lines[1]


# the table -----------------------------------------------------------------------------------------------------

def test_psnr_and_ssim_agree_with_an_independent_numpy_implementation(tmp_path, tiny_model):
    folder = _make_set(tmp_path)
    result = _run(tmp_path, tmp_path / "out", "--methods", f"bicubic,{tiny_model}:dossr", "--steps", "2",
                  "--orders", "2", "--samples", "1", "--seed", "3", "--metrics", "psnr,ssim")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [(row["method"], row["steps"], row["order"]) for row in rows] == [
        ("bicubic", None, None), (f"{tiny_model}:dossr", 2, 2)]
    pipe = load(tiny_model, device="cpu")
    upscale = {"bicubic": lambda lr: imresize(lr, scale=SCALE).clamp(0, 1),
               f"{tiny_model}:dossr": lambda lr: pipe(lr, method="dossr", steps=2, order=2, samples=1, seed=3)}
    for row in rows:
        psnrs, ssims = [], []
        for stem in ("a", "b"):
            hr = read_image(folder / "HR" / f"{stem}.png").rgb
            sr = upscale[row["method"]](read_image(folder / "LR" / f"{stem}.png").rgb[None])[0]
            psnrs.append(_numpy_psnr(sr, hr, SCALE))
            ssims.append(_numpy_ssim(sr, hr, SCALE))
            assert row["per_image"][stem]["psnr"] == pytest.approx(psnrs[-1], abs=0.01)
            assert row["per_image"][stem]["ssim"] == pytest.approx(ssims[-1], abs=0.001)
        assert row["psnr"] == pytest.approx(np.mean(psnrs), abs=0.01)
        assert row["ssim"] == pytest.approx(np.mean(ssims), abs=0.001)
        assert row["images"] == 2


def test_nfe_is_steps_times_samples_and_sweeps_apply_only_where_they_mean_something(tmp_path, tiny_model):
    _make_set(tmp_path, images=("a",))
    result = _run(tmp_path, tmp_path / "out", "--methods", f"bicubic,{tiny_model}:dossr,{tiny_model}:dossr-ode,"
                  "perceptual", "--steps", "1,3", "--orders", "1,2", "--samples", "1,2", "--metrics", "psnr")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    by_method = {}
    for row in rows:
        by_method.setdefault(row["method"].rpartition(":")[2], []).append(row)
    assert [row["nfe"] for row in by_method["bicubic"]] == [0]
    # DoSSR's multistep solvers reuse earlier predictions: one network call per step and sample, any order
    assert sorted((r["steps"], r["order"], r["samples"]) for r in by_method["dossr"]) == [
        (s, o, k) for s in (1, 3) for o in (1, 2) for k in (1, 2)]
    assert sorted((r["steps"], r["order"], r["samples"]) for r in by_method["dossr-ode"]) == [
        (s, None, k) for s in (1, 3) for k in (1, 2)]
    for row in by_method["dossr"] + by_method["dossr-ode"]:
        assert row["nfe"] == row["steps"] * row["samples"]
    # a preset runs its own sampler (5 steps, order 3, 1 sample), whatever is swept
    (preset,) = by_method["perceptual"]
    assert (preset["sampler"], preset["steps"], preset["order"], preset["samples"], preset["nfe"]) == (
        "dossr", 5, 3, 1, 5)


def test_outputs_are_written_and_kept_without_overwrite(tmp_path, tiny_model):
    _make_set(tmp_path)
    out = tmp_path / "out"
    args = ["--methods", f"bicubic,{tiny_model}", "--steps", "1,2", "--metrics", "psnr,stlpips", "--crop", "30,2,16"]
    result = _run(tmp_path, out, *args)
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in out.iterdir())
    assert names == ["crops_Tiny_a.png", "crops_Tiny_b.png", "quality_vs_nfe.png", "results.json", "results.md"]
    for name in names[:3]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((out / "results.json").read_text())
    assert document["settings"]["steps"] == [1, 2] and document["settings"]["crop"] == [30, 2, 16]
    assert document["command"].startswith("shiftsr eval --root ")
    table = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| Tiny")]
    assert len(table) == len(document["rows"]) == 3
    assert table[0].split("|")[2].strip() == "`bicubic`"
    bicubic = document["rows"][0]
    assert 0 < bicubic["stlpips-alex"] < 1
    assert table[0].split("|")[7].strip() == f"{bicubic['psnr']:.2f}"

    before = {path.name: path.read_bytes() for path in out.iterdir()}
    refused = _run(tmp_path, out, *args)
    assert refused.exit_code == 1
    assert "already exists" in refused.stderr and "--overwrite" in refused.stderr
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert _run(tmp_path, out, *args, "--overwrite").exit_code == 0
    assert not [path for path in out.iterdir() if ".tmp-" in path.name]


def test_mismatched_files_are_reported_one_per_line_and_the_rest_evaluated(tmp_path):
    folder = _make_set(tmp_path, images=("a", "b", "c"))
    (folder / "HR" / "b.png").unlink()
    _save(folder / "LR" / "c.png", _hr(7, size=12))
    result = _run(tmp_path, tmp_path / "out", "--methods", "bicubic", "--metrics", "psnr")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert str(folder / "LR" / "b.png") in errors[0] and str(folder / "LR" / "c.png") in errors[1]
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["rows"][0]["images"] == 1 and list(document["rows"][0]["per_image"]) == ["a"]
    assert len(document["problems"]) == 2


def test_usage_errors_name_the_problem(tmp_path, tiny_model):
    _make_set(tmp_path)
    out = tmp_path / "out"
    cases = [
        (["--sets", "Nope"], str(tmp_path / "Nope" / "x4" / "HR")),
        (["--methods", "lanczos"], "lanczos: unknown method"),
        (["--methods", f"{tiny_model}:resshift"], "'resshift' is not a method of this model"),
        (["--methods", "perceptual:dossr"], "a preset fixes its method"),
        (["--steps", "1,x"], "'x' is not a whole number"),
        (["--orders", "0"], "0 is below 1"),
        (["--metrics", "psnr,lanczos"], "unknown metric 'lanczos'"),
        (["--crop", "1,2"], "expected X,Y,SIZE"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(eval_command, ["--root", str(tmp_path), "--sets", "Tiny", "-o", str(out),
                                                   "--device", "cpu", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    assert not out.exists()


# crops ---------------------------------------------------------------------------------------------------------

def test_crop_box_finds_the_textured_window_and_keeps_a_given_one_inside():
    image = torch.full((3, 40, 48), 0.5)
    image[:, 20:30, 4:14] = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(0))
    x, y, side = crop_box(image, 10)
    assert side == 10 and abs(x - 4) <= 1 and abs(y - 20) <= 1  # stride side // 8 = 1: the exact window
    assert crop_box(image, 16, at=(45, 0)) == (32, 0, 16)
    assert crop_box(image, 100) == (0, 0, 40)


# statistics ----------------------------------------------------------------------------------------------------

def test_statistics_against_hand_computed_values():
    assert mean([1.0, 2.0]) == 1.5 and mean([1.0, 2.0], weights=[1, 3]) == 1.75  # sets pooled by image count
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 12))  # s = sqrt(5/3), n = 4
    assert math.isnan(standard_error([7.0]))
    difference = paired_difference([3.0, 5.0, 4.0], [1.0, 6.0, 1.0])  # a - b = 2, -1, 3
    assert difference.mean == pytest.approx(4 / 3) and difference.standard_error == pytest.approx(math.sqrt(13) / 3)
    assert (difference.wins, difference.count) == (2, 3)
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 2.0], [1.0])
    assert ranks([10, 20, 20, 5]).tolist() == [2, 3.5, 3.5, 1]  # ties share their mean rank
    # y ranks 1, 2, 3.5, 5, 3.5 against 1..5: sum of centred products 8, squares 10 and 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert spearman([1, 2, 3], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))


# the loop and the cache ----------------------------------------------------------------------------------------

def test_loop_scores_every_output_with_its_seed_and_nfe():
    from shiftsr.metrics import create, psnr_y

    images = [(f"i{k}", imresize(_hr(k), scale=1 / SCALE)[None], _hr(k)[None]) for k in range(3)]
    seeds = []

    def run(lr, seed):
        seeds.append(seed)
        return imresize(lr, scale=SCALE).clamp(0, 1), 2

    upscaler = Upscaler("fake", run, {"method": "m", "steps": 2, "order": None, "samples": 1}, seed=7)
    (result,) = evaluate(images, [upscaler], [create("psnr", crop_border=SCALE)], seed_step=1, progress=False)
    assert seeds == [7, 8, 9] and list(result) == ["i0", "i1", "i2"]
    for name, lr, hr in images:
        assert result[name]["psnr"] == pytest.approx(float(psnr_y(imresize(lr, scale=SCALE).clamp(0, 1), hr,
                                                                   border=SCALE)[0]))
        assert result[name]["nfe"] == 2 and result[name]["seconds"] >= 0
    row = summarise("Tiny", upscaler, result, ["psnr"])
    values = [result[name]["psnr"] for name in result]
    assert row["nfe"] == 2 and row["steps"] == 2 and row["order"] is None and row["images"] == 3
    assert row["psnr"] == pytest.approx(np.mean(values))
    assert row["standard_error"]["psnr"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(3))
    wrong = Upscaler("small", lambda lr, seed: (lr, 0))
    with pytest.raises(ValueError, match="i0: small gives 8x8, not the HR size 32x32"):
        evaluate(images, [wrong], [], progress=False)


def test_cache_reuses_rows_until_the_model_changes_and_writes_strict_json(tmp_path):
    path = tmp_path / "cache.json"
    computed = []

    def compute():
        computed.append(1)
        return {"psnr": math.inf, "images": 1}

    cache = ResultCache(path)
    assert cache.row("m | dossr", "fp1", "Set5", compute, label="a") == {"psnr": math.inf, "images": 1}
    cache.row("m | dossr", "fp1", "Set5", compute)
    assert len(computed) == 1
    document = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in strict JSON"))
    assert document["rows"]["m | dossr"] == {"fingerprint": "fp1", "sets": {"Set5": {"psnr": None, "images": 1}},
                                             "label": "a"}
    reread = ResultCache(path)
    reread.row("m | dossr", "fp1", "Set5", compute)
    assert len(computed) == 1 and reread.cached("m | dossr", "Set5") == {"psnr": None, "images": 1}
    reread.row("m | dossr", "fp2", "Set5", compute)  # retrained: computed again
    assert len(computed) == 2 and ResultCache(path, fresh=True).rows == {}


def test_json_text_writes_non_finite_numbers_as_null():
    text = json_text({"psnr": math.inf, "se": [math.nan, 1.5], "n": 2})
    assert json.loads(text) == {"psnr": None, "se": [None, 1.5], "n": 2}


def test_metrics_json_is_valid_json_on_identical_images(tmp_path):
    folder = _make_set(tmp_path, images=("a", "b"))
    result = CliRunner().invoke(metrics_command, ["-t", str(folder / "HR"), "-r", str(folder / "HR"), "-m",
                                                  "psnr,ssim", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
             for line in result.stdout.splitlines()]
    assert [(line["name"], line["psnr"], line["ssim"]) for line in lines[:-1]] == [("a", None, 1.0), ("b", None, 1.0)]
    assert lines[-1]["mean"] == {"psnr": None, "ssim": 1.0}
    table = CliRunner().invoke(metrics_command, ["-t", str(folder / "HR"), "-r", str(folder / "HR")])
    assert table.stdout.splitlines()[1].split() == ["a", "inf", "1.0000"]
