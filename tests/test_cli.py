"""The `shiftsr` command line, run in-process with a tiny random model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shiftsr.cli import main
from shiftsr.imageio import read_image, write_image


def save_png(path, channels=3, height=12, width=16, seed=0):
    """A random 8-bit PNG with 1 (gray), 3 (RGB) or 4 (RGBA) channels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path)
    return path


def upscale(model, *args):
    """Run `shiftsr upscale ARGS --model MODEL -q` and return click's result."""
    return CliRunner().invoke(main, ["upscale", *map(str, args), "--model", str(model), "-q"])


def error_lines(result):
    """The lines the command printed on stderr."""
    return result.stderr.splitlines()


def pixels(path):
    """The decoded pixels of a file as float levels 0..255."""
    return np.asarray(Image.open(path), dtype=np.float64)


def test_upscales_rgb_png_by_the_model_scale(tiny_model, tmp_path):
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "a_out.png") as image:
        assert (image.size, image.mode) == ((64, 48), "RGB")


def test_default_output_folder_is_results(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = upscale(tiny_model, save_png(tmp_path / "a.png"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "a_out.png").is_file()


def test_scale_option_sets_the_output_size(tiny_model, tmp_path):
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path, "-s", 2)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "a_out.png").size == (32, 24)


def test_gray_input_gives_gray_output(tiny_model, tmp_path):
    result = upscale(tiny_model, save_png(tmp_path / "g.png", channels=1), "-o", tmp_path)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "g_out.png") as image:
        assert (image.size, image.mode) == ((64, 48), "L")


def test_rgba_input_keeps_an_upscaled_alpha(tiny_model, tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[:, 8:, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "t.png")
    result = upscale(tiny_model, tmp_path / "t.png", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "t_out.png") as image:
        assert (image.size, image.mode) == ((64, 48), "RGBA")
        alpha = np.asarray(image)[..., 3]
    assert alpha[:, :20].max() == 0 and alpha[:, 44:].min() == 255


def test_rgba_to_jpeg_is_an_error(tiny_model, tmp_path):
    save_png(tmp_path / "t.png", channels=4)
    result = upscale(tiny_model, tmp_path / "t.png", "-o", tmp_path, "--ext", "jpg")
    assert result.exit_code == 1
    assert error_lines(result) == [f"shiftsr: error: {tmp_path / 't.png'}: has transparency, which JPEG cannot "
                                   "store; use --ext png, webp or tif"]
    assert not (tmp_path / "t_out.jpg").exists()


def test_sixteen_bit_input_gives_sixteen_bit_png(tiny_model, tmp_path):
    write_image(tmp_path / "deep.png", torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(0)), bit_depth=16)
    result = upscale(tiny_model, tmp_path / "deep.png", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    out = read_image(tmp_path / "deep_out.png")
    assert out.bit_depth == 16 and out.rgb.shape == (3, 48, 64) and not out.is_gray


def test_ext_and_empty_suffix_name_the_output(tiny_model, tmp_path):
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path / "out", "--ext", "webp", "--suffix", "")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "a.webp").size == (64, 48)


def test_empty_suffix_into_the_input_folder_is_a_usage_error(tiny_model, tmp_path):
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path, "--suffix", "")
    assert result.exit_code == 2
    assert "--suffix" in result.stderr and "would overwrite" in result.stderr


def test_existing_output_is_an_error_and_left_untouched(tiny_model, tmp_path):
    save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_out.png").write_bytes(b"original")
    result = upscale(tiny_model, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert error_lines(result) == [f"shiftsr: error: {tmp_path / 'out' / 'a_out.png'}: already exists "
                                   "(pass --overwrite to replace it)"]
    assert (tmp_path / "out" / "a_out.png").read_bytes() == b"original"
    assert (tmp_path / "out" / "b_out.png").is_file()
    result = upscale(tiny_model, tmp_path / "a.png", "-o", tmp_path / "out", "--overwrite")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "a_out.png").size == (64, 48)


