"""Tiled upscales whose memory does not grow with the image: the sampler's state streams through files.

With tiles, the network's activations shrink to one tile, but an in-memory sampler still holds the state, its
history, the condition and the noise at full size, several times the image. A streamed run keeps those in
DiskTensors (page cache, not resident memory) and works band by band: the source image is made and encoded in
bands, every draw is written in chunks, each step runs tile by tile (StreamedChain) with the same windows, order
and noise as TiledDenoiser in memory, and the result is decoded band by band into the one full-size tensor kept,
the output image (a running sum over samples). It gives the same numbers as the in-memory tiled run.
"""
from __future__ import annotations

import tempfile

import torch
from torch import Tensor

from ..denoisers.codecs import IdentityCodec, SpaceToDepthCodec
from ..methods import METHODS
from ..ops.imresize import imresize
from ..ops.padding import pad_to_multiple
from ..processes import start_state
from .driver import Stores, StreamedChain, bands
from .store import DiskTensor, draw_noise

LR_MARGIN = 4  # LR rows read beyond a band: MATLAB bicubic reads 2 rows up and 3 down, so no tap folds back there


def streams(pipe, plan, *, side: int, start: Tensor | None, uncertainty: bool) -> bool:
    """Whether an upscale tiled at `side` model-space pixels can stream: a local codec (space-to-depth, identity),
    no colour fix, a start time known in advance, the condition being the source image, no given start state and
    no spread of samples (those need whole images)."""
    _, height, width = plan.model_shape
    return (0 < side < max(height, width) and isinstance(pipe.codec, (SpaceToDepthCodec, IdentityCodec))
            and plan.color_fix == "none" and plan.t_start is not None and plan.t_start > 0
            and pipe.settings.condition == "xh" and start is None and not uncertainty)


def run(pipe, lr: Tensor, plan, *, side: int, overlap: int, seed: int, noise, progress: bool):
    """The streamed upscale of a batch of same-size LR images under plan (see ShiftSRPipeline.run)."""
    from tqdm.auto import tqdm

    from ..pipeline import Upscaled, sample_draws

    row = METHODS[plan.method]
    ts = pipe.time_grid(row, plan.steps, plan.t_start)
    record = pipe.new_record(plan, seed=seed, t_start=ts[0]) | {"steps": len(ts) - 1,
                                                                 "nfe": (len(ts) - 1) * plan.samples, "tile": side}
    shape = (len(lr), *plan.model_shape)
    with tempfile.TemporaryDirectory(prefix="shiftsr-stream-") as folder, \
            tqdm(total=(len(ts) - 1) * plan.samples, disable=not progress, leave=False, desc="sampling") as bar:
        stores = Stores(folder, shape)
        try:
            xh, estimate = model_space(pipe, lr, plan, stores)
            y = xh if pipe.conditional else None
            noise_store = stores.get("noise", layout="nchw")
            driver = StreamedChain(stores, tile=side, overlap=overlap, device=pipe.device, noise=noise_store,
                                   on_step=lambda: bar.update(1))
            total = None
            for k in range(plan.samples):
                draws = sample_draws(seed, k, len(lr), noise, antithetic=plan.antithetic)
                x = stores.get("x")
                draw_noise(noise_store, draws)
                for top, bottom in bands(shape[2]):
                    x.write(top, start_state(pipe.process, driver.load(estimate, top, bottom),
                                             driver.load(y, top, bottom), ts[0], driver.load(noise_store, top, bottom)))
                row.sample(pipe.denoiser, x, ts, process=pipe.process, y=y, cond=y, order=plan.order,
                           generator=draws, driver=driver)
                total = decode(pipe, x, total)
        finally:
            stores.close()
    out = total.div_(plan.samples).clamp_(0, 1)
    return Upscaled(pipe.finish(out.cpu(), plan), record)


def decode(pipe, x: DiskTensor, total: Tensor | None) -> Tensor:
    """The running sum of the decoded images: total plus the decoding of the final state x, band by band (the first
    sample's decoding itself where total is None)."""
    scale, first = pipe.codec.scale, total is None
    for top, bottom in bands(x.shape[2]):
        image = pipe.codec.decode(x.read(top, bottom).to(pipe.device)).float()
        if total is None:
            total = torch.zeros(x.shape[0], image.shape[1], x.shape[2] * scale, x.shape[3] * scale,
                                device=image.device)
        rows = total[:, :, top * scale:bottom * scale]
        if first:
            rows.copy_(image)
        else:
            rows.add_(image)
    return total


def model_space(pipe, lr: Tensor, plan, stores: Stores) -> tuple[DiskTensor, DiskTensor | None]:
    """(xh, estimate) stores: the source image and the canvas in model space, written band by band (estimate is
    xh where the canvas is the source image, None for a chain from pure noise)."""
    shape, scale = stores.shape, pipe.codec.scale
    low = pad_to_multiple(lr, pipe.settings.lr_multiple)
    banded = (plan.strategy != "direct" and pipe.preprocess is None
              and pipe.scale * low.shape[-2] == shape[2] * scale and pipe.scale * low.shape[-1] == shape[3] * scale)
    xh = stores.get("xh")
    estimate = None
    if banded:  # the source image is the bicubic upscale of the LR: made band by band, never whole
        for top, bottom in bands(shape[2]):
            xh.write(top, pipe.encode(bicubic_rows(low, pipe.scale, top * scale, bottom * scale)))
        return xh, None if plan.from_noise else xh
    canvas, source, _ = pipe.images(lr, plan)
    if canvas is not source:
        estimate = stores.get("estimate")
    for top, bottom in bands(shape[2]):
        rows = slice(top * scale, bottom * scale)
        xh.write(top, pipe.encode(source[:, :, rows]))
        if estimate is not None:
            estimate.write(top, pipe.encode(canvas[:, :, rows]))
    return xh, None if plan.from_noise else (estimate or xh)


def bicubic_rows(low: Tensor, scale: int, top: int, bottom: int) -> Tensor:
    """Rows [top, bottom) of imresize(low, scale=scale).clamp(0, 1), from the LR rows they read and a margin: the
    same numbers, since the taps and weights of a row do not depend on where the LR is cut away from them."""
    first = max(0, top // scale - LR_MARGIN)
    last = min(low.shape[-2], -(-bottom // scale) + LR_MARGIN)
    band = imresize(low[..., first:last, :], scale=scale)
    return band[..., top - first * scale: bottom - first * scale, :].clamp(0, 1)
