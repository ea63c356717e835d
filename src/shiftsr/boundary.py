"""BCSR: an optimal boundary condition (starting noise, or seed) searched once on reference pairs, reused at any size.

A deterministic sampler is a map x0 = h(x_T, y); BCSR (Eq. 20) keeps, of K random x_T, the one whose outputs
score best on R reference HR/LR pairs, and reuses it for every new image (Eq. 21). The noise is stored as the
standard normal eps, not as x_T, so it is independent of the image: the pipeline's noise hook hands it to the
method's own start formula (mean(xh) + std * eps). Beyond the paper, eps is extended periodically to images of any size.
Stochastic samplers draw fresh noise at every step; for them the seed is searched instead (MATH.md Sec. 3).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .imageio import to_batch
from .methods import METHODS
from .typed import build_typed

FORMAT = "shiftsr-boundary/1"
META_KEY = "shiftsr.boundary"
NOISE_KEY = "noise"
# what a resumed search must share with the file it continues
RESUME_KEYS = ("kind", "fingerprint", "method", "steps", "order", "samples", "scale", "shape", "metric",
               "base_seed", "references", "patch")


@dataclass
class Boundary:
    """A searched boundary condition: the best noise eps (kind "noise") or seed (kind "seed"), and how it was found."""

    meta: dict
    noise: Tensor | None = None  # (C, h, w) standard normal in model space, for kind "noise"
    path: Path | None = None

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def method(self) -> str:
        return self.meta["method"]

    @property
    def steps(self) -> int:
        return self.meta["steps"]

    @property
    def seed(self) -> int | None:
        """The seed of the best candidate (for kind "noise": the seed whose generator drew the noise)."""
        return self.meta["seed"]

    @property
    def score(self) -> float | None:
        return self.meta["score"]

    @property
    def label(self) -> str:
        """How errors name this boundary condition: its file, or 'boundary condition' when not saved."""
        return str(self.path) if self.path is not None else "boundary condition"


@dataclass
class BoundaryRecord:
    """The search record a boundary file stores as JSON metadata (search_boundary writes it): every key typed."""

    format: str
    kind: str
    model: str | None
    fingerprint: str
    method: str
    steps: int
    order: int | None
    samples: int
    scale: int
    process: dict | None
    codec: dict
    shape: list[int]
    metric: str
    lower_is_better: bool
    base_seed: int
    references: list[str] | None
    patch: int | None
    candidates: int
    scores: list[float]
    best: int | None
    seed: int | None
    score: float | None
    complete: bool


def check_record(meta: dict, source: str) -> None:
    """Raise ValueError naming source and the key unless meta is a whole, usable search record."""
    record = build_typed(BoundaryRecord, meta, source)
    for key, allowed in (("kind", ("noise", "seed")), ("method", tuple(METHODS))):
        if getattr(record, key) not in allowed:
            raise ValueError(f"{source}: {key}: {getattr(record, key)!r} is not allowed; allowed: {', '.join(allowed)}")
    for key in ("steps", "samples", "scale", "candidates"):
        if getattr(record, key) < 1:
            raise ValueError(f"{source}: {key}: must be at least 1, got {getattr(record, key)}")
    if len(record.shape) != 3 or min(record.shape) < 1:
        raise ValueError(f"{source}: shape: expected [channels, height, width], all at least 1, got {record.shape}")
    if record.best is None or record.seed is None or not 0 <= record.best < len(record.scores):
        raise ValueError(f"{source}: best: no scored candidate to use (best {record.best}, "
                         f"{len(record.scores)} scores); finish its search with `shiftsr search-bc --resume`")
    if not 0 <= record.seed < 2**63:
        raise ValueError(f"{source}: seed: must be 0 to 2**63 - 1, got {record.seed}")


def boundary_kind(method: str) -> str:
    """'noise' for a deterministic sampler (BCSR proper), 'seed' for a stochastic one (its natural analogue)."""
    return "noise" if METHODS[method].deterministic else "seed"


def model_fingerprint(pipe) -> str:
    """sha256 of the network weights and of the settings that give them meaning (all but the sampler defaults)."""
    digest = hashlib.sha256()
    settings = {key: value for key, value in asdict(pipe.settings).items() if key != "sampler"}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(pipe.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def candidate_noise(seed: int, shape: tuple[int, ...]) -> Tensor:
    """Candidate eps number k of a search: standard normal from its own generator seeded with base_seed + k.

    This is exactly the noise the pipeline draws for one image with that seed, so a noise candidate and a seed
    candidate coincide at the reference shape.
    """
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def tile_noise(noise: Tensor, size: tuple[int, int]) -> Tensor:
    """The stored (C, h, w) eps extended periodically to (C, H, W): eps[c, i mod h, j mod w]; smaller is its corner."""
    height, width = size
    reps = (-(-height // noise.shape[-2]), -(-width // noise.shape[-1]))
    return noise.repeat(1, *reps)[:, :height, :width]


def start_draws(noise: Tensor, shape: tuple[int, ...], batch: int) -> list[Tensor]:
    """The pipeline's given draws for a stored (C, h, w) eps: tiled to the model-space shape, the same for every image.

    It is the first draw, the starting state's; anything the method draws after it is fresh (seeded) noise.
    """
    return [tile_noise(noise, tuple(shape[-2:])).expand(batch, *shape)]


def boundary_job(bc: Boundary, *, method: str | None = None, steps: int | None = None, order: int | None = None,
                 samples: int | None = None, seed: int | None = None) -> dict:
    """The sampler settings under a boundary condition: None takes the file's, a different value is an error."""
    fixed = {"method": bc.method, "steps": bc.steps}
    if bc.kind == "seed":  # a stochastic search fixes the whole draw: solver order, sample count and seed
        fixed.update(order=bc.meta["order"], samples=bc.meta["samples"], seed=bc.seed)
    given = {"method": method, "steps": steps, "order": order, "samples": samples, "seed": seed}
    for name, value in fixed.items():
        if given[name] is not None and given[name] != value:
            raise ValueError(f"{bc.label}: was searched with {name} {value}, not {given[name]}")
    if bc.kind == "noise":  # a deterministic sampler from a fixed start gives one output: one sample, seed unused
        return {"method": bc.method, "steps": bc.steps, "order": order, "samples": 1, "seed": 0}
    return fixed


