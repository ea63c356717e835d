"""Image files in and out: Pillow, and OpenCV for 16-bit PNG and TIFF, whose colour Pillow reduces to 8 bits."""

from __future__ import annotations

import glob
import os
import struct
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .files import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_INPUT_PIXELS = 2**26  # 67 megapixels (8192 x 8192): larger inputs are refused before they are decoded

_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}
_MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}  # the longest side libjpeg and libwebp store

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# Pillow mode -> the 8-bit mode it is converted to before reading its pixels.
_EIGHT_BIT_TARGET = {
    "1": "L", "L": "L", "LA": "LA", "La": "LA", "P": "RGB", "PA": "RGBA",
    "RGB": "RGB", "RGBA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB",
}
_BT601_LUMA = (0.299, 0.587, 0.114)
# what Pillow's decoders raise on damaged files (the exceptions its own fuzzers accept), besides its OSErrors
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                  OverflowError, struct.error)

_EXIF_ORIENTATION = 0x0112
# EXIF orientation value -> the transform of a CxHxW tensor that displays it upright (as ImageOps.exif_transpose).
_ORIENT: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: lambda t: t.flip(-1),
    3: lambda t: t.flip(-2, -1),
    4: lambda t: t.flip(-2),
    5: lambda t: t.transpose(-2, -1),
    6: lambda t: t.rot90(-1, dims=(-2, -1)),
    7: lambda t: t.transpose(-2, -1).flip(-2, -1),
    8: lambda t: t.rot90(1, dims=(-2, -1)),
}

_TIFF_BITS_PER_SAMPLE = 258
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
# Samples per pixel (gray, gray+alpha, RGB, RGBA) -> the planes that convert from and to OpenCV's channel order
# (gray, BGR, BGRA). OpenCV reads gray+alpha as BGRA and cannot write it: it is written as BGRA too.
_FROM_OPENCV = {1: [0], 2: [0, 3], 3: [2, 1, 0], 4: [2, 1, 0, 3]}
_TO_OPENCV = {1: [0], 2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}
_PNG16_COMPRESSION = 6  # zlib level, as Pillow uses for the 8-bit PNGs


class ImageReadError(ValueError):
    """An input file could not be read as an image; the message names the file and the problem."""