def test_missing_file_is_reported_and_the_others_still_run(tiny_model, tmp_path):
    missing = tmp_path / "missing.png"
    result = upscale(tiny_model, missing, save_png(tmp_path / "a.png"), "-o", tmp_path)
    assert result.exit_code == 1
    assert error_lines(result) == [f"shiftsr: error: {missing}: no such file"]
    assert (tmp_path / "a_out.png").is_file()


def test_text_file_named_png_is_not_an_image(tiny_model, tmp_path):
    (tmp_path / "notes.png").write_text("hello\n")
    result = upscale(tiny_model, tmp_path / "notes.png", "-o", tmp_path)
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line.startswith(f"shiftsr: error: {tmp_path / 'notes.png'}: not an image")
    assert not (tmp_path / "notes_out.png").exists()


def test_two_inputs_with_one_output_name_are_an_error(tiny_model, tmp_path):
    (tmp_path / "sub").mkdir()
    save_png(tmp_path / "a.png"), save_png(tmp_path / "sub" / "a.png", seed=1)
    result = upscale(tiny_model, tmp_path / "a.png", tmp_path / "sub" / "a.png", "-o", tmp_path / "out", "--overwrite")
    assert result.exit_code == 1
    assert error_lines(result) == [f"shiftsr: error: {tmp_path / 'sub' / 'a.png'}: its output "
                                   f"{tmp_path / 'out' / 'a_out.png'} is also an earlier input's; rename one of them"]
    assert upscale(tiny_model, tmp_path / "a.png", "-o", tmp_path / "first").exit_code == 0
    assert np.array_equal(pixels(tmp_path / "out" / "a_out.png"), pixels(tmp_path / "first" / "a_out.png"))


def test_unknown_method_is_a_usage_error_listing_the_allowed(tiny_model, tmp_path):
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path, "--method", "euler")
    assert result.exit_code == 2
    assert "method 'euler' does not apply to this model; allowed: dossr, dossr-ode, dpmpp-2m, dossr-no-dosg" in result.stderr
    assert not (tmp_path / "a_out.png").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--device", "gpu", "allowed: auto, cpu, cuda, cuda:N"),
    ("--model", "no-such-model", "no-such-model: no such model folder"),
    ("--tile-overlap", "4", "allowed: 0 to 3"),
])
def test_bad_option_values_are_usage_errors(tiny_model, tmp_path, option, value, message):
    args = ["upscale", str(save_png(tmp_path / "a.png")), "-o", str(tmp_path), "-t", "4", "--model", str(tiny_model)]
    result = CliRunner().invoke(main, [*args, option, value])
    assert result.exit_code == 2
    assert message in result.stderr


def test_json_prints_one_object_per_file(tiny_model, tmp_path):
    missing = tmp_path / "missing.png"
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), missing, "-o", tmp_path, "--json", "--steps", 2)
    assert result.exit_code == 1
    good, bad = map(json.loads, result.stdout.splitlines())
    assert good["input"] == str(tmp_path / "a.png") and good["output"] == str(tmp_path / "a_out.png")
    assert (good["size_in"], good["size_out"]) == ([16, 12], [64, 48])
    assert (good["method"], good["steps"], good["order"], good["seed"]) == ("dossr", 2, 3, 0)
    assert good["seconds"] > 0
    assert bad == {"input": str(missing), "output": str(tmp_path / "missing_out.png"),
                   "error": f"{missing}: no such file"}


def test_outputs_do_not_depend_on_other_files(tiny_model, tmp_path):
    save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1)
    assert upscale(tiny_model, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "both").exit_code == 0
    assert upscale(tiny_model, tmp_path / "b.png", "-o", tmp_path / "alone").exit_code == 0
    assert np.array_equal(pixels(tmp_path / "both" / "b_out.png"), pixels(tmp_path / "alone" / "b_out.png"))


def test_seed_changes_the_output(tiny_model, tmp_path):
    save_png(tmp_path / "a.png")
    assert upscale(tiny_model, tmp_path / "a.png", "-o", tmp_path / "s0").exit_code == 0
    assert upscale(tiny_model, tmp_path / "a.png", "-o", tmp_path / "s1", "--seed", 1).exit_code == 0
    assert not np.array_equal(pixels(tmp_path / "s0" / "a_out.png"), pixels(tmp_path / "s1" / "a_out.png"))


