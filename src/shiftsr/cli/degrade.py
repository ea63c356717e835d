"""`shiftsr degrade`: write a synthetic LR image for every HR image of a folder (bicubic or Real-ESRGAN style)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

DEGRADE_EPILOG = """Each HR image is cropped at the bottom and right to a multiple of --scale (MATLAB modcrop)
and its LR image is written to LR_DIR as {stem}.png, 8-bit RGB (transparency is dropped). The i-th
image in sorted name order draws its degradation from a generator seeded with (--seed, i), so results
do not depend on how many images are processed at once. Presets: bicubic (MATLAB imresize, the SR
benchmark LR), realesrgan (second order), resshift-test (ResShift's first-order test degradation),
or a YAML file with the keys of realesrgan.yaml. Exit status: 0 all written, 1 some image failed or
nothing to do, 2 bad usage.

\b
Examples:
  shiftsr degrade HR/ -o LR/ --preset bicubic
  shiftsr degrade HR/ -o LR_real/ --preset realesrgan --seed 1
  shiftsr degrade HR/ -o LR_mine/ --preset my_degradation.yaml --scale 2
"""


def _report(message: str) -> None:
    """Print `shiftsr: error: <file>: <problem>` as one line on stderr, above any progress bar."""
    from tqdm import tqdm

    tqdm.write("shiftsr: error: " + " ".join(message.splitlines()), file=sys.stderr)


def _fail(message: str) -> NoReturn:
    """Report message and exit with status 1."""
    _report(message)
    raise SystemExit(1)


def _list_images(folder: Path) -> list[Path]:
    """The image files directly in folder (hidden files skipped), sorted by name."""
    from ..imageio import IMAGE_EXTENSIONS

    try:
        entries = list(folder.iterdir())
    except OSError as error:
        _fail(f"{folder}: cannot list the folder ({error.strerror or error})")
    files = sorted(p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    files = [p for p in files if p.is_file()]
    if not files:
        _fail(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _outputs(files: list[Path], lr_dir: Path, overwrite: bool) -> list[Path]:
    """The LR path of every HR file; refuses name clashes, inputs as outputs, and existing files unless overwrite."""
    targets = [lr_dir / f"{path.stem}.png" for path in files]
    seen: dict[Path, Path] = {}
    for path, target in zip(files, targets):
        if target in seen:
            _fail(f"{path} and {seen[target]} would both be written to {target}; rename one of them")
        seen[target] = path
    inputs = {path.resolve() for path in files}
    clash = next((t for t in targets if t.resolve() in inputs), None)
    if clash is not None:
        _fail(f"{clash}: is an input image; choose another output folder")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        _fail(f"{existing[0]}: already exists ({len(existing)} of {len(targets)} outputs do); "
              "pass --overwrite to replace them")
    return targets


@click.command(name="degrade", epilog=DEGRADE_EPILOG)
@click.argument("hr_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "lr_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the LR images, created if missing.")
@click.option("-p", "--preset", required=True, help="bicubic, realesrgan, resshift-test or a YAML file.")
@click.option("-s", "--scale", type=click.IntRange(min=1), default=4, show_default=True, help="Downscaling factor.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the degradations.")
@click.option("--overwrite", is_flag=True, help="Replace existing LR images; without it they are an error.")
def degrade(hr_dir: Path, lr_dir: Path, preset: str, scale: int, seed: int, overwrite: bool) -> None:
    """Write a degraded low-resolution copy of every image in HR_DIR."""
    from tqdm import tqdm

    from ..data.degradations import degrade as degrade_batch
    from ..data.degradations import load_preset, seeded_generator
    from ..ops.imresize import modcrop
    from ..imageio import read_image, write_image

    try:
        config = load_preset(preset)
    except (ValueError, FileNotFoundError) as error:
        raise click.BadParameter(str(error), param_hint="--preset") from None
    files = _list_images(hr_dir)
    targets = _outputs(files, lr_dir, overwrite)
    try:
        lr_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"{lr_dir}: cannot create the output folder ({error.strerror or error})")
    failed = 0
    for index, (path, target) in enumerate(tqdm(list(zip(files, targets)), unit="image", disable=None)):
        try:
            hr = modcrop(read_image(path).rgb, scale)[None]
            lr = degrade_batch(hr, config, scale, seeded_generator(seed, index))
            write_image(target, lr[0], overwrite=overwrite)
        except (ValueError, OSError) as error:
            failed += 1
            _report(str(error) if str(path) in str(error) else f"{path}: {error}")
    click.echo(f"wrote {len(files) - failed} of {len(files)} LR images to {lr_dir}", err=True)
    if failed:
        raise SystemExit(1)
