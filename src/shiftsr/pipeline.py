"""The user-facing pipeline: images in, upscaled images out (diffusers style: pipe = load(...); pipe(image))."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from .bundle import BundleSettings, load_bundle, rebuild_process
from .data.imresize import imresize
from .denoisers.codecs import build_codec
from .denoisers.prediction import PredictionDenoiser
from .denoisers.tiling import TiledDenoiser, auto_tile_size
from .methods import methods_for, run_method
from .presets import presets
from .samplers.noise_injection import NOISE_TABLE_FILE, NoiseTable, load_noise_table, recoverable_time

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SAMPLE_SEED_STRIDE = 1_000_003  # seed of sample k = seed + k * stride, so sample 0 is the plain seed
AUTO_TILE_BUDGET = 96 * 512 * 512  # network-input elements per call under tile 0 (auto): about 100 MB in fp32
STRATEGIES = ("resize", "direct")  # how a model reaches a size other than its native scale (see __call__)
# a conditional model's strategy off its native scale: x4-then-resize beats direct sampling on Set5 and Set14
# at x2 and x3 in PSNR-Y and ST-LPIPS, with 1 and 8 samples (scripts/arbitrary_scale_study.py)
DEFAULT_STRATEGY = "resize"


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    root = resources.files("shiftsr") / "weights"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "shiftsr.json").is_file())


def resolve_model(name_or_path: str | Path) -> Path:
    """A bundled model's name or a folder path, to the folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if str(name_or_path) in bundled_models():
        return Path(str(resources.files("shiftsr") / "weights" / str(name_or_path)))
    names = ", ".join([*presets(), *bundled_models()]) or "none"
    raise FileNotFoundError(f"{name_or_path}: no such model folder; presets and bundled models: {names}")


