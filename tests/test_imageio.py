import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from shiftsr.imageio import ImageReadError, expand_inputs, read_image, write_image


def _rng_u8(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _rng_u16(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


def _chw(values, maxval):
    return torch.from_numpy(values.astype(np.float32) / maxval).permute(2, 0, 1)


def _levels16(planes):
    """CxHxW floats back to HxWxC 16-bit levels."""
    return planes.double().mul(65535).round().long().permute(1, 2, 0).numpy()


def _chunk(tag, body):
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _png16(samples, *, interlace):
    """A 16-bit PNG built by hand (filter None), optionally Adam7-interlaced: files OpenCV and Pillow do not write."""
    height, width, channels = samples.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    rows = [row for x0, y0, dx, dy in (passes if interlace else [(0, 0, 1, 1)]) for row in samples[y0::dy, x0::dx]]
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rows if row.size)
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, int(interlace))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def test_rgb8_round_trip_is_exact_and_readable_by_pillow(tmp_path):
    pixels = _rng_u8(7, 9, 3)
    write_image(tmp_path / "a.png", _chw(pixels, 255))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), pixels)
    loaded = read_image(tmp_path / "a.png")
    assert (loaded.bit_depth, loaded.mode, loaded.is_gray, loaded.alpha) == (8, "RGB", False, None)
    assert loaded.rgb.dtype == torch.float32 and loaded.rgb.shape == (3, 7, 9)
    assert torch.equal(loaded.rgb, _chw(pixels, 255))


def test_write_rounds_to_nearest_level(tmp_path):
    rgb = torch.full((3, 1, 2), 0.0)
    rgb[:, 0, 0], rgb[:, 0, 1] = 100.4 / 255, 100.6 / 255
    write_image(tmp_path / "r.png", rgb)
    assert np.asarray(Image.open(tmp_path / "r.png"))[0, :, 0].tolist() == [100, 101]


def test_gray16_round_trip_is_exact_and_pillow_agrees(tmp_path):
    values = _rng_u16(6, 5, 1)
    write_image(tmp_path / "g.png", _chw(values, 65535).expand(3, -1, -1), bit_depth=16, gray=True)
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode == "I;16"
        assert np.array_equal(np.asarray(image), values[..., 0])
    loaded = read_image(tmp_path / "g.png")
    assert (loaded.bit_depth, loaded.is_gray, loaded.mode) == (16, True, "I;16")
    assert all(np.array_equal(_levels16(loaded.rgb)[..., c], values[..., 0]) for c in range(3))


def test_gray16_written_by_pillow_is_read_exactly(tmp_path):
    ramp = (np.arange(40 * 30, dtype=np.uint32).reshape(40, 30) * 53 % 65536).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert np.array_equal(_levels16(loaded.rgb[:1])[..., 0], ramp)


def test_rgb16_and_rgba16_round_trip_is_exact(tmp_path):
    values = _rng_u16(5, 8, 4)
    write_image(tmp_path / "c.png", _chw(values[..., :3], 65535), alpha=_chw(values[..., 3:], 65535), bit_depth=16)
    loaded = read_image(tmp_path / "c.png")
    assert (loaded.bit_depth, loaded.mode, loaded.is_gray) == (16, "RGBA", False)
    assert np.array_equal(_levels16(torch.cat([loaded.rgb, loaded.alpha])), values)
    # Pillow decodes 16-bit colour by keeping the high byte: an independent check of the encoder's byte order.
    with Image.open(tmp_path / "c.png") as image:
        assert np.array_equal(np.asarray(image.convert("RGBA")), (values >> 8).astype(np.uint8))


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_of_every_colour_type_is_read_exactly(tmp_path, interlace, channels):
    values = _rng_u16(11, 13, channels, seed=channels)
    (tmp_path / "f.png").write_bytes(_png16(values, interlace=interlace))
    loaded = read_image(tmp_path / "f.png")
    planes = loaded.rgb[:1] if channels < 3 else loaded.rgb
    if channels in (2, 4):
        planes = torch.cat([planes, loaded.alpha])
    assert loaded.bit_depth == 16 and loaded.is_gray == (channels < 3)
    assert (loaded.alpha is not None) == (channels in (2, 4))
    assert np.array_equal(_levels16(planes), values)