class ImageTooLargeError(ImageReadError):
    """An input image has more pixels than the reader was allowed to decode."""


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels of one file, upright, with what is needed to write a result in the same form."""

    rgb: torch.Tensor  # float32, 3xHxW, in [0, 1]; grayscale is repeated into all three channels
    alpha: torch.Tensor | None  # float32, 1xHxW, in [0, 1]
    bit_depth: int  # 8 or 16
    mode: str  # the Pillow mode of the file before conversion: "RGB", "L", "RGBA", "LA", "P", "I;16", ...
    is_gray: bool


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_INPUT_PIXELS) -> LoadedImage:
    """Decode an image file upright (EXIF orientation applied); 16-bit PNG, TIFF and grayscale keep 16 bits.

    An image over max_pixels is refused (ImageTooLargeError) before its pixels are decoded.
    """
    # 16-bit PNG and TIFF are decoded by OpenCV, everything else by Pillow, which reads 16-bit colour from
    # other formats at 8 bits. The single-colour tRNS transparency of a 16-bit PNG is ignored.
    path = Path(path)
    _check_is_file(path)
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow refuses twice its limit at open: max_pixels, checked below, rules
    try:
        with _quiet(), Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise ImageTooLargeError(f"{path}: {image.width}x{image.height} is over {max_pixels:,} pixels")
            if getattr(image, "n_frames", 1) > 1:
                raise ImageReadError(f"{path}: has {image.n_frames} frames (animated or multi-page); shiftsr "
                                     "upscales still images: extract the frames first")
            image.load()
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            channels = _sixteen_bit_channels(image, path)
            if channels:
                pixels, depth = _opencv_pixels(path, channels), 16
            else:
                pixels, depth = _pillow_pixels(image, path)
            mode = image.mode
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (cannot identify image file)") from None
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{path}: image too large ({error})") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode it") from None
    except _DECODE_ERRORS as error:
        raise ImageReadError(f"{path}: truncated file or corrupt image data ({error or type(error).__name__})") from None
    return _assemble(pixels, depth, mode, orientation)


def write_image(
    path: str | os.PathLike,
    rgb: torch.Tensor,
    *,
    alpha: torch.Tensor | None = None,
    bit_depth: int = 8,
    gray: bool = False,
    overwrite: bool = False,
) -> None:
    """Atomically write a 3xHxW [0, 1] image as PNG/JPEG/WEBP/TIFF by extension; 16 bits for PNG and TIFF."""
    # Values are rounded to the nearest level, (x * maxval).round(), and clamped. gray=True writes one channel,
    # the ITU-R BT.601 luma of rgb; alpha (1xHxW) becomes a transparency channel (refused for JPEG), except
    # that a 16-bit PNG cannot be gray with alpha (OpenCV writes 1, 3 or 4 channels): it is RGBA with the luma
    # in all three colour channels. JPEG is written at quality 95, WEBP losslessly. The file appears complete
    # or not at all.
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot write extension {path.suffix!r}; allowed: {', '.join(_WRITE_FORMATS)}")
    if bit_depth not in (8, 16):
        raise ValueError(f"{path}: bit_depth must be 8 or 16, got {bit_depth!r}")
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        raise ValueError(f"{path}: {fmt} cannot store alpha; use one of .png, .webp, .tif, .tiff")
    check_writable(path, tuple(rgb.shape[-2:]))
    channels = _channels_to_write(path, rgb, alpha, gray)
    depth = bit_depth if fmt in ("PNG", "TIFF") else 8
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    with atomic_path(path) as temporary, open(temporary, "wb") as stream, _quiet():
        try:
            _encode(stream, channels, depth, fmt)
        except (OSError, ValueError) as error:
            if getattr(error, "errno", None) is not None:  # the disk's error (full, read-only): named by the caller
                raise
            raise OSError(f"{path}: cannot encode it as {fmt} ({' '.join(str(error).split())})") from None


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files, folders (their image files, non-recursive, sorted) and glob patterns as paths, in order, deduplicated."""
    # Folders skip hidden files; globs keep only image files. A missing file, or a folder or glob that yields
    # no image, is returned as given, so that reading it reports the problem instead of it vanishing silently.
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = [p for p in path.iterdir() if not p.name.startswith(".")]
        elif path.exists():
            found.append(path)
            continue
        else:
            matches = [Path(match) for match in glob.glob(pattern)]
        images = sorted(p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        found.extend(images or [path])
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)  # realpath, unlike resolve(), survives symlink loops
    return list(unique.values())


@contextmanager
def _quiet() -> Iterator[None]:
    """Pillow's warnings off (DecompressionBombWarning, bad EXIF, truncated chunks), and in the main thread the C
    libraries' own stderr lines dropped (libtiff's `LZWDecode: Not enough data`, libjpeg's size limit) while a file
    is decoded or encoded: they name no file, or a temporary one, and every real problem raises instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if threading.current_thread() is not threading.main_thread():  # other threads' stderr stays untouched
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def check_writable(path: str | os.PathLike, size: tuple[int, int]) -> None:
    """ValueError naming path unless its format can store an image of size (height, width) (JPEG, WEBP sides)."""
    fmt = _WRITE_FORMATS.get(Path(path).suffix.lower())
    side = _MAX_SIDE.get(fmt)
    if side is not None and max(size) > side:
        raise ValueError(f"{path}: {fmt} stores at most {side} pixels a side, the output would be {size[1]}x{size[0]};"
                         " write PNG or TIFF instead")


def _opencv():
    """OpenCV with its logging silenced: its `[ WARN ]` lines, libtiff's among them, would reach stderr; every
    problem is reported by the None or the error it returns instead."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


def _check_is_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: zero-size file (0 bytes)")


def _sixteen_bit_channels(image: Image.Image, path: Path) -> int:
    """Samples per pixel of a 16-bit PNG or TIFF; 0 for any other file."""
    if image.format == "TIFF":
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 1)
        return len(image.getbands()) if set(bits if isinstance(bits, tuple) else (bits,)) == {16} else 0
    if image.format == "PNG":
        with open(path, "rb") as stream:
            header = stream.read(26)  # the PNG spec puts IHDR first: bit depth, then colour type at 24 and 25
        return _PNG_CHANNELS.get(header[25], 0) if header[24] == 16 else 0
    return 0


