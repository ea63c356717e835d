"""Training: a few real iterations, resume from the checkpoint, export a bundle that loads and upscales."""
import json

import pytest

import torch
from PIL import Image

from shiftsr.bundle import load_bundle
from shiftsr.pipeline import load
from shiftsr.training.config import TrainConfig
from shiftsr.training.train import learning_rate, train


def make_dataset(folder, count=3, size=48):
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        pixels = (torch.rand(size, size + 8, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def tiny_config(tmp_path, iterations):
    return TrainConfig(data=[str(make_dataset(tmp_path / "data"))], output=str(tmp_path / "run"), patch=32, batch=2,
                       iterations=iterations, warmup=2, channels=8, num_blocks=1, checkpoint_every=2)


def test_train_resume_and_export(tmp_path):
    cfg = tiny_config(tmp_path, iterations=4)
    folder = train(cfg)
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert [line.split()[1] for line in log] == ["2", "4"]
    first = {k: v.clone() for k, v in load_bundle(folder)[0].state_dict().items()}
    # resuming with a longer schedule continues at step 4, not from scratch
    cfg.iterations = 6
    train(cfg, resume=True)
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert [line.split()[1] for line in log] == ["2", "4", "6"]
    net, settings = load_bundle(folder)
    assert any(not torch.equal(first[k], v) for k, v in net.state_dict().items())
    assert settings.process["kind"] == "domain_shift" and settings.scale == 4
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["iterations"] == 6
    out = load(folder, device="cpu")(torch.rand(3, 8, 8), steps=2)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_config_round_trip_rejects_unknown_keys(tmp_path):
    cfg = TrainConfig(iterations=7, channels=16)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text('{"iterationz": 3}')
    try:
        TrainConfig.load(tmp_path / "bad.json")
    except ValueError as error:
        assert "iterationz" in str(error)
    else:
        raise AssertionError("an unknown key must be refused")


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, lr_min=1e-5, warmup=10, iterations=110)
    assert learning_rate(0, cfg) == 1e-4 and learning_rate(9, cfg) == 1e-3
    assert abs(learning_rate(60, cfg) - (1e-5 + 0.5 * (1e-3 - 1e-5))) < 1e-12
    assert abs(learning_rate(110, cfg) - 1e-5) < 1e-12


def test_prior_then_dossr_fine_tune_then_resshift(tmp_path):
    """One real run per model kind; the fine-tuned net starts as the prior (zero-initialised branch)."""
    cfg = tiny_config(tmp_path, iterations=2)
    cfg.model, cfg.prediction, cfg.output = "prior", "sample", str(tmp_path / "prior")
    prior_folder = train(cfg)
    prior, settings = load_bundle(prior_folder)
    assert settings.process["kind"] == "vp" and settings.sampler.method == "noise-injection"
    up = load(prior_folder, device="cpu")(torch.rand(1, 3, 8, 8), scale=2, steps=2)
    assert up.shape == (1, 3, 16, 16) and torch.isfinite(up).all()

    fine = TrainConfig(**{**cfg.__dict__, "model": "dossr", "cond_mode": "branch", "init_from": str(prior_folder),
                          "output": str(tmp_path / "fine"), "iterations": 0})
    from shiftsr.training.models import build_network
    net = build_network(fine, channels=48)
    x, t, cond = torch.randn(2, 48, 8, 8), torch.tensor([3.0, 400.0]), torch.randn(2, 48, 8, 8)
    torch.testing.assert_close(net(x, t, cond), prior(x, t), rtol=0, atol=0)

    fine.iterations = 2
    _, fine_settings = load_bundle(train(fine))
    assert fine_settings.process["kind"] == "domain_shift" and fine_settings.prediction_type == "sample"

    shift = TrainConfig(**{**cfg.__dict__, "model": "resshift", "output": str(tmp_path / "rs"), "resshift_steps": 4})
    folder = train(shift)
    out = load(folder, device="cpu")(torch.rand(3, 8, 8))
    assert load_bundle(folder)[1].sampler.method == "resshift" and out.shape == (1, 3, 32, 32)


def test_fine_tuning_refuses_a_conditional_model(tmp_path):
    cfg = tiny_config(tmp_path, iterations=2)
    folder = train(cfg)
    bad = TrainConfig(**{**cfg.__dict__, "cond_mode": "branch", "init_from": str(folder)})
    from shiftsr.training.models import build_network
    with pytest.raises(ValueError, match="unconditional prior"):
        build_network(bad, channels=48)
