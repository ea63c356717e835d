"""Hostile inputs through the real `shiftsr` command: seeded mutations of small valid files of every format, crafted
headers, bad flags, broken model folders, boundary files, recipes and checkpoints, and SIGTERM during a run.

Every case must end with the right exit status, no traceback, one `shiftsr: error: <that file>: ...` line per bad
file and nothing else on stderr, inputs unchanged, no partial or temporary file, and strict JSON on stdout. The
default run takes a small seeded slice; `pytest -m fuzz` runs more than a thousand cases.
"""
import hashlib
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from shiftsr.cli import main

SEED_SIZE = (16, 12)  # width, height of every valid seed file: outputs stay tiny at the model's x4
BATCH_SECONDS = 240  # one process per batch; the bar is 60 s per run on inputs of at most 64x64
ERROR_PREFIX = "shiftsr: error: "


# ---------------------------------------------------------------- valid seed files, one per format and mode

def pixels(mode: str, seed: int) -> Image.Image:
    """A random SEED_SIZE image in a Pillow mode."""
    rng = np.random.default_rng(seed)
    width, height = SEED_SIZE
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "P":
        return rgba.convert("RGB").quantize(16)
    return rgba.convert(mode)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=fmt, **options)
    return stream.getvalue()


def opencv16(ext: str, channels: int, seed: int) -> bytes:
    """A 16-bit PNG or TIFF with 1, 3 or 4 channels (OpenCV writes them; Pillow cannot write 16-bit colour)."""
    import cv2

    width, height = SEED_SIZE
    levels = np.random.default_rng(seed).integers(0, 65536, (height, width, channels), dtype=np.uint16)
    ok, data = cv2.imencode(ext, levels[..., 0] if channels == 1 else levels)
    assert ok
    return data.tobytes()