def test_gray16_with_alpha_is_written_as_rgba16(tmp_path):
    values = _rng_u16(4, 6, 2, seed=7)
    gray = _chw(values[..., :1], 65535).expand(3, -1, -1)
    write_image(tmp_path / "la.png", gray, alpha=_chw(values[..., 1:], 65535), bit_depth=16, gray=True)
    loaded = read_image(tmp_path / "la.png")
    assert (loaded.bit_depth, loaded.mode, loaded.is_gray) == (16, "RGBA", False)
    assert np.array_equal(_levels16(torch.cat([loaded.rgb, loaded.alpha])), values[..., [0, 0, 0, 1]])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_tiff16_written_by_opencv_is_read_exactly(tmp_path, channels):
    import cv2

    values = _rng_u16(7, 9, channels, seed=10 + channels)
    bgr = values[..., {1: [0], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]]
    assert cv2.imwrite(str(tmp_path / "d.tif"), bgr)
    loaded = read_image(tmp_path / "d.tif")
    assert (loaded.bit_depth, loaded.is_gray) == (16, channels == 1)
    planes = loaded.rgb[:1] if channels == 1 else loaded.rgb
    if channels == 4:
        planes = torch.cat([planes, loaded.alpha])
    assert np.array_equal(_levels16(planes), values)


def test_gray16_tiff_written_by_pillow_is_read_exactly(tmp_path):
    ramp = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 97 % 65536).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g.tiff")
    loaded = read_image(tmp_path / "g.tiff")
    assert (loaded.bit_depth, loaded.is_gray, loaded.mode) == (16, True, "I;16")
    assert np.array_equal(_levels16(loaded.rgb[:1])[..., 0], ramp)


def test_rgba8_alpha_is_preserved(tmp_path):
    pixels = _rng_u8(4, 6, 4, seed=3)
    Image.fromarray(pixels).save(tmp_path / "t.png")
    loaded = read_image(tmp_path / "t.png")
    assert loaded.mode == "RGBA"
    assert torch.equal(loaded.alpha, _chw(pixels[..., 3:], 255))
    write_image(tmp_path / "u.png", loaded.rgb, alpha=loaded.alpha)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "u.png")), pixels)


def test_gray8_with_alpha_round_trip(tmp_path):
    pixels = _rng_u8(4, 6, 2, seed=4)
    Image.fromarray(pixels).save(tmp_path / "la.png")
    loaded = read_image(tmp_path / "la.png")
    assert (loaded.mode, loaded.is_gray) == ("LA", True)
    assert torch.equal(loaded.rgb, _chw(pixels[..., :1], 255).expand(3, -1, -1))
    write_image(tmp_path / "la2.png", loaded.rgb, alpha=loaded.alpha, gray=True)
    with Image.open(tmp_path / "la2.png") as image:
        assert image.mode == "LA" and np.array_equal(np.asarray(image), pixels)


