"""The user-facing pipeline: images in, upscaled images out (diffusers style: pipe = load(...); pipe(image)).

The pipeline only orchestrates: the bundle gives the model, `plan` decides sizes, method and start time from
the settings alone, the codec maps [0, 1] images to model space, the method table's row samples, and the
result is decoded, averaged over samples and cropped or resized to the size asked.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .bundle import CONDITION_FOLDER, NETWORKS, BundleSettings, load_part, open_model, rebuild_process
from .denoisers.codecs import build_codec
from .denoisers.network import NetworkCall
from .denoisers.prediction import PredictionDenoiser, ddpm_index
from .denoisers.tiling import TiledDenoiser, auto_tile_size
from .imageio import to_batch
from .methods import METHODS, family_of, method_row, methods_for
from .networks.dossr_ldm import DoSSRConditionEncoder
from .ops.colour import COLOUR_FIXES, colour_fix
from .ops.imresize import imresize
from .ops.padding import pad_to_multiple
from .ops.sizes import output_size
from .processes import NOISE_TABLE_FILE, NoiseTable, VPProcess, load_noise_table, start_state, start_time
from .samplers import Draws, dossr_timesteps, randn_like

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SAMPLE_SEED_STRIDE = 1_000_003  # seed of sample k = seed + k * stride, so sample 0 is the plain seed
AUTO_TILE_BUDGET = 96 * 512 * 512  # network-input elements per call under tile 0 (auto): about 100 MB in fp32
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


@dataclass
class Upscaled:
    """An upscale and the record of what ran (method, steps, order, samples, seed, sizes, t_start, nfe)."""

    image: Tensor
    record: dict


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
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()
        self.process = rebuild_process(settings)
        self.family = family_of(self.process, conditional=NETWORKS[settings.network].conditional(net.config))
        self.codec = (build_codec(settings.codec, root) if codec is None else codec).to(self.device)
        self.preprocess = None
        if settings.preprocessor != "bicubic":
            from .preprocess import build_preprocessor  # the RRDB loads only for models that use it

            self.preprocess = build_preprocessor(settings.preprocessor, self.device, root=root)
        self.condition = None
        if settings.condition == "encoder":
            self.condition = load_part(DoSSRConditionEncoder, Path(root) / CONDITION_FOLDER).to(self.device)
        self.denoiser = network_denoiser(self.net, settings, self.process, dtype=dtype)

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
             **sampler) -> Plan:
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
        if t_start is not None and t_start > 0:  # the grid refuses steps the chain cannot take
            METHODS[settings["method"]].grid(self.process, settings["steps"], t_start)
        color_fix = self.settings.color_fix if color_fix is None else color_fix
        if color_fix not in COLOUR_FIXES:
            raise ValueError(f"color_fix: unknown {color_fix!r}; allowed: {', '.join(COLOUR_FIXES)}")
        return Plan((height, width), size_out, strategy, factor, **settings, t_start=t_start, model_shape=shape,
                    color_fix=color_fix, from_noise=from_noise)

    @torch.no_grad()
    def run(self, image, *, seed: int = 0, tile: int = 0, tile_overlap: int = 16, start: Tensor | None = None,
            noise: Sequence[Tensor] | None = None, progress: bool = False, **settings) -> Upscaled:
        """Upscale one image or a batch of same-size images (see __call__); the image and the record of the run."""
        lr = to_batch(image).to(self.device)
        plan = self.plan(tuple(lr.shape[-2:]), **settings)
        if noise is not None and plan.samples != 1:
            raise ValueError(f"noise: given draws replay one sample, not {plan.samples}; pass samples=1")
        canvas, source, low = self.images(lr, plan)
        t_start = plan.t_start if plan.t_start is not None else start_time(
            self.process, self.family, factor=plan.factor, direct=plan.strategy == "direct", x_up=canvas * 2 - 1)
        record = {"method": plan.method, "steps": 0, "order": plan.order, "samples": plan.samples, "seed": seed,
                  "scale": round(plan.factor, 6), "size": [plan.size_out[1], plan.size_out[0]],
                  "strategy": plan.strategy, "t_start": t_start, "color_fix": plan.color_fix, "nfe": 0}
        if t_start <= 0:  # the clean state: the estimate is the answer
            return Upscaled(self.finish(canvas.cpu(), plan), record)
        row = METHODS[plan.method]
        ts = self.time_grid(row, plan.steps, t_start)
        cond = {"xh": None, "lr": low * 2 - 1, "encoder": self.condition and self.condition(source * 2 - 1)}[
            self.settings.condition]
        denoiser = self.tiled((len(lr), *plan.model_shape), tile, tile_overlap)
        calls = [0]

        def counted(x: Tensor, t: Tensor, given) -> Tensor:
            calls[0] += 1
            return denoiser(x, t, given)

        def model_space(draws) -> tuple[Tensor, Tensor | None]:
            """(xh, estimate): the source image and the canvas in model space (a stochastic codec draws first)."""
            xh = self.codec.encode(source, draws)
            estimate = xh if canvas is source else self.codec.encode(canvas, draws)
            return xh, None if plan.from_noise else estimate

        fixed = None if self.codec.stochastic else model_space(None)
        total = 0.0
        # one sample at a time: on a CPU a batch of K activations falls out of cache and runs slower than K calls
        with tqdm(total=(len(ts) - 1) * plan.samples, disable=not progress, leave=False, desc="sampling") as bar:
            for k in range(plan.samples):
                generators = [torch.Generator().manual_seed(seed + k * SAMPLE_SEED_STRIDE) for _ in range(len(lr))]
                draws = generators if noise is None else Draws(noise, then=generators)
                xh, estimate = fixed or model_space(draws)
                y = xh if self.conditional else None
                x = start.to(self.device) if start is not None else start_state(
                    self.process, estimate, y, ts[0], randn_like(xh, draws))
                x0 = row.sample(counted, x, ts, process=self.process, y=y, cond=y if cond is None else cond,
                                order=plan.order, generator=draws, callback=lambda info: bar.update(1))
                total = total + self.codec.decode(x0).float()
        out = colour_fix(plan.color_fix, total / plan.samples, canvas.float())
        record.update(steps=len(ts) - 1, nfe=calls[0])
        return Upscaled(self.finish(out.clamp(0, 1).cpu(), plan), record)

    def __call__(self, image, **kwargs) -> Tensor:
        """Upscale one image or a batch of same-size images; returns Bx3xHxW in [0, 1] on the CPU.

        The size: scale (any float > 0) or target = (width, height), the box the result is fitted into with the
        LR's aspect ratio kept (ops.sizes.output_size); neither gives the model's native scale. strategy says
        how a model reaches another size: "resize" samples at the native scale and resizes the result (MATLAB
        bicubic); "direct" samples at the size asked. None: "direct" for an unconditional prior, else
        DEFAULT_STRATEGY. t_start overrides the time the chain starts from (noise injection's level, or a
        shortened path for the other families); a start at t = 0 returns the upsampled LR itself.

        samples > 1 returns the mean of that many samples, a Monte-Carlo estimate of the posterior mean
        E[x0 | y]; sample k of every image draws from its own generator seeded with seed + k * SAMPLE_SEED_STRIDE,
        so results do not depend on the batch, the tiling or the device. noise: draws made in advance, consumed
        in order by every Gaussian draw of the method (the start first), then fresh ones (samplers.Draws): an
        exact replay, or BCSR's stored start (Eq. 21). start gives the whole starting state.
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
        """The method's grid from t_start, or DoSSR's released grid for a bundle that asks for it (grid "official")."""
        if self.settings.grid == "official" and self.family == "dossr":
            if t_start != self.process.t1:
                raise ValueError(f"t_start: the official DoSSR grid starts at t1 = {self.process.t1:g}, not {t_start:g}")
            return dossr_timesteps(self.process, steps, official=True)
        return row.grid(self.process, steps, t_start)

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

    def decode(self, latent: Tensor) -> Tensor:
        """Model space -> [0, 1] image batch (not clamped)."""
        return self.codec.decode(latent.to(self.device))

    def source_image(self, lr: Tensor) -> Tensor:
        """The LR brought to the model's scale: MATLAB bicubic, or the model's preprocessor (DoSSR's source domain)."""
        if self.preprocess is None:
            return imresize(lr, scale=self.scale).clamp(0, 1)
        return self.preprocess(lr)

    def tiled(self, shape: tuple[int, ...], tile: int, overlap: int):
        """The denoiser for model-space states of shape (B, C, h, w), tiled when larger than the tile (model-space
        pixels; 0 = auto)."""
        batch, channels, height, width = shape
        size = tile if tile > 0 else auto_tile_size(height=height, width=width, channels=2 * channels,
                                                      batch=batch, budget=AUTO_TILE_BUDGET)
        if size >= max(height, width):
            return self.denoiser
        return TiledDenoiser(self.denoiser, tile=size, overlap=overlap)


def network_denoiser(net: torch.nn.Module, settings: BundleSettings, process, *, dtype: torch.dtype
                     ) -> PredictionDenoiser:
    """The x0 denoiser of a bundle's network under its conventions (BundleSettings: time input, input scale,
    prediction path, output channels, clipping), the network run in dtype and channels-last."""
    predicted_on = process
    if settings.prediction_path == "vp":
        keys = ("beta_schedule", "num_train_timesteps", "beta_start", "beta_end")
        predicted_on = VPProcess(**{key: settings.process[key] for key in keys})
    return PredictionDenoiser(NetworkCall(net, dtype=dtype, channels=settings.output_channels), process=predicted_on,
                              prediction_type=settings.prediction_type,
                              timestep_fn=ddpm_index if settings.timestep == "index" else None,
                              input_scale_fn=process.input_scale if settings.input_scale == "resshift" else None,
                              clip=settings.clip_denoised)


def load(name_or_path: str | Path = "default", *, device: str | None = None,
         dtype: torch.dtype = torch.float32) -> ShiftSRPipeline:
    """Load a model for upscaling: shiftsr.load() gives the bundled default model."""
    return ShiftSRPipeline.from_pretrained(name_or_path, device=device, dtype=dtype)
