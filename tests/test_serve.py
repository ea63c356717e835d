"""`shiftsr serve` over HTTP (Starlette's TestClient): the page, the CLI's image, progress, uncertainty, refusals."""
from __future__ import annotations

import io
import json
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from shiftsr.cli import main  # noqa: E402
from shiftsr.cli.serve import is_loopback  # noqa: E402
from shiftsr.serve import Limits, create_app  # noqa: E402
from shiftsr.serve import jobs  # noqa: E402
from shiftsr.serve.watch import JobCancelled, Monitor, watching  # noqa: E402

LIMITS = Limits(upload_bytes=60_000, input_pixels=48 * 48, output_pixels=200 * 200)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and whose pixel data is missing (an upload that lies)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(
        b"IEND", b"")


RGB = png(np.random.RandomState(0).randint(0, 256, (20, 24, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def client(tiny_model):
    with TestClient(create_app(model=str(tiny_model), limits=LIMITS)) as client:
        yield client


@pytest.fixture()
def scratch_root(tmp_path, monkeypatch):
    """Every temporary folder of the server goes under tmp_path/tmp, to check that none is left."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_page_models_and_static_files(client, tiny_model):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not any("://" in client.get(f"/static/{name}").text for name in ("index.html", "app.js", "style.css"))
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fapp.py").status_code == 404
    listed = client.get("/api/models").json()
    assert listed["default"] == Path(tiny_model).name
    kinds = {offer["name"]: offer["kind"] for offer in listed["models"]}
    assert kinds[listed["default"]] == "folder" and kinds["default"] == "model" and kinds["fidelity"] == "preset"
    assert listed["limits"]["input_pixels"] == 48 * 48


def cli_upscale(source: Path, folder: Path, model, *args: str) -> Path:
    """`shiftsr upscale SOURCE --ext png` into folder; the path of the result."""
    ran = CliRunner().invoke(main, ["upscale", str(source), "-o", str(folder), "-m", str(model), "--ext", "png", "-q",
                                    *args])
    assert ran.exit_code == 0, ran.output
    return folder / f"{source.stem}_out.png"


@pytest.mark.parametrize("kind", ["rgb8", "gray16"])
def test_upscale_is_the_cli_image(client, tiny_model, tmp_path, scratch_root, kind):
    """Same seed and settings: the API's PNG is byte for byte the file `shiftsr upscale --ext png` writes."""
    source = tmp_path / "in.png"
    if kind == "rgb8":
        source.write_bytes(RGB)
    else:  # 16-bit grayscale: 16-bit grayscale out
        cv2.imwrite(str(source), np.random.RandomState(1).randint(0, 65536, (18, 22), dtype=np.uint16))
    written = cli_upscale(source, tmp_path / "cli", tiny_model, "--seed", "5", "--steps", "2", "--samples", "2")
    reply = client.post("/api/upscale?seed=5&steps=2&samples=2&name=in.png", content=source.read_bytes())
    assert reply.status_code == 200, reply.text
    assert reply.content == written.read_bytes()
    assert reply.headers["content-disposition"] == 'attachment; filename="in_out.png"'
    record = json.loads(reply.headers["x-shiftsr-record"])
    assert record["samples"] == 2 and record["seed"] == 5 and record["std_mean"] > 0 and "std_map" not in record
    if kind == "gray16":
        assert cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert list(scratch_root.iterdir()) == []


def events(reply) -> list[dict]:
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines()]


def test_stream_reports_progress_then_the_cli_image_and_uncertainty(client, tiny_model, tmp_path, scratch_root):
    """The stream's image and uncertainty map are the files `shiftsr upscale --uncertainty` writes."""
    import base64

    stream = events(client.post("/api/upscale/stream?seed=2&steps=3&samples=3&target=60x50", content=RGB))
    assert stream[0] == {"event": "queued", "ahead": 0}
    fractions = [event["fraction"] for event in stream if event["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 6
    assert {0.0, 0.3333, 0.6667} <= set(fractions)  # each of the 3 samples starts at k / 3
    done = stream[-1]
    assert done["event"] == "done" and done["record"]["size_out"] == [60, 50]
    source = tmp_path / "in.png"
    source.write_bytes(RGB)
    written = cli_upscale(source, tmp_path / "cli", tiny_model, "--seed", "2", "--steps", "3", "--samples", "3",
                          "--target", "60x50", "--uncertainty")
    assert base64.b64decode(done["image"]) == written.read_bytes()
    assert base64.b64decode(done["uncertainty"]) == (tmp_path / "cli" / "in_out_std.png").read_bytes()
    assert Image.open(io.BytesIO(base64.b64decode(done["input"]))).size == (24, 20)
    single = events(client.post("/api/upscale/stream?samples=1", content=RGB))[-1]
    assert single["event"] == "done" and single["uncertainty"] is None and "std_mean" not in single["record"]
    assert list(scratch_root.iterdir()) == []


def test_a_cancelled_run_stops_at_its_next_denoiser_call(tiny_model):
    from shiftsr import load

    pipe = load(tiny_model, device="cpu")
    gone = threading.Event()
    gone.set()
    pipe.run(torch.rand(3, 8, 8), samples=1, steps=1)  # a first run may measure the network (ModelCache does it)
    with pytest.raises(JobCancelled):
        with watching(pipe, Monitor(cancelled=gone), pipe.plan((8, 8), samples=1, steps=2)):
            pipe.run(torch.rand(3, 8, 8), samples=1, steps=2)
    assert not pipe.denoiser._forward_pre_hooks  # the hook goes with the run
    for steps, expected in ((2, [0.0, 0.25, 0.5, 0.75, 1.0]), (1, [0.0, 1 / 3, 2 / 3, 1.0])):
        fractions = []
        samples = 2 if steps == 2 else 3
        with watching(pipe, Monitor(report=fractions.append), pipe.plan((8, 8), samples=samples, steps=steps)):
            pipe.run(torch.rand(3, 8, 8), samples=samples, steps=steps)
        assert fractions == expected


def test_single_worker_runs_one_job_at_a_time(client, monkeypatch):
    running, overlap = [0], [0]
    original = jobs.upscale_file

    def slow(*args, **kwargs):
        running[0] += 1
        overlap[0] = max(overlap[0], running[0])
        time.sleep(0.05)
        try:
            return original(*args, **kwargs)
        finally:
            running[0] -= 1

    monkeypatch.setattr(jobs, "upscale_file", slow)
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(client.post("/api/upscale?samples=1", content=RGB)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [reply.status_code for reply in replies] == [200] * 3 and overlap[0] == 1
    assert len({reply.content for reply in replies}) == 1


@pytest.mark.parametrize("query, body, status, message", [
    ("", b"GIF89a not really", 415, "not an image"),
    ("", b"hello, this is text", 415, "not an image"),
    ("", RGB[:80], 415, "truncated"),
    ("", png_header(60_000, 60_000), 413, "too large"),
    ("", png_header(100, 100), 413, "is over 2,304 pixels"),
    ("", b"x" * 70_000, 413, "over this server's 60,000"),
    ("", b"", 400, "no image"),
    ("?scale=16", RGB, 413, "the output would be 384x320"),
    ("?steps=0", RGB, 400, "steps: 0 is outside"),
    ("?steps=abc", RGB, 400, "not a whole number"),
    ("?scale=nan", RGB, 400, "scale: nan is outside"),
    ("?target=0x5", RGB, 400, "target:"),
    ("?scale=2&target=40x40", RGB, 400, "not both"),
    ("?model=/etc", RGB, 400, "not offered"),
    ("?tile=4", RGB, 400, "unknown field 'tile'"),
    ("?seed=" + "9" * 5000, RGB, 400, "not a whole number"),
])
def test_hostile_uploads_are_refused_and_the_server_goes_on(client, scratch_root, query, body, status, message):
    reply = client.post("/api/upscale" + query, content=body)
    assert reply.status_code == status and message in reply.json()["error"], reply.text
    assert "shiftsr-serve" not in reply.json()["error"]  # the temporary path is not shown
    assert list(scratch_root.iterdir()) == []
    assert client.get("/").status_code == 200
    assert client.post("/api/upscale?samples=1&steps=1", content=RGB).status_code == 200


def test_stream_refusals_are_plain_json(client):
    reply = client.post("/api/upscale/stream", content=b"not an image")
    assert reply.status_code == 415 and reply.headers["content-type"] == "application/json"


def test_serve_command_checks_its_model_and_knows_localhost():
    ran = CliRunner().invoke(main, ["serve", "--model", "no-such-model"])
    assert ran.exit_code == 2 and "no-such-model" in ran.output
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