def apply_boundary(pipe, bc: Boundary, image, *, method: str | None = None, steps: int | None = None,
                   order: int | None = None, samples: int | None = None, seed: int | None = None,
                   **call_kwargs):
    """Upscale with a boundary condition (BCSR Eq. 21): the pipeline's run from its stored start or with its seed.

    A noise is applied at the model's native scale; another scale or target resizes that result (strategy
    "resize"), since sampling directly at another size would start from another time and shape.
    """
    check_boundary(bc, pipe)
    job = boundary_job(bc, method=method, steps=steps, order=order, samples=samples, seed=seed)
    if bc.kind == "seed":
        return pipe.run(image, **job, **call_kwargs)
    if call_kwargs.get("strategy") not in (None, "resize") or call_kwargs.get("t_start") is not None:
        raise ValueError(f"{bc.label}: a boundary noise starts the native-scale chain; strategy "
                         f"{call_kwargs.get('strategy')!r} and t_start {call_kwargs.get('t_start')!r} do not apply")
    call_kwargs = {**call_kwargs, "strategy": "resize"}
    lr = to_batch(image)
    sizes = {key: call_kwargs[key] for key in ("scale", "target") if call_kwargs.get(key) is not None}
    shape = pipe.plan(tuple(lr.shape[-2:]), strategy="resize", **sizes).model_shape
    return pipe.run(lr, noise=start_draws(bc.noise, shape, len(lr)), **job, **call_kwargs)


def check_boundary(bc: Boundary, pipe, *, method: str | None = None, steps: int | None = None) -> None:
    """Raise ValueError (naming the file) unless bc was made for this model, its channels, method and steps."""
    fingerprint = model_fingerprint(pipe)
    if bc.meta["fingerprint"] != fingerprint:
        raise ValueError(f"{bc.label}: made for model {bc.meta['model']!r} (weights {bc.meta['fingerprint'][:12]}), "
                         f"not for this one (weights {fingerprint[:12]})")
    if bc.kind == "noise" and bc.noise.shape[0] != pipe.codec.channels:
        raise ValueError(f"{bc.label}: noise has {bc.noise.shape[0]} channels, the model's space has "
                         f"{pipe.codec.channels}")
    if bc.method not in pipe.methods:
        raise ValueError(f"{bc.label}: method {bc.method!r} does not apply to this model")
    for name, value in (("method", method), ("steps", steps)):
        if value is not None and bc.meta[name] != value:
            raise ValueError(f"{bc.label}: made for {name} {bc.meta[name]}, not {value}")


