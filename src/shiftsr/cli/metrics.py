"""`shiftsr metrics`: score a folder of images (e.g. SR results) against reference images matched by file stem."""

from __future__ import annotations

from pathlib import Path

import click

from .common import report_error, resolve_device

METRICS_EPILOG = """Images are matched by file stem (SR/baby.png with HR/baby.jpg). Every file
without a partner, every pair of different sizes and every unreadable file is reported as one
line on stderr and left out; the others are still scored. Exit status: 0 all scored, 1 some
file was left out, 2 bad usage. PSNR and SSIM follow the MATLAB benchmark code (BT.601 luma,
8-bit rounding); the SR benchmark convention crops the scale factor (--crop-border 4 for x4).
PSNR of identical images is infinite: 'inf' in the table, null in --json output (strict JSON
has no Infinity). FID compares the two image sets as a whole and needs the extra:
pip install shiftsr[fid]. NIQE needs no reference (lower is more natural; images of at least
96x192 pixels) and reads the official MATLAB model from BasicSR's data file:
pip install --no-deps basicsr (never without --no-deps: it requires torchvision).

\b
Examples:
  shiftsr metrics -t results/ -r Set5/HR --crop-border 4
  shiftsr metrics -t results/ -r Set5/HR -m psnr,ssim,stlpips --json
  shiftsr metrics -t results/ -m niqe
"""


@click.command(name="metrics", epilog=METRICS_EPILOG)
@click.option("-t", "--target", "target_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path), help="Folder of images to score.")
@click.option("-r", "--reference", "reference_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of reference (HR) images; needed by full-reference metrics.")
@click.option("-m", "--metrics", "names", default="psnr,ssim", show_default=True,
              help="Comma-separated metrics: psnr, ssim, stlpips (= stlpips-alex), stlpips-vgg, fid, niqe.")
@click.option("--crop-border", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pixels cropped from each side before psnr and ssim.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per image, then one with the means, on stdout.")
@click.pass_context
def metrics(ctx: click.Context, target_dir: Path, reference_dir: Path | None, names: str, crop_border: int,
            device: str, as_json: bool) -> None:
    """Score images against references with PSNR, SSIM, ST-LPIPS or FID; prints a per-image table and the mean."""
    from ..eval import create_metrics, json_text, mean, metric_infos, pair_images, score_files

    try:
        infos = metric_infos([part.strip() for part in names.split(",") if part.strip()])
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--metrics") from None
    needs_reference = [info.name for info in infos if info.full_reference]
    if needs_reference and reference_dir is None:
        raise click.UsageError(f"{', '.join(needs_reference)} need reference images: pass -r/--reference HR_DIR")
    device = resolve_device(device)
    pairs, problems = pair_images(target_dir, reference_dir)
    for problem in problems:
        report_error(problem)

    def on_problem(message: str) -> None:
        problems.append(message)
        report_error(message)

    try:
        scorers = create_metrics(infos, crop_border=crop_border, device=device)
        rows = score_files(pairs, scorers, on_problem=on_problem)
        if not rows:
            raise ValueError("no image could be scored")
        per_image = [scorer.name for scorer in scorers if scorer.per_image]
        means = {name: mean([row[name] for row in rows]) for name in per_image}
        sets = {scorer.name: scorer.compute() for scorer in scorers if not scorer.per_image}
    except (ImportError, FileNotFoundError, ValueError) as error:  # the FID extra, weight files, too few images
        report_error(str(error))
        ctx.exit(1)
    if as_json:
        for row in rows:
            click.echo(json_text(row))
        click.echo(json_text({"images": len(rows), "crop_border": crop_border, "mean": means, **sets}))
    else:
        print_table(rows, per_image, means, sets)
    ctx.exit(1 if problems else 0)


def print_table(rows: list[dict], per_image: list[str], means: dict[str, float], sets: dict[str, float]) -> None:
    """Aligned per-image table with a final mean row, then one line per distribution metric."""
    from ..eval import format_value

    width = max([len("name"), len(f"mean ({len(rows)})"), *(len(row["name"]) for row in rows)]) + 2
    columns = [max(len(name), 8) + 2 for name in per_image]

    def cells(values: dict) -> str:
        return "".join(format_value(name, values[name], psnr_decimals=3).rjust(size)
                       for name, size in zip(per_image, columns))

    if per_image:
        click.echo("name".ljust(width) + "".join(name.rjust(size) for name, size in zip(per_image, columns)))
        for row in rows:
            click.echo(row["name"].ljust(width) + cells(row))
        click.echo(f"mean ({len(rows)})".ljust(width) + cells(means))
    for name, value in sets.items():
        click.echo(f"{name} ({len(rows)} images): {format_value(name, value)}")
