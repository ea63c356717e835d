"""Strict reader of ncnn models: the `.param` graph text and the `.bin` weight blob, as in ncnn's file format notes."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

MAGIC = 7767517
ARRAY_KEY_BASE = -23300  # a key k <= -23300 holds an array for param id -23300 - k, written "count,v1,...,vcount"

# 4-byte little-endian tag in front of every tagged weight buffer: storage dtype and whether the data is padded
# to a multiple of 4 bytes. ncnn also knows int8 and 256-entry lookup-table storage; those are rejected here.
_STORAGE = {
    0x00000000: (torch.float32, False),
    0x01306B47: (torch.float16, True),
    0x01348B83: (torch.bfloat16, True),
}

# Layer types whose ncnn implementation reads nothing from the .bin file.
WEIGHTLESS_TYPES = frozenset(
    {"BinaryOp", "Clip", "Concat", "Crop", "Eltwise", "Input", "Interp", "Noop", "PixelShuffle", "ReLU",
     "Sigmoid", "Split", "TanH"}
)

ParamValue = int | float | tuple[int | float, ...]


@dataclass(frozen=True)
class NcnnLayer:
    """One layer line of a .param file and the tensors it read from the .bin file."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # Convolution: "weight" (O,I,kh,kw), "bias" (O,)
    source: Path | None = None  # the .param file the layer comes from, for error messages

    def param(self, key: int, default: ParamValue) -> ParamValue:
        """The value of param id `key`, or `default` when the line omits it."""
        return self.params.get(key, default)


def read_ncnn(param_path: str | Path, bin_path: str | Path) -> list[NcnnLayer]:
    """Layers of an ncnn model in file order with their weights; every byte of the .bin must be consumed."""
    layers = read_param(param_path)
    bin_path = Path(bin_path)
    if not bin_path.is_file():
        raise FileNotFoundError(f"{bin_path}: no such ncnn weight file")
    reader = _BinReader(bin_path, bin_path.read_bytes())
    loaded = [_load_weights(layer, reader) for layer in layers]
    if reader.offset != len(reader.data):
        raise ValueError(
            f"{bin_path}: {len(reader.data) - reader.offset} bytes left over after the last layer "
            f"(read {reader.offset} of {len(reader.data)}); the .bin does not belong to this .param"
        )
    return loaded


def read_param(path: str | Path) -> list[NcnnLayer]:
    """Parse an ncnn .param text file (magic, layer and blob counts, one layer per line) into weightless layers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ncnn param file")
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not an ncnn param file (not UTF-8 text)") from None
    if not lines or lines[0] != [str(MAGIC)]:
        raise ValueError(f"{path}: not an ncnn param file (first line must be the magic number {MAGIC})")
    if len(lines) < 2 or len(lines[1]) != 2 or not all(t.isdigit() for t in lines[1]):
        raise ValueError(f"{path}: second line must hold the layer count and the blob count")
    layer_count, blob_count = int(lines[1][0]), int(lines[1][1])
    if len(lines) - 2 != layer_count:
        raise ValueError(f"{path}: header announces {layer_count} layers but the file has {len(lines) - 2} layer lines")
    layers = [_parse_layer(path, tokens) for tokens in lines[2:]]
    _check_graph(path, layers, blob_count)
    return layers


def _parse_layer(path: Path, tokens: list[str]) -> NcnnLayer:
    """One layer line: type, name, input count, output count, blob names, then key=value params."""
    where = f"{path}: layer {tokens[1]!r}" if len(tokens) > 1 else f"{path}: layer line {' '.join(tokens)!r}"
    if len(tokens) < 4 or not tokens[2].isdigit() or not tokens[3].isdigit():
        raise ValueError(f"{where}: expected 'type name input_count output_count blobs... params...'")
    n_in, n_out = int(tokens[2]), int(tokens[3])
    blobs = tokens[4 : 4 + n_in + n_out]
    if len(blobs) != n_in + n_out or any("=" in b for b in blobs):
        raise ValueError(f"{where}: expected {n_in} input and {n_out} output blob names")
    params: dict[int, ParamValue] = {}
    for item in tokens[4 + n_in + n_out :]:
        key_text, sep, value_text = item.partition("=")
        try:
            key = int(key_text)
        except ValueError:
            key = None
        if not sep or key is None:
            raise ValueError(f"{where}: malformed param {item!r} (expected integer_key=value)")
        index = ARRAY_KEY_BASE - key if key <= ARRAY_KEY_BASE else key
        if index in params:
            raise ValueError(f"{where}: param id {index} given twice")
        params[index] = _parse_array(where, item, value_text) if key <= ARRAY_KEY_BASE else _number(where, value_text)
    return NcnnLayer(tokens[0], tokens[1], tuple(blobs[:n_in]), tuple(blobs[n_in:]), params, source=path)


def _parse_array(where: str, item: str, text: str) -> tuple[int | float, ...]:
    """An array param value 'count,v1,...,vcount'."""
    count_text, *values = text.split(",")
    if not count_text.isdigit() or int(count_text) != len(values):
        raise ValueError(f"{where}: array param {item!r} must be 'count,v1,...' with exactly count values")
    return tuple(_number(where, v) for v in values)


def _number(where: str, text: str) -> int | float:
    """An int when spelled without decimal point or exponent, else a float (the ncnn convention)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: param value {text!r} is not a number") from None