def test_tiling_matches_the_untiled_output(tiny_model, tmp_path):
    save_png(tmp_path / "a.png")
    for name, tile in [("whole", 0), ("one_tile", 16), ("tiles", 8)]:
        overlap = ["--tile-overlap", 4] if tile else []
        result = upscale(tiny_model, tmp_path / "a.png", "-o", tmp_path / name, "-t", tile, *overlap)
        assert result.exit_code == 0, result.output
    whole, one_tile, tiles = (pixels(tmp_path / name / "a_out.png") for name in ("whole", "one_tile", "tiles"))
    assert np.array_equal(whole, one_tile)
    assert 0 < np.abs(whole - tiles).mean() < 2


def test_output_folder_under_a_file_is_an_error(tiny_model, tmp_path):
    save_png(tmp_path / "a.png")
    (tmp_path / "blocker").write_text("a file")
    result = upscale(tiny_model, tmp_path / "a.png", "-o", tmp_path / "blocker" / "out")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line.startswith(f"shiftsr: error: {tmp_path / 'blocker' / 'out'}: cannot create the output folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "blocker"]


def test_failed_write_leaves_no_partial_file(tiny_model, tmp_path):
    (tmp_path / "out" / "a_out.png").mkdir(parents=True)
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path / "out", "--overwrite")
    assert result.exit_code == 1
    assert error_lines(result) == [f"shiftsr: error: {tmp_path / 'out' / 'a_out.png'}: Is a directory"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_out.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_output_folder_is_an_error(tiny_model, tmp_path):
    save_png(tmp_path / "a.png")
    (tmp_path / "out").mkdir(mode=0o500)
    result = upscale(tiny_model, tmp_path / "a.png", "-o", tmp_path / "out")
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line.startswith(f"shiftsr: error: {tmp_path / 'out' / 'a_out.png'}: cannot write")
    assert list((tmp_path / "out").iterdir()) == []


def test_no_inputs_is_a_usage_error():
    result = CliRunner().invoke(main, ["upscale"])
    assert result.exit_code == 2 and "no inputs" in result.stderr


@pytest.fixture
def tiny_preset(tiny_model, monkeypatch):
    """A preset "sharp" over the tiny model: 2 steps, one sample."""
    import shiftsr.bundle as bundle
    import shiftsr.presets as presets

    preset = presets.Preset(name="sharp", model=str(tiny_model), description="two steps",
                            sampler={"steps": 2, "samples": 1})
    for module in (presets, bundle):
        monkeypatch.setattr(module, "presets", lambda: {"sharp": preset})
    return preset


def test_models_lists_bundled_models_and_presets(tiny_model, tiny_preset, monkeypatch):
    import shiftsr.bundle as bundle

    monkeypatch.setattr(bundle, "bundled_models", lambda: ["tiny"])
    monkeypatch.setattr(bundle, "resolve_model", lambda name: tiny_model)
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    model_row, preset_row = result.stdout.splitlines()[1:]
    assert model_row.split()[:8] == ["tiny", "model", "x4", "dossr", "5", "3", "1", "500"]
    assert preset_row.split()[:9] == ["sharp", "preset:", str(tiny_model), "x4", "dossr", "2", "3", "1", "500"]


def test_preset_sets_the_model_and_its_sampler(tiny_preset, tmp_path):
    result = CliRunner().invoke(main, ["upscale", str(save_png(tmp_path / "a.png")), "-o", str(tmp_path),
                                       "--preset", "sharp", "--json", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["steps"], record["samples"], record["order"]) == (2, 1, 3)
    override = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "b"),
                                         "--preset", "sharp", "--steps", "3", "--json", "-q"])
    assert json.loads(override.stdout)["steps"] == 3


def test_unknown_preset_or_preset_beside_model_is_a_usage_error(tiny_model, tiny_preset, tmp_path):
    image = str(save_png(tmp_path / "a.png"))
    unknown = CliRunner().invoke(main, ["upscale", image, "--preset", "blurry"])
    assert unknown.exit_code == 2 and "allowed: sharp" in unknown.stderr
    both = CliRunner().invoke(main, ["upscale", image, "--preset", "sharp", "--model", str(tiny_model)])
    assert both.exit_code == 2 and "not both" in both.stderr


