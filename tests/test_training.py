"""Training: real tiny runs that log, validate, checkpoint, resume bit for bit, survive failed saves and export."""
import errno
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file

import shiftsr.training.train as training
from shiftsr.bundle import load_bundle
from shiftsr.cli import main as cli
from shiftsr.data.pairs import degrade_bicubic
from shiftsr.metrics import psnr_y
from shiftsr.pipeline import load
from shiftsr.training.checkpoints import CheckpointError
from shiftsr.training.config import ConfigError, TrainConfig
from shiftsr.training.models import build_network
from shiftsr.training.tasks import AutoencoderTask
from shiftsr.training.train import load_data, train


pytestmark = pytest.mark.usefixtures("one_thread")


def make_dataset(folder, count=3, size=48):
    if not folder.exists():
        folder.mkdir()
        g = torch.Generator().manual_seed(0)
        for i in range(count):
            pixels = (torch.rand(size, size + 8, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def tiny_config(tmp_path, iterations, output="run", **sections) -> TrainConfig:
    """8 channels, 1 block, 32 px patches, batch 2; one of the three images is held out for validation."""
    base = TrainConfig().updated({
        "data": {"folders": [str(make_dataset(tmp_path / "data"))], "patch": 32, "batch": 2, "val_images": 1,
                 "val_patch": 32},
        "model": {"channels": 8, "num_blocks": 1},
        "optim": {"iterations": iterations, "warmup": 2},
        "run": {"output": str(tmp_path / output), "checkpoint_every": 2, "validate_every": 2, "log_every": 1}})
    return base.updated(sections)


def records(run, event=None):
    lines = (json.loads(line) for line in (run / "log.jsonl").read_text().splitlines())
    return [r for r in lines if event is None or r["event"] == event]


def test_train_logs_validates_resumes_and_exports(tmp_path):
    cfg = tiny_config(tmp_path, iterations=4)
    folder = train(cfg)
    run = tmp_path / "run"
    start, = records(run, "start")
    assert (start["world_size"], start["train_images"], start["val_images"], start["resumed"]) == (1, 2, 1, False)
    assert [r["step"] for r in records(run, "train")] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["lr"] > 0 and r["seconds"] >= 0 for r in records(run, "train"))
    assert [r["step"] for r in records(run, "val")] == [2, 4]
    end = records(run)[-1]
    assert end["event"] == "end" and end["step"] == 4 and end["val_psnr_y"] == records(run, "val")[-1]["val_psnr_y"]
    # the validation PSNR by hand: held-out image 0.png (the first of three), its 32 px center crop, 8-bit bicubic LR,
    # one sample with seed 0 of the exported model's own sampler, PSNR-Y with a 4 px border
    hr = torch.from_numpy(np.array(Image.open(tmp_path / "data" / "0.png"))).permute(2, 0, 1)
    hr = hr[None, :, 8:40, 12:44].float() / 255
    sr = load(folder, device="cpu")(degrade_bicubic(hr, 4)[0], samples=1, seed=0)
    assert end["val_psnr_y"] == pytest.approx(float(psnr_y(sr, hr, border=4).mean()), abs=1e-9)
    first = {k: v.clone() for k, v in load_bundle(folder)[0].state_dict().items()}
    # resuming with a longer schedule continues at step 4, not from scratch
    train(cfg.updated({"optim": {"iterations": 6}}), resume=True)
    assert [r["step"] for r in records(run, "train")] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records(run, "start")] == [0, 4] and records(run, "start")[1]["exact_resume"]
    net, settings = load_bundle(folder)
    assert any(not torch.equal(first[k], v) for k, v in net.state_dict().items())
    assert settings.process["kind"] == "domain_shift" and settings.scale == 4
    assert TrainConfig.load(run / "train_config.yaml").optim.iterations == 6
    out = load(folder, device="cpu")(torch.rand(3, 8, 8), steps=2)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(FileExistsError, match="pass --resume to continue it"):
        train(cfg)  # never start over on top of an earlier run


