"""Streamed tiled sampling (shiftsr.streaming) and tile 0 (auto, shiftsr.memory): same numbers, bounded memory."""
import pytest
import torch

import shiftsr
from shiftsr import memory, streaming
from shiftsr.samplers import Draws
from shiftsr.samplers.common import randn_like
from shiftsr.streaming import store
from shiftsr.streaming.store import DiskTensor, draw_noise


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
def test_disk_tensor_moves_bands_and_tiles(tmp_path, layout):
    value = torch.randn(2, 3, 9, 11, generator=gen(0))
    disk = DiskTensor(tmp_path / "t.f32", value.shape, layout=layout)
    disk.write(0, value[:, :, :4])
    disk.write(4, value[:, :, 4:])
    assert torch.equal(disk.read(0, 9), value)
    assert torch.equal(disk.read(2, 7, 3, 10), value[:, :, 2:7, 3:10])
    disk.write(5, -value[:, :, 5:8, 1:4], left=1)
    assert torch.equal(disk.read(5, 8, 1, 4), -value[:, :, 5:8, 1:4])
    assert torch.equal(disk.read(0, 5), value[:, :, :5])
    disk.close()


SHAPES = [(1, 1, 1, 5), (1, 1, 4, 4), (1, 1, 1, 17), (2, 3, 5, 7), (1, 2, 8, 9), (3, 1, 6, 11)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["list", "one", "draws"])
def test_noise_drawn_in_chunks_equals_one_draw(tmp_path, monkeypatch, shape, kind):
    """torch's CPU normal draws in chunks of multiples of 16 (the last at least 16) give the numbers of one draw."""
    monkeypatch.setattr(store, "DRAW_CHUNK", 32)
    generators = {"list": lambda: [gen(10 + b) for b in range(shape[0])], "one": lambda: gen(3),
                  "draws": lambda: Draws([torch.ones(shape)], then=[gen(10 + b) for b in range(shape[0])])}[kind]
    disk = DiskTensor(tmp_path / "noise.f32", shape, layout="nchw")
    expected, fresh = generators(), generators()
    for _ in range(2):  # a second draw continues each generator where the first left it
        draw_noise(disk, fresh)
        assert torch.equal(disk.read(0, shape[2]), randn_like(torch.empty(shape), expected))
    disk.close()


CASES = [
    dict(samples=2),
    dict(order=2, steps=3, samples=1),
    dict(method="dossr-ode", samples=1),
    dict(method="dpmpp-2m", steps=4, samples=1),
    dict(scale=2.5, samples=1),
    dict(samples=1, noise=True),
]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_streamed_run_equals_the_in_memory_tiled_run(tiny_model, monkeypatch, kwargs):
    pipe = shiftsr.load(tiny_model, device="cpu")
    lr = torch.rand(2, 3, 13, 19, generator=gen(1))
    kwargs = dict(kwargs)
    if kwargs.pop("noise", False):
        kwargs["noise"] = [torch.randn(2, *pipe.plan((13, 19)).model_shape, generator=gen(5))]
    streamed = []
    run = streaming.run
    monkeypatch.setattr(streaming, "run", lambda *a, **k: streamed.append(1) or run(*a, **k))
    monkeypatch.setattr(streaming.driver, "BAND_ROWS", 3)  # several update bands per row of tiles
    a = pipe.run(lr, tile=8, tile_overlap=3, seed=2, **kwargs)
    b = pipe.run(lr, tile=8, tile_overlap=3, seed=2, stream=False, **kwargs)
    assert streamed == [1]
    assert torch.equal(a.image, b.image)
    assert a.record == b.record and a.record["tile"] == 8 and a.record["nfe"] == b.record["nfe"] > 0


def test_streamed_run_holds_a_fraction_of_the_untiled_memory(tiny_model):
    """The working memory (glibc's bytes in use at the peak) of a tiled run against the untiled one on a 128 x 160 LR:
    the state, history and noise of the sampler stay on disk; the output image is what remains."""
    pipe = shiftsr.load(tiny_model, device="cpu")
    lr = torch.rand(1, 3, 128, 160, generator=gen(0))
    untiled = memory.peak_bytes(lambda: pipe.run(lr, tile=10**6, samples=1, steps=3), pipe.device)
    tiled = memory.peak_bytes(lambda: pipe.run(lr, tile=32, samples=1, steps=3), pipe.device)
    if untiled is None:
        pytest.skip("glibc's mallinfo2 is not available here")
    output = 3 * 512 * 640 * 4
    assert tiled < 0.35 * untiled and tiled < 2.5 * output, (tiled, untiled)


