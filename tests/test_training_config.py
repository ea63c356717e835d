"""Training recipes, data checks and crash-safe files: everything that must fail cleanly before training starts."""
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shiftsr.cli import main as cli
from shiftsr.training.config import ConfigError, OptimConfig, TrainConfig, load_config
from shiftsr.training.files import recover_folder, replace_folder
from shiftsr.training.runlog import RunLog
from shiftsr.training.train import learning_rate, train
from shiftsr.training.train import main as train_main
from shiftsr.training.validation import split_held_out

CONFIGS = Path(__file__).parents[1] / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_recipes_keep_the_values_of_the_json_they_replace():
    # the values of configs/dossr_x4_default.json and configs/prior_x4.json before the move to YAML
    default = TrainConfig.load(CONFIGS / "dossr_x4_default.yaml")
    assert default.data.folders == ["../shared/data/train"] and (default.data.scale, default.data.patch) == (4, 128)
    assert (default.data.batch, default.optim.iterations, default.optim.warmup) == (16, 16000, 300)
    assert (default.optim.lr, default.optim.lr_min) == (5e-4, 1e-5) and default.optim.mixed_precision == "no"
    assert (default.model.kind, default.model.channels, default.model.num_blocks) == ("dossr", 64, 10)
    assert (default.process.t1, default.process.beta_schedule) == (500.0, "scaled_linear")
    assert (default.run.output, default.run.checkpoint_every) == ("runs/default", 1000)
    assert default.model.default_samples == 2
    prior = TrainConfig.load(CONFIGS / "prior_x4.yaml")
    assert (prior.model.kind, prior.model.prediction, prior.run.output) == ("prior", "sample", "runs/prior")
    assert (prior.optim.iterations, prior.optim.warmup, prior.run.checkpoint_every) == (5000, 200, 500)


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*") if p.is_file()), ids=lambda path: path.name)
def test_every_shipped_recipe_is_yaml_loads_and_never_trains_on_benchmarks(path):
    cfg = load_config(path)
    assert path.suffix == ".yaml" and cfg.run.output.startswith("runs/")
    assert cfg.data.folders and not any("benchmark" in folder for folder in cfg.data.folders)


def test_yaml_round_trip_and_the_flat_json_of_earlier_runs(tmp_path):
    cfg = TrainConfig().updated({"optim": {"iterations": 7, "grad_accum": 3}, "model": {"channels": 16}})
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    flat = {"data": ["x"], "output": "runs/f", "model": "prior", "prediction": "sample", "iterations": 9, "lr": 1e-3}
    old = TrainConfig.load(write(tmp_path / "flat.json", json.dumps(flat)))
    assert old == TrainConfig().updated({"data": {"folders": ["x"]}, "run": {"output": "runs/f"},
                                         "model": {"kind": "prior", "prediction": "sample"},
                                         "optim": {"iterations": 9, "lr": 1e-3}})


def test_yaml_reads_exponents_as_floats_and_no_as_a_word(tmp_path):
    cfg = TrainConfig.load(write(tmp_path / "c.yaml", "optim:\n  lr: 5e-4\n  lr_min: 1E-5\n  mixed_precision: no\n"))
    assert cfg.optim.lr == 0.0005 and cfg.optim.lr_min == 0.00001 and cfg.optim.mixed_precision == "no"
    assert TrainConfig.load(write(tmp_path / "e.yaml", "")) == TrainConfig()


def test_unknown_keys_and_sections_are_named(tmp_path):
    path = write(tmp_path / "bad.yaml", "optim:\n  iterationz: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'iterationz' in 'optim'; allowed: grad_accum"):
        TrainConfig.load(path)
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown section 'optimizer'; allowed: data, model, process"):
        TrainConfig.load(write(path, "optimizer:\n  lr: 1.0\n"))
    with pytest.raises(ConfigError, match=r"flat\.json: unknown key 'iterationz'"):
        TrainConfig.load(write(tmp_path / "flat.json", '{"output": "x", "iterationz": 3}'))


@pytest.mark.parametrize("line, message", [
    ("optim:\n  lr: fast", "optim.lr: expected float, got 'fast' (str)"),
    ("data:\n  batch: 2.5", "data.batch: expected int, got 2.5 (float)"),
    ('optim:\n  iterations: "10"', "optim.iterations: expected int, got '10' (str)"),
    ("optim:\n  iterations: true", "optim.iterations: expected int, got True (bool)"),
    ("data:\n  folders: train", "data.folders: expected a list of str, got 'train' (str)"),
    ("data: [a, b]", "section 'data' must be a mapping of keys"),
])
def test_wrong_types_name_file_key_expected_type_and_value(tmp_path, line, message):
    with pytest.raises(ConfigError) as error:
        TrainConfig.load(write(tmp_path / "t.yaml", line + "\n"))
    assert str(error.value).startswith(str(tmp_path / "t.yaml")) and message in str(error.value)