def exif_jpeg(orientation: int, seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(pixels("RGB", seed), "JPEG", exif=exif.tobytes())


def seed_files() -> dict[str, bytes]:
    """name -> bytes of a small valid file: every supported format, bit depth and odd mode."""
    files = {
        "rgb.png": encode(pixels("RGB", 0), "PNG"), "rgba.png": encode(pixels("RGBA", 1), "PNG"),
        "gray.png": encode(pixels("L", 2), "PNG"), "la.png": encode(pixels("LA", 3), "PNG"),
        "palette.png": encode(pixels("P", 4), "PNG"), "bits1.png": encode(pixels("1", 5), "PNG"),
        "gray16.png": encode(pixels("I;16", 6), "PNG"), "rgb16.png": opencv16(".png", 3, 7),
        "rgba16.png": opencv16(".png", 4, 8), "rgb.jpg": encode(pixels("RGB", 9), "JPEG"),
        "gray.jpg": encode(pixels("L", 10), "JPEG"), "cmyk.jpg": encode(pixels("CMYK", 11), "JPEG"),
        "rgb.webp": encode(pixels("RGB", 12), "WEBP"), "rgba.webp": encode(pixels("RGBA", 13), "WEBP", lossless=True),
        "rgb.bmp": encode(pixels("RGB", 14), "BMP"), "bits1.bmp": encode(pixels("1", 15), "BMP"),
        "palette.bmp": encode(pixels("P", 16), "BMP"), "rgb.tif": encode(pixels("RGB", 17), "TIFF"),
        "cmyk.tif": encode(pixels("CMYK", 18), "TIFF"), "gray16.tif": encode(pixels("I;16", 19), "TIFF"),
        "rgb16.tif": opencv16(".tif", 3, 20), "lzw.tif": encode(pixels("RGB", 21), "TIFF", compression="tiff_lzw"),
        "palette.gif": encode(pixels("P", 22), "GIF"),
    }
    files.update({f"exif{k}.jpg": exif_jpeg(k, 30 + k) for k in range(2, 9)})
    return files


# ---------------------------------------------------------------- mutations and crafted headers

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A tiny PNG whose IHDR claims width x height (valid CRCs; the data is one compressed empty row)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def with_size(data: bytes, name: str, width: int, height: int) -> bytes:
    """The file with its header's dimensions replaced (PNG, GIF, BMP, JPEG SOF, WEBP VP8L/VP8X, TIFF tags)."""
    out = bytearray(data)
    ext = name.rsplit(".", 1)[1]
    if ext == "png":
        out[16:24] = struct.pack(">II", width, height)
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif ext == "gif":
        out[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
        start = out.find(b"\x2c", 13)
        if start > 0:
            out[start + 5:start + 9] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
    elif ext == "bmp":
        out[18:26] = struct.pack("<ii", max(-2**31, min(width, 2**31 - 1)), max(-2**31, min(height, 2**31 - 1)))
    elif ext == "jpg":
        start = max(out.find(b"\xff\xc0"), out.find(b"\xff\xc2"))
        if start > 0:
            out[start + 5:start + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
    elif ext == "webp":
        if out[12:16] == b"VP8L":
            bits = (min(max(width, 1), 16384) - 1) | ((min(max(height, 1), 16384) - 1) << 14)
            out[21:25] = struct.pack("<I", bits | (int.from_bytes(out[21:25], "little") & 0xF0000000))
        elif out[12:16] == b"VP8X":
            out[24:30] = b"".join((min(max(side, 1), 2**24) - 1).to_bytes(3, "little") for side in (width, height))
    elif ext == "tif":
        order = "<" if out[:2] == b"II" else ">"
        (offset,) = struct.unpack(order + "I", out[4:8])
        (count,) = struct.unpack(order + "H", out[offset:offset + 2])
        for k in range(count):
            entry = offset + 2 + 12 * k
            tag, kind = struct.unpack(order + "HH", out[entry:entry + 4])
            if tag in (256, 257):
                value = width if tag == 256 else height
                packed = struct.pack(order + ("H" if kind == 3 else "I"), value & (0xFFFF if kind == 3 else 0xFFFFFFFF))
                out[entry + 8:entry + 8 + len(packed)] = packed
    return bytes(out)


def mutate(data: bytes, name: str, rng: random.Random) -> tuple[str, bytes]:
    """One seeded mutation of a valid file: (what was done, the bytes)."""
    kind = rng.choice(["truncate", "flip", "flip_header", "zero", "garbage_tail", "huge", "odd_size", "random",
                       "splice", "wrong_extension", "flip", "truncate"])
    if kind == "truncate":
        return kind, data[:rng.randrange(1, len(data))]
    if kind in ("flip", "flip_header"):
        out = bytearray(data)
        span = min(len(out), 64) if kind == "flip_header" else len(out)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(span)] ^= 1 << rng.randrange(8)
        return kind, bytes(out)
    if kind == "zero":
        return kind, b""
    if kind == "garbage_tail":
        return kind, data + rng.randbytes(rng.randint(1, 512))
    if kind == "huge":
        side = rng.choice([12000, 40000, 65535, 2**31 - 1])
        return kind, with_size(data, name, side, rng.choice([side, 1, 24]))
    if kind == "odd_size":
        return kind, with_size(data, name, rng.choice([0, 1, 3, 15640]), rng.choice([0, 1, 2, 24]))
    if kind == "random":
        return kind, rng.randbytes(rng.randint(1, 2048))
    if kind == "splice":
        cut = rng.randrange(1, len(data))
        return kind, data[:cut] + data[cut + rng.randint(1, 32):]
    return kind, data  # wrong_extension: the bytes are kept, the name changes


def crafted_files() -> dict[str, bytes]:
    """Headers that lie: decompression bombs, zero and negative sizes, animations, multi-page files."""
    frames = [Image.new("RGB", (6, 6), colour) for colour in ("red", "blue")]
    animated = {fmt: encode(frames[0], fmt, save_all=True, append_images=frames[1:]) for fmt in ("GIF", "PNG", "WEBP",
                                                                                               "TIFF")}
    return {
        "bomb.png": huge_png(12000, 12000), "bomb16.png": huge_png(30000, 30000, depth=16),
        "wide.png": huge_png(2**31 - 1, 1), "zero.png": huge_png(0, 0), "tall.png": huge_png(1, 2**24),
        "animated.gif": animated["GIF"], "animated.png": animated["PNG"], "animated.webp": animated["WEBP"],
        "pages.tif": animated["TIFF"], "text.png": b"hello, not an image\n", "empty.jpg": b"",
        "negative.bmp": with_size(encode(pixels("RGB", 40), "BMP"), "x.bmp", -16, -12),
        "one.png": encode(Image.new("RGB", (1, 1)), "PNG"), "line.png": encode(Image.new("L", (64, 1)), "PNG"),
    }


def fuzz_cases(count: int, seed: int) -> dict[str, bytes]:
    """count seeded cases: the valid seeds and crafted files (all of them, or a sample of half the count when
    count is smaller), then mutations of the seeds."""
    rng = random.Random(seed)
    seeds = seed_files()
    named = {f"{label}_{name.replace('.', '_')}.{name.rsplit('.', 1)[1]}": data
             for label, files in (("valid", seeds), ("crafted", crafted_files())) for name, data in files.items()}
    keep = sorted(named) if count >= len(named) else rng.sample(sorted(named), count // 2)
    cases = {name: named[name] for name in keep}
    while len(cases) < count:
        name = rng.choice(sorted(seeds))
        kind, data = mutate(seeds[name], name, rng)
        stem, ext = name.rsplit(".", 1)
        if kind == "wrong_extension":
            ext = rng.choice([e for e in ("png", "jpg", "webp", "bmp", "tif", "gif") if e != ext])
        cases[f"m{len(cases):04d}_{kind}_{stem}.{ext}"] = data
    return cases


# ---------------------------------------------------------------- running the command and checking everything

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def strict_json(line: str) -> dict:
    """json.loads refusing NaN and Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def run_batch(model: Path, folder: Path, names: list[str], *flags: str) -> subprocess.CompletedProcess:
    """`python -m shiftsr upscale FILES... -m MODEL -o folder/out --json -q` in one process."""
    command = [sys.executable, "-m", "shiftsr", "upscale", *(str(folder / n) for n in names), "-m", str(model),
               "-o", str(folder / "out"), "--json", "-q", "--steps", "1", *flags]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=BATCH_SECONDS)
    done.seconds = time.monotonic() - started
    return done


def check_batch(model: Path, folder: Path, cases: dict[str, bytes]) -> list[str]:
    """Run one batch of files and return every broken promise (an empty list when all hold)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in cases.items():
        (folder / name).write_bytes(data)
    before = {name: sha256(folder / name) for name in cases}
    done = run_batch(model, folder, list(cases))
    problems = [f"Traceback in the output:\n{done.stderr[-3000:]}"] if "Traceback" in done.stderr + done.stdout else []
    records = {}
    for line in done.stdout.splitlines():
        try:
            record = strict_json(line)
        except ValueError as error:
            problems.append(f"stdout line is not strict JSON ({error}): {line[:200]}")
            continue
        records[Path(record["input"]).name] = record
    failed = {name for name, record in records.items() if "error" in record}
    lines = done.stderr.splitlines()
    for line in lines:
        named = [name for name in failed if line.startswith(f"{ERROR_PREFIX}{folder / name}: ")]
        if not named:
            problems.append(f"stderr line that names no failed input: {line[:300]}")
    for name in cases:
        record = records.get(name)
        if record is None:
            problems.append(f"{name}: no JSON record")
            continue
        if "error" in record:
            if not record["error"].startswith(f"{folder / name}: "):
                problems.append(f"{name}: the error does not start with the file: {record['error'][:200]}")
            if sum(line.startswith(f"{ERROR_PREFIX}{folder / name}: ") for line in lines) != 1:
                problems.append(f"{name}: not exactly one stderr line")
            if Path(record["output"]).exists():
                problems.append(f"{name}: failed, yet its output exists")
        else:
            problems += check_output(name, record)
        if sha256(folder / name) != before[name]:
            problems.append(f"{name}: the input changed")
    expected_status = 1 if failed else 0
    if done.returncode != expected_status:
        problems.append(f"exit status {done.returncode}, expected {expected_status}; stderr: {done.stderr[-500:]}")
    out = folder / "out"
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    expected = {Path(r["output"]).name for r in records.values() if "error" not in r}
    if written != expected:
        problems.append(f"output folder holds {sorted(written - expected)}, lacks {sorted(expected - written)}")
    return problems


def check_output(name: str, record: dict) -> list[str]:
    """A written output: a complete image of the size the record gives, x4 the input."""
    try:
        with Image.open(record["output"]) as image:
            image.load()
            size = list(image.size)
    except (OSError, ValueError) as error:
        return [f"{name}: output {record['output']} is not a readable image ({error})"]
    problems = []
    if size != record["size_out"]:
        problems.append(f"{name}: output is {size}, the record says {record['size_out']}")
    if record["size_out"] != [4 * side for side in record["size_in"]]:
        problems.append(f"{name}: {record['size_in']} -> {record['size_out']} is not x4")
    return problems


def run_cases(model: Path, root: Path, cases: dict[str, bytes], batch: int) -> tuple[list[str], float]:
    """All cases in batches of `batch` files: (problems, seconds of the slowest batch)."""
    items, problems, slowest = list(cases.items()), [], 0.0
    for start in range(0, len(items), batch):
        started = time.monotonic()
        problems += check_batch(model, root / f"batch{start // batch}", dict(items[start:start + batch]))
        slowest = max(slowest, time.monotonic() - started)
    return problems, slowest


def test_a_seeded_slice_of_hostile_files(tiny_model, tmp_path):
    cases = fuzz_cases(32, seed=11)
    problems, slowest = run_cases(tiny_model, tmp_path, cases, batch=32)
    assert not problems, "\n".join(problems)
    assert slowest < 60


@pytest.mark.fuzz
@pytest.mark.parametrize("seed", range(6))
def test_fuzz_files(tiny_model, tmp_path, seed):
    """6 x 200 seeded cases (1,200 in all), 100 files per process."""
    problems, slowest = run_cases(tiny_model, tmp_path, fuzz_cases(200, seed=1000 + seed), batch=100)
    assert not problems, "\n".join(problems[:40])
    assert slowest < BATCH_SECONDS


# ---------------------------------------------------------------- shiftsr convert: bad checkpoint files

class RunsCode:
    """A pickle that would call os.system (creating the marker file) when loaded: the loaders must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(folder: Path) -> dict[str, Path]:
    """name -> a checkpoint file no conversion can use."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "plain.pth"
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.zeros(4)}, good)
    files = {"empty.pth": b"", "truncated.pth": good.read_bytes()[: len(good.read_bytes()) // 2],
             "random.pth": random.Random(0).randbytes(4096), "random.ckpt": random.Random(1).randbytes(100),
             "random.safetensors": random.Random(2).randbytes(300), "text.pth": b"not a checkpoint\n"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "payload": RunsCode(folder / "ran")}, folder / "code.pth")
    torch.save([torch.zeros(2)], folder / "list.pth")
    torch.save({"epoch": 3, "note": "no tensors"}, folder / "no_tensors.ckpt")
    torch.save({"weight": torch.full((2,), float("nan"))}, folder / "nan.pth")
    torch.save({"weight": torch.zeros(2, dtype=torch.int8)}, folder / "int8.pth")
    (folder / "a_folder.pth").mkdir(exist_ok=True)
    names = [*files, "code.pth", "list.pth", "no_tensors.ckpt", "nan.pth", "int8.pth", "a_folder.pth", "plain.pth",
             "missing.pth"]
    return {name: folder / name for name in names}


@pytest.mark.parametrize("arch", ["resshift-v3", "sinsr", "dossr", "adm"])
def test_convert_refuses_bad_checkpoints_in_one_line(tmp_path, arch):
    for name, path in bad_checkpoints(tmp_path / "files").items():
        out = tmp_path / f"out_{name}"
        args = ["convert", arch, "--checkpoint", str(path), "-o", str(out)]
        if arch in ("resshift-v3", "sinsr"):
            args += ["--autoencoder", str(tmp_path / "files" / "plain.pth")]
        result = CliRunner().invoke(main, args)
        lines = result.stderr.splitlines()
        assert result.exit_code == 2 and len(lines) == 1, f"{arch} {name}: {result.exit_code} {result.output[-800:]}"
        assert lines[0].startswith(f"{ERROR_PREFIX}{path}"), f"{arch} {name}: {lines[0]}"
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*")), f"{arch} {name}: something written"
    assert not (tmp_path / "files" / "ran").exists()


# ---------------------------------------------------------------- signals

def test_sigterm_during_a_run_removes_the_partial_file_and_keeps_the_finished(tiny_model, tmp_path):
    names = [f"big{k:02d}.png" for k in range(8)]
    for k, name in enumerate(names):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / name)
    before = {name: sha256(tmp_path / name) for name in names}
    out = tmp_path / "out"
    command = [sys.executable, "-m", "shiftsr", "upscale", *(str(tmp_path / n) for n in names), "-m", str(tiny_model),
               "-o", str(out), "-q", "--steps", "8"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + BATCH_SECONDS
    while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(0.2)  # into the next file's sampling
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.splitlines() == [f"{ERROR_PREFIX}interrupted: the file being written was removed, the finished "
                                   "ones are kept"] and "Traceback" not in stdout
    written = sorted(p.name for p in out.iterdir())
    assert written and all(not name.startswith(".") for name in written), written
    assert len(written) < len(names)
    for name in written:
        with Image.open(out / name) as image:
            image.load()
            assert image.size == (384, 256)
    assert {name: sha256(tmp_path / name) for name in names} == before


# ---------------------------------------------------------------- broken model folders, once per run

WEIGHTS = "diffusion_pytorch_model.safetensors"


def edit_json(name: str, change):
    """An edit of a model folder: the JSON file `name` replaced by change(its data)."""
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return edit


def edit_tensors(change):
    """An edit of a model folder: its weights replaced by change(the state dict)."""
    def edit(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(folder / WEIGHTS)
        change(state)
        save_file(state, folder / WEIGHTS)
    return edit


def first_value(state: dict, value: float) -> None:
    key = sorted(state)[0]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value


def pth_only(folder: Path) -> None:
    (folder / WEIGHTS).rename(folder / "model.pth")


BROKEN_MODELS = {
    "empty weights": (lambda f: (f / WEIGHTS).write_bytes(b""), f"{WEIGHTS}: not a readable safetensors file"),
    "truncated weights": (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:700]),
                          f"{WEIGHTS}: not a readable safetensors file"),
    "random weights file": (lambda f: (f / WEIGHTS).write_bytes(random.Random(0).randbytes(5000)),
                            f"{WEIGHTS}: not a readable safetensors file"),
    "header-corrupt weights": (lambda f: (f / WEIGHTS).write_bytes(b"\x10\0\0\0\0\0\0\0{{{{{{{{{{{{{{{{" + b"\0" * 64),
                               f"{WEIGHTS}: not a readable safetensors file"),
    "no weights, a .pth": (pth_only, "no diffusion_pytorch_model.safetensors for its ShiftNet; found model.pth"),
    "no config.json": (lambda f: (f / "config.json").unlink(), "no config.json for its ShiftNet"),
    "invalid config.json": (lambda f: (f / "config.json").write_text("{not json"), "config.json: not readable JSON"),
    "config.json a list": (lambda f: (f / "config.json").write_text("[1]"), "config.json: the whole file: expected"),
    "channels -4": (edit_json("config.json", lambda c: {**c, "channels": -4}),
                    "config.json: channels: must not be negative, got -4"),
    "channels a string": (edit_json("config.json", lambda c: {**c, "channels": "four"}),
                          "config.json: channels: expected int"),
    "channels 100000": (edit_json("config.json", lambda c: {**c, "channels": 100000}),
                        f"{WEIGHTS}: does not fit the ShiftNet .* wrong shape"),
    "unknown config key": (edit_json("config.json", lambda c: {**c, "depth": 3}), "config.json: unknown key 'depth'"),
    "another network's config": (edit_json("shiftsr.json", lambda s: {**s, "network": "ADMUNet"}),
                                 "config.json: _class_name: 'ShiftNet'"),
    "a missing tensor": (edit_tensors(lambda s: s.pop(sorted(s)[0])), f"{WEIGHTS}: does not fit .* missing"),
    "an extra tensor": (edit_tensors(lambda s: s.update(extra=torch.zeros(2))), f"{WEIGHTS}: does not fit .* unexpected"),
    "int8 weights": (edit_tensors(lambda s: s.update({k: v.to(torch.int8) for k, v in s.items()})),
                     f"{WEIGHTS}: .*: stored as I8, not floating point"),
    "NaN weights": (edit_tensors(lambda s: first_value(s, float("nan"))), f"{WEIGHTS}: .*: holds NaN or infinity"),
    "infinite weights": (edit_tensors(lambda s: first_value(s, float("inf"))), f"{WEIGHTS}: .*: holds NaN or infinity"),
    "settings unknown key": (edit_json("shiftsr.json", lambda s: {**s, "speed": 1}), "shiftsr.json: unknown key 'speed'"),
    "settings without network": (edit_json("shiftsr.json", lambda s: {k: v for k, v in s.items() if k != "network"}),
                                 "shiftsr.json: missing key 'network'"),
    "settings null": (edit_json("shiftsr.json", lambda s: None), "shiftsr.json: the whole file: expected a mapping"),
    "settings a list": (edit_json("shiftsr.json", lambda s: [s]), "shiftsr.json: the whole file: expected a mapping"),
    "scale 'four'": (edit_json("shiftsr.json", lambda s: {**s, "scale": "four"}), "shiftsr.json: scale: expected int"),
    "scale 10**9": (edit_json("shiftsr.json", lambda s: {**s, "scale": 10**9}), "shiftsr.json: scale: must be 1 to 64"),
    "unknown sampler key": (edit_json("shiftsr.json", lambda s: {**s, "sampler": {**s["sampler"], "eta": 1}}),
                            "shiftsr.json: unknown key 'eta' in 'sampler'"),
    "sampler steps 0": (edit_json("shiftsr.json", lambda s: {**s, "sampler": {**s["sampler"], "steps": 0}}),
                        "shiftsr.json: sampler.steps: must be 1 to 1000"),
    "codec factor 'x'": (edit_json("shiftsr.json", lambda s: {**s, "codec": {"kind": "space_to_depth", "factor": "x"}}),
                         "shiftsr.json: codec.factor: expected int"),
    "codec folder outside": (edit_json("shiftsr.json", lambda s: {**s, "codec": {"kind": "vq_f4", "folder": "../x"}}),
                             "shiftsr.json: codec.folder"),
    "codec that does not fit": (edit_json("shiftsr.json", lambda s: {**s, "codec": {"kind": "space_to_depth",
                                                                                   "factor": 2}}),
                                "the model fails on every image"),
    "settings not JSON": (lambda f: (f / "shiftsr.json").write_text("{'a'"), "shiftsr.json: not readable JSON"),
}


