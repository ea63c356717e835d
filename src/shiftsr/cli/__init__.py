"""The `shiftsr` command, a file per subcommand; torch loads only when a subcommand runs."""
from __future__ import annotations

import click

from .convert import convert
from .degrade import degrade
from .eval import eval_command
from .export import export
from .metrics import metrics
from .models import models
from .search_bc import search_bc
from .serve import serve
from .train import train
from .upscale import upscale


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shiftsr", prog_name="shiftsr")
def main() -> None:
    """shiftsr: few-step diffusion image super-resolution."""


for command in (upscale, models, convert, export, train, degrade, eval_command, metrics, search_bc, serve):
    main.add_command(command)