def to_batch(image) -> Tensor:
    """A PIL image, HxWx3 uint8/uint16 array or 3xHxW / Bx3xHxW float tensor in [0, 1], as a Bx3xHxW float tensor."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"arrays must be uint8 or uint16 HxWx3, got {image.dtype}")
        image = torch.from_numpy(image.astype(np.float32) / np.iinfo(image.dtype).max).permute(2, 0, 1)
    if not torch.is_tensor(image) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError("image must be a PIL image, an HxWx3 uint8/uint16 array or a (B)x3xHxW tensor in [0, 1]")
    return (image[None] if image.dim() == 3 else image).float()


def round_half_up(value: float) -> int:
    """value rounded to the nearest integer, halves upwards (Python's round() sends halves to the even one)."""
    return math.floor(value + 0.5)


def output_size(height: int, width: int, *, scale: float | None = None,
                target: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of the upscale of an LR of height x width: sides times scale, or fitted inside target = (W, H).

    scale: each side is side * scale rounded half up (at least 1). target: the largest size with the LR's
    aspect ratio inside the target box; the limiting side gets the target exactly, the other side is its
    exact value rounded half up (never more than the box). A box with the LR's aspect ratio is met exactly.
    """
    if (scale is None) == (target is None):
        raise ValueError("pass exactly one of scale= or target=(width, height)")
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        return max(1, round_half_up(height * scale)), max(1, round_half_up(width * scale))
    if len(target) != 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in target):
        raise ValueError(f"target must be two positive ints (width, height), got {target!r}")
    box_w, box_h = target
    if box_w * height <= box_h * width:  # width limits: box_w / width <= box_h / height
        return min(box_h, max(1, round_half_up(height * box_w / width))), box_w
    return box_h, min(box_w, max(1, round_half_up(width * box_h / height)))


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad the bottom and right of a batch so both sides are multiples (mirror padding; edge copies if too small)."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < x.shape[-2] and pad_w < x.shape[-1] else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class ShiftSRPipeline:
    """Upscale with a shiftsr model: bicubic xh, encode, sample x0 with the chosen method, decode, resize."""

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
        self.dtype = dtype
        # channels-last convolutions run about a quarter faster on CPU (oneDNN) and on GPU tensor cores
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()
        self.process = rebuild_process(settings)
        self.conditional = net.config.get("cond_channels", 1) > 0  # an unconditional prior never sees the LR
        self.codec = (build_codec(settings.codec, root) if codec is None else codec).to(self.device)
        self.preprocess = None
        if settings.preprocessor != "bicubic":
            from .preprocess import build_preprocessor  # the RRDB loads only for models that use it
            self.preprocess = build_preprocessor(settings.preprocessor, self.device)
        self.denoiser = PredictionDenoiser(self._network, process=self.process,
                                           prediction_type=settings.prediction_type)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default", *, device: str | None = None,
                        dtype: torch.dtype = torch.float32) -> ShiftSRPipeline:
        """Load a preset or a bundled model by name, or a model folder by path."""
        preset = presets().get(str(name_or_path))
        folder = resolve_model(preset.model if preset else name_or_path)
        net, settings = load_bundle(folder)
        if preset:
            settings = dataclasses.replace(settings, sampler=preset.apply(settings.sampler))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(net, settings, device=device, dtype=dtype, root=folder)

    @property
    def scale(self) -> int:
        """The model's native upscaling factor."""
        return self.settings.scale

    @property
    def methods(self) -> tuple[str, ...]:
        """The sampling methods this model can run."""
        return methods_for(self.process, conditional=self.conditional)

    def _network(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """The network under the pipeline's dtype; its output back in float32 for the sampler."""
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                    else contextlib.nullcontext())
        with autocast:
            x = x.contiguous(memory_format=torch.channels_last)
            cond = None if cond is None else cond.contiguous(memory_format=torch.channels_last)
            return self.net(x, t, cond).float().contiguous()

    def sampler_settings(self, *, method: str | None = None, steps: int | None = None, order: int | None = None,
                         samples: int | None = None) -> dict:
        """The sampler a call runs: each setting given, or the model's default for it."""
        defaults = self.settings.sampler
        return {"method": method or defaults.method, "steps": steps or defaults.steps,
                "order": order or defaults.order, "samples": samples or defaults.samples}

    @torch.no_grad()
    def __call__(self, image, *, scale: float | None = None, target: tuple[int, int] | None = None,
                 strategy: str | None = None, method: str | None = None, steps: int | None = None,
                 order: int | None = None, samples: int | None = None, seed: int = 0, tile: int = 0,
                 tile_overlap: int = 16, start: Tensor | None = None, t_start: float | None = None,
                 noise: Callable[[torch.Size], Tensor] | None = None, progress: bool = False) -> Tensor:
        """Upscale one image or a batch of same-size images; returns Bx3xHxW in [0, 1] on the CPU.

        The size: scale (any float > 0) or target = (width, height), the box the result is fitted into
        with the LR's aspect ratio kept (see output_size); neither gives the model's native scale.
        strategy says how a model reaches another size: "resize" samples at the native scale and resizes
        the result (MATLAB bicubic); "direct" samples at the size asked, from the LR bicubic-resized to it
        (see direct_inputs). None: "direct" for an unconditional prior, else DEFAULT_STRATEGY. The native size of a
        conditional model always samples the plain way. t_start overrides the time the chain starts from:
        the injected noise level of noise injection, or a shortened path for the other methods (run_method);
        a start at t = 0 has nothing to sample and returns the upsampled LR itself.

        samples > 1 returns the mean of that many samples, a Monte-Carlo estimate of the posterior mean
        E[x0 | y] (the MMSE estimate: higher PSNR, less hallucinated detail); samples = 1 returns one sample.
        Sample k of every image draws its noise from its own generator seeded with seed + k * SAMPLE_SEED_STRIDE,
        so results do not depend on the batch, the tiling or the device. noise(shape) gives the starting
        state's standard-normal draw in model space instead (a boundary condition, BCSR Eq. 21); start gives
        the whole starting state.
        """
        method, steps, order, samples = self.sampler_settings(method=method, steps=steps, order=order,
                                                              samples=samples).values()
        lr = to_batch(image).to(self.device)
        height, width = lr.shape[-2:]
        size = output_size(height, width, scale=self.scale if scale is None and target is None else scale,
                           target=target)
        factor = math.sqrt(size[0] / height * size[1] / width)  # the scale actually run (sides round separately)
        strategy = self.pick_strategy(size == (self.scale * height, self.scale * width), strategy)
        if strategy == "direct":
            canvas, xh, estimate = self.direct_inputs(lr, size)
        else:
            canvas, estimate = pad_to_multiple(self.source_image(lr), self.codec.scale), None
            xh = self.codec.encode(canvas * 2 - 1)
        if t_start is None and (strategy == "direct" or not self.conditional):
            t_start = self.start_time(factor if strategy == "direct" else self.scale, canvas * 2 - 1)
        if t_start is not None and t_start <= 0:  # the clean state: the estimate is the answer
            return self._crop_or_resize(canvas.cpu(), strategy, size, height, width)
        start = None if start is None else start.to(self.device)
        denoiser = self._tiled(xh, tile, tile_overlap)
        total = 0.0
        # one sample at a time: on a CPU a batch of K activations falls out of cache and runs slower than K calls
        with tqdm(total=steps * samples, disable=not progress, leave=False, desc="sampling") as bar:
            for k in range(samples):
                generator = [torch.Generator().manual_seed(seed + k * SAMPLE_SEED_STRIDE) for _ in range(len(lr))]
                x0 = run_method(method, denoiser, xh, process=self.process, steps=steps, order=order,
                                scale=factor, generator=generator, start=start, conditional=self.conditional,
                                t_start=t_start, estimate=estimate, callback=lambda info: bar.update(1),
                                noise=None if noise is None else noise(xh.shape))
                total = total + self.codec.decode(x0).float()
        return self._crop_or_resize(((total / samples + 1) / 2).clamp(0, 1).cpu(), strategy, size, height, width)

    def _crop_or_resize(self, out: Tensor, strategy: str, size: tuple[int, int], height: int, width: int) -> Tensor:
        """The padded result cropped to the size asked (direct), or to the native size and resized there."""
        if strategy == "direct":
            return out[..., : size[0], : size[1]]
        out = out[..., : self.scale * height, : self.scale * width]
        return out if out.shape[-2:] == size else imresize(out, size=size).clamp(0, 1)

    def pick_strategy(self, native: bool, strategy: str | None) -> str:
        """The strategy a call runs: "direct" for the prior, "native" at a conditional model's own size, else asked."""
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
        if not self.conditional:
            return "resize" if strategy == "resize" and not native else "direct"
        return "native" if native else strategy or DEFAULT_STRATEGY

    def direct_inputs(self, lr: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """(canvas, xh, estimate) for sampling at `size` itself; xh and estimate in model space, padded.

        The canvas is the LR MATLAB-bicubic resized to the size, padded to the codec's multiple (mirror) and
        cropped after decoding. An unconditional prior injects noise into it (Diff-SR: xh = estimate). A
        conditional model gets the input it was trained on, the source image of the canvas's own 1/scale
        downscale, and starts from the forward marginal around the canvas (run_method's shortened path).
        """
        multiple = self.codec.scale if not self.conditional else math.lcm(self.codec.scale, self.scale)
        canvas = pad_to_multiple(imresize(lr, size=size).clamp(0, 1), multiple)
        estimate = self.codec.encode(canvas * 2 - 1)
        if not self.conditional:
            return canvas, estimate, estimate
        xh = self.codec.encode(self.source_image(imresize(canvas, scale=1 / self.scale)) * 2 - 1)
        return canvas, xh, estimate

    def start_time(self, factor: float, x_up: Tensor) -> float:
        """Where the chain starts at this scale: noise injection's level, or a conditional model's shortened path.

        Noise injection: the model's measured table (noise_levels.json), else the paper's fractions, and
        beyond both the KL rule on x_up (the upsampled LR in [-1, 1]). A conditional model's shortened path
        starts where the injected noise drowns the estimate's error by the same KL rule (MATH.md Sec. 4).
        """
        if self.conditional:
            try:
                return recoverable_time(self.process, max(factor, 1.0), rule="kl", x_up=x_up)
            except ValueError:  # no time drowns the error (ResShift keeps a little signal at T): the whole chain
                return self.process.t_max
        if factor <= 1:
            raise ValueError(f"noise injection upscales: the scale must exceed 1, got {factor:.4g}")
        if self.noise_table is not None and factor <= self.noise_table.scales[-1]:
            return recoverable_time(self.process, factor, rule="table", table=self.noise_table)
        if factor <= 8:
            return recoverable_time(self.process, factor)
        return recoverable_time(self.process, factor, rule="kl", x_up=x_up)

    def source_image(self, lr: Tensor) -> Tensor:
        """The LR brought to the model's scale: MATLAB bicubic, or the model's preprocessor (DoSSR's source domain)."""
        if self.preprocess is None:
            return imresize(lr, scale=self.scale).clamp(0, 1)
        return self.preprocess(lr)

    def _tiled(self, xh: Tensor, tile: int, overlap: int):
        """The denoiser, tiled when the image is larger than the tile (tile in model-space pixels; 0 = auto)."""
        batch, channels, height, width = xh.shape
        size = tile if tile > 0 else auto_tile_size(height=height, width=width, channels=2 * channels,
                                                      batch=batch, budget=AUTO_TILE_BUDGET)
        if size >= max(xh.shape[-2:]):
            return self.denoiser
        return TiledDenoiser(self.denoiser, tile=size, overlap=overlap)


def load(name_or_path: str | Path = "default", *, device: str | None = None,
         dtype: torch.dtype = torch.float32) -> ShiftSRPipeline:
    """Load a model for upscaling: shiftsr.load() gives the bundled default model."""
    return ShiftSRPipeline.from_pretrained(name_or_path, device=device, dtype=dtype)