@pytest.mark.parametrize("section, key, value, allowed", [
    ("model", "kind", "gan", "dossr, prior, resshift, vp, autoencoder"),
    ("model", "prediction", "eps", "residual, sample"),
    ("model", "cond_mode", "add", "concat, branch"),
    ("optim", "mixed_precision", "fp8", "no, fp16, bf16"),
])
def test_invalid_choices_list_the_allowed_values(tmp_path, section, key, value, allowed):
    with pytest.raises(ConfigError, match=f"{section}.{key}: '{value}' is not allowed; allowed: {allowed}$"):
        TrainConfig.load(write(tmp_path / "c.yaml", f"{section}:\n  {key}: {value}\n"))


@pytest.mark.parametrize("changes, message", [
    ({"data": {"patch": 30}}, "data.patch: 30 must be a multiple of data.scale (4)"),
    ({"optim": {"grad_accum": 0}}, "optim.grad_accum: must be at least 1, got 0"),
    ({"optim": {"lr": 0.0}}, "optim.lr: must be positive"),
    ({"data": {"val_patch": 256}}, "data.val_patch: 256 must not exceed data.patch (128)"),
    ({"model": {"preprocessor": "realesrgan_x4plus"}}, "model.preprocessor: 'realesrgan_x4plus' trains from a pair "
                                                       "pool: set data.pool"),
])
def test_out_of_range_and_contradicting_settings(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        TrainConfig().updated(changes)


def test_learning_rate_warms_up_then_decays():
    optim = OptimConfig(lr=1e-3, lr_min=1e-5, warmup=10, iterations=110)
    assert learning_rate(0, optim) == 1e-4 and learning_rate(9, optim) == 1e-3
    assert abs(learning_rate(60, optim) - (1e-5 + 0.5 * (1e-3 - 1e-5))) < 1e-12
    assert abs(learning_rate(110, optim) - 1e-5) < 1e-12


def data_problem(tmp_path, monkeypatch, folder) -> str:
    """The ConfigError of a run on folder; the network must not have been built nor the output folder made."""
    monkeypatch.setattr("shiftsr.training.train.build_task", lambda *a: pytest.fail("built the network"))
    cfg = TrainConfig().updated({"data": {"folders": [str(folder)], "patch": 32, "val_images": 0, "val_patch": 32},
                                 "run": {"output": str(tmp_path / "run")}})
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert not (tmp_path / "run").exists()
    return str(error.value)


def test_missing_empty_or_unreadable_data_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    assert f"{tmp_path / 'nope'}: data folder does not exist" in data_problem(tmp_path, monkeypatch, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert f"{tmp_path / 'empty'}: no images (.bmp, .jpeg" in data_problem(tmp_path, monkeypatch, tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("RGB", (40, 40)).save(tmp_path / "broken" / "b.png")
    problem = data_problem(tmp_path, monkeypatch, tmp_path / "broken")
    assert "1 training image(s) cannot be read" in problem and str(tmp_path / "broken" / "a.png") in problem
    (tmp_path / "small").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "small" / "a.png")
    assert "has both sides >= 32 px" in data_problem(tmp_path, monkeypatch, tmp_path / "small")


def test_cli_reports_a_bad_recipe_in_one_line_with_status_2(tmp_path):
    path = write(tmp_path / "bad.yaml", "optim:\n  lr: fast\n")
    result = CliRunner().invoke(cli, ["train", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"shiftsr: error: {path}: optim.lr: expected float, got 'fast' (str)"]


def test_accelerate_entry_point_reports_a_bad_recipe_in_one_line_with_status_2(tmp_path, capsys):
    path = write(tmp_path / "bad.yaml", "model:\n  kind: gan\n")
    with pytest.raises(SystemExit) as exit:
        train_main([str(path)])
    assert exit.value.code == 2
    assert capsys.readouterr().err == (f"shiftsr train: error: {path}: model.kind: 'gan' is not allowed; "
                                       "allowed: dossr, prior, resshift, vp, autoencoder\n")


def test_held_out_images_are_evenly_spaced_fixed_and_never_trained_on():
    images = [torch.full((1,), i) for i in range(10)]
    training, held = split_held_out(images, 4)
    assert [int(im) for im in held] == [0, 3, 6, 9] and [int(im) for im in training] == [1, 2, 4, 5, 7, 8]
    assert split_held_out(images, 0) == (images, [])
    with pytest.raises(ValueError, match="leaves no training image"):
        split_held_out(images[:3], 3)


def test_replace_folder_swaps_and_a_crash_between_renames_is_recovered(tmp_path):
    target, staging = tmp_path / "checkpoint", tmp_path / "checkpoint.tmp"
    for folder, text in ((target, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "f").write_text(text)
    replace_folder(staging, target)
    assert (target / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    target.rename(tmp_path / "checkpoint.old")  # a crash after the first rename of a swap
    recover_folder(target)
    assert (target / "f").read_text() == "new"


def test_run_log_keeps_only_records_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RunLog(path, enabled=True, keep_until=None)
    for step in (1, 2, 3):
        log.write("train", step=step)
    path.write_text(path.read_text() + '{"event": "tra')  # cut short by a crash
    RunLog(path, enabled=True, keep_until=2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    RunLog(path, enabled=False, keep_until=None).write("train", step=9)  # not the main process: writes nothing
    RunLog(path, enabled=True, keep_until=None)  # a fresh run starts an empty log
    assert path.read_text() == ""
