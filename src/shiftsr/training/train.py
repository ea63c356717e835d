"""Train a DoSSR, ResShift or prior model (x0 regression, DoSSR Eq. 8 / ResShift Eq. 11) with accelerate and EMA."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from ema_pytorch import EMA
from tqdm.auto import tqdm

from ..bundle import save_bundle, settings_for
from ..data.pairs import BicubicPairs, load_training_images
from ..denoisers.codecs import SpaceToDepthCodec
from ..denoisers.prediction import PredictionDenoiser
from .config import TrainConfig
from .models import build_network, build_training_process, shipped_sampler, training_horizon


class Progress:
    """The step counter, saved with every checkpoint so a run resumes where it stopped."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to lr_min."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    done = (step - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(done, 1.0)))


def to_model_space(images: torch.Tensor, codec) -> torch.Tensor:
    """[0, 1] images to the codec's space of [-1, 1] images."""
    return codec.encode(images * 2 - 1)


def train(cfg: TrainConfig, *, resume: bool = False) -> Path:
    """Run (or resume) training; return the folder of the exported EMA model."""
    accelerator = Accelerator()
    set_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "train_config.json")
    process = build_training_process(cfg)
    codec = SpaceToDepthCodec(factor=cfg.scale)
    net = build_network(cfg, codec.channels)
    ema = EMA(net, beta=cfg.ema_beta, update_after_step=100, update_every=1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    net, optimizer = accelerator.prepare(net, optimizer)
    denoiser = PredictionDenoiser(net, process=process, prediction_type=cfg.prediction)
    progress = Progress()
    accelerator.register_for_checkpointing(ema, progress)
    checkpoint = out / "checkpoint"
    if resume and checkpoint.is_dir():
        accelerator.load_state(str(checkpoint))
    images = load_training_images(cfg.data, min_side=cfg.patch)
    pairs = iter(BicubicPairs(images, patch=cfg.patch, scale=cfg.scale, batch=cfg.batch,
                              seed=cfg.seed + accelerator.process_index + 1000 * progress.step))
    noise_gen = torch.Generator().manual_seed(cfg.seed + 7919 * (progress.step + 1))
    bar = tqdm(total=cfg.iterations, initial=progress.step, disable=not accelerator.is_main_process)
    started = time.time()
    while progress.step < cfg.iterations:
        x0, xh = (to_model_space(images, codec).to(accelerator.device) for images in next(pairs))
        xh = None if cfg.model == "prior" else xh
        # 1. draw t and x_t from the process marginal (DoSSR Eq. 2 below t1, ResShift Eq. 2, or VP)
        t = process.training_times(cfg.batch, generator=noise_gen, t_max=training_horizon(cfg, process))
        noise = torch.randn(x0.shape, generator=noise_gen).to(x0.device)
        x_t = process.marginal(x0, xh, t, noise)
        # 2. regress x0 through the network's parametrisation (residual x0 - xh, or x0 itself)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(progress.step, cfg)
        loss = torch.nn.functional.mse_loss(denoiser(x_t, t.to(x0.device), xh), x0)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        ema.update()
        progress.step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
        if progress.step % cfg.checkpoint_every == 0 or progress.step == cfg.iterations:
            accelerator.wait_for_everyone()
            accelerator.save_state(str(checkpoint))
            if accelerator.is_main_process:
                export(ema, process, cfg, out / "model")
                (out / "log.txt").open("a").write(
                    f"step {progress.step} loss {loss.item():.5f} seconds {time.time() - started:.0f}\n")
    bar.close()
    return out / "model"


def export(ema: EMA, process, cfg: TrainConfig, folder: Path) -> None:
    """Save the EMA network as a model bundle with its settings."""
    net = ema.ema_model
    save_bundle(folder, net, settings_for(net, process, scale=cfg.scale, prediction_type=cfg.prediction,
                                          codec={"kind": "space_to_depth", "factor": cfg.scale},
                                          sampler=shipped_sampler(cfg)))


def main(argv: list[str] | None = None) -> None:
    """accelerate launch -m shiftsr.training.train CONFIG.json [--resume] (one process, or one per GPU)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config", help="training recipe as JSON (see TrainConfig)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint if present")
    args = parser.parse_args(argv)
    print(train(TrainConfig.load(args.config), resume=args.resume))


if __name__ == "__main__":
    main()
