"""Train a DoSSR, ResShift, VP or autoencoder model (its task in tasks.py) with accelerate, EMA and exact resume."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from ema_pytorch import EMA
from tqdm.auto import tqdm

from ..data.pairs import BicubicPairs, load_training_images
from ..data.pool import PoolPairs, load_pool_parts
from ..metrics.stlpips import STLPIPS
from .checkpoints import CheckpointError, TrainState, load_checkpoint, save_checkpoint
from .config import ConfigError, OptimConfig, TrainConfig
from .files import replace_folder, staging_folder
from .runlog import RunLog
from .tasks import build_task
from .validation import HeldOutSet, split_held_out

BEST_RECORD = "validation.json"  # in OUTPUT/best: the step and validation values of the model kept there
USAGE_ERRORS = (ConfigError, FileExistsError)  # a recipe or output folder that cannot start: exit status 2
RUN_ERRORS = (CheckpointError, OSError)  # a damaged checkpoint or a failed write: exit status 1


def learning_rate(step: int, optim: OptimConfig) -> float:
    """Linear warm-up then cosine decay to lr_min."""
    if step < optim.warmup:
        return optim.lr * (step + 1) / optim.warmup
    done = (step - optim.warmup) / max(1, optim.iterations - optim.warmup)
    return optim.lr_min + 0.5 * (optim.lr - optim.lr_min) * (1 + math.cos(math.pi * min(done, 1.0)))


def load_data(cfg: TrainConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(training, held-out) images; a missing, empty or unreadable data folder is a ConfigError naming it."""
    try:
        images = load_training_images(cfg.data.folders, min_side=cfg.data.patch)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"data.folders: {error}") from None
    try:
        return split_held_out(images, cfg.data.val_images)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def pool_of(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The recipe's pair pool; an unreadable one is a ConfigError naming it."""
    try:
        return load_pool_parts(cfg.data.pool)
    except ValueError as error:
        raise ConfigError(f"data.pool: {error}") from None


def check_output(out: Path, resume: bool) -> None:
    """Refuse to start afresh in a folder that holds an earlier run (its checkpoint or model) unless resuming, and an
    output that cannot be a folder (it, or a folder above it, is a file)."""
    existing = next(path for path in (out, *out.parents) if path.exists())
    if not existing.is_dir():
        raise ConfigError(f"run.output: {out} cannot be created: {existing} is a file, not a folder")
    if not resume and any((out / name).exists() for name in ("checkpoint", "model")):
        raise FileExistsError(f"{out}: holds an earlier run; pass --resume to continue it, or delete the folder "
                              "or set run.output to start a new one")


def export(task, net: torch.nn.Module, folder: Path) -> None:
    """Save the EMA network as the task's model folder, written beside folder and then swapped in."""
    staging = staging_folder(folder)
    shutil.rmtree(staging, ignore_errors=True)
    task.export(net, staging)
    replace_folder(staging, folder)


class Trainer:
    """One run's parts (accelerator, network, EMA, optimizer, random streams, log) and the steps that use them."""

    def __init__(self, cfg: TrainConfig, *, resume: bool):
        cfg.check()
        self.cfg, o, self.out = cfg, cfg.optim, Path(cfg.run.output)
        train_images, val_images = load_data(cfg)
        check_output(self.out, resume)
        self.accelerator = accelerator = Accelerator(gradient_accumulation_steps=o.grad_accum,
                                                     mixed_precision=o.mixed_precision)
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if accelerator.num_processes != launched:
            raise ConfigError(f"{launched} processes were launched but accelerate joined {accelerator.num_processes};"
                              " without GPUs set ACCELERATE_USE_CPU=1 so that they train together on the CPUs")
        self.main = accelerator.is_main_process
        set_seed(cfg.run.seed)
        self.task = build_task(cfg, accelerator.device, train_images)
        net = self.task.network
        self.ema = EMA(net, beta=o.ema_beta, update_after_step=o.ema_start, update_every=1)
        optimizer = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.net, self.optimizer = accelerator.prepare(net, optimizer)
        pairs = (PoolPairs(pool_of(cfg), batch=cfg.data.batch) if cfg.data.pool else
                 BicubicPairs(train_images, patch=cfg.data.patch, scale=cfg.data.scale, batch=cfg.data.batch))
        self.perceptual = (STLPIPS(o.stlpips_net).to(accelerator.device) if o.stlpips_weight > 0 else None)
        self.batches = iter(pairs)
        self.state = TrainState({"data": pairs.generator, "noise": torch.Generator()}, seed=cfg.run.seed,
                                rank=accelerator.process_index, world_size=accelerator.num_processes)  # seeds both
        accelerator.register_for_checkpointing(self.ema, self.state)
        resumed = resume and load_checkpoint(accelerator, self.out / "checkpoint", cfg.to_dict())
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "train_config.yaml")
        self.log = RunLog(self.out / "log.jsonl", enabled=self.main, keep_until=self.state.step if resumed else None)
        world, batch = accelerator.num_processes, cfg.data.batch
        self.log.write("start", step=self.state.step, world_size=world, grad_accum=o.grad_accum, batch=batch,
                       effective_batch=batch * o.grad_accum * world, mixed_precision=o.mixed_precision,
                       device=str(accelerator.device),
                       train_images=len(train_images), val_images=len(val_images), resumed=resumed,
                       exact_resume=self.state.exact)
        if not self.state.exact and self.main:
            tqdm.write(f"{self.out / 'checkpoint'}: has no random streams for {accelerator.num_processes} "
                       "process(es); reseeded them, so this resume is not bit-identical to an uninterrupted run",
                       file=sys.stderr)
        self.held_out = HeldOutSet(val_images, patch=cfg.data.val_patch, scale=cfg.data.scale,
                                   degradations=cfg.data.val_degradations) if val_images else None

    def optimizer_step(self) -> torch.Tensor:
        """One AdamW step on grad_accum micro-batches per process (gradients averaged over all); their summed loss."""
        cfg, accelerator, total = self.cfg, self.accelerator, 0
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.state.step, cfg.optim)
        for _ in range(cfg.optim.grad_accum):
            images = next(self.batches)
            with accelerator.accumulate(self.net):
                loss = self.task.loss(self.net, images, self.state.streams["noise"], accelerator.device,
                                      self.perceptual)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total = total + loss.detach()
        self.ema.update()
        self.state.step += 1
        return total

    def save(self) -> None:
        """Checkpoint (every process takes part), then export the EMA model (main process)."""
        save_checkpoint(self.accelerator, self.state, self.out / "checkpoint", self.cfg.to_dict())
        if self.main:
            export(self.task, self.ema.ema_model, self.out / "model")

    def validate(self) -> dict:
        """{"val_psnr_y": ...} of the EMA model on the held-out crops (main process; empty without held-out images)."""
        if not (self.held_out and self.main):
            return {}
        return self.task.validate(self.ema.ema_model, self.held_out, self.accelerator.device)

    def keep_best(self, values: dict) -> None:
        """Export the EMA model to OUTPUT/best when values[run.keep_best] beats best/validation.json's (main process)."""
        key, best = self.cfg.run.keep_best, self.out / "best"
        if not (key and self.main and key in values):
            return
        record = best / BEST_RECORD
        previous = json.loads(record.read_text())[key] if record.is_file() else None
        if previous is not None and (values[key] >= previous if key == "val_stlpips" else values[key] <= previous):
            return
        staging = staging_folder(best)
        shutil.rmtree(staging, ignore_errors=True)
        self.task.export(self.ema.ema_model, staging)
        (staging / BEST_RECORD).write_text(json.dumps({"step": self.state.step, **values}) + "\n")
        replace_folder(staging, best)
        self.log.write("best", step=self.state.step, **values)

    def validated(self) -> dict:
        """Validate, log the values and keep the model if it is the best so far; the values."""
        values = self.validate()
        if values:
            self.log.write("val", step=self.state.step, **values)
            self.keep_best(values)
        return values

    def run(self) -> Path:
        """Train up to optim.iterations, logging, checkpointing and validating on the way; the exported model."""
        o, r, state = self.cfg.optim, self.cfg.run, self.state
        started = time.time() - state.seconds
        loss_sum, loss_count, loss = torch.zeros((), device=self.accelerator.device), 0, None
        if r.keep_best and state.step == 0:  # the model before training is the first candidate (identity_init)
            self.validated()
        with tqdm(total=o.iterations, initial=state.step, disable=not self.main, desc="training") as bar:
            while state.step < o.iterations:
                loss_sum, loss_count = loss_sum + self.optimizer_step(), loss_count + o.grad_accum
                state.seconds = time.time() - started
                bar.update()
                done = state.step == o.iterations
                if state.step % r.log_every == 0 or done:
                    loss = self.accelerator.reduce(loss_sum / loss_count, "mean").item()
                    loss_sum, loss_count = torch.zeros_like(loss_sum), 0
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.log.write("train", step=state.step, loss=loss, lr=lr, seconds=round(state.seconds, 3))
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}")
                if state.step % r.checkpoint_every == 0 or done:
                    self.save()
                if r.validate_every and state.step % r.validate_every == 0 and not done and self.held_out:
                    self.validated()
        if self.main and not (self.out / "model").exists():  # a run of zero iterations still leaves a model
            export(self.task, self.ema.ema_model, self.out / "model")
        final = self.validated()
        self.log.write("end", step=state.step, loss=loss, seconds=round(state.seconds, 3),
                       model=str(self.out / "model"), **final)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return self.out / "model"


def train(cfg: TrainConfig, *, resume: bool = False) -> Path:
    """Run (or resume) training; return the folder of the exported EMA model."""
    return Trainer(cfg, resume=resume).run()


def main(argv: list[str] | None = None) -> None:
    """accelerate launch -m shiftsr.training.train CONFIG [--resume]: one process, one per GPU, or several nodes."""
    import argparse

    from accelerate import PartialState

    parser = argparse.ArgumentParser(description=main.__doc__, epilog=(
        "Several CPU processes (no GPU): ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N "
        "-m shiftsr.training.train CONFIG (accelerate launch --cpu starts a single process)."))
    parser.add_argument("config", help="training recipe, .yaml or .json (see shiftsr.training.config.TrainConfig)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint if present")
    args = parser.parse_args(argv)
    try:
        folder = train(TrainConfig.load(args.config), resume=args.resume)
    except USAGE_ERRORS + RUN_ERRORS as error:
        print(f"shiftsr train: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2 if isinstance(error, USAGE_ERRORS) else 1)
    if PartialState().is_main_process:
        print(folder)


if __name__ == "__main__":
    main()
