"""The `shiftsr` command: `upscale` (Real-ESRGAN style options) and `models`; torch loads only when one runs."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from .batch import Batcher, process_device, shard
from .common import fail, os_message, report_error
from .limits import Limits

EXTENSIONS = ("auto", "png", "jpg", "webp", "tif")
COLOR_FIXES = ("wavelet", "adain", "none")  # shiftsr.ops.colour.COLOUR_FIXES, without importing torch for --help
WRITABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
TARGET_PATTERN = re.compile(r"(\d+)[xX](\d+)")
DEFAULT_OVERLAP = 16  # input pixels, capped at half the tile
PROBE_SIZE = (64, 64)  # an LR size to check the flags against the model before any file is read
MAX_SCALE = 64.0
MAX_STEPS = 1000
MAX_SAMPLES = 256
MAX_OUTPUT_PIXELS = 2**28  # 268 megapixels, e.g. 16384 x 16384: larger outputs are refused before any sampling
MAX_INPUT_PIXELS = 2**26  # shiftsr.imageio.MAX_INPUT_PIXELS (8192 x 8192), without importing torch for --help
PIXEL_FLAG_LIMIT = 2**40
MAX_NAME_BYTES = 255  # the longest file name the usual file systems store

UPSCALE_EPILOG = """Outputs go to the --output folder (default ./results, as in Real-ESRGAN), named
{stem}_{suffix}.{ext}. Grayscale inputs give grayscale outputs, transparency is kept (the alpha
channel is resized with bicubic), 16-bit inputs give 16-bit PNGs. A file that fails is reported as
one line on stderr and the other files are still processed. Exit status: 0 all written, 1 some file
failed, 2 bad usage.

\b
Examples:
  shiftsr upscale photo.jpg                     # -> results/photo_out.jpg
  shiftsr upscale photos/ -o big/ --suffix ''   # a folder, same names
  shiftsr upscale 'scans/*.png' -s 2 --steps 3  # a glob, 2x, 3 steps
  shiftsr upscale a.png -s 2.7                  # any scale: round(2.7 w) x round(2.7 h)
  shiftsr upscale a.png --target 1920x1080      # fitted inside 1920x1080
  shiftsr upscale huge.png -t 256 --device cuda # 256-pixel tiles, GPU
  shiftsr upscale a.png b.png --json -q         # JSON lines on stdout
  shiftsr upscale photo.jpg -m realesrgan-x4plus  # Real-ESRGAN x4plus alone, no diffusion
  shiftsr upscale photo.jpg --preset realworld --samples 4 --uncertainty   # + photo_out_std.png
"""


def parse_target(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """Click callback: WIDTHxHEIGHT (e.g. 1920x1080) as (width, height), both positive."""
    if value is None:
        return None
    match = TARGET_PATTERN.fullmatch(value.strip())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT with positive whole numbers, e.g. 1920x1080")
    return int(match[1]), int(match[2])


def check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: accept auto, cpu, cuda and cuda:N."""
    if not DEVICE_PATTERN.fullmatch(value):
        raise click.BadParameter(f"{value!r}; allowed: auto, cpu, cuda, cuda:N")
    return value


@click.command(epilog=UPSCALE_EPILOG)
@click.argument("inputs", nargs=-1)
@click.option("-i", "--input", "more_inputs", multiple=True,
              help="Input file, folder or glob (repeatable); same as INPUTS.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Output folder, created if missing.")
@click.option("-m", "--model", default="default", show_default=True,
              help="Bundled model name (see `shiftsr models`) or model folder.")
@click.option("-p", "--preset", help="A named preset (see `shiftsr models`): its model and sampler; "
                                     "--method/--steps/--order/--samples still override it.")
@click.option("-s", "--scale", type=click.FloatRange(min=0, max=MAX_SCALE, min_open=True), show_default="the model's",
              help="Upscaling factor, any number (e.g. 2.7); each side is rounded to the nearest pixel, halves up.")