def checkpoint_tensors(run) -> dict[str, torch.Tensor]:
    """Every tensor a run leaves: raw weights, EMA, AdamW moments and steps, random streams, exported EMA weights."""
    folder = run / "checkpoint"
    tensors = {f"raw.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    tensors |= {f"ema.{k}": v for k, v in torch.load(folder / "custom_checkpoint_0.pkl").items()}
    for index, moments in torch.load(folder / "optimizer.bin")["state"].items():
        tensors |= {f"adam.{index}.{k}": v for k, v in moments.items()}
    streams = torch.load(folder / "custom_checkpoint_1.pkl")["streams"]
    tensors |= {f"stream.{rank}.{k}": v for rank, states in enumerate(streams) for k, v in states.items()}
    model = next((run / "model").glob("*.safetensors"))
    return tensors | {f"export.{k}": v for k, v in load_file(model).items()}


class Killed(Exception):
    """Stands in for the process being killed."""


def test_a_killed_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, monkeypatch):
    changes = {"optim": {"grad_accum": 2, "ema_start": 0}, "run": {"validate_every": 3}}
    train(tiny_config(tmp_path, iterations=4, output="whole", **changes))
    cfg = tiny_config(tmp_path, iterations=4, output="killed", **changes)
    save = training.save_checkpoint

    def save_then_die(*args):
        save(*args)
        raise Killed

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(cfg)
    monkeypatch.undo()
    assert json.loads((tmp_path / "killed" / "checkpoint" / "shiftsr_checkpoint.json").read_text())["step"] == 2
    train(cfg, resume=True)
    whole, resumed = checkpoint_tensors(tmp_path / "whole"), checkpoint_tensors(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == []
    # the check has teeth: the EMA is not the raw weights, and one AdamW step per iteration of two micro-batches
    assert not torch.equal(whole["ema.ema_model.conv_out.weight"], whole["raw.conv_out.weight"])
    assert {float(v) for k, v in whole.items() if k.endswith(".step") and k.startswith("adam.")} == {4.0}
    assert [r["step"] for r in records(tmp_path / "killed", "train")] == [1, 2, 3, 4]


def test_a_failed_save_keeps_the_last_checkpoint_and_export(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, iterations=2)
    train(cfg)
    checkpoint, model = tmp_path / "run" / "checkpoint", tmp_path / "run" / "model"
    before = load_bundle(model)[0].state_dict()
    calls = []

    def disk_full(obj, path, **kwargs):  # writes the weights, then the disk is full halfway through the optimizer
        calls.append(path)
        if len(calls) == 1:
            return accelerate_save(obj, path, **kwargs)
        open(path, "wb").write(b"\x80\x02half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    import accelerate.checkpointing
    accelerate_save = accelerate.checkpointing.save
    monkeypatch.setattr(accelerate.checkpointing, "save", disk_full)
    with pytest.raises(OSError, match="saving the checkpoint failed .No space left on device.; the last good"):
        train(cfg.updated({"optim": {"iterations": 4}}), resume=True)
    monkeypatch.undo()
    assert json.loads((checkpoint / "shiftsr_checkpoint.json").read_text())["step"] == 2
    after = load_bundle(model)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the export is swapped in the same way: a failure while writing it leaves the last good model
    class FailingTask:
        def export(self, net, folder):
            folder.mkdir()
            return 1 / 0

    with pytest.raises(ZeroDivisionError):
        training.export(FailingTask(), load_bundle(model)[0], model)
    monkeypatch.undo()
    assert all(torch.equal(before[k], v) for k, v in load_bundle(model)[0].state_dict().items())
    train(cfg.updated({"optim": {"iterations": 4}}), resume=True)
    assert records(tmp_path / "run", "start")[-1]["step"] == 2 and records(tmp_path / "run")[-1]["step"] == 4


def test_a_damaged_or_mismatched_checkpoint_is_refused_clearly(tmp_path):
    cfg = tiny_config(tmp_path, iterations=2)
    train(cfg)
    checkpoint = tmp_path / "run" / "checkpoint"
    shutil.copytree(checkpoint, tmp_path / "good")
    for name in ("model.safetensors", "optimizer.bin", "custom_checkpoint_1.pkl"):
        data = (tmp_path / "good" / name).read_bytes()
        (checkpoint / name).write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or a killed copy
        with pytest.raises(CheckpointError, match=f"{checkpoint}: the checkpoint is damaged .* delete the folder"):
            train(cfg, resume=True)
        shutil.copyfile(tmp_path / "good" / name, checkpoint / name)
    (checkpoint / "model.safetensors").write_bytes(b"garbage")
    recipe = tmp_path / "recipe.yaml"
    cfg.save(recipe)
    result = CliRunner().invoke(cli, ["train", str(recipe), "--resume"])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1 and str(checkpoint) in result.stderr
    shutil.copyfile(tmp_path / "good" / "model.safetensors", checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match="was trained with model.channels = 8 but the recipe says 16"):
        train(cfg.updated({"model": {"channels": 16}}), resume=True)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process; tests that change it reset its shared state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, fresh_accelerate_state):
    folder = train(tiny_config(tmp_path, iterations=2, optim={"mixed_precision": "bf16"}))
    assert records(tmp_path / "run", "start")[0]["mixed_precision"] == "bf16"
    assert all(torch.isfinite(v).all() for v in load_bundle(folder)[0].state_dict().values())


def test_prior_then_dossr_fine_tune_then_resshift(tmp_path):
    """One real run per model kind; the fine-tuned net starts as the prior (zero-initialised branch)."""
    cfg = tiny_config(tmp_path, iterations=2, output="prior", model={"kind": "prior", "prediction": "sample"})
    prior_folder = train(cfg)
    prior, settings = load_bundle(prior_folder)
    assert settings.process["kind"] == "vp" and settings.sampler.method == "noise-injection"
    up = load(prior_folder, device="cpu")(torch.rand(1, 3, 8, 8), scale=2, steps=2)
    assert up.shape == (1, 3, 16, 16) and torch.isfinite(up).all()

    fine = cfg.updated({"model": {"kind": "dossr", "cond_mode": "branch", "init_from": str(prior_folder)},
                        "run": {"output": str(tmp_path / "fine")}})
    net = build_network(fine, channels=48)
    x, t, cond = torch.randn(2, 48, 8, 8), torch.tensor([3.0, 400.0]), torch.randn(2, 48, 8, 8)
    torch.testing.assert_close(net(x, t, cond), prior(x, t), rtol=0, atol=0)
    _, fine_settings = load_bundle(train(fine))
    assert fine_settings.process["kind"] == "domain_shift" and fine_settings.prediction_type == "sample"

    shift = cfg.updated({"model": {"kind": "resshift", "prediction": "residual"}, "process": {"resshift_steps": 4},
                         "run": {"output": str(tmp_path / "rs")}})
    folder = train(shift)
    out = load(folder, device="cpu")(torch.rand(3, 8, 8))
    assert load_bundle(folder)[1].sampler.method == "resshift" and out.shape == (1, 3, 32, 32)

    sr3 = fine.updated({"model": {"kind": "vp"}, "run": {"output": str(tmp_path / "vp")}})
    pipe = load(train(sr3), device="cpu")
    assert pipe.settings.process["kind"] == "vp" and pipe.methods == ("ddim", "ddpm", "dpmpp-2m", "dossr-no-dosg")
    assert pipe.settings.sampler.method == "ddim" and pipe.settings.sampler.steps == 50
    assert pipe(torch.rand(3, 8, 8), steps=3).shape == (1, 3, 32, 32)


def test_init_from_a_conditional_model_needs_the_same_network(tmp_path, tiny_model):
    same = tiny_config(tmp_path, iterations=2, model={"init_from": str(tiny_model)})
    source = load_bundle(tiny_model)[0].state_dict()
    assert all(torch.equal(v, source[k]) for k, v in build_network(same, channels=48).state_dict().items())
    other = tiny_config(tmp_path, iterations=2, model={"cond_mode": "branch", "init_from": str(tiny_model)})
    with pytest.raises(ConfigError, match="differs from this recipe's in cond_mode"):
        build_network(other, channels=48)


def test_a_prior_fine_tunes_only_through_the_branch(tmp_path):
    prior = train(tiny_config(tmp_path, iterations=1, output="prior", model={"kind": "prior", "prediction": "sample"}))
    concat = tiny_config(tmp_path, iterations=1, model={"init_from": str(prior)})
    with pytest.raises(ConfigError, match="needs model.cond_mode branch"):
        build_network(concat, channels=48)


def test_training_from_a_pair_pool_with_a_perceptual_loss(tmp_path):
    """A real step on a pool of (hr, preprocessed lr) pairs, ST-LPIPS added to the loss; the bundle records both."""
    from shiftsr.data.pairs import BicubicPairs, load_training_images
    from shiftsr.data.pool import build_pool, save_pool
    from shiftsr.ops.imresize import bicubic_degrade

    images = load_training_images([make_dataset(tmp_path / "data")], min_side=32)
    stream = ((hr, bicubic_degrade(hr, 4)) for hr, _ in BicubicPairs(images, patch=32, scale=4, batch=2))
    save_pool(tmp_path / "pool.safetensors", build_pool(stream, lambda lr: lr.repeat_interleave(4, -1)
                                                        .repeat_interleave(4, -2), count=3))
    cfg = tiny_config(tmp_path, iterations=2, data={"pool": str(tmp_path / "pool.safetensors"), "val_images": 0},
                      model={"preprocessor": "realesrgan_x4plus"},
                      optim={"stlpips_weight": 0.5, "stlpips_net": "alex"}, run={"validate_every": 0})
    settings = load_bundle(train(cfg))[1]
    assert settings.preprocessor == "realesrgan_x4plus"
    assert [r["step"] for r in records(tmp_path / "run", "train")] == [1, 2]


def test_latent_space_an_autoencoder_then_every_diffusion_kind_in_its_latents(tmp_path):
    """A tiny AutoencoderKL trained here is the codec of one real run per kind; bundles carry it and upscale."""
    ae_cfg = tiny_config(tmp_path, iterations=2, output="ae", model={"kind": "autoencoder", "latent_channels": 3})
    ae_folder = train(ae_cfg)
    vae = AutoencoderKL.from_pretrained(ae_folder)
    assert vae.config.latent_channels == 3 and 2 ** (len(vae.config.block_out_channels) - 1) == 4
    crops = AutoencoderTask(ae_cfg, torch.device("cpu"), load_data(ae_cfg)[0]).scaling_crops
    with torch.no_grad():  # the stored scaling factor gives unit-variance latents on the training crops
        latents = vae.encode(crops * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    assert latents.std().item() == pytest.approx(1.0, rel=1e-4)
    assert [r["event"] for r in records(tmp_path / "ae")].count("val") >= 1

    for kind, extra in (("prior", {"prediction": "sample"}), ("dossr", {}), ("resshift", {}), ("vp", {})):
        cfg = ae_cfg.updated({"model": {"kind": kind, "codec": str(ae_folder), **extra},
                              "run": {"output": str(tmp_path / kind)}})
        folder = train(cfg)
        net, settings = load_bundle(folder)
        assert settings.codec == {"kind": "autoencoder_kl", "folder": "codec"} and net.config.in_channels == 3
        assert (folder / "codec" / "config.json").is_file()
        pipe = load(folder, device="cpu")
        assert pipe.codec.channels == 3 and pipe.codec.scaling_factor == vae.config.scaling_factor
        out = pipe(torch.rand(1, 3, 8, 12), steps=2, scale=None if kind != "prior" else 4)
        assert out.shape == (1, 3, 32, 48) and torch.isfinite(out).all()


def test_a_latent_recipe_names_a_bad_codec(tmp_path, tiny_model):
    cfg = tiny_config(tmp_path, iterations=1, model={"codec": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=f"model.codec: {tmp_path / 'nowhere'}: no autoencoder here"):
        train(cfg)
    ae = train(tiny_config(tmp_path, iterations=0, output="ae2", model={"kind": "autoencoder"},
                           data={"scale": 2, "patch": 32, "val_patch": 32}))
    with pytest.raises(ConfigError, match="down-samples by 2, but data.scale is 4"):
        train(cfg.updated({"model": {"codec": str(ae)}}))
    with pytest.raises(ConfigError, match="data.scale: an autoencoder down-samples by a power of two"):
        TrainConfig().updated({"model": {"kind": "autoencoder"}, "data": {"scale": 3, "patch": 96, "val_patch": 96}})


def test_identity_init_validates_on_degraded_crops_and_keeps_the_best_model(tmp_path):
    """model.identity_init zeroes the output conv of the model it starts from; data.val_degradation degrades the
    held-out crops; run.keep_best keeps the EMA model of the lowest ST-LPIPS, the step-0 model a candidate."""
    source = train(tiny_config(tmp_path, iterations=2, output="source"))
    cfg = tiny_config(tmp_path, iterations=4, model={"init_from": str(source), "identity_init": True},
                      data={"val_degradation": "resshift-test"}, run={"keep_best": "val_stlpips"})
    assert load_bundle(source)[0].conv_out.weight.abs().max() > 0
    assert build_network(cfg, 48).conv_out.weight.abs().max() == 0 == build_network(cfg, 48).conv_out.bias.abs().max()
    train(cfg)
    run = tmp_path / "run"
    values = records(run, "val")
    assert [r["step"] for r in values] == [0, 2, 4] and all(r["val_stlpips"] > 0 for r in values)
    kept = json.loads((run / "best" / "validation.json").read_text())
    assert kept["val_stlpips"] == min(r["val_stlpips"] for r in values)
    assert records(run, "best")[0]["step"] == 0 and records(run, "best")[-1]["step"] == kept["step"]
    assert load(run / "best", device="cpu").scale == 4
    with pytest.raises(ConfigError, match="run.keep_best"):
        tiny_config(tmp_path, 1, data={"val_images": 0}, run={"keep_best": "val_psnr_y"}).check()
    with pytest.raises(ConfigError, match="data.val_degradation"):
        tiny_config(tmp_path, 1, data={"val_degradation": "blurry"}).check()


def test_pool_regions_are_preprocessed_whole_then_cut():
    """With patch set, every kept xh crop is the crop of the whole region's preprocessed image, hr the same place."""
    from shiftsr.data.pool import build_pool, to_uint8

    g = torch.Generator().manual_seed(0)
    regions = [torch.rand(2, 3, 64, 64, generator=g) for _ in range(2)]
    preprocess = lambda lr: lr.flip(-1).cumsum(-1) / lr.shape[-1]  # every output pixel reads the whole row
    pool = build_pool(((hr, hr) for hr in regions), preprocess, count=12, patch=32, crops_per_region=3, scale=4)
    assert pool["hr"].shape == (12, 3, 32, 32)
    hr_whole, xh_whole = (to_uint8(image) for image in (torch.cat(regions), preprocess(torch.cat(regions))))
    for hr, xh in zip(pool["hr"], pool["xh"]):
        i, top, left = next((i, top, left) for i in range(4) for top in range(0, 33, 4) for left in range(0, 33, 4)
                            if torch.equal(hr_whole[i, :, top:top + 32, left:left + 32], hr))
        assert torch.equal(xh_whole[i, :, top:top + 32, left:left + 32], xh)
    assert not torch.equal(to_uint8(preprocess(pool["hr"].float() / 255)), pool["xh"])


def test_validation_on_whole_images_under_two_degradations(tmp_path):
    """val_patch 0 scores each held-out image whole (cropped to the scale), once per named degradation."""
    from shiftsr.training.validation import HeldOutSet

    cfg = tiny_config(tmp_path, iterations=2, data={"val_patch": 0, "val_degradation": "bicubic, resshift-test"},
                      run={"keep_best": "val_stlpips"})
    images = [torch.randint(0, 256, (3, 50, 45), dtype=torch.uint8), torch.randint(0, 256, (3, 40, 60),
                                                                                  dtype=torch.uint8)]
    held = HeldOutSet(images, patch=0, scale=4, degradations=cfg.data.val_degradations)
    assert [tuple(hr.shape) for hr, _ in held.batches] == [(1, 3, 48, 44), (1, 3, 40, 60)] * 2
    assert [tuple(lr.shape) for _, lr in held.batches] == [(1, 3, 12, 11), (1, 3, 10, 15)] * 2
    assert not torch.equal(held.batches[0][1], held.batches[2][1])  # bicubic, then the ResShift test degradation
    train(cfg)
    validations = records(tmp_path / "run", "val")
    assert validations and all(0 < r["val_stlpips"] < 1 for r in validations)
