"""Pair the images of two folders by file stem (SR/HR or LR/HR), naming every file that has no usable partner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..imageio import IMAGE_EXTENSIONS

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height when made upright
PAIR_LABELS = ("LR image", "HR image")  # how benchmark LR/HR pairs name their files in messages


@dataclass(frozen=True)
class ImagePair:
    """An image and its reference (None when no reference folder was given), matched by stem."""

    name: str
    image: Path
    reference: Path | None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as read_image shows it (upright), from its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: cannot read the image ({error})") from None
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def list_images(folder: Path, problems: list[str]) -> dict[str, Path]:
    """Image files of a folder by stem; stems shared by two files are added to problems and left out."""
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(path.stem, []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            problems.append(f"{paths[0]}: {', '.join(p.name for p in paths)} share the name {stem!r}; rename one")
    return {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}


def pair_images(images_dir: Path, reference_dir: Path | None = None, *, scale: int = 1,
                labels: tuple[str, str] = ("image", "reference image")) -> tuple[list[ImagePair], list[str]]:
    """Pairs by stem whose reference is `scale` times the image's size, and one problem line per file left out.

    labels name the two kinds of file in the messages, e.g. ("LR image", "HR image").
    """
    images_dir = Path(images_dir)
    problems: list[str] = []
    images = list_images(images_dir, problems)
    if not images:
        problems.append(f"{images_dir}: no image files")
    if reference_dir is None:
        return [ImagePair(stem, path, None) for stem, path in sorted(images.items())], problems
    reference_dir = Path(reference_dir)
    label, reference_label = labels
    references = list_images(reference_dir, problems)
    for stem in sorted(images.keys() - references.keys()):
        problems.append(f"{images[stem]}: no {reference_label} named {stem}.* in {reference_dir}")
    for stem in sorted(references.keys() - images.keys()):
        problems.append(f"{references[stem]}: {reference_label} has no {label} named {stem}.* in {images_dir}")
    pairs = []
    for stem in sorted(images.keys() & references.keys()):
        try:
            width, height = image_size(images[stem])
            ref_width, ref_height = image_size(references[stem])
        except ValueError as error:
            problems.append(str(error))
            continue
        if (ref_width, ref_height) != (width * scale, height * scale):
            times = f", times {scale} {width * scale}x{height * scale}," if scale != 1 else ""
            problems.append(f"{images[stem]}: is {width}x{height}{times} but its {reference_label} "
                            f"{references[stem]} is {ref_width}x{ref_height}")
            continue
        pairs.append(ImagePair(stem, images[stem], references[stem]))
    return pairs, problems


def benchmark_folder(root: str | Path, name: str, scale: int) -> Path:
    """ROOT/NAME/xSCALE, the folder holding a benchmark set's HR/ and LR/ images at one scale."""
    return Path(root) / name / f"x{scale}"


def benchmark_pairs(root: str | Path, name: str, scale: int) -> list[ImagePair]:
    """Every LR/HR pair of a benchmark set; ValueError naming each bad file, since a study needs the whole set."""
    folder = benchmark_folder(root, name, scale)
    for part in ("LR", "HR"):
        if not (folder / part).is_dir():
            raise FileNotFoundError(f"{folder / part}: no such folder (expected ROOT/SET/x{scale}/{part})")
    pairs, problems = pair_images(folder / "LR", folder / "HR", scale=scale, labels=PAIR_LABELS)
    if problems:
        raise ValueError(f"{folder}: HR and LR folders do not match:\n" + "\n".join(problems))
    return pairs