def broken_model(tiny_model: Path, folder: Path, edit) -> Path:
    import shutil

    shutil.copytree(tiny_model, folder)
    edit(folder)
    return folder


def assert_one_model_error(result, model: Path, out: Path, pattern: str | None = None) -> None:
    """Exit 2, one stderr line naming a file of the model folder, nothing written (a model that loads but fails
    on the first file leaves the output folder empty), no traceback."""
    import re

    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output[-1500:]
    assert lines[0].startswith(f"{ERROR_PREFIX}{model}"), lines[0]
    assert pattern is None or re.search(pattern, lines[0]), lines[0]
    assert isinstance(result.exception, SystemExit | None) and not (out.exists() and any(out.iterdir()))


@pytest.mark.parametrize("case", list(BROKEN_MODELS))
def test_a_broken_model_folder_is_one_line_once(tiny_model, tmp_path, case):
    edit, pattern = BROKEN_MODELS[case]
    model = broken_model(tiny_model, tmp_path / "model", edit)
    images = [str(pixels("RGB", k).save(tmp_path / f"{k}.png") or tmp_path / f"{k}.png") for k in range(2)]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["upscale", *images, "-m", str(model), "-o", str(out), "-q", "--steps", "1"])
    assert_one_model_error(result, model, out, pattern)