def save_boundary(bc: Boundary, path: str | Path) -> Path:
    """Write bc atomically as safetensors: the noise tensor (if any) and the search record as JSON metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {} if bc.noise is None else {NOISE_KEY: bc.noise.detach().cpu().float().contiguous()}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={META_KEY: json.dumps(bc.meta)})
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def load_boundary(path: str | Path, pipe=None, *, method: str | None = None, steps: int | None = None) -> Boundary:
    """Read a boundary file; with pipe (and method, steps) refuse one made for another model, method or steps."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such boundary file")
    try:
        with safe_open(str(path), "pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(META_KEY, "null"))
            noise = handle.get_tensor(NOISE_KEY) if NOISE_KEY in handle.keys() else None
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a shiftsr boundary file (no {FORMAT} record in its metadata)")
    check_record(meta, f"{path}: record")
    if (meta["kind"] == "noise") != (noise is not None and noise.shape == tuple(meta["shape"])):
        raise ValueError(f"{path}: its noise tensor does not match its record (kind {meta['kind']}, "
                         f"shape {meta['shape']})")
    if noise is not None and not (noise.is_floating_point() and torch.isfinite(noise).all()):
        raise ValueError(f"{path}: {NOISE_KEY}: must be finite floating-point values, got {noise.dtype} with "
                         "NaN, infinity or integers")
    bc = Boundary(meta=meta, noise=noise, path=path)
    if pipe is not None:
        check_boundary(bc, pipe, method=method, steps=steps)
    return bc


def score_candidate(pipe, lr: Tensor, hr: Tensor, metric, *, seed: int, method: str, steps: int, order: int | None,
                    samples: int, shape: tuple[int, ...] | None = None) -> float:
    """Mean metric over the reference pairs of candidate `seed`'s outputs: its noise (of shape, if given) or the seed."""
    if shape is None:  # a seed candidate: the pipeline draws everything from the seed
        sr = pipe(lr, method=method, steps=steps, order=order, samples=samples, seed=seed)
    else:
        sr = pipe(lr, method=method, steps=steps, samples=1, noise=start_draws(candidate_noise(seed, shape), shape,
                                                                                 len(lr)))
    return float(metric(sr, hr).mean())


def search_boundary(pipe, lr: Tensor, hr: Tensor, metric, *, method: str | None = None, steps: int | None = None,
                    order: int | None = None, samples: int = 1, candidates: int = 32, seed: int = 0,
                    path: str | Path | None = None, resume: bool = False, info: dict | None = None,
                    progress: bool = False) -> Boundary:
    """BCSR Eq. 20: of K candidates (seeds seed..seed+K-1), keep the one whose outputs score best on R pairs.

    lr (R, 3, h, w) and hr (R, 3, sh, sw) are the reference pairs; metric(sr, hr) -> (R,) per-image values with a
    lower_is_better attribute. With path, the record is written atomically after every candidate; resume=True
    continues an existing file (same model, sampler, metric, seed and references), skipping the candidates done.
    """
    settings = pipe.sampler_settings(method=method, steps=steps, order=order, samples=samples)
    if settings["method"] not in pipe.methods:
        raise ValueError(f"method {settings['method']!r} does not apply to this model; allowed: "
                         f"{', '.join(pipe.methods)}")
    if candidates < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    lr, hr = to_batch(lr), to_batch(hr)
    if hr.shape[0] != lr.shape[0] or tuple(hr.shape[-2:]) != tuple(pipe.scale * n for n in lr.shape[-2:]):
        raise ValueError(f"reference HR {tuple(hr.shape)} is not the LR {tuple(lr.shape)} at x{pipe.scale}")
    kind = boundary_kind(settings["method"])
    if kind == "noise":  # a deterministic sampler from a fixed start: the order is unused, one sample suffices
        settings.update(order=None, samples=1)
    meta = {"format": FORMAT, "kind": kind, "model": None, "fingerprint": model_fingerprint(pipe), **settings,
            "scale": pipe.scale, "process": pipe.settings.process, "codec": pipe.settings.codec,
            "shape": [pipe.codec.channels, *(-(-pipe.scale * n // pipe.codec.scale) for n in lr.shape[-2:])],
            "metric": getattr(metric, "name", type(metric).__name__), "lower_is_better": metric.lower_is_better,
            "base_seed": seed, "references": None, "patch": None, **(info or {}),
            "candidates": candidates, "scores": [], "best": None, "seed": None, "score": None, "complete": False}
    bc = resume_record(path, meta, resume) if path is not None else Boundary(meta)
    bc.meta.update(candidates=candidates, complete=False)
    done = len(bc.meta["scores"])
    for k in tqdm(range(done, candidates), initial=done, total=candidates, disable=not progress,
                  desc="boundary search", unit="candidate"):
        shape = tuple(meta["shape"]) if kind == "noise" else None
        score = score_candidate(pipe, lr, hr, metric, seed=seed + k, shape=shape, **settings)
        record_score(bc, k, score, seed=seed + k, shape=tuple(meta["shape"]))
        if path is not None:
            save_boundary(bc, path)
    bc.meta["complete"] = True
    if path is not None:
        save_boundary(bc, path)
    return bc


def record_score(bc: Boundary, k: int, score: float, *, seed: int, shape: tuple[int, ...]) -> None:
    """Append candidate k's score; keep it (its seed, and its noise for kind 'noise') if it beats the best so far."""
    scores = bc.meta["scores"]
    scores.append(score)
    best = bc.meta["best"]
    better = best is None or (score < scores[best] if bc.meta["lower_is_better"] else score > scores[best])
    if better:
        bc.meta.update(best=k, seed=seed, score=score)
        if bc.kind == "noise":
            bc.noise = candidate_noise(seed, shape)


def resume_record(path: str | Path, meta: dict, resume: bool) -> Boundary:
    """A fresh record, or with resume the one in path after checking it is the same search."""
    path = Path(path)
    if not path.exists():
        return Boundary(meta, path=path)
    if not resume:
        raise FileExistsError(f"{path}: already exists; pass --resume (resume=True) to continue its search")
    old = load_boundary(path)
    for key in RESUME_KEYS:
        if old.meta.get(key) != meta.get(key):
            raise ValueError(f"{path}: was searched with {key} {old.meta.get(key)!r}, not {meta.get(key)!r}; "
                             "cannot resume it")
    if len(old.meta["scores"]) > meta["candidates"]:
        raise ValueError(f"{path}: already holds {len(old.meta['scores'])} candidates, more than the "
                         f"{meta['candidates']} asked for")
    return old


def center_crop_pair(hr: Tensor, lr: Tensor, *, scale: int, patch: int, name: str = "image") -> tuple[Tensor, Tensor]:
    """The centred patch x patch HR crop and its aligned (patch / scale)^2 LR crop; patch 0 keeps the images whole."""
    if tuple(hr.shape[-2:]) != tuple(scale * n for n in lr.shape[-2:]):
        raise ValueError(f"{name}: HR is {hr.shape[-1]}x{hr.shape[-2]}, not x{scale} its LR "
                         f"({lr.shape[-1]}x{lr.shape[-2]})")
    if patch == 0:
        return hr, lr
    if patch % scale:
        raise ValueError(f"patch {patch} is not a multiple of the scale {scale}")
    side = patch // scale
    if min(lr.shape[-2:]) < side:
        raise ValueError(f"{name}: LR {lr.shape[-1]}x{lr.shape[-2]} is smaller than the {side}-pixel LR patch")
    top, left = (lr.shape[-2] - side) // 2, (lr.shape[-1] - side) // 2
    return (hr[..., scale * top:scale * (top + side), scale * left:scale * (left + side)],
            lr[..., top:top + side, left:left + side])


def reference_pairs(hr_dir: str | Path, lr_dir: str | Path, *, scale: int, patch: int = 0
                    ) -> tuple[Tensor, Tensor, list[str]]:
    """HR and LR images matched by file stem (eval.pair_images), centre-cropped to one shape: (hr, lr, stems) as
    float batches; any file left unpaired is an error naming it."""
    from .eval.pairing import pair_images
    from .imageio import read_image

    for label, folder in (("HR", Path(hr_dir)), ("LR", Path(lr_dir))):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder ({label} references)")
    pairs, problems = pair_images(Path(lr_dir), Path(hr_dir), scale=scale, labels=("LR image", "HR image"))
    if problems:
        raise ValueError(problems[0])
    his, los = [], []
    for pair in pairs:
        hr, lr = center_crop_pair(read_image(pair.reference).rgb, read_image(pair.image).rgb, scale=scale,
                                  patch=patch, name=str(pair.reference))
        if his and hr.shape != his[0].shape:
            raise ValueError(f"{pair.reference}: is {hr.shape[-1]}x{hr.shape[-2]}, the first reference "
                             f"{his[0].shape[-1]}x{his[0].shape[-2]}; pass a patch size to crop all alike")
        his.append(hr)
        los.append(lr)
    return torch.stack(his), torch.stack(los), [pair.name for pair in pairs]
