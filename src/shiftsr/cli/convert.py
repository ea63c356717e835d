"""`shiftsr convert`: an official checkpoint (ResShift, SinSR, DoSSR, ADM) into a shiftsr model folder."""
from __future__ import annotations

from pathlib import Path

import click

from ..convert import ARCHS
from .common import report_error


def parse_flags(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs as a dict, the value read as an int, a float, true/false or a string."""
    flags = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--flag")
        lowered = text.lower()
        if lowered in ("true", "false"):
            flags[key] = lowered == "true"
            continue
        for kind in (int, float):
            try:
                flags[key] = kind(text)
                break
            except ValueError:
                continue
        else:
            flags[key] = text
    return flags


@click.command(epilog="Exit status: 0 written, 2 bad checkpoint or usage (nothing is written then). "
                      "Checkpoints are read with torch.load(weights_only=True); a file that would run code is refused.")
@click.argument("arch", type=click.Choice(list(ARCHS)))
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="The official .pth / .ckpt / .safetensors file.")
@click.option("--autoencoder", type=click.Path(path_type=Path),
              help="ResShift and SinSR: the VQ-f4 autoencoder file (autoencoder_vq_f4.pth).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The model folder to write.")
@click.option("--flag", "flags", multiple=True, callback=parse_flags, metavar="KEY=VALUE",
              help="ADM: a flag the keys cannot tell (e.g. num_head_channels=64, noise_schedule=linear).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.pass_context
def convert(ctx: click.Context, arch: str, checkpoint: Path, autoencoder: Path | None, output: Path, flags: dict,
            overwrite: bool) -> None:
    """Convert an official checkpoint into a model folder for `shiftsr upscale -m FOLDER`."""
    if output.exists() and not overwrite:
        report_error(f"{output}: already exists (pass --overwrite to replace it)")
        ctx.exit(2)
    from ..convert import convert as run_conversion
    from ..convert import write_converted
    from ..convert.checkpoint import CheckpointError

    try:
        folder = write_converted(run_conversion(arch, checkpoint, autoencoder, **flags), output, overwrite=overwrite)
    except (CheckpointError, ValueError, TypeError, FileExistsError, FileNotFoundError) as error:
        report_error(str(error))
        ctx.exit(2)
    except OSError as error:
        report_error(f"{error.filename or output}: {error.strerror or error}")
        ctx.exit(1)
    click.echo(f"{checkpoint} -> {folder} ({arch})")