def test_auto_side_fits_the_free_memory():
    common = dict(batch=1, channels=48, height=512, width=512, bytes_per_pixel=1000.0, scale=4)
    assert memory.auto_side(free=1 << 34, **common) == 0  # 16 GiB: no tiles
    side = memory.auto_side(free=400 << 20, **common)
    assert side % memory.MULTIPLE == 0 and memory.FLOOR <= side < 512
    assert memory.auto_side(free=0, **common) == memory.FLOOR
    assert memory.halved(0, 512, 300) == 256 and memory.halved(100, 512, 512) == 48
    assert memory.halved(40, 512, 512) is None  # below FLOOR


def test_free_bytes_and_out_of_memory_errors():
    assert memory.free_bytes("cpu") > 0
    assert memory.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert memory.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    assert not memory.is_out_of_memory(RuntimeError("shapes do not match"))


def test_bytes_per_pixel_are_measured_per_pixel(tiny_model):
    pipe = shiftsr.load(tiny_model, device="cpu")
    small, large = (memory.network_bytes_per_pixel(pipe.denoiser, 48, pipe.device, probe=side) for side in (32, 96))
    if memory.peak_bytes(lambda: None, pipe.device) is None:
        pytest.skip("glibc's mallinfo2 is not available here")
    assert 0 < large < 1.5 * small and large > 48 * 4  # at least the network's own output per pixel


def test_auto_tile_halves_on_out_of_memory_and_says_so_once(tiny_model, capsys, monkeypatch):
    monkeypatch.setattr(memory, "FLOOR", 8)
    pipe = shiftsr.load(tiny_model, device="cpu")
    base, sides = pipe.denoiser, []

    def small_memory(x, t, cond):  # a device that holds one call of at most 24 x 24 model-space pixels
        sides.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > 24:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return base(x, t, cond)

    pipe.denoiser, pipe.bytes_per_pixel = small_memory, 1000.0  # measured already: the probe would not fit either
    lr = torch.rand(1, 3, 40, 44, generator=gen(0))
    result = pipe.run(lr, samples=1, steps=2)
    assert result.record["tile"] == 16 and sides[0] == 44  # untiled, then 44 // 2 down to a multiple of 8
    assert max(sides[1:]) == 16
    note = capsys.readouterr().err.strip().splitlines()
    assert note == ["shiftsr: note: out of memory with tile none; ran with tile 16"]
    with pytest.raises(torch.OutOfMemoryError):  # a tile the user chose is not changed
        pipe.run(lr, tile=30, samples=1, steps=2)


def test_tiled_decode_of_a_local_codec_equals_the_whole_decode():
    from shiftsr.denoisers.codecs import SpaceToDepthCodec
    from shiftsr.denoisers.tiling import tiled_decode

    codec, z = SpaceToDepthCodec(factor=4), torch.randn(2, 48, 21, 30, generator=gen(0))
    tiled = tiled_decode(codec.decode, z, tile=8, overlap=3, scale=4)
    torch.testing.assert_close(tiled, codec.decode(z), atol=1e-6, rtol=0)


def test_an_autoencoder_decodes_in_tiles_when_memory_is_short(tiny_model, monkeypatch, capsys):
    from diffusers import AutoencoderKL

    import shiftsr.pipeline
    from shiftsr.denoisers.codecs import AutoencoderKLCodec

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4).eval()
    pipe = shiftsr.load(tiny_model, device="cpu")
    pipe.codec = AutoencoderKLCodec(vae)
    z = torch.randn(1, 4, 40, 36, generator=gen(0))
    whole = pipe.decode(z)
    monkeypatch.setattr(memory, "FLOOR", 8)
    monkeypatch.setattr(shiftsr.pipeline, "free_bytes", lambda device: 2 * pipe.decode_bytes_per_pixel * 16 * 16)
    sides = []
    decode = pipe.codec.decode

    def short(latent):
        sides.append(max(latent.shape[-2:]))
        if max(latent.shape[-2:]) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return decode(latent)

    monkeypatch.setattr(pipe.codec, "decode", short)
    tiled = pipe.decode(z)
    assert tiled.shape == whole.shape and sides[0] == 16 and max(sides) == 16  # 16^2 latent pixels fit FRACTION
    assert (tiled - whole).abs().mean() < 0.1  # a blend of tile decodings (each normalised on its own)
    monkeypatch.setattr(shiftsr.pipeline, "free_bytes", lambda device: 1 << 50)  # it all seems to fit: untiled,
    sides.clear()  # then halved on running out
    assert pipe.decode(z, overlap=2).shape == whole.shape and sides[0] == 40 and max(sides[1:]) == 16
    assert capsys.readouterr().err.count("shiftsr: note: out of memory decoding") == 1
