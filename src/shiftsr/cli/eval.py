"""`shiftsr eval`: benchmark sets x methods x steps x orders x samples into one table, a plot and crop sheets."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from .common import report_error, resolve_device

AUTO_CROP = 64  # side of the automatically chosen crop window, HR pixels
OUTPUT_FILES = ("results.json", "results.md", "quality_vs_nfe.png")

EVAL_EPILOG = """Each set is read from ROOT/SET/xSCALE/{HR,LR}; LR and HR images are paired by file stem and
every LR x SCALE must be the HR size. Every unpaired or mis-sized file is reported as one line on
stderr and left out; the other images are still evaluated (exit status 1).

\b
Methods (comma-separated):
  bicubic              MATLAB imresize bicubic (NFE 0)
  realesrgan           the Real-ESRGAN x4plus network alone (NFE 1)
  MODEL[:METHOD]       a bundled model (shiftsr models) or a model folder, with one of its methods
                       (default:dossr, default:dossr-ode, resshift-x4:resshift, prior-x4:noise-injection)
  PRESET               fidelity, perceptual, realworld: the preset's own method, steps, order and
                       samples; --steps, --orders and --samples do not apply to it

A model spec runs every combination of --steps x --orders x --samples that applies to its method:
only the methods with a solver order (dossr, dossr-no-dosg) take --orders. Omitted, each is the
model's own default. NFE is the number of network evaluations per image that the pipeline counts
(Real-ESRGAN alone: its forward calls). Seconds are wall-clock time of the upscaling alone. PSNR
and SSIM are on BT.601 luma with SCALE border pixels cropped.

Writes to OUT_DIR: results.json (every row, per-image values and the settings), results.md,
quality_vs_nfe.png and crops_<set>_<image>.png (the same window of HR, bicubic and every output;
--crop X,Y,SIZE in HR pixels, else the 64-pixel window of highest HR luma variance). Existing
results are left untouched unless --overwrite. Exit status: 0 done, 1 some file was left out or
failed, 2 bad usage.

\b
Example:
  shiftsr eval --sets Set5,Set14 --methods bicubic,default:dossr,perceptual \\
      --steps 1,3,5 --orders 1,2,3 --samples 1 -o runs/eval
"""


def split_list(value: str, convert=str, *, minimum: int | None = None) -> list:
    """A comma-separated option as a list of converted, de-duplicated values; a usage error if one does not convert."""
    items = []
    for part in (part.strip() for part in value.split(",")):
        if not part:
            continue
        try:
            item = convert(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a whole number") from None
        if minimum is not None and item < minimum:
            raise click.BadParameter(f"{item} is below {minimum}")
        if item not in items:
            items.append(item)
    if not items:
        raise click.BadParameter("empty list")
    return items


def parse_ints(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Click callback: '1,3,5' -> [1, 3, 5] (positive); None stays None (the model's default)."""
    return None if value is None else split_list(value, int, minimum=1)


def parse_crop(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int, int] | None:
    """Click callback: 'X,Y,SIZE' -> (x, y, size) with x, y >= 0 and size >= 1."""
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts) or int(parts[2]) < 1:
        raise click.BadParameter(f"{value!r}; expected X,Y,SIZE in HR pixels, e.g. 100,80,64")
    x, y, size = (int(part) for part in parts)
    return x, y, size


@click.command(name="eval", epilog=EVAL_EPILOG)
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("../shared/data/benchmark"), show_default=True, help="Folder holding the sets.")
@click.option("--sets", "sets_text", default="Set5,Set14", show_default=True, help="Comma-separated set folders.")
@click.option("-s", "--scale", type=click.IntRange(min=2), default=4, show_default=True, help="Upscaling factor.")
@click.option("-m", "--methods", "methods_text", default="bicubic,default", show_default=True,
              help="Comma-separated method specs (see below).")
@click.option("--steps", callback=parse_ints, help="Comma-separated step counts.  [default: the model's]")
@click.option("--orders", callback=parse_ints, help="Comma-separated solver orders.  [default: the model's]")
@click.option("--samples", callback=parse_ints, help="Comma-separated sample counts (outputs averaged).  "
                                                      "[default: the model's]")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed of every image.")
@click.option("--metrics", "metrics_text", default="psnr,ssim,stlpips", show_default=True,
              help="Comma-separated per-image metrics (see shiftsr metrics).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the results, created if missing.")
