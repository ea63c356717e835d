"""The user-facing pipeline: images in, upscaled images out (diffusers style: pipe = load(...); pipe(image)).

The pipeline only orchestrates: the bundle gives the model, `plan` decides sizes, method and start time from
the settings alone, the codec maps [0, 1] images to model space, the method table's row samples, and the
result is decoded, averaged over samples and cropped or resized to the size asked.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .bundle import CONDITION_FOLDER, NETWORKS, BundleSettings, load_part, open_model, rebuild_process
from .denoisers.codecs import build_codec
from .denoisers.network import NetworkCall, channels_last
from .denoisers.prediction import PredictionDenoiser, ddpm_index
from .denoisers.tiling import TiledDenoiser, tiled_decode
from .imageio import to_batch
from . import streaming
from .memory import (DEFAULT_BYTES_PER_PIXEL, auto_side, decode_side, free_bytes, halved, is_out_of_memory,
                     keep_freed_memory, network_bytes_per_pixel, peak_bytes)
from .methods import METHODS, family_of, method_row, methods_for
from .networks.dossr_ldm import DoSSRConditionEncoder
from .ops.colour import COLOUR_FIXES, colour_fix
from .ops.imresize import imresize
from .ops.padding import pad_to_multiple
from .ops.sizes import output_size
from .processes import NOISE_TABLE_FILE, NoiseTable, VPProcess, load_noise_table, start_state, start_time
from .samplers import Draws, dossr_timesteps
from .samplers.chain import draw_like
from .samplers.common import Generators
from .uncertainty import sample_spread

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DECODE_OVERLAP = 4  # latent pixels two decoding tiles share (32 image pixels for an f8 autoencoder)
DECODE_PROBE = 16  # latent side of the probe decode that measures a codec's bytes per latent pixel
SAMPLE_SEED_STRIDE = 1_000_003  # seed of draw source j = seed + j * stride, so sample 0 is the plain seed
STRATEGIES = ("resize", "direct")  # how a model reaches a size other than its native scale (see plan)
# a conditional model's strategy off its native scale: x4-then-resize beats direct sampling on Set5 and Set14
# at x2 and x3 in PSNR-Y and ST-LPIPS, with 1 and 8 samples (scripts/arbitrary_scale_study.py)
DEFAULT_STRATEGY = "resize"


@dataclass(frozen=True)
class Plan:
    """What a call runs, decided from the input size and the settings alone (no network, no pixels).

    strategy: "native" (the model's own scale), "resize" (native, then MATLAB-bicubic resized to size_out) or
    "direct" (sampled at size_out from the LR resized to it). t_start is None where it depends on the image
    (the KL rule); model_shape is one image's padded model-space shape (channels, height, width); from_noise:
    the chain starts from pure noise (an SR3 model's own start) rather than around an estimate.
    """

    size_in: tuple[int, int]
    size_out: tuple[int, int]
    strategy: str
    factor: float
    method: str
    steps: int
    order: int | None
    samples: int
    t_start: float | None
    model_shape: tuple[int, int, int]
    color_fix: str = "none"
    from_noise: bool = False
    steps_given: bool = False
    antithetic: bool = True


@dataclass
class Upscaled:
    """An upscale and the record of what ran (method, steps, order, samples, seed, sizes, t_start, nfe); with
    uncertainty, std: the per-pixel spread of the samples (B, 1, H, W, see shiftsr.uncertainty), its mean in the
    record as std_mean."""

    image: Tensor
    record: dict
    std: Tensor | None = None


def sample_draws(seed: int, k: int, batch: int, noise: Sequence[Tensor] | None, *, antithetic: bool) -> Generators:
    """The noise of sample k (one generator per image, seeded seed + j * SAMPLE_SEED_STRIDE): j = k for independent
    samples; antithetic pairs take j = k // 2 and negate every draw of the odd sample, so a pair's mean cancels
    the part of the output odd in the noise (antithetic variates: on Set5 the mean of 2 beats 8 independent ones).
    noise: draws replayed first (one sample)."""
    source, mirrored = divmod(k, 2) if antithetic else (k, 0)
    generators = [torch.Generator().manual_seed(seed + source * SAMPLE_SEED_STRIDE) for _ in range(batch)]
    return generators if noise is None and not mirrored else Draws(noise or [], then=generators,
                                                                     mirrored=bool(mirrored))


class ShiftSRPipeline:
    """Upscale with a shiftsr model: LR to the source image, encode, sample x0 with the method, decode, resize."""

    def __init__(self, net: torch.nn.Module, settings: BundleSettings, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, codec: torch.nn.Module | None = None, root: Path | None = None,
                 noise_table: NoiseTable | None = None):
        """codec: the model-space codec (else built from settings.codec; an autoencoder is read from root).

        noise_table: measured noise-injection times per scale (else read from root/noise_levels.json if there).
        """
        self.settings = settings
        table = None if root is None else Path(root) / NOISE_TABLE_FILE
        self.noise_table = noise_table or (load_noise_table(table) if table and table.is_file() else None)
        self.device = torch.device(device)
        keep_freed_memory()  # image-sized tensors reuse freed memory instead of faulting fresh pages in
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()
        self.process = rebuild_process(settings)
        kind = NETWORKS[settings.network]
        self.family = kind.family or family_of(self.process, conditional=kind.conditional(net.config))
        self.codec = (build_codec(settings.codec, root) if codec is None else codec).to(self.device)
        self.preprocess = None
        if settings.preprocessor != "bicubic":
            from .preprocess import build_preprocessor  # the RRDB loads only for models that use it

            self.preprocess = build_preprocessor(settings.preprocessor, self.device, root=root)
        self.condition = None
        if settings.condition == "encoder":
            self.condition = load_part(DoSSRConditionEncoder, Path(root) / CONDITION_FOLDER).to(self.device)
        self.bytes_per_pixel: float | None = None  # the network's working bytes per model-space pixel, once measured
        self.last_shape, self.last_side = (), 0  # the model-space shape and tile side of the latest run
        self.memory_format = torch.channels_last  # the layout the network takes, and so the sampler's
        self.decode_bytes_per_pixel: float | None = None  # the codec's decoding bytes per latent pixel, once measured
        self.denoiser = None if self.process is None else network_denoiser(self.net, settings, self.process,
                                                                            dtype=dtype)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default", *, device: str | None = None,
                        dtype: torch.dtype = torch.float32) -> ShiftSRPipeline:
        """Load a preset or a bundled model by name, or a model folder by path."""
        folder, net, settings = open_model(name_or_path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(net, settings, device=device, dtype=dtype, root=folder)

    @property
    def scale(self) -> int:
        """The model's native upscaling factor."""
        return self.settings.scale

    @property
    def conditional(self) -> bool:
        """Whether the network sees the LR (every family but the unconditional prior)."""
        return self.family != "prior"

    @property
    def methods(self) -> tuple[str, ...]:
        """The sampling methods this model can run."""
        return methods_for(self.family)

    def sampler_settings(self, *, method: str | None = None, steps: int | None = None, order: int | None = None,
                         samples: int | None = None) -> dict:
        """The sampler a call runs: each setting given, or the model's default; order None where it does not apply.

        A setting the method cannot honour (an order for a method without one) is a ValueError naming it.
        """
        defaults = self.settings.sampler
        row = method_row(method or defaults.method, self.family)
        row.check(order=order)
        for name, value in (("steps", steps), ("samples", samples)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: must be a whole number of at least 1, got {value!r}")
        return {"method": row.name, "steps": steps or defaults.steps,
                "order": (order or defaults.order) if row.uses_order else None,
                "samples": samples or defaults.samples}

    def plan(self, size: tuple[int, int], *, scale: float | None = None, target: tuple[int, int] | None = None,
             strategy: str | None = None, t_start: float | None = None, color_fix: str | None = None,
             antithetic: bool = True, **sampler) -> Plan:
        """What upscaling an LR of size (H, W) runs: sizes, strategy, sampler and start time; pure, no network."""
        height, width = size
        size_out = output_size(height, width, scale=self.scale if scale is None and target is None else scale,
                               target=target)
        native = size_out == (self.scale * height, self.scale * width)
        strategy = self.pick_strategy(native, strategy)
        factor = math.sqrt(size_out[0] / height * size_out[1] / width) if strategy == "direct" else self.scale
        padded = [-(-side // self.settings.lr_multiple) * self.settings.lr_multiple for side in size]
        canvas = size_out if strategy == "direct" else tuple(self.scale * side for side in padded)
        multiple = self.canvas_multiple(strategy)
        shape = (self.codec.channels, *(-(-side // multiple) * multiple // self.codec.scale for side in canvas))
        from_noise = self.family == "sr3" and strategy != "direct" and t_start is None
        if t_start is None:
            t_start = start_time(self.process, self.family, factor=factor, direct=strategy == "direct",
                                 table=self.noise_table)
        settings = self.sampler_settings(**sampler)
        steps_given = sampler.get("steps") is not None
        if t_start is not None and t_start > 0:
            row = METHODS[settings["method"]]
            if steps_given:  # the grid refuses steps the chain cannot take
                row.grid(self.process, settings["steps"], t_start)
            else:  # the model's default, on a chain shortened below it, takes the whole chain
                settings["steps"] = int(min(settings["steps"], row.max_steps(self.process, t_start)))
        color_fix = self.settings.color_fix if color_fix is None else color_fix
        if color_fix not in COLOUR_FIXES:
            raise ValueError(f"color_fix: unknown {color_fix!r}; allowed: {', '.join(COLOUR_FIXES)}")
        return Plan((height, width), size_out, strategy, factor, **settings, t_start=t_start, model_shape=shape,
                    color_fix=color_fix, from_noise=from_noise, steps_given=steps_given, antithetic=antithetic)

    def run(self, image, *, tile: int = 0, **kwargs) -> Upscaled:
        """Upscale one image or a batch of same-size images (see __call__); the image and the record of the run.

        tile: model-space pixels, 0 = auto (memory.auto_side: from the free memory and the network's measured bytes
        per pixel); under auto an out-of-memory error halves the tile down to memory.FLOOR, with one note on stderr.
        """
        if tile:
            return self.run_tiled(image, tile=tile, **kwargs)
        side, failed = 0, []
        while True:
            try:
                result = self.run_tiled(image, tile=side or -1, **kwargs)
                break
            except (torch.OutOfMemoryError, RuntimeError) as error:
                tried = self.last_side
                side = halved(tried, *self.last_shape[-2:]) if is_out_of_memory(error) else None
                if side is None:
                    raise
                failed.append(tried or "none")
                kwargs["tile_overlap"] = min(kwargs.get("tile_overlap", 16), side // 2)
        if failed:
            tqdm.write(f"shiftsr: note: out of memory with tile {', '.join(map(str, failed))}; "
                       f"ran with tile {result.record['tile']}", file=sys.stderr)
        return result

    @torch.no_grad()
    def run_tiled(self, image, *, seed: int = 0, tile: int = -1, tile_overlap: int = 16, start: Tensor | None = None,
                  noise: Sequence[Tensor] | None = None, progress: bool = False, uncertainty: bool = False,
                  stream: bool = True, **settings) -> Upscaled:
        """run() at one tile side: tile > 0 model-space pixels, -1 the auto choice (memory.auto_side).

        uncertainty: also the per-pixel standard deviation of the samples (samples >= 2), each colour-fixed as the
        output is, from the same draws as the output (so the image does not change), as Upscaled.std. stream: a
        tiled run keeps its state on disk (shiftsr.streaming) where the model allows; False keeps it in memory.
        """
        lr = to_batch(image).to(self.device)
        plan = self.plan(tuple(lr.shape[-2:]), **settings)
        if noise is not None and plan.samples != 1:
            raise ValueError(f"noise: given draws replay one sample, not {plan.samples}; pass samples=1")
        if uncertainty and plan.samples < 2:
            raise ValueError(f"uncertainty: the spread of samples needs samples >= 2, got {plan.samples}")
        self.last_shape = (len(lr), *plan.model_shape)
        side = self.last_side = self.tile_side(self.last_shape, tile)
        tile_overlap = tile_overlap if tile > 0 else min(tile_overlap, side // 2)  # an auto tile keeps half its side
        if stream and streaming.streams(self, plan, side=side, start=start, uncertainty=uncertainty):
            return streaming.run(self, lr, plan, side=side, overlap=tile_overlap, seed=seed, noise=noise,
                                 progress=progress)
        canvas, source, low = self.images(lr, plan)
        t_start = plan.t_start if plan.t_start is not None else start_time(
            self.process, self.family, factor=plan.factor, direct=plan.strategy == "direct", x_up=canvas * 2 - 1)
        record = self.new_record(plan, seed=seed, t_start=t_start) | {"tile": side}
        if t_start <= 0:  # the clean state: the estimate is the answer, the same for every sample
            out = self.finish(canvas.cpu(), plan)
            spread = torch.zeros_like(out[:, :1]) if uncertainty else None
            return Upscaled(out, record | ({"std_mean": 0.0} if uncertainty else {}), spread)
        row = METHODS[plan.method]
        steps = plan.steps if plan.steps_given else int(min(plan.steps, row.max_steps(self.process, t_start)))
        ts = self.time_grid(row, steps, t_start)
        record["t_start"] = ts[0]  # where the chain starts: ResShift's and index networks' first whole step
        cond = {"xh": None, "lr": low * 2 - 1, "encoder": self.condition and self.condition(source * 2 - 1)}[
            self.settings.condition]
        denoiser = TiledDenoiser(self.denoiser, tile=side, overlap=tile_overlap) if side else self.denoiser
        calls = [0]

        def counted(x: Tensor, t: Tensor, given) -> Tensor:
            calls[0] += 1
            return denoiser(x, t, given)

        def model_space(draws) -> tuple[Tensor, Tensor | None]:
            """(xh, estimate): the source image and the canvas in model space (a stochastic codec draws first)."""
            xh = channels_last(self.codec.encode(source, draws), self.memory_format)  # the network's: no call copies it
            estimate = xh if canvas is source else channels_last(self.codec.encode(canvas, draws), self.memory_format)
            return xh, None if plan.from_noise else estimate

        fixed = None if self.codec.stochastic else model_space(None)
        total, moments = 0.0, (0.0, 0.0)  # the sum of the samples; with uncertainty, of the fixed ones and squares
        # one sample at a time: on a CPU a batch of K activations falls out of cache and runs slower than K calls
        with tqdm(total=(len(ts) - 1) * plan.samples, disable=not progress, leave=False, desc="sampling") as bar:
            for k in range(plan.samples):
                draws = sample_draws(seed, k, len(lr), noise, antithetic=plan.antithetic)
                xh, estimate = fixed or model_space(draws)
                y = xh if self.conditional else None
                x = start.to(self.device) if start is not None else start_state(
                    self.process, estimate, y, ts[0], draw_like(xh, draws, None))
                x0 = row.sample(counted, x, ts, process=self.process, y=y, cond=y if cond is None else cond,
                                order=plan.order, generator=draws,
                                callback=(lambda info: bar.update(1)) if progress else None)
                decoded = self.decode(x0).float()
                total = decoded if k == 0 else total.add_(decoded)  # a running sum, one image in memory
                if uncertainty:
                    fixed_sample = colour_fix(plan.color_fix, decoded, canvas.float()).double()
                    moments = (moments[0] + fixed_sample, moments[1] + fixed_sample.square())
        out = colour_fix(plan.color_fix, total / plan.samples, canvas.float())
        record.update(steps=len(ts) - 1, nfe=calls[0])
        spread = None
        if uncertainty:
            spread = self.finish(sample_spread(*moments, plan.samples, antithetic=plan.antithetic).cpu(), plan)
            record["std_mean"] = round(spread.mean().item(), 6)
        return Upscaled(self.finish(out.clamp(0, 1).cpu(), plan), record, spread)

    def __call__(self, image, **kwargs) -> Tensor:
        """Upscale one image or a batch of same-size images; returns Bx3xHxW in [0, 1] on the CPU.

        The size: scale (any float > 0) or target = (width, height), the box the result is fitted into with the
        LR's aspect ratio kept (ops.sizes.output_size); neither gives the model's native scale. strategy says
        how a model reaches another size: "resize" samples at the native scale and resizes the result (MATLAB
        bicubic); "direct" samples at the size asked. None: "direct" for an unconditional prior, else
        DEFAULT_STRATEGY. t_start overrides the time the chain starts from (noise injection's level, or a
        shortened path for the other families); a start at t = 0 returns the upsampled LR itself.

        samples > 1 returns the mean of that many samples, a Monte-Carlo estimate of the posterior mean
        E[x0 | y], drawn in antithetic pairs unless antithetic=False (sample_draws: the seeds of every image's
        generators follow from seed and k alone), so results do not depend on the batch, the tiling or the
        device. noise: draws made in advance, consumed in order by every Gaussian draw of the method (the start
        first), then fresh ones (samplers.Draws): an exact replay, or BCSR's stored start (Eq. 21). start gives
        the whole starting state.
        """
        return self.run(image, **kwargs).image

    def images(self, lr: Tensor, plan: Plan) -> tuple[Tensor, Tensor, Tensor]:
        """(canvas, source, low): the padded [0, 1] image sampling starts around, the one the model sees as its LR
        brought to HR, and the LR that source was made from.

        Native and resize: the canvas is the source image (bicubic or the preprocessor) of the LR padded to the
        model's lr_multiple. Direct: the canvas is the LR MATLAB-bicubic resized to the size asked; a prior injects
        noise into it, a conditional model sees the source image of its 1/scale downscale and starts from the
        forward marginal around the canvas.
        """
        multiple = self.canvas_multiple(plan.strategy)
        if plan.strategy != "direct":
            low = pad_to_multiple(lr, self.settings.lr_multiple)
            canvas = pad_to_multiple(self.source_image(low), multiple)
            return canvas, canvas, low
        canvas = pad_to_multiple(imresize(lr, size=plan.size_out).clamp(0, 1), multiple)
        if not self.conditional:
            return canvas, canvas, lr
        low = imresize(canvas, scale=1 / self.scale)
        return canvas, self.source_image(low), low

    def canvas_multiple(self, strategy: str) -> int:
        """The multiple the image sides must have for the model space: the codec's factor times the network's
        multiple, and for direct conditional sampling the scale too (its LR is the canvas downscaled)."""
        multiple = self.codec.scale * self.settings.multiple
        return math.lcm(multiple, self.scale) if strategy == "direct" and self.conditional else multiple

    def time_grid(self, row, steps: int, t_start: float) -> list[float]:
        """The method's grid from t_start, or DoSSR's released grid for a bundle that asks for it (grid "official");
        rounded to whole steps for networks that take the step index."""
        if self.settings.grid == "official" and self.family == "dossr":
            if t_start != self.process.t1:
                raise ValueError(f"t_start: the official DoSSR grid starts at t1 = {self.process.t1:g}, not {t_start:g}")
            return dossr_timesteps(self.process, steps, official=True)
        ts = row.grid(self.process, steps, t_start)
        if self.settings.timestep == "index":  # a network trained on integer steps only ever sees integer times
            ts = sorted({float(round(t)) for t in ts}, reverse=True)
        return ts

    def finish(self, out: Tensor, plan: Plan) -> Tensor:
        """The padded result cropped to the size asked (direct), or to the native size and resized there."""
        if plan.strategy == "direct":
            return out[..., : plan.size_out[0], : plan.size_out[1]]
        height, width = plan.size_in
        out = out[..., : self.scale * height, : self.scale * width]
        return out if tuple(out.shape[-2:]) == plan.size_out else imresize(out, size=plan.size_out).clamp(0, 1)

    def pick_strategy(self, native: bool, strategy: str | None) -> str:
        """The strategy a call runs: "direct" for the prior, "native" at a conditional model's own size, else asked."""
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown {strategy!r}; allowed: {', '.join(STRATEGIES)}")
        if not self.conditional:
            return "resize" if strategy == "resize" and not native else "direct"
        return "native" if native else strategy or DEFAULT_STRATEGY

    def encode(self, image: Tensor) -> Tensor:
        """[0, 1] image batch (sides multiples of the codec's factor) -> model space."""
        return self.codec.encode(image.to(self.device))

    def decode(self, latent: Tensor, *, tile: int = 0, overlap: int = DECODE_OVERLAP) -> Tensor:
        """Model space -> [0, 1] image batch (not clamped).

        A codec with weights (an autoencoder) decodes a latent too large for the free memory in overlapping latent
        tiles (tile 0 = auto: memory.decode_side, from its bytes per latent pixel measured once), halving them on
        out-of-memory down to memory.FLOOR with one note on stderr.
        """
        latent = latent.to(self.device)
        if next(self.codec.parameters(), None) is None:  # pixel (un)shuffle or identity: nothing to tile
            return self.codec.decode(latent)
        side = tile or self.decode_side(latent.shape)
        while True:
            try:
                if not side:
                    return self.codec.decode(latent)
                return tiled_decode(self.codec.decode, latent, tile=side, overlap=min(overlap, side // 2),
                                    scale=self.codec.scale)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                smaller = None if tile or not is_out_of_memory(error) else halved(side, *latent.shape[-2:])
                if smaller is None:
                    raise
                tqdm.write(f"shiftsr: note: out of memory decoding with tile {side or 'none'}; trying {smaller}",
                           file=sys.stderr)
                side = smaller

    def decode_side(self, shape: tuple[int, ...]) -> int:
        """The latent tile side an automatic decode of latents of shape (B, C, h, w) uses, 0 for none."""
        if self.decode_bytes_per_pixel is None:
            probe = torch.zeros(1, shape[1], DECODE_PROBE, DECODE_PROBE, device=self.device)
            measured = peak_bytes(lambda: self.codec.decode(probe), self.device)
            self.decode_bytes_per_pixel = measured / DECODE_PROBE**2 if measured else DEFAULT_BYTES_PER_PIXEL
        return decode_side(batch=shape[0], height=shape[-2], width=shape[-1],
                           bytes_per_pixel=self.decode_bytes_per_pixel, free=free_bytes(self.device))

    def source_image(self, lr: Tensor) -> Tensor:
        """The LR brought to the model's scale: MATLAB bicubic, or the model's preprocessor (DoSSR's source domain)."""
        if self.preprocess is None:
            return imresize(lr, scale=self.scale).clamp(0, 1)
        return self.preprocess(lr)

    def new_record(self, plan: Plan, *, seed: int, t_start: float) -> dict:
        """The record of a run before it samples: what runs (method, steps 0 and nfe 0 until it has), sizes, start."""
        return {"method": plan.method, "steps": 0, "order": plan.order, "samples": plan.samples, "seed": seed,
                "scale": round(plan.factor, 6), "size": [plan.size_out[1], plan.size_out[0]],
                "strategy": plan.strategy, "t_start": t_start, "color_fix": plan.color_fix, "nfe": 0,
                "antithetic": plan.antithetic and plan.samples > 1}

    def tile_side(self, shape: tuple[int, ...], tile: int) -> int:
        """The tile side for model-space states of shape (B, C, h, w), 0 for none: tile if the state is larger,
        else none; tile <= 0 picks it from the free memory and the network's measured bytes per pixel."""
        batch, channels, height, width = shape
        if self.denoiser is None:  # a regressor (no diffusion network) has no state to tile
            return 0
        if tile <= 0:
            if self.bytes_per_pixel is None:
                self.bytes_per_pixel = (network_bytes_per_pixel(self.denoiser, channels, self.device)
                                        if self.settings.condition == "xh" and self.conditional else None
                                        ) or DEFAULT_BYTES_PER_PIXEL  # the probe's cond is its x: xh-conditioned only
            tile = auto_side(batch=batch, channels=channels, height=height, width=width,
                             bytes_per_pixel=self.bytes_per_pixel, free=free_bytes(self.device),
                             scale=self.codec.scale)
        return tile if 0 < tile < max(height, width) else 0

    def tiled(self, shape: tuple[int, ...], tile: int, overlap: int):
        """The denoiser for model-space states of shape (B, C, h, w), tiled when larger than the tile (model-space
        pixels; 0 = auto)."""
        side = self.tile_side(shape, tile)
        return TiledDenoiser(self.denoiser, tile=side, overlap=overlap) if side else self.denoiser


def network_denoiser(net: torch.nn.Module, settings: BundleSettings, process, *, dtype: torch.dtype,
                     memory_format: torch.memory_format = torch.channels_last) -> PredictionDenoiser:
    """The x0 denoiser of a bundle's network under its conventions (BundleSettings: time input, input scale,
    prediction path, output channels, clipping), the network run in dtype and memory_format (channels-last)."""
    predicted_on = process
    if settings.prediction_path == "vp":
        keys = ("beta_schedule", "num_train_timesteps", "beta_start", "beta_end")
        predicted_on = VPProcess(**{key: settings.process[key] for key in keys})
    call = NetworkCall(net, dtype=dtype, channels=settings.output_channels, memory_format=memory_format)
    return PredictionDenoiser(call, process=predicted_on,
                              prediction_type=settings.prediction_type,
                              timestep_fn=ddpm_index if settings.timestep == "index" else None,
                              input_scale_fn=process.input_scale if settings.input_scale == "resshift" else None,
                              clip=settings.clip_denoised)


def load(name_or_path: str | Path = "default", *, device: str | None = None,
         dtype: torch.dtype = torch.float32) -> ShiftSRPipeline:
    """Load a model for upscaling: shiftsr.load() gives the bundled default model."""
    return ShiftSRPipeline.from_pretrained(name_or_path, device=device, dtype=dtype)