def test_shipped_presets_name_bundled_models():
    from shiftsr.bundle import bundled_models
    from shiftsr.presets import presets

    shipped = presets()
    assert {"fidelity", "perceptual", "realworld"} <= set(shipped)
    assert all(preset.model in bundled_models() for preset in shipped.values())


def test_help_does_not_import_torch():
    code = ("import sys; from shiftsr.cli import main; main(['upscale', '--help'], standalone_mode=False); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "Examples:" in result.stdout and result.stdout.endswith("False\n")
    assert CliRunner().invoke(main, ["--version"]).stdout == "shiftsr, version 0.1.0\n"


@pytest.mark.parametrize("flags, named", [(["--order", "2"], "--order"), (["--steps", "16"], "--steps"),
                                          (["--method", "dossr"], "--method")])
def test_a_setting_the_method_cannot_honour_is_a_usage_error_naming_the_flag(tmp_path, flags, named):
    result = CliRunner().invoke(main, ["upscale", str(save_png(tmp_path / "a.png")), "-o", str(tmp_path / "o"),
                                       "-m", "resshift-x4", *flags, "-q"])
    assert result.exit_code == 2 and named in result.stderr
    assert not (tmp_path / "o" / "a_out.png").exists()


def test_json_reports_the_network_evaluations_that_ran(tmp_path):
    result = CliRunner().invoke(main, ["upscale", str(save_png(tmp_path / "a.png")), "-o", str(tmp_path),
                                       "-m", "resshift-x4", "--steps", "3", "--json", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["steps"], record["nfe"], record["order"], record["t_start"]) == (3, 3, None, 15.0)


@pytest.mark.parametrize("flags, message", [
    (["-s", "inf"], "--scale"), (["-s", "1e308"], "--scale"), (["-s", "nan"], "--scale"),
    (["--target", "99999x99999"], "over 268,435,456 output pixels"), (["--seed", str(2**64)], "--seed"),
    (["--tile-overlap", "4"], "--tile-overlap"), (["--steps", "10000"], "--steps")])
def test_bad_flag_values_are_usage_errors_naming_the_flag(tiny_model, tmp_path, flags, message):
    result = upscale(tiny_model, save_png(tmp_path / "a.png"), "-o", tmp_path / "o", *flags)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o" / "a_out.png").exists()


def test_hostile_inputs_are_one_line_each_and_the_rest_is_written(tiny_model, tmp_path):
    good = save_png(tmp_path / "good.png")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    frames = [Image.new("RGB", (6, 6), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = upscale(tiny_model, loop, tmp_path / "anim.gif", good, "-o", tmp_path / "o")
    lines = error_lines(result)
    assert result.exit_code == 1 and len(lines) == 2, result.output
    assert "loop.png" in lines[0] and "anim.gif: has 2 frames" in lines[1]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good_out.png"]
    long = upscale(tiny_model, good, "-o", tmp_path / "o2", "--suffix", "x" * 250)
    assert long.exit_code == 1 and "longer than 255 bytes" in error_lines(long)[0]
    assert list((tmp_path / "o2").iterdir()) == []


def test_a_closed_stdout_pipe_does_not_stop_the_files(tiny_model, tmp_path):
    for name in ("a", "b"):
        save_png(tmp_path / f"{name}.png")
    code = (f"from shiftsr.cli import main; main(['upscale', {str(tmp_path / 'a.png')!r}, {str(tmp_path / 'b.png')!r}, "
            f"'-m', {str(tiny_model)!r}, '-o', {str(tmp_path / 'o')!r}, '--json', '-q'])")
    done = subprocess.run(f"{sys.executable} -c \"{code}\" | head -c 0", shell=True, capture_output=True, text=True)
    assert "Traceback" not in done.stderr
    assert (tmp_path / "o" / "a_out.png").exists() and (tmp_path / "o" / "b_out.png").exists()
