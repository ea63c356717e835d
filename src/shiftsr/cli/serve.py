"""`shiftsr serve`: the upscaling web page (shiftsr.serve) on a local port; needs the [serve] extra."""
from __future__ import annotations

import ipaddress

import click

from .common import report_error, resolve_device

MEGABYTE = 2**20


def is_loopback(host: str) -> bool:
    """Whether host names this machine only (localhost, 127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but localhost lets other machines use the page (no login).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True, help="Port to listen on.")
@click.option("-m", "--model", default="default", show_default=True,
              help="The model or preset selected when the page opens; a model folder is offered beside the "
                   "presets and bundled models.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=16, show_default=True,
              help="Largest upload accepted, in MiB.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=2**20, show_default=True,
              help="Largest input accepted, in pixels (width x height).")
@click.option("--max-output-pixels", type=click.IntRange(min=1), default=2**24, show_default=True,
              help="Largest output a request may ask for, in pixels.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, model: str, device: str, max_upload_mb: float, max_pixels: int,
          max_output_pixels: int) -> None:
    """Serve a web page to upscale an image, follow the progress, compare and download the result."""
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as error:
        report_error(f"shiftsr serve needs the serve extra ({error.name} is missing): pip install 'shiftsr[serve]'")
        ctx.exit(1)
    import torch

    from ..serve.params import Limits

    device = resolve_device(device)
    limits = Limits(upload_bytes=int(max_upload_mb * MEGABYTE), input_pixels=max_pixels,
                    output_pixels=max_output_pixels)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16  # as `shiftsr upscale` chooses
    try:
        app = create_app(model=model, device=device, dtype=dtype, limits=limits)
    except (FileNotFoundError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--model") from None
    if not is_loopback(host):
        click.echo(f"shiftsr serve: listening on {host}: any machine that reaches it can use the page (no login)",
                   err=True)
    click.echo(f"shiftsr serve: http://{host if ':' not in host else f'[{host}]'}:{port}/ (model {model}, {device})",
               err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