@click.option("--target", callback=parse_target, metavar="WxH",
              help="Output box, e.g. 1920x1080: the largest size with the input's aspect ratio that fits inside; "
                   "the limiting side is exact, the other rounded to the nearest pixel. Not with --scale.")
@click.option("--method", show_default="the model's",
              help="Sampling method; the model decides which are allowed.")
@click.option("--steps", type=click.IntRange(1, MAX_STEPS), show_default="the model's", help="Sampling steps.")
@click.option("--order", type=click.IntRange(1, 3), show_default="the model's", help="Solver order.")
@click.option("--samples", type=click.IntRange(1, MAX_SAMPLES), show_default="the model's",
              help="Average this many samples, drawn in antithetic pairs (a posterior-mean estimate, higher "
                   "PSNR); 1 = one sharp sample.")
@click.option("--color-fix", type=click.Choice(COLOR_FIXES), show_default="the model's",
              help="Keep the colours of the image sampling starts from: wavelet (its low frequencies, the sample's "
                   "high ones; DoSSR's default), adain (its channel means and deviations) or none.")
@click.option("--uncertainty", is_flag=True,
              help="With --samples K >= 2, also write {stem}_{suffix}_std.png (the per-pixel standard deviation of "
                   "the K samples, colour map magma from 0 to 0.1) and {stem}_{suffix}_std16.png (16-bit, "
                   "std = level * 0.5 / 65535); --json gains std_mean.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Noise seed; each image gets its own generator.")
@click.option("--bc", "bc_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A boundary condition from `shiftsr search-bc` (BCSR): its searched start noise or seed, "
                   "for every image; the file fixes the method and steps.")
@click.option("-t", "--tile", type=click.IntRange(min=0), default=0, show_default=True,
              help="Tile side in input pixels; 0 = auto (no tiling when the image fits the memory budget).")
@click.option("--tile-overlap", type=click.IntRange(min=0),
              show_default=f"{DEFAULT_OVERLAP}, at most half the tile", help="Tile overlap in input pixels.")
@click.option("--max-pixels", type=click.IntRange(1, PIXEL_FLAG_LIMIT), default=MAX_INPUT_PIXELS, show_default=True,
              help="Largest input read, in pixels (width x height); larger ones are refused before decoding.")
@click.option("--max-output-pixels", type=click.IntRange(1, PIXEL_FLAG_LIMIT), default=MAX_OUTPUT_PIXELS,
              show_default=True, help="Largest output, in pixels; larger ones are refused before sampling.")
@click.option("--device", default="auto", show_default=True, callback=check_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--fp32/--bf16", "fp32", default=None, show_default="fp32 on CPU, bf16 on CUDA",
              help="Network precision.")
@click.option("--suffix", default="out", show_default=True,
              help="Output name {stem}_{suffix}.{ext}; '' gives {stem}.{ext} and needs an output folder "
                   "other than the input's.")
@click.option("--ext", type=click.Choice(EXTENSIONS), default="auto", show_default=True,
              help="Output format; auto keeps the input's (PNG for BMP).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing outputs; without it they are errors and left untouched.")