def _check_graph(path: Path, layers: list[NcnnLayer], blob_count: int) -> None:
    """Unique layer names; every blob produced once, before use, and consumed at most once; blob count as announced."""
    names: set[str] = set()
    produced: set[str] = set()
    consumed: set[str] = set()
    for layer in layers:
        if layer.name in names:
            raise ValueError(f"{path}: layer name {layer.name!r} used twice")
        names.add(layer.name)
        for blob in layer.inputs:
            if blob not in produced:
                raise ValueError(f"{path}: layer {layer.name!r} reads blob {blob!r} before any layer produces it")
            if blob in consumed:
                raise ValueError(f"{path}: layer {layer.name!r} reads blob {blob!r} that another layer already reads")
            consumed.add(blob)
        for blob in layer.outputs:
            if blob in produced:
                raise ValueError(f"{path}: layer {layer.name!r} produces blob {blob!r} that already exists")
            produced.add(blob)
    if len(produced) != blob_count:
        raise ValueError(f"{path}: header announces {blob_count} blobs but the layers produce {len(produced)}")


class _BinReader:
    """Sequential reader over the bytes of a .bin file that names the file and layer in its errors."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data, self.offset = path, data, 0

    def take(self, layer: NcnnLayer, size: int, what: str) -> int:
        """Advance by size bytes and return where they start; error if the file ends first."""
        if self.offset + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated in layer {layer.name!r} ({layer.type}): {what} needs {size} bytes at offset "
                f"{self.offset} but the file has {len(self.data)}"
            )
        start, self.offset = self.offset, self.offset + size
        return start

    def raw(self, layer: NcnnLayer, count: int, dtype: torch.dtype, what: str) -> torch.Tensor:
        """count untagged values of dtype."""
        start = self.take(layer, count * dtype.itemsize, what)
        # Copying the slice in Python is much faster than Tensor.clone() on a CPU shared with other jobs.
        return torch.frombuffer(bytearray(self.data[start : self.offset]), dtype=dtype)

    def tagged(self, layer: NcnnLayer, count: int, what: str) -> torch.Tensor:
        """A weight buffer: 4-byte storage tag, count values, padding to a multiple of 4 bytes."""
        (tag,) = struct.unpack_from("<I", self.data, self.take(layer, 4, f"{what} storage tag"))
        if tag not in _STORAGE:
            raise ValueError(
                f"{self.path}: layer {layer.name!r} ({layer.type}): unsupported {what} storage tag 0x{tag:08X} at "
                f"offset {self.offset - 4} (supported: float32 0x0, float16 0x01306B47, bfloat16 0x01348B83)"
            )
        dtype, padded = _STORAGE[tag]
        values = self.raw(layer, count, dtype, what)
        if padded:
            self.take(layer, -(count * dtype.itemsize) % 4, f"{what} padding")
        return values


def _load_weights(layer: NcnnLayer, reader: _BinReader) -> NcnnLayer:
    """Read the layer's tensors from the .bin (Convolution only); weightless types read nothing."""
    if layer.type in WEIGHTLESS_TYPES:
        return layer
    if layer.type != "Convolution":
        raise ValueError(f"{reader.path}: layer {layer.name!r}: weight layout of type {layer.type!r} is not supported")
    where = f"{reader.path}: layer {layer.name!r} (Convolution)"
    if layer.param(8, 0) != 0 or layer.param(19, 0) != 0:
        raise ValueError(f"{where}: int8-quantized (8=) and dynamic-weight (19=) convolutions are not supported")
    out_ch, kernel_w, size = layer.param(0, 0), layer.param(1, 0), layer.param(6, 0)
    kernel_h = layer.param(11, kernel_w)
    if not all(isinstance(v, int) and v > 0 for v in (out_ch, kernel_w, kernel_h, size)):
        raise ValueError(f"{where}: num_output (0=), kernel (1=, 11=) and weight_data_size (6=) must be positive ints")
    in_ch, rest = divmod(size, out_ch * kernel_h * kernel_w)
    if rest:
        raise ValueError(f"{where}: weight_data_size {size} is not a multiple of {out_ch}x{kernel_h}x{kernel_w}")
    weights = {"weight": reader.tagged(layer, size, "weight").reshape(out_ch, in_ch, kernel_h, kernel_w)}
    if layer.param(5, 0):
        weights["bias"] = reader.raw(layer, out_ch, torch.float32, "bias")
    return replace(layer, weights=weights)
