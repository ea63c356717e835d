"""The Starlette app: the page, the model list, and upscales as a PNG or as a stream of progress events.

POST /api/upscale?model=&scale=|target=&steps=&samples=&seed=&name= with the image file as the raw body gives
the result PNG (16-bit kept) and its record in the X-Shiftsr-Record header; POST /api/upscale/stream with the
same query gives JSON lines: {"event": "queued", "ahead": n}, {"event": "progress", "fraction": f}, then
{"event": "done", "image", "input", "uncertainty" (base64 PNGs), "record", "download"} or
{"event": "error", "status", "error"}. Refusals are JSON {"error": message} with status 400, 413 or 415.
"""
from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .jobs import UPLOAD, JobResult, Prepared, Worker, prepare
from .models import ModelCache, offers
from .params import Limits, RequestError, parse_settings
from .watch import Monitor

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
# the page loads nothing from outside: the browser refuses any other origin
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' blob:; "
                                           "object-src 'none'",
                "X-Content-Type-Options": "nosniff"}
PROGRESS_STEPS = 200  # progress events per job at most


class Service:
    """The handlers, sharing one model cache, one worker and the limits."""

    def __init__(self, model: str, *, device: str, dtype: torch.dtype, limits: Limits) -> None:
        self.table, self.default = offers(model)
        self.cache = ModelCache(self.table, device=device, dtype=dtype)
        self.cache.get(self.default)  # loaded now: the first request does not wait for the weights
        self.worker = Worker()
        self.limits = limits

    async def page(self, request: Request) -> Response:
        return static_file("index.html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise HTTPException(404, f"{name}: no such file")
        return static_file(name)

    async def models(self, request: Request) -> Response:
        return JSONResponse({"default": self.default, "models": [offer.as_json() for offer in self.table.values()],
                             "limits": {"upload_bytes": self.limits.upload_bytes,
                                        "input_pixels": self.limits.input_pixels,
                                        "output_pixels": self.limits.output_pixels}})

    async def upscale(self, request: Request) -> Response:
        """The result PNG of one upload (after the jobs ahead of it)."""
        prepared, scratch = await self.accept(request)
        result: JobResult = await asyncio.wrap_future(self.worker.submit(prepared, Monitor(), scratch))
        return Response(result.png, media_type="image/png",
                        headers={"X-Shiftsr-Record": json.dumps(result.record),
                                 "Content-Disposition": f'attachment; filename="{prepared.settings.download_name}"'})

    async def stream(self, request: Request) -> Response:
        """JSON lines: queued, progress, then done (the images in base64) or error."""
        prepared, scratch = await self.accept(request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def post(event: dict | None) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the server is shutting down and its loop is closed
                pass

        shown = [-1]

        def report(fraction: float) -> None:
            if round(fraction * PROGRESS_STEPS) != shown[0]:
                shown[0] = round(fraction * PROGRESS_STEPS)
                post({"event": "progress", "fraction": round(fraction, 4)})

        monitor = Monitor(report=report)
        ahead = self.worker.ahead
        future = self.worker.submit(prepared, monitor, scratch)
        future.add_done_callback(lambda done: post(None))

        async def lines() -> AsyncIterator[str]:
            try:
                yield line({"event": "queued", "ahead": ahead})
                while (event := await events.get()) is not None:
                    yield line(event)
                yield line(outcome(future, prepared))
            finally:  # the client may have gone: a queued job is dropped, a running one stops at its next step
                monitor.cancelled.set()
                future.cancel()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def accept(self, request: Request) -> tuple[Prepared, TemporaryDirectory]:
        """Check the query, store the upload in a new temporary folder and decode it; refusals raise RequestError."""
        settings = parse_settings(request.query_params, self.table, self.default)
        scratch = TemporaryDirectory(prefix="shiftsr-serve-")
        try:
            await receive(request, Path(scratch.name) / UPLOAD, self.limits.upload_bytes)
            prepared = await run_in_threadpool(prepare, self.cache, settings, Path(scratch.name), self.limits)
        except BaseException:
            scratch.cleanup()
            raise
        return prepared, scratch


async def receive(request: Request, path: Path, limit: int) -> None:
    """Write the request body to path, refusing (413) past limit bytes before reading more."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the upload is {int(declared):,} bytes, over this server's {limit:,}")
    received = 0
    with open(path, "wb") as stream:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise RequestError(413, f"the upload is over this server's {limit:,} bytes")
            stream.write(chunk)
    if received == 0:
        raise RequestError(400, "no image: send the image file as the request body")


def outcome(future: Future, prepared: Prepared) -> dict:
    """The last event of a stream: the finished job's images and record, or its error."""
    if future.cancelled():
        return {"event": "error", "status": 503, "error": "the job was cancelled (the server is stopping)"}
    error = future.exception()
    if isinstance(error, RequestError):
        return {"event": "error", "status": error.status, "error": error.message}
    if error is not None:
        return {"event": "error", "status": 500, "error": f"{type(error).__name__}: {error}"}
    result: JobResult = future.result()
    encoded = {key: base64.b64encode(data).decode("ascii") if data else None
               for key, data in (("image", result.png), ("input", result.preview), ("uncertainty", result.uncertainty))}
    return {"event": "done", **encoded, "record": result.record, "download": prepared.settings.download_name}


def line(event: dict) -> str:
    return json.dumps(event) + "\n"


def static_file(name: str) -> Response:
    """A file of the page from the package, with headers that keep it offline."""
    text = (resources.files("shiftsr.serve") / "static" / name).read_text(encoding="utf-8")
    return Response(text, media_type=STATIC[name], headers=PAGE_HEADERS)


async def refuse(request: Request, error: RequestError) -> Response:
    return JSONResponse({"error": error.message}, status_code=error.status)


async def http_error(request: Request, error: HTTPException) -> Response:
    return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)


async def server_error(request: Request, error: Exception) -> Response:
    return JSONResponse({"error": f"{type(error).__name__}: {error}"}, status_code=500)


def create_app(*, model: str = "default", device: str = "cpu", dtype: torch.dtype = torch.float32,
               limits: Limits = Limits()) -> Starlette:
    """The app serving `model` (a preset, bundled model or folder) beside every preset and bundled model."""
    service = Service(model, device=device, dtype=dtype, limits=limits)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        service.worker.shutdown()

    routes = [Route("/", service.page), Route("/static/{name}", service.static), Route("/api/models", service.models),
              Route("/api/upscale", service.upscale, methods=["POST"]),
              Route("/api/upscale/stream", service.stream, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        RequestError: refuse, HTTPException: http_error, Exception: server_error})
