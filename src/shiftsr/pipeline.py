"""The user-facing pipeline: images in, upscaled images out (diffusers style: pipe = load(...); pipe(image))."""
from __future__ import annotations

import contextlib
import dataclasses
from importlib import resources
from pathlib import Path

import numpy as np
import torch
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

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SAMPLE_SEED_STRIDE = 1_000_003  # seed of sample k = seed + k * stride, so sample 0 is the plain seed
AUTO_TILE_BUDGET = 96 * 512 * 512  # network-input elements per call under tile 0 (auto): about 100 MB in fp32


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


class ShiftSRPipeline:
    """Upscale with a shiftsr model: bicubic xh, encode, sample x0 with the chosen method, decode, resize."""

    def __init__(self, net: torch.nn.Module, settings: BundleSettings, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, codec: torch.nn.Module | None = None, root: Path | None = None):
        """codec: the model-space codec (else built from settings.codec; an autoencoder is read from root)."""
        self.settings = settings
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
    def __call__(self, image, *, scale: float | None = None, method: str | None = None, steps: int | None = None,
                 order: int | None = None, samples: int | None = None, seed: int = 0, tile: int = 0,
                 tile_overlap: int = 16, start: Tensor | None = None, progress: bool = False) -> Tensor:
        """Upscale one image or a batch of same-size images; returns Bx3x(sH)x(sW) in [0, 1] on the CPU.

        samples > 1 returns the mean of that many samples, a Monte-Carlo estimate of the posterior mean
        E[x0 | y] (the MMSE estimate: higher PSNR, less hallucinated detail); samples = 1 returns one sample.
        Sample k of every image draws its noise from its own generator seeded with seed + k * SAMPLE_SEED_STRIDE,
        so results do not depend on the batch, the tiling or the device.
        """
        method, steps, order, samples = self.sampler_settings(method=method, steps=steps, order=order,
                                                              samples=samples).values()
        lr = to_batch(image).to(self.device)
        xh = self.codec.encode(self.source_image(lr) * 2 - 1)
        start = None if start is None else start.to(self.device)
        denoiser = self._tiled(xh, tile, tile_overlap)
        total = 0.0
        # one sample at a time: on a CPU a batch of K activations falls out of cache and runs slower than K calls
        with tqdm(total=steps * samples, disable=not progress, leave=False, desc="sampling") as bar:
            for k in range(samples):
                generator = [torch.Generator().manual_seed(seed + k * SAMPLE_SEED_STRIDE) for _ in range(len(lr))]
                x0 = run_method(method, denoiser, xh, process=self.process, steps=steps, order=order,
                                scale=scale or self.scale, generator=generator, start=start,
                                conditional=self.conditional,
                                callback=lambda info: bar.update(1))
                total = total + self.codec.decode(x0).float()
        out = ((total / samples + 1) / 2).clamp(0, 1).cpu()
        if scale is not None and scale != self.scale:
            size = (round(lr.shape[-2] * scale), round(lr.shape[-1] * scale))
            out = imresize(out, size=size).clamp(0, 1)
        return out

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