def mutate_model(folder: Path, rng: random.Random) -> None:
    """One seeded mutation of a model folder's files: truncation, byte flips, a changed or removed JSON value."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    path = rng.choice(files)
    data = bytearray(path.read_bytes())
    kind = rng.choice(["truncate", "flip", "flip_header", "json"] if path.suffix == ".json" else
                      ["truncate", "flip", "flip_header", "flip_data"])
    if kind == "truncate":
        path.write_bytes(bytes(data[:rng.randrange(len(data))]))
    elif kind == "json":
        values = json.loads(data)
        key = rng.choice(sorted(values))
        values[key] = rng.choice([None, -1, 0, 10**12, "x", [], {}, 1.5, True, float("nan")])
        path.write_text(json.dumps(values))
    else:
        start = len(data) - 64 if kind == "flip_data" else 0
        span = 64 if kind != "flip" else len(data)
        for _ in range(rng.randint(1, 6)):
            data[max(0, start) + rng.randrange(min(span, len(data)))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))


def check_mutated_models(tiny_model: Path, root: Path, count: int, seed: int) -> list[str]:
    rng, problems = random.Random(seed), []
    pixels("RGB", 0).save(root / "a.png")
    for k in range(count):
        model = broken_model(tiny_model, root / f"model{k}", lambda folder: mutate_model(folder, rng))
        out = root / f"out{k}"
        result = CliRunner().invoke(main, ["upscale", str(root / "a.png"), "-m", str(model), "-o", str(out), "-q",
                                           "--steps", "1", "--json"])
        try:
            if result.exit_code == 0:
                assert (out / "a_out.png").is_file() and "error" not in strict_json(result.stdout)
            else:
                assert_one_model_error(result, model, out)
        except AssertionError as error:
            problems.append(f"model{k}: {error}")
    return problems


def test_a_seeded_slice_of_mutated_model_folders(tiny_model, tmp_path):
    problems = check_mutated_models(tiny_model, tmp_path, count=10, seed=5)
    assert not problems, "\n".join(problems)


@pytest.mark.fuzz
def test_fuzz_model_folders(tiny_model, tmp_path):
    problems = check_mutated_models(tiny_model, tmp_path, count=300, seed=50)
    assert not problems, "\n".join(problems[:30])


# ---------------------------------------------------------------- boundary files (--bc) with a bad record

class MeanAbsolute:
    """A toy per-image metric for a two-candidate boundary search."""

    name = "toy-l1"
    lower_is_better = True

    def __call__(self, sr, hr):
        return (sr - hr).abs().mean(dim=(1, 2, 3)).double()


@pytest.fixture(scope="module")
def good_boundary(tiny_model, tmp_path_factory):
    from shiftsr.boundary import save_boundary, search_boundary
    from shiftsr.pipeline import load

    generator = torch.Generator().manual_seed(0)
    lr, hr = torch.rand(1, 3, 8, 8, generator=generator), torch.rand(1, 3, 32, 32, generator=generator)
    bc = search_boundary(load(tiny_model, device="cpu"), lr, hr, MeanAbsolute(), method="dossr-ode", steps=2,
                         candidates=2)
    return save_boundary(bc, tmp_path_factory.mktemp("bc") / "good.safetensors")


def rewrite_boundary(good: Path, path: Path, change_meta=None, change_noise=None, raw_meta: str | None = None) -> Path:
    """A copy of a boundary file with its record (the JSON metadata) or its noise tensor changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from shiftsr.boundary import META_KEY, NOISE_KEY

    with safe_open(str(good), "pt") as handle:
        meta, tensors = json.loads(handle.metadata()[META_KEY]), {NOISE_KEY: handle.get_tensor(NOISE_KEY)}
    meta = change_meta(meta) if change_meta else meta
    tensors = change_noise(tensors) if change_noise else tensors
    save_file(tensors, str(path), metadata={META_KEY: raw_meta if raw_meta is not None else json.dumps(meta)})
    return path


