"""`shiftsr export --onnx MODEL -o FILE`: a model's denoiser network as an ONNX file, for ONNX Runtime and others."""
from __future__ import annotations

from pathlib import Path

import click

from .common import fail


@click.command("export")
@click.argument("model")
@click.option("--onnx", "as_onnx", is_flag=True, help="Write ONNX (the only format; needs the [onnx] extra).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write (replaced if it exists).")
@click.option("--opset", type=click.IntRange(13, 23), default=17, show_default=True, help="ONNX opset version.")
def export(model: str, as_onnx: bool, output: Path, opset: int) -> None:
    """Export MODEL's denoiser network, net(x, t, cond) -> prediction, with free batch, height and width.

    The sampler, the codec and the model's conventions stay in shiftsr: `shiftsr upscale --onnx FILE` runs a
    model with its exported network in ONNX Runtime (CPU).
    """
    if not as_onnx:
        raise click.UsageError("choose a format: --onnx")
    from ..backends import export_onnx
    from ..pipeline import load

    try:
        pipe = load(model, device="cpu")
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    try:
        path = export_onnx(pipe, output, opset=opset)
    except (ImportError, ValueError) as error:
        fail(str(error))
    except OSError as error:
        fail(f"{output}: cannot write it ({error.strerror or error})")
    click.echo(str(path))