@click.option("--crop", callback=parse_crop, help="Crop window X,Y,SIZE in HR pixels (moved inside smaller images).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (by name) of each set.")
@click.option("--overwrite", is_flag=True, help="Replace results already in OUT_DIR.")
@click.pass_context
def eval_command(ctx: click.Context, root: Path, sets_text: str, scale: int, methods_text: str,
                 steps: list[int] | None, orders: list[int] | None, samples: list[int] | None, seed: int,
                 metrics_text: str, output: Path, crop: tuple[int, int, int] | None, device: str, limit: int | None,
                 overwrite: bool) -> None:
    """Evaluate methods on benchmark sets: PSNR, SSIM, ST-LPIPS, NFE and time per setting, a plot and crops."""
    from ..eval import benchmark_folder, build_upscalers, metric_infos, parse_method

    sets = split_list(sets_text)
    for name in sets:
        for part in ("HR", "LR"):
            folder = benchmark_folder(root, name, scale) / part
            if not folder.is_dir():
                raise click.BadParameter(f"{folder}: no such folder (expected ROOT/SET/x{scale}/{part})",
                                         param_hint="--sets")
    method_specs = split_list(methods_text)
    try:
        infos = metric_infos(split_list(metrics_text), per_image_only=True)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--metrics") from None
    existing = [output / name for name in OUTPUT_FILES if (output / name).exists()]
    existing += sorted(output.glob("crops_*.png")) if output.is_dir() else []
    if existing and not overwrite:
        report_error(f"{existing[0]}: already exists (pass --overwrite to replace the results in {output})")
        ctx.exit(1)
    device = resolve_device(device)
    try:
        parsed = [parse_method(spec) for spec in method_specs]
        upscalers = build_upscalers(parsed, scale=scale, steps=steps, orders=orders, samples=samples, seed=seed,
                                    device=device)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--methods") from None
    except FileNotFoundError as error:  # a model's or Real-ESRGAN's weight files
        report_error(str(error))
        ctx.exit(1)
    settings = {"root": str(root), "sets": sets, "scale": scale, "methods": method_specs, "steps": steps,
                "orders": orders, "samples": samples, "seed": seed, "metrics": [info.name for info in infos],
                "crop": list(crop) if crop else None, "device": device, "limit": limit}
    try:
        problems = run_sets(output, upscalers, infos, settings)
    except (ValueError, OSError, ImportError) as error:  # weights, unreadable images, unwritable outputs
        report_error(str(error))
        ctx.exit(1)
    ctx.exit(1 if problems else 0)


def run_sets(output: Path, upscalers: list, infos: list, settings: dict) -> list[str]:
    """Evaluate every set, write the results and echo the table; returns the problem lines (reported as found)."""
    from ..eval import (PAIR_LABELS, CropSheets, benchmark_folder, create_metrics, evaluate, pair_images,
                        summarise)

    scale, crop = settings["scale"], settings["crop"]
    metrics = create_metrics(infos, crop_border=scale, device=settings["device"])
    names = [metric.name for metric in metrics]
    problems: list[str] = []
    rows, sheets = [], {}
    for set_name in settings["sets"]:
        folder = benchmark_folder(settings["root"], set_name, scale)
        pairs, found = pair_images(folder / "LR", folder / "HR", scale=scale, labels=PAIR_LABELS)
        for problem in found:
            report_error(problem)
        problems += found
        pairs = pairs[:settings["limit"]] if settings["limit"] else pairs
        if not pairs:
            continue
        crops = CropSheets(size=crop[2] if crop else AUTO_CROP, at=tuple(crop[:2]) if crop else None, scale=scale)
        results = evaluate(pairs, upscalers, metrics, desc=set_name, each=crops)
        rows += [summarise(set_name, upscaler, images, names) for upscaler, images in zip(upscalers, results)]
        sheets.update({(set_name, image): sheet for image, sheet in crops.sheets.items()})
    if not rows:
        raise ValueError("no image could be evaluated")
    write_results(output, rows, sheets, settings, problems)
    for line in (output / "results.md").read_text().splitlines()[-len(rows) - 2:]:
        click.echo(line)
    return problems


def command_line(settings: dict) -> str:
    """The `shiftsr eval` command that reproduces these settings (without -o)."""
    words = ["shiftsr", "eval", "--root", settings["root"], "--sets", ",".join(settings["sets"]),
             "--scale", str(settings["scale"]), "--methods", ",".join(settings["methods"])]
    for key in ("steps", "orders", "samples"):
        if settings[key]:
            words += [f"--{key}", ",".join(map(str, settings[key]))]
    words += ["--seed", str(settings["seed"]), "--metrics", ",".join(settings["metrics"]),
              "--device", settings["device"]]
    if settings["crop"]:
        words += ["--crop", ",".join(map(str, settings["crop"]))]
    if settings["limit"]:
        words += ["--limit", str(settings["limit"])]
    return shlex.join(words)


def write_results(output: Path, rows: list[dict], sheets: dict, settings: dict, problems: list[str]) -> None:
    """results.json, results.md, quality_vs_nfe.png and one crop sheet per image, each written atomically."""
    import platform

    import torch

    from .. import __version__
    from ..eval import crop_sheet_png, json_text, markdown_table, quality_vs_nfe_png
    from ..files import write_atomic

    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{output}: cannot create the output folder ({error.strerror or error})") from None
    metrics = settings["metrics"]
    command = command_line(settings)
    environment = {"shiftsr": __version__, "torch": torch.__version__, "python": platform.python_version(),
                   "device": settings["device"], "threads": torch.get_num_threads()}
    document = {"command": command, "settings": settings, "environment": environment, "problems": problems,
                "rows": rows}
    notes = [f"`{command}`", "",
             f"x{settings['scale']}, seed {settings['seed']}, {settings['device']} ({environment['threads']} threads). "
             f"PSNR and SSIM on BT.601 luma, {settings['scale']} border pixels cropped. NFE: network evaluations per "
             "image, counted. s/image: wall-clock of the upscaling alone. '-': the setting does not apply. "
             "In results.json an infinite PSNR (output equal to HR) is null."]
    try:
        write_atomic(output / "results.json", json_text(document, indent=1) + "\n")
        write_atomic(output / "results.md", markdown_table(rows, metrics, title="shiftsr evaluation", notes=notes))
        write_atomic(output / "quality_vs_nfe.png", quality_vs_nfe_png(rows, metrics))
        for (set_name, image), (box, panels) in sheets.items():
            write_atomic(output / f"crops_{set_name}_{image}.png",
                         crop_sheet_png(panels, box, title=f"{set_name} {image}"))
    except OSError as error:
        raise OSError(f"{error.filename or output}: cannot write ({error.strerror or error})") from None