def without(key: str):
    return lambda meta: {k: v for k, v in meta.items() if k != key}


def setting(key: str, value):
    return lambda meta: {**meta, key: value}


BAD_BOUNDARIES = {
    **{f"no {key}": (dict(change_meta=without(key)), f"missing key '{key}'") for key in
       ("kind", "fingerprint", "order", "steps", "shape", "seed", "method", "scores")},
    "steps 'many'": (dict(change_meta=setting("steps", "many")), "steps: expected int"),
    "kind 3": (dict(change_meta=setting("kind", 3)), "kind: expected str"),
    "kind 'magic'": (dict(change_meta=setting("kind", "magic")), "kind: 'magic' is not allowed"),
    "method unknown": (dict(change_meta=setting("method", "euler")), "method: 'euler' is not allowed"),
    "shape of two": (dict(change_meta=setting("shape", [48, 8])), "shape: expected"),
    "scores text": (dict(change_meta=setting("scores", "high")), "scores: expected a list of float"),
    "best out of range": (dict(change_meta=setting("best", 7)), "best: no scored candidate"),
    "seed 2**64": (dict(change_meta=setting("seed", 2**64)), "seed: must be 0 to 2"),
    "unknown key": (dict(change_meta=setting("comment", "x")), "unknown key 'comment'"),
    "record a list": (dict(raw_meta=json.dumps([1, 2])), "not a shiftsr boundary file"),
    "record not JSON": (dict(raw_meta="{kind: noise"), "not a readable safetensors file"),
    "NaN noise": (dict(change_noise=lambda t: {k: torch.full_like(v, float("nan")) for k, v in t.items()}),
                  "noise: must be finite floating-point values"),
    "integer noise": (dict(change_noise=lambda t: {k: v.to(torch.int8) for k, v in t.items()}),
                      "noise: must be finite floating-point values"),
    "noise of another shape": (dict(change_noise=lambda t: {k: v[:, :4].contiguous() for k, v in t.items()}),
                               "noise tensor does not match its record"),
}