def test_palette_image_is_expanded_to_rgb_and_transparency_to_alpha(tmp_path):
    palette = _rng_u8(256, 3, seed=5)
    indices = _rng_u8(5, 7, seed=6) % 4
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert (loaded.mode, loaded.bit_depth, loaded.alpha) == ("P", 8, None)
    assert torch.equal(loaded.rgb, _chw(palette[indices], 255))
    image.save(tmp_path / "pt.png", transparency=2)
    alpha = read_image(tmp_path / "pt.png").alpha
    assert torch.equal(alpha[0], torch.from_numpy((indices != 2).astype(np.float32)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_rng_u8(3, 5, 3, seed=orientation)).save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as image:
        upright = np.asarray(ImageOps.exif_transpose(image))
    assert torch.equal(read_image(tmp_path / "o.png").rgb, _chw(upright, 255))


def test_exif_rotated_jpeg_is_transposed(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rng_u8(16, 32, 3)).save(tmp_path / "r.jpg", exif=exif)
    loaded = read_image(tmp_path / "r.jpg")
    assert loaded.rgb.shape == (3, 32, 16)
    with Image.open(tmp_path / "r.jpg") as image:
        assert torch.equal(loaded.rgb, _chw(np.asarray(image).transpose(1, 0, 2)[:, ::-1], 255))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applies_once_to_16bit_png(tmp_path, orientation):
    values = _rng_u16(3, 5, 3, seed=orientation)
    write_image(tmp_path / "s.png", _chw(values, 65535), bit_depth=16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes(8).removeprefix(b"Exif\x00\x00")
    data = (tmp_path / "s.png").read_bytes()
    (tmp_path / "s.png").write_bytes(data[:-12] + _chunk(b"eXIf", body) + data[-12:])  # before IEND
    # Where each pixel goes, from Pillow's exif_transpose of an image of pixel indices with the same EXIF.
    Image.fromarray(np.arange(15, dtype=np.uint8).reshape(3, 5)).save(tmp_path / "i.png", exif=exif)
    with Image.open(tmp_path / "i.png") as image:
        source = np.asarray(ImageOps.exif_transpose(image))
    loaded = read_image(tmp_path / "s.png")
    assert loaded.bit_depth == 16
    assert np.array_equal(_levels16(loaded.rgb), values.reshape(15, 3)[source])


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_truncated_png_is_reported(tmp_path, bit_depth):
    write_image(tmp_path / "cut.png", _chw(_rng_u8(64, 64, 3), 255), bit_depth=bit_depth)
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png: truncated"):
        read_image(tmp_path / "cut.png")


def test_16bit_file_opencv_cannot_decode_is_reported(tmp_path, monkeypatch):
    import cv2

    write_image(tmp_path / "bad.png", torch.zeros(3, 2, 2), bit_depth=16)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    with pytest.raises(ImageReadError, match=r"bad\.png: truncated file or corrupt image data"):
        read_image(tmp_path / "bad.png")


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "photo.png").write_text("hello, not pixels")
    with pytest.raises(ImageReadError, match=r"photo\.png: not an image"):
        read_image(tmp_path / "photo.png")


def test_missing_directory_and_empty_files_are_reported(tmp_path):
    with pytest.raises(ImageReadError, match=r"gone\.png: no such file"):
        read_image(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: zero-size"):
        read_image(tmp_path / "empty.png")


def test_overwrite_refusal_keeps_original_bytes(tmp_path):
    target = tmp_path / "keep.png"
    Image.fromarray(_rng_u8(4, 4, 3)).save(target)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match=r"keep\.png"):
        write_image(target, torch.zeros(3, 4, 4))
    assert target.read_bytes() == before
    write_image(target, torch.zeros(3, 4, 4), overwrite=True)
    assert np.asarray(Image.open(target)).max() == 0


def test_failed_encoding_leaves_no_file_behind(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "x.png", torch.zeros(3, 2, 2))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_error_names_the_path(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="locked"):
            write_image(locked / "x.png", torch.zeros(3, 2, 2))
    finally:
        locked.chmod(0o700)


def test_permission_error_on_create_names_the_target(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError, match=r"out\.png: cannot write in folder"):
        write_image(tmp_path / "out.png", torch.zeros(3, 2, 2))


def test_write_rejects_bad_arguments(tmp_path):
    rgb = torch.zeros(3, 2, 2)
    with pytest.raises(ValueError, match=r"\.gif.*allowed: \.png"):
        write_image(tmp_path / "x.gif", rgb)
    with pytest.raises(ValueError, match="cannot store alpha"):
        write_image(tmp_path / "x.jpg", rgb, alpha=torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="bit_depth must be 8 or 16"):
        write_image(tmp_path / "x.png", rgb, bit_depth=12)
    with pytest.raises(ValueError, match="shape 3xHxW"):
        write_image(tmp_path / "x.png", torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "x.png", torch.full((3, 2, 2), float("nan")))
    assert list(tmp_path.iterdir()) == []


def test_webp_round_trips_and_16bit_falls_back_to_8(tmp_path):
    pixels = _rng_u8(5, 6, 3)
    write_image(tmp_path / "x.webp", _chw(pixels, 255), bit_depth=16)
    loaded = read_image(tmp_path / "x.webp")
    assert loaded.bit_depth == 8 and torch.equal(loaded.rgb, _chw(pixels, 255))


def test_tiff_keeps_16_bits(tmp_path):
    values = _rng_u16(5, 6, 3)
    write_image(tmp_path / "x.tif", _chw(values, 65535), bit_depth=16)
    loaded = read_image(tmp_path / "x.tif")
    assert loaded.bit_depth == 16 and torch.equal(loaded.rgb, _chw(values, 65535))


def test_jpeg_is_written_close_to_the_input(tmp_path):
    smooth = torch.linspace(0.2, 0.8, 32).expand(3, 32, 32).contiguous()
    write_image(tmp_path / "x.jpg", smooth)
    assert (read_image(tmp_path / "x.jpg").rgb - smooth).abs().max() < 4 / 255


def test_expand_inputs_folder_glob_duplicates_and_missing(tmp_path):
    for name in ["b.png", "a.JPG", "notes.txt", ".hidden.png", "c.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    folder = [tmp_path / "a.JPG", tmp_path / "b.png", tmp_path / "c.webp"]
    assert expand_inputs([str(tmp_path)]) == folder
    assert expand_inputs([str(tmp_path / "*.png")]) == [tmp_path / "b.png"]
    missing = str(tmp_path / "missing.png")
    nothing = str(tmp_path / "*.bmp")
    result = expand_inputs([str(tmp_path / "c.webp"), str(tmp_path), missing, str(tmp_path / "b.png"), nothing])
    names = ["c.webp", "a.JPG", "b.png", "missing.png", "*.bmp"]
    assert result == [tmp_path / name for name in names]
    assert expand_inputs([str(tmp_path / "notes.txt")]) == [tmp_path / "notes.txt"]


def test_a_pixel_limit_above_pillows_own_is_honoured(tmp_path, monkeypatch):
    from shiftsr.imageio import ImageTooLargeError

    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(tmp_path / "wide.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses from twice this: 2 000 pixels
    assert read_image(tmp_path / "wide.png", max_pixels=10_000).rgb.shape == (3, 50, 60)
    with pytest.raises(ImageTooLargeError, match="wide.png: 60x50 is over 2,999 pixels"):
        read_image(tmp_path / "wide.png", max_pixels=2_999)
