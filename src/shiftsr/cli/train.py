"""`shiftsr train`: a model from a YAML recipe."""
from __future__ import annotations

from pathlib import Path

import click

from .common import os_message, report_error


@click.command(epilog="Exit status: 0 trained, 1 damaged checkpoint or failed write, 2 bad recipe, data or output "
                     "folder. Recipes: configs/*.yaml; every key is in shiftsr.training.config.")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint when it exists.")
@click.pass_context
def train(ctx: click.Context, config: Path, resume: bool) -> None:
    """Train a model from a YAML or JSON recipe (many GPUs or nodes: accelerate launch -m shiftsr.training.train)."""
    import torch

    from ..training.config import ConfigError, TrainConfig
    from ..training.train import RUN_ERRORS, USAGE_ERRORS
    from ..training.train import train as run_training

    try:
        click.echo(run_training(TrainConfig.load(config), resume=resume))
    except USAGE_ERRORS + RUN_ERRORS as error:
        message = os_message(error) if isinstance(error, OSError) else str(error)
        if isinstance(error, ConfigError) and not message.startswith(str(config)):  # e.g. `data.folders: ...`
            message = f"{config}: {message}"
        report_error(message)
        ctx.exit(2 if isinstance(error, USAGE_ERRORS) else 1)
    except RuntimeError as error:  # torch.OutOfMemoryError, or the CPU allocator refusing a size
        if not isinstance(error, torch.OutOfMemoryError) and "can't allocate memory" not in str(error):
            raise
        report_error(f"{config}: out of memory; lower data.batch, data.patch or model.channels")
        ctx.exit(1)