@pytest.mark.parametrize("case", list(BAD_BOUNDARIES))
def test_a_bad_boundary_file_is_one_line_naming_it_and_the_field(tiny_model, good_boundary, tmp_path, case):
    import re

    changes, pattern = BAD_BOUNDARIES[case]
    path = rewrite_boundary(good_boundary, tmp_path / "bad.safetensors", **changes)
    pixels("RGB", 0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), "-m", str(tiny_model), "--bc", str(path),
                                       "-o", str(out), "-q"])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output[-1500:]
    assert lines[0].startswith(f"{ERROR_PREFIX}{path}: ") and re.search(pattern, lines[0]), lines[0]
    assert isinstance(result.exception, SystemExit) and not out.exists()


def test_the_good_boundary_file_runs(tiny_model, good_boundary, tmp_path):
    pixels("RGB", 0).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), "-m", str(tiny_model), "--bc",
                                       str(rewrite_boundary(good_boundary, tmp_path / "copy.safetensors")),
                                       "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a_out.png").is_file()


# ---------------------------------------------------------------- shiftsr train: recipes, data, checkpoints

def recipe(tmp_path: Path, name: str = "recipe.yaml", **sections) -> Path:
    """A tiny valid recipe (8 channels, 2 iterations on three 48x56 images) with sections updated."""
    import yaml

    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        for k in range(3):
            Image.fromarray(np.random.default_rng(k).integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(data / f"{k}.png")
    values = {"data": {"folders": [str(data)], "patch": 32, "batch": 2, "val_images": 1, "val_patch": 32},
              "model": {"channels": 8, "num_blocks": 1}, "optim": {"iterations": 2, "warmup": 1},
              "run": {"output": str(tmp_path / "run"), "checkpoint_every": 2, "validate_every": 2, "log_every": 1}}
    for section, changes in sections.items():
        values[section] = {**values.get(section, {}), **changes}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


BAD_RECIPES = {
    "binary": (lambda p: p.write_bytes(random.Random(3).randbytes(300)), "not a text file"),
    "a YAML list": (lambda p: p.write_text("- 1\n- 2\n"), "expected a mapping of sections"),
    "python tag": (lambda p: p.write_text(f"data: !!python/object/apply:os.system ['touch {p.parent / 'ran'}']\n"),
                   "not valid YAML"),
    "channels 10**6": (lambda p: p.write_text(p.read_text().replace("channels: 8", "channels: 1000000")),
                       "model.channels: must be at most 1024"),
    "infinite lr": (lambda p: p.write_text(p.read_text().replace("warmup: 1", "warmup: 1\n  lr: .inf")),
                    "optim.lr: must be a finite number"),
    "seed 2**70": (lambda p: p.write_text(p.read_text().replace("seed: 0", "").replace("log_every: 1",
                                                                                     f"log_every: 1\n  seed: {2**70}")),
                   "run.seed: must be at most"),
    "output under a file": (lambda p: p.write_text(p.read_text().replace("/run", "/recipe.yaml/run")),
                            "run.output: .* is a file, not a folder"),
    "missing data folder": (lambda p: p.write_text(p.read_text().replace("/data", "/nowhere")), "data.folders: "),
    "init_from no model": (lambda p: p.write_text(p.read_text().replace("num_blocks: 1", "num_blocks: 1\n  init_from: "
                                                                                         f"{p.parent / 'nomodel'}")),
                           "model.init_from: .*nomodel: no such model folder|model.init_from: .*not a shiftsr model"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_train_refuses_a_bad_recipe_in_one_line(tmp_path, case):
    import re

    edit, pattern = BAD_RECIPES[case]
    path = recipe(tmp_path)
    edit(path)
    result = CliRunner().invoke(main, ["train", str(path)])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output[-1500:]
    assert lines[0].startswith(f"{ERROR_PREFIX}{path}: ") and re.search(pattern, lines[0]), lines[0]
    assert isinstance(result.exception, SystemExit) and not (tmp_path / "ran").exists()
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_checkpoint_whose_pickle_would_run_code(tmp_path):
    path = recipe(tmp_path)
    checkpoint = tmp_path / "run" / "checkpoint"
    checkpoint.mkdir(parents=True)
    torch.save({"step": 1, "payload": RunsCode(tmp_path / "ran")}, checkpoint / "custom_checkpoint_0.pkl")
    result = CliRunner().invoke(main, ["train", str(path), "--resume"])
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output[-1500:]
    assert lines[0].startswith(f"{ERROR_PREFIX}{checkpoint / 'custom_checkpoint_0.pkl'}: refused: unpickling it would "
                               "call posix.system"), lines[0]
    assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------- bad flags: usage errors before any model loads

BAD_FLAGS = [["-s", "0"], ["-s", "-1"], ["-s", "inf"], ["-s", "nan"], ["-s", "1e308"], ["-s", "x"], ["-s", "65"],
             ["--target", "0x5"], ["--target", "1e3x2"], ["--target", "99999x99999"], ["--target", "x"],
             ["--steps", "0"], ["--steps", "10000"], ["--samples", "0"], ["--samples", "100000"], ["--order", "4"],
             ["--seed", "-1"], ["--seed", str(2**64)], ["--tile", "-1"], ["--tile-overlap", "3"],
             ["-t", "4", "--tile-overlap", "4"], ["--device", "gpu"], ["--device", "cuda:99"], ["--ext", "gif"],
             ["--max-pixels", "0"], ["--max-pixels", str(2**41)], ["--max-output-pixels", "-5"],
             ["--max-output-pixels", "many"], ["--suffix", "a/b"], ["--suffix", "../x"], ["-m", ""],
             ["-m", "no-such-model"], ["--method", ""], ["--method", "euler"], ["--preset", "nope"],
             ["--bc", "/no/such/file.safetensors"], ["-s", "2", "--target", "8x8"], ["--uncertainty"]]


@pytest.mark.parametrize("flags", BAD_FLAGS, ids=" ".join)
def test_a_bad_flag_is_a_usage_error_before_anything_is_written(tiny_model, tmp_path, flags):
    pixels("RGB", 0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    model = [] if "-m" in flags or "--preset" in flags else ["-m", str(tiny_model)]
    result = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), *model, "-o", str(out), "-q", *flags])
    assert result.exit_code == 2, result.output[-1500:]
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert not out.exists()


# ---------------------------------------------------------------- limits, memory, names, folder scans

def upscale_args(tiny_model: Path, *args) -> list[str]:
    return ["upscale", *map(str, args), "-m", str(tiny_model), "-q", "--steps", "1"]


def test_pixel_limits_have_flags_and_say_how(tiny_model, tmp_path):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    small = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path / "a.png", "-o", tmp_path / "o1",
                                                  "--max-pixels", 1000))
    assert small.exit_code == 1 and small.stderr.splitlines() == [
        f"{ERROR_PREFIX}{tmp_path / 'a.png'}: 40x40 is over 1,000 pixels; pass --max-pixels N with a larger N to "
        "read it"]
    out = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path / "a.png", "-o", tmp_path / "o2",
                                                "--max-pixels", 2000, "--max-output-pixels", 25000))
    assert out.exit_code == 1 and out.stderr.splitlines() == [
        f"{ERROR_PREFIX}{tmp_path / 'a.png'}: the output would be 160x160, over 25,000 pixels; pass "
        "--max-output-pixels 25600 (or a smaller --scale or --target) to allow it"]
    raised = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path / "a.png", "-o", tmp_path / "o3",
                                                   "--max-pixels", 2000, "--max-output-pixels", 25600))
    assert raised.exit_code == 0 and (tmp_path / "o3" / "a_out.png").is_file()
    target = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path / "a.png", "--target", "200x200",
                                                   "--max-output-pixels", 100))
    assert target.exit_code == 2 and "--max-output-pixels" in target.stderr