def _opencv_pixels(path: Path, channels: int) -> np.ndarray:
    """HxWxC float32 pixels in [0, 1] of a 16-bit file with the given samples per pixel, in RGB(A) order."""
    cv2 = _opencv()
    values = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # no EXIF rotation: done by us
    if values is None:
        raise ImageReadError(f"{path}: truncated file or corrupt image data (OpenCV cannot decode it)")
    if values.dtype != np.uint16:
        raise ImageReadError(f"{path}: unsupported 16-bit sample type {values.dtype}; only unsigned integers")
    values = values.reshape(values.shape[0], values.shape[1], -1)
    planes = _FROM_OPENCV[channels]
    if values.shape[2] <= max(planes):
        raise ImageReadError(f"{path}: OpenCV decoded {values.shape[2]} channels where the file has {channels}")
    return values[..., planes].astype(np.float32) / 65535


def _pillow_pixels(image: Image.Image, path: Path) -> tuple[np.ndarray, int]:
    """HxWxC float32 pixels in [0, 1] and the bit depth of a loaded Pillow image."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageReadError(f"{path}: 32-bit integer pixels outside 0..65535 are not supported")
        return (values.astype(np.float32) / 65535)[..., None], 16
    target = _EIGHT_BIT_TARGET.get(image.mode)
    if target is None:
        supported = ", ".join([*_EIGHT_BIT_TARGET, *_SIXTEEN_BIT_MODES])
        raise ImageReadError(f"{path}: unsupported pixel mode {image.mode!r}; supported: {supported}")
    if image.mode in ("L", "RGB", "P") and "transparency" in image.info:
        target = "LA" if target == "L" else "RGBA"
    values = np.asarray(image.convert(target), dtype=np.float32) / 255
    return values.reshape(values.shape[0], values.shape[1], -1), 8


def _assemble(pixels: np.ndarray, depth: int, mode: str, orientation: int) -> LoadedImage:
    planes = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)
    planes = _ORIENT.get(orientation, lambda t: t)(planes)
    has_alpha = planes.shape[0] in (2, 4)
    color = planes[: planes.shape[0] - has_alpha]
    alpha = planes[-1:].contiguous() if has_alpha else None
    is_gray = color.shape[0] == 1
    rgb = color.expand(3, -1, -1) if is_gray else color
    return LoadedImage(rgb=rgb.contiguous(), alpha=alpha, bit_depth=depth, mode=mode, is_gray=is_gray)


def _channels_to_write(path: Path, rgb: torch.Tensor, alpha: torch.Tensor | None, gray: bool) -> torch.Tensor:
    """Validated CxHxW float64 planes to encode: colour (3, or 1 when gray) then optional alpha."""
    if rgb.ndim != 3 or rgb.shape[0] != 3 or not rgb.is_floating_point():
        raise ValueError(
            f"{path}: rgb must be a float tensor of shape 3xHxW, got {rgb.dtype} {tuple(rgb.shape)}"
        )
    planes = rgb.detach().to("cpu", torch.float64)
    if gray:
        planes = torch.einsum("c,chw->hw", torch.tensor(_BT601_LUMA, dtype=torch.float64), planes)[None]
    if alpha is not None:
        if alpha.shape != (1, *rgb.shape[1:]) or not alpha.is_floating_point():
            raise ValueError(
                f"{path}: alpha must be a float tensor of shape 1x{rgb.shape[1]}x{rgb.shape[2]}, "
                f"got {alpha.dtype} {tuple(alpha.shape)}"
            )
        planes = torch.cat([planes, alpha.detach().to("cpu", torch.float64)])
    if not torch.isfinite(planes).all():
        raise ValueError(f"{path}: pixel values contain NaN or infinity")
    return planes


def _encode(stream: BinaryIO, planes: torch.Tensor, depth: int, fmt: str) -> None:
    maxval = 2**depth - 1
    levels = (planes * maxval).round().clamp(0, maxval).permute(1, 2, 0).to(torch.int32).numpy()
    if depth == 16:
        cv2 = _opencv()
        samples = levels[..., _TO_OPENCV[levels.shape[2]]].astype(np.uint16)
        options = [cv2.IMWRITE_PNG_COMPRESSION, _PNG16_COMPRESSION] if fmt == "PNG" else []
        encoded, data = cv2.imencode(f".{fmt.lower()}", samples, options)
        if not encoded:
            raise OSError(f"OpenCV could not encode the 16-bit {fmt}")
        stream.write(data.tobytes())
        return
    levels = levels.astype(np.uint8)
    image = Image.fromarray(levels[..., 0] if levels.shape[2] == 1 else levels)
    image.save(stream, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))


def to_batch(image) -> torch.Tensor:
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