@click.option("--skip-existing", is_flag=True,
              help="Skip inputs whose output exists (not an error): resumes a stopped job from what it wrote.")
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Upscale up to N consecutive same-size inputs in one call (the results do not change).")
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run the model's network from its `shiftsr export --onnx` file in ONNX Runtime (CPU).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per file on stdout (sizes are [width, height]).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-file messages; errors are still printed.")
@click.pass_context
def upscale(ctx: click.Context, inputs: tuple[str, ...], more_inputs: tuple[str, ...], output: Path, model: str,
            preset: str | None, scale: float | None, target: tuple[int, int] | None, method: str | None,
            steps: int | None, order: int | None,
            samples: int | None, color_fix: str | None, uncertainty: bool, seed: int, bc_path: Path | None, tile: int,
            tile_overlap: int | None, max_pixels: int, max_output_pixels: int, device: str, fp32: bool | None,
            suffix: str, ext: str, overwrite: bool, skip_existing: bool, batch: int, onnx_path: Path | None,
            as_json: bool, quiet: bool) -> None:
    """Upscale images (files, folders or globs) with a shiftsr model."""
    patterns = [*inputs, *more_inputs]
    if not patterns:
        raise click.UsageError("no inputs; give image files, folders or globs")
    if scale is not None and target is not None:
        raise click.UsageError("give --scale or --target, not both")
    if preset is not None:
        model = check_preset(preset, model)
    if scale is not None and math.isnan(scale):
        raise click.BadParameter("nan is not a number", param_hint="--scale")
    if target is not None and target[0] * target[1] > max_output_pixels:
        raise click.BadParameter(f"{target[0]}x{target[1]} is over {max_output_pixels:,} output pixels; pass "
                                 "--max-output-pixels to allow it", param_hint="--target")
    if tile_overlap is not None and not tile:
        raise click.BadParameter("only applies with --tile N (N > 0)", param_hint="--tile-overlap")
    if any(not pattern.strip() for pattern in patterns):
        raise click.UsageError("an input is an empty name; give image files, folders or globs")
    if method is not None and not method.strip():
        raise click.BadParameter("is empty; give a method name (see `shiftsr models`)", param_hint="--method")
    if any(separator in suffix for separator in ("/", "\\", "\0")):
        raise click.BadParameter(f"{suffix!r} holds a path separator; outputs stay in the --output folder",
                                 param_hint="--suffix")
    overlap = min(DEFAULT_OVERLAP, tile // 2) if tile_overlap is None else tile_overlap
    if tile and overlap >= tile:
        raise click.BadParameter(f"{overlap} is not smaller than --tile {tile}; allowed: 0 to {tile - 1}",
                                 param_hint="--tile-overlap")
    from ..imageio import expand_inputs

    files = expand_inputs(patterns)
    earlier = earlier_outputs(files, patterns, output, suffix, ext)
    files = [path for path in files if path not in earlier]
    same_folder = [path for path in files if path.parent.resolve() == output.resolve()]
    if not suffix and same_folder:
        raise click.BadParameter(f"an empty suffix would overwrite {same_folder[0]}; give -o another folder",
                                 param_hint="--suffix")
    files = shard(files)  # under `accelerate launch`, this process's share
    pipe = load_pipeline(model, process_device(device), fp32)
    if onnx_path is not None:
        with_onnx(pipe, onnx_path)
    sampler = dict(method=method, steps=steps, order=order, samples=samples)
    size = dict(scale=scale or pipe.scale) if target is None else dict(target=target)
    checked(pipe.plan, PROBE_SIZE, **({} if target else size), **sampler)  # a target's scale depends on the image
    job = dict(**size, seed=seed, **sampler)
    upscaler = pipe.run
    if bc_path is not None:
        upscaler, settings = with_boundary(ctx, pipe, bc_path, seed=seed, **sampler)
        job = dict(**size, **settings)
    count = job.get("samples") or pipe.settings.sampler.samples
    if uncertainty and count < 2:
        raise click.BadParameter(f"needs --samples K with K >= 2; this run takes {count} sample",
                                 param_hint="--uncertainty")
    job.update(color_fix=color_fix, uncertainty=uncertainty)
    upscaler = guarded(upscaler, model)
    ratio = pipe.scale / pipe.codec.scale  # model-space pixels per input pixel
    tiling = dict(tile=to_model_pixels(tile, ratio), tile_overlap=to_model_pixels(overlap, ratio))
    try:  # only once the model and the flags are known to be good: a failed start writes nothing
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        report_error(f"{output}: cannot create the output folder ({error.strerror or error})")
        ctx.exit(1)
    limits = Limits(input_pixels=max_pixels, output_pixels=max_output_pixels, check_memory=pipe.device.type == "cpu")
    if batch > 1:
        upscaler = Batcher(upscaler, files, size=batch, read=limits.read,
                           wanted=lambda path: overwrite or not (output / output_name(path, suffix, ext)).exists())
    signal.signal(signal.SIGTERM, interrupt)  # a terminated run cleans up like an interrupted one
    try:
        failed = run_files(upscaler, files, output, suffix=suffix, ext=ext, overwrite=overwrite, job=job,
                           tiling=tiling, as_json=as_json, quiet=quiet, limits=limits, skip_existing=skip_existing)
    except KeyboardInterrupt:
        report_error("interrupted: the file being written was removed, the finished ones are kept")
        ctx.exit(130)
    ctx.exit(1 if failed else 0)


def interrupt(signum, frame) -> None:
    """SIGTERM as KeyboardInterrupt, so that the atomic writers remove their temporary files."""
    raise KeyboardInterrupt


def checked(settings, *args, **given):
    """settings(*args, **given) with a ValueError turned into a usage error naming the flag it is about."""
    try:
        return settings(*args, **given)
    except ValueError as error:
        message = str(error)
        flag = next((f"--{name}" for name in given if message.startswith((f"{name}:", f"{name} "))), None)
        raise click.BadParameter(message, param_hint=flag) from None


def with_boundary(ctx: click.Context, pipe, path: Path, *, seed: int, **sampler):
    """(upscaler, sampler settings) under the boundary condition in path; a usage error if it does not fit."""
    import functools

    from ..boundary import apply_boundary, boundary_job, load_boundary

    given_seed = seed if ctx.get_parameter_source("seed") is click.core.ParameterSource.COMMANDLINE else None
    try:
        bc = load_boundary(path, pipe)
        settings = boundary_job(bc, seed=given_seed, **sampler)
    except (FileNotFoundError, ValueError) as error:  # the message names the file and the key
        fail(str(error))
    return functools.partial(apply_boundary, pipe, bc), settings


def check_preset(preset: str, model: str) -> str:
    """The model name a --preset stands for (the pipeline resolves it); a usage error if unknown or beside --model."""
    from ..presets import presets

    names = presets()
    if preset not in names:
        raise click.BadParameter(f"{preset!r} is not a preset; allowed: {', '.join(names) or 'none'}",
                                 param_hint="--preset")
    if model != "default":
        raise click.UsageError("give --preset or --model, not both")
    return preset


def to_model_pixels(pixels: int, ratio: float) -> int:
    """Input pixels as model-space pixels (0 stays 0, anything else at least 1)."""
    return max(1, round(pixels * ratio)) if pixels else 0


def with_onnx(pipe, path: Path) -> None:
    """Put the ONNX Runtime session of path in the pipeline's network's place; one error line if it cannot."""
    from ..backends import use_onnx

    try:
        use_onnx(pipe, path)
    except (ImportError, ValueError) as error:
        fail(str(error))
    except Exception as error:  # noqa: BLE001 - onnxruntime's own errors for a file that is not its model
        fail(f"{path}: not an ONNX export of this model ({type(error).__name__}: {one_line(error)})")


def load_pipeline(model: str, device: str, fp32: bool | None):
    """The pipeline for --model on --device, with usage errors for a bad model or an absent GPU."""
    import torch

    from ..pipeline import DTYPES, load

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    count = torch.cuda.device_count()
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= count:
        raise click.BadParameter(f"{device!r} is not available ({count} CUDA devices found); allowed: auto, cpu"
                                 + "".join(f", cuda:{index}" for index in range(count)), param_hint="--device")
    precision = "fp32" if (fp32 if fp32 is not None else device == "cpu") else "bf16"
    try:
        return load(model, device=device, dtype=DTYPES[precision])
    except ValueError as error:  # a broken model folder: one line naming its file and key, once for the run
        fail(str(error))
    except OSError as error:
        fail(os_message(error))
    except torch.OutOfMemoryError:
        fail(f"{model}: out of memory loading the model on {device}; try --device cpu or --bf16")


def earlier_outputs(files: list[Path], patterns: list[str], output: Path, suffix: str, ext: str) -> set[Path]:
    """What a folder scan or glob found in the output folder under a name this run gives an output
    ({stem}_{suffix}.{ext} of another file found there): running `upscale DIR -o DIR` twice does not upscale the
    first run's outputs. Files given by name are kept."""
    given = {os.path.realpath(pattern) for pattern in patterns if Path(pattern).is_file()}
    here = [path for path in files if os.path.realpath(path.parent) == os.path.realpath(output)]
    names = {output_name(path, suffix, ext) for path in here} if suffix else set()
    return {path for path in here if path.name in names and os.path.realpath(path) not in given}


def output_name(path: Path, suffix: str, ext: str) -> str:
    """{stem}_{suffix}.{ext}, or {stem}.{ext} for an empty suffix; ext auto keeps a writable input format, else PNG."""
    if ext == "auto":
        ext = path.suffix.lower()[1:] if path.suffix.lower() in WRITABLE_SUFFIXES else "png"
    return f"{path.stem}_{suffix}.{ext}" if suffix else f"{path.stem}.{ext}"


def run_files(upscale, files: list[Path], output: Path, *, suffix: str, ext: str, overwrite: bool, job: dict,
              tiling: dict, as_json: bool, quiet: bool, limits: Limits, skip_existing: bool = False) -> int:
    """Upscale every file, reporting each success or failure; returns the number of files that failed.

    skip_existing: a file whose output exists is skipped (record {"skipped": "exists"}), not an error. upscale may
    batch files (cli.batch.Batcher: its bind(path) is the call for one file).
    """
    import torch

    claimed: set[Path] = set()
    failed = 0
    for path in tqdm(files, disable=quiet or len(files) < 2, unit="image", desc="shiftsr"):
        target = output / output_name(path, suffix, ext)
        try:
            if target in claimed:
                raise FileExistsError(f"{path}: its output {target} is also an earlier input's; rename one of them")
            if len(target.name.encode()) > MAX_NAME_BYTES:
                raise ValueError(f"{target}: the output name is longer than {MAX_NAME_BYTES} bytes; shorten "
                                 "the input's name or --suffix")
            claimed.add(target)
            if skip_existing and not overwrite and target.exists():
                record = {"skipped": "exists"}
            else:
                record = upscale_file(upscale.bind(path) if isinstance(upscale, Batcher) else upscale, path, target,
                                      overwrite=overwrite, job=job, tiling=tiling,
                                      progress=not quiet and len(files) == 1, limits=limits)
        except torch.OutOfMemoryError:
            record = {"error": f"{path}: out of memory; try a smaller --tile (e.g. -t 256) or --bf16"}
        except (ValueError, OSError) as error:
            record = {"error": describe(error, target)}
        except Exception as error:  # noqa: BLE001 - anything else costs this file only (guarded stops a broken model)
            problem = str(error) if isinstance(error, UpscaleFailed) else f"{type(error).__name__}: {one_line(error)}"
            record = {"error": f"{path}: cannot upscale it ({problem})"}
        if "error" in record:
            failed += 1
            report_error(record["error"])
        elif not quiet and not as_json and "skipped" in record:
            tqdm.write(f"{path} -> {target} exists, skipped", file=sys.stderr)
        elif not quiet and not as_json:
            tqdm.write(f"{path} -> {target} ({'x'.join(map(str, record['size_in']))} -> "
                       f"{'x'.join(map(str, record['size_out']))}, {record['seconds']:.2f} s)", file=sys.stderr)
        if as_json:
            as_json = print_record({"input": str(path), "output": str(target), **record})
    return failed


def print_record(record: dict) -> bool:
    """Print one JSON line; False once stdout is a closed pipe (the files are still written, nothing printed)."""
    try:
        click.echo(json.dumps(record))
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # so the interpreter's own flush at exit does not fail again
        return False


def upscale_file(upscale, path: Path, target: Path, *, overwrite: bool, job: dict, tiling: dict,
                 progress: bool, limits: Limits) -> dict:
    """Read, upscale and atomically write one image; returns its JSON fields (raises on a problem with the file)."""
    from ..ops.imresize import imresize
    from ..imageio import check_writable, write_image
    from ..ops.sizes import output_size
    from ..uncertainty import std_paths, write_std_maps

    started = time.perf_counter()
    image = limits.read(path)
    for written in (target, *(std_paths(target) if job.get("uncertainty") else ())):
        if written.exists() and not overwrite:
            raise FileExistsError(f"{written}: already exists (pass --overwrite to replace it)")
    if image.alpha is not None and target.suffix in (".jpg", ".jpeg"):
        raise ValueError(f"{path}: has transparency, which JPEG cannot store; use --ext png, webp or tif")
    height, width = image.rgb.shape[-2:]
    size = output_size(height, width, scale=job.get("scale"), target=job.get("target"))
    limits.check_output(path, size)
    try:
        check_writable(target, size)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    result = upscale(image.rgb, **job, **tiling, progress=progress)
    rgb = result.image[0]
    alpha = None if image.alpha is None else imresize(image.alpha[None], size=tuple(rgb.shape[-2:]))[0].clamp(0, 1)
    write_image(target, rgb, alpha=alpha, bit_depth=image.bit_depth, gray=image.is_gray, overwrite=overwrite)
    maps = {} if result.std is None else write_std_maps(target, result.std[0], overwrite=overwrite)
    return {"size_in": [image.rgb.shape[-1], image.rgb.shape[-2]], "size_out": [rgb.shape[-1], rgb.shape[-2]],
            "seconds": round(time.perf_counter() - started, 3),
            **({"target": list(job["target"])} if job.get("target") else {}), **result.record, **maps}


class UpscaleFailed(RuntimeError):
    """A failure inside the upscaler on one file while the model works on others: the original's type and text."""


def guarded(upscaler, model: str):
    """upscaler, with a failure inside it told apart: when a small random image fails too (an exception or NaN),
    the model is broken and the run stops with one line and status 2; else it is the file's (UpscaleFailed)."""
    import torch

    verdicts: list[str | None] = []  # the probe's, once: its image and settings do not change

    def run(image, **kwargs):
        try:
            result = upscaler(image, **kwargs)
            if not torch.isfinite(result.image).all():
                raise FloatingPointError("the model's output holds NaN or infinity")
            return result
        except torch.OutOfMemoryError:  # the file's size: run_files says how to fit it
            raise
        except Exception as error:  # noqa: BLE001 - whatever the network raises
            if not verdicts:
                sampler = {key: value for key, value in kwargs.items() if key not in ("scale", "target", "progress")}
                verdicts.append(probe(upscaler, sampler))
            if verdicts[0]:
                fail(f"{model}: the model fails on every image, a random 8x8 one too ({verdicts[0]})")
            raise UpscaleFailed(f"{type(error).__name__}: {one_line(error)}") from error

    return run


def probe(upscaler, sampler: dict) -> str | None:
    """What goes wrong when upscaler runs on a random 8x8 image with these settings; None when nothing does."""
    import torch

    try:
        result = upscaler(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)), **sampler)
    except Exception as error:  # noqa: BLE001 - whatever the network raises
        return f"{type(error).__name__}: {one_line(error)}"
    return None if torch.isfinite(result.image).all() else "its output holds NaN or infinity"


def one_line(error: Exception) -> str:
    """An exception's message on one line, at most 300 characters."""
    return " ".join(str(error).split())[:300] or "no message"


def describe(error: Exception, target: Path) -> str:
    """The problem of a failed file: the message (which names the file), or the OS error and the file it hit."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename2 or error.filename or target}: {error.strerror}"
    return str(error)