def test_an_output_that_will_not_fit_in_memory_is_refused_before_sampling(tiny_model, tmp_path, monkeypatch):
    import shiftsr.memory

    monkeypatch.setattr(shiftsr.memory, "free_bytes", lambda device: 2**20)
    pixels("RGB", 0).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path / "a.png", "-o", tmp_path / "o",
                                                   "-s", 8, "--device", "cpu"))
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"{ERROR_PREFIX}{tmp_path / 'a.png'}: a 128x96 output needs about 0.0 GiB of memory, 0.0 GiB is free; "
        "ask for a smaller --scale or --target"]
    assert list((tmp_path / "o").iterdir()) == []


def test_a_format_that_cannot_hold_the_output_is_refused_before_sampling(tiny_model, tmp_path):
    Image.new("RGB", (16400, 2)).save(tmp_path / "wide.jpg")
    result = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path / "wide.jpg", "-o", tmp_path / "o"))
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"{ERROR_PREFIX}{tmp_path / 'wide.jpg'}: {tmp_path / 'o' / 'wide_out.jpg'}: JPEG stores at most 65500 "
        "pixels a side, the output would be 65600x8; write PNG or TIFF instead"]
    assert list((tmp_path / "o").iterdir()) == []


def test_upscaling_a_folder_into_itself_twice_skips_the_first_runs_outputs(tiny_model, tmp_path):
    for name in ("a.png", "b.jpg"):
        pixels("RGB", 0).save(tmp_path / name)
    first = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path, "-o", tmp_path, "--json"))
    assert first.exit_code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_out.png", "b.jpg",
                                                                                  "b_out.jpg"]
    second = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path, "-o", tmp_path, "--json", "--overwrite"))
    assert second.exit_code == 0 and [Path(strict_json(line)["input"]).name for line in second.stdout.splitlines()] \
        == ["a.png", "b.jpg"]
    given = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path, tmp_path / "a_out.png", "-o", tmp_path))
    assert (tmp_path / "a_out_out.png").is_file(), given.output  # a file given by name is upscaled


