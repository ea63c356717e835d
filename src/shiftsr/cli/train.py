"""`shiftsr train`: a model from a YAML recipe."""
from __future__ import annotations

from pathlib import Path

import click

from .common import report_error


@click.command(epilog="Exit status: 0 trained, 1 damaged checkpoint or failed write, 2 bad recipe, data or output "
                     "folder. Recipes: configs/*.yaml; every key is in shiftsr.training.config.")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint when it exists.")
@click.pass_context
def train(ctx: click.Context, config: Path, resume: bool) -> None:
    """Train a model from a YAML or JSON recipe (many GPUs or nodes: accelerate launch -m shiftsr.training.train)."""
    from ..training.config import TrainConfig
    from ..training.train import RUN_ERRORS, USAGE_ERRORS
    from ..training.train import train as run_training

    try:
        click.echo(run_training(TrainConfig.load(config), resume=resume))
    except USAGE_ERRORS + RUN_ERRORS as error:
        report_error(str(error))
        ctx.exit(2 if isinstance(error, USAGE_ERRORS) else 1)
