"""`shiftsr metrics`: score a folder of images (e.g. SR results) against reference images matched by file stem."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..pairing import ImagePair

METRICS_EPILOG = """Images are matched by file stem (SR/baby.png with HR/baby.jpg). Every file
without a partner, every pair of different sizes and every unreadable file is reported as one
line on stderr and left out; the others are still scored. Exit status: 0 all scored, 1 some
file was left out, 2 bad usage. PSNR and SSIM follow the MATLAB benchmark code (BT.601 luma,
8-bit rounding); the SR benchmark convention crops the scale factor (--crop-border 4 for x4).
FID compares the two image sets as a whole and needs the extra: pip install shiftsr[fid].

\b
Examples:
  shiftsr metrics -t results/ -r Set5/HR --crop-border 4
  shiftsr metrics -t results/ -r Set5/HR -m psnr,ssim,stlpips --json
"""


@click.command(name="metrics", epilog=METRICS_EPILOG)
@click.option("-t", "--target", "target_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder of images to score.")
@click.option("-r", "--reference", "reference_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of reference (HR) images; needed by full-reference metrics.")
@click.option("-m", "--metrics", "names", default="psnr,ssim", show_default=True,
              help="Comma-separated metrics: psnr, ssim, stlpips (= stlpips-alex), stlpips-vgg, fid.")
@click.option("--crop-border", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pixels cropped from each side before psnr and ssim.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per image, then one with the means, on stdout.")
@click.pass_context
def metrics(ctx: click.Context, target_dir: Path, reference_dir: Path | None, names: str, crop_border: int,
            device: str, as_json: bool) -> None:
    """Score images against references with PSNR, SSIM, ST-LPIPS or FID; prints a per-image table and the mean."""
    from ..metrics import create, metric_info

    infos = []
    for name in dict.fromkeys(part.strip() for part in names.split(",") if part.strip()):
        try:
            info = metric_info(name)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--metrics") from None
        if info not in infos:
            infos.append(info)
    if not infos:
        raise click.BadParameter("no metric given", param_hint="--metrics")
    needs_reference = [info.name for info in infos if info.full_reference]
    if needs_reference and reference_dir is None:
        raise click.UsageError(f"{', '.join(needs_reference)} need reference images: pass -r/--reference HR_DIR")
    device = resolve_device(device)

    from ..pairing import pair_images

    pairs, problems = pair_images(target_dir, reference_dir)
    for problem in problems:
        report_line(problem)
    try:
        scorers = [create(info.name, device=device, **({"crop_border": crop_border}
                                                        if "crop_border" in info.options else {}))
                   for info in infos]
    except (ImportError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    rows = score_pairs(pairs, scorers, problems)
    if not rows:
        raise click.ClickException("no image could be scored")
    per_image = [scorer.name for scorer in scorers if scorer.per_image]
    means = {name: sum(row[name] for row in rows) / len(rows) for name in per_image}
    sets = {}
    for scorer in scorers:
        if not scorer.per_image:
            try:
                sets[scorer.name] = scorer.compute()
            except ValueError as error:
                raise click.ClickException(str(error)) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        click.echo(json.dumps({"images": len(rows), "crop_border": crop_border, "mean": means, **sets}))
    else:
        print_table(rows, per_image, means, sets)
    ctx.exit(1 if problems else 0)


def resolve_device(device: str) -> str:
    """auto -> cuda when available, else cpu; anything torch.device rejects or cannot find is a usage error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise click.BadParameter(f"{device!r}; allowed: auto, cpu, cuda, cuda:N", param_hint="--device") from None
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise click.BadParameter(f"{device!r} is not available ({torch.cuda.device_count()} CUDA devices found)",
                                 param_hint="--device")
    return device


def score_pairs(pairs: list[ImagePair], scorers: list, problems: list[str]) -> list[dict]:
    """One row of per-image values for each pair that reads and fits; distribution metrics get every pair."""
    from tqdm import tqdm

    from ..imageio import read_image

    rows = []
    for pair in tqdm(pairs, unit="image", desc="metrics", disable=None, file=sys.stderr):
        target, reference = pair.image, pair.reference
        try:
            sr = read_image(target).rgb[None]
            hr = None if reference is None else read_image(reference).rgb[None]
            row = {"name": pair.name, "target": str(target),
                   "reference": None if reference is None else str(reference)}
            for scorer in scorers:
                if scorer.per_image:
                    row[scorer.name] = float(scorer(sr, hr)[0])
        except (ValueError, OSError) as error:  # unreadable file, size mismatch, image too small for a metric
            message = str(error)
            report(problems, message if str(target) in message or str(reference) in message else f"{target}: {message}")
            continue
        for scorer in scorers:
            if not scorer.per_image:
                scorer.update(sr, hr)
        rows.append(row)
    return rows


def report(problems: list[str], message: str) -> None:
    """Record a file problem and print it at once."""
    problems.append(message)
    report_line(message)


def report_line(message: str) -> None:
    """Print a file problem as one line `shiftsr: error: <file>: <problem>` on stderr, above any progress bar."""
    from tqdm import tqdm

    tqdm.write("shiftsr: error: " + " ".join(message.splitlines()), file=sys.stderr)


def print_table(rows: list[dict], per_image: list[str], means: dict[str, float], sets: dict[str, float]) -> None:
    """Aligned per-image table with a final mean row, then one line per distribution metric."""
    width = max([len("name"), len(f"mean ({len(rows)})"), *(len(row["name"]) for row in rows)]) + 2
    columns = [max(len(name), 8) + 2 for name in per_image]
    if per_image:
        click.echo("name".ljust(width) + "".join(name.rjust(size) for name, size in zip(per_image, columns)))
        for row in rows:
            click.echo(row["name"].ljust(width) + "".join(format_value(name, row[name]).rjust(size)
                                                          for name, size in zip(per_image, columns)))
        click.echo(f"mean ({len(rows)})".ljust(width) + "".join(format_value(name, means[name]).rjust(size)
                                                               for name, size in zip(per_image, columns)))
    for name, value in sets.items():
        click.echo(f"{name} ({len(rows)} images): {format_value(name, value)}")


def format_value(name: str, value: float) -> str:
    """PSNR with 3 decimals (inf for identical images), everything else with 4."""
    if math.isinf(value):
        return "inf"
    return f"{value:.3f}" if name == "psnr" else f"{value:.4f}"