def test_a_file_that_fails_inside_a_good_model_costs_that_file_only(tiny_model, tmp_path, monkeypatch):
    from shiftsr.pipeline import ShiftSRPipeline

    real = ShiftSRPipeline.run

    def fails_on_odd_widths(self, image, **kwargs):
        if image.shape[-1] % 2:
            raise RuntimeError("a kernel failed")
        return real(self, image, **kwargs)

    monkeypatch.setattr(ShiftSRPipeline, "run", fails_on_odd_widths)
    Image.new("RGB", (15, 12)).save(tmp_path / "odd.png")
    pixels("RGB", 0).save(tmp_path / "even.png")
    result = CliRunner().invoke(main, upscale_args(tiny_model, tmp_path / "odd.png", tmp_path / "even.png",
                                                   "-o", tmp_path / "o"))
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"{ERROR_PREFIX}{tmp_path / 'odd.png'}: cannot upscale it (RuntimeError: a kernel failed)"]
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["even_out.png"]


def test_convert_refuses_weights_that_are_not_finite(tmp_path, monkeypatch):
    import types

    import shiftsr.convert as conversion
    from shiftsr.bundle import settings_for
    from shiftsr.convert.checkpoint import CheckpointError
    from shiftsr.networks import ShiftNet
    from shiftsr.processes import DomainShiftProcess

    net = ShiftNet(channels=8, num_blocks=1)
    with torch.no_grad():
        net.conv_in.weight[0, 0, 0, 0] = float("nan")
    settings = settings_for(net, DomainShiftProcess(), scale=4)
    fake = types.SimpleNamespace(to_bundle=lambda arch, checkpoint, autoencoder, **flags:
                                 conversion.Converted(net, settings, "card"))
    monkeypatch.setitem(sys.modules, "shiftsr.convert.nan_arch", fake)
    monkeypatch.setitem(conversion.ARCHS, "nan-arch", "nan_arch")
    checkpoint = tmp_path / "model.pth"
    with pytest.raises(CheckpointError, match=f"{checkpoint}: conv_in.weight: holds NaN"):
        conversion.convert("nan-arch", checkpoint)
