"""`shiftsr serve`: one web page to upscale an image, follow the progress, compare and download the result.

Why Starlette and uvicorn: the page needs five routes, a streamed response for progress and a raw upload
with a byte limit; Starlette (maintained by Encode, one dependency: anyio) does exactly that, ships a test
client that drives the app in-process, and uvicorn is its reference server. Gradio would bring dozens of
packages and a front end of its own to work around for a before/after slider, crops and a 16-bit download;
FastAPI adds pydantic and OpenAPI, which five routes do not need. The page is one
hand-written HTML file with vanilla JavaScript and CSS served from the package: it loads nothing from
outside (its Content-Security-Policy forbids it), so it works on a machine without internet.

The server binds to 127.0.0.1 by default, loads each model once per process, runs one job at a time in a
single worker thread (concurrent requests wait in its queue), refuses uploads over a byte limit (413),
inputs and outputs over pixel limits (413), and files it cannot decode (415), all with a JSON
{"error": message}. Each request gets its own temporary folder, removed when its job ends.

The result is the image `shiftsr upscale --ext png` writes for the same settings and seed, bit for bit: the
job runs the CLI's own read-upscale-write in the request's folder. With samples >= 2 it runs it as
`--uncertainty` does, so the uncertainty map is the CLI's: the per-pixel standard deviation of the K samples
the pipeline averages, from the same run (shiftsr.uncertainty). Running the K samples one by one with
samples=1 and the draws of pipeline.sample_draws would give the same samples, but their mean differs from the
pipeline's where a sample is clamped to [0, 1] (0.07% of the 8-bit pixels of a Set5 crop with the default
model, more with realworld-x4), so the server does not average on its own. serve.watch only reads the
times of the denoiser calls, for the progress.
"""
from __future__ import annotations

from .params import Limits

__all__ = ["Limits", "create_app"]


def create_app(**kwargs):
    """The Starlette app (see serve.app.create_app); imported here only when called, so that the package
    imports without the [serve] extra."""
    from .app import create_app as build

    return build(**kwargs)
