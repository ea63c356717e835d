"""The denoiser network in ONNX: its export (`shiftsr export --onnx`) and an ONNX Runtime session in its place.

The export is the network alone, net(x, t, cond) -> prediction, with batch, height and width left free; the
pipeline's conventions (time input, prediction type, codec, sampler) stay in Python. onnx and onnxruntime are the
optional extra `shiftsr[onnx]`, imported only here.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

OPSET = 17
EXPORT_SIDE = 32  # model-space side of the example inputs the export traces (any size runs afterwards)
INSTALL = "pip install 'shiftsr[onnx]'"


def require(module: str):
    """Import module of the [onnx] extra, or an ImportError that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is not installed; ONNX export and ONNX Runtime need the onnx extra: "
                          f"{INSTALL}") from None


class _Exported(torch.nn.Module):
    """net(x, t[, cond]) returning a plain tensor (a diffusers output's .sample), the function the export traces."""

    def __init__(self, net: torch.nn.Module, conditional: bool):
        super().__init__()
        self.net, self.conditional = net, conditional

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        out = self.net(x, t, cond if self.conditional else None)
        return out.sample if hasattr(out, "sample") else out


def export_onnx(pipe, path: str | Path, *, opset: int = OPSET) -> Path:
    """Write the pipeline's network as an ONNX file (inputs x, t and, for a conditional model, cond; output out)."""
    require("onnx")
    if pipe.settings.condition != "xh":
        raise ValueError(f"export: the network's condition is {pipe.settings.condition!r}; the ONNX export covers "
                         "networks conditioned on the source image in model space (condition 'xh')")
    path = Path(path)
    channels = pipe.codec.channels
    net = _Exported(pipe.net, pipe.conditional).to("cpu", memory_format=torch.contiguous_format).eval()
    x = torch.randn(1, channels, EXPORT_SIDE, EXPORT_SIDE)
    t = torch.full((1,), float(pipe.process.t_max) / 2)
    inputs, names = ((x, t, x), ["x", "t", "cond"]) if pipe.conditional else ((x, t), ["x", "t"])
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in names if name != "t"} | {
        "t": {0: "batch"}, "out": {0: "batch", 2: "height", 3: "width"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(net, inputs, str(temporary), input_names=names, output_names=["out"], dynamic_axes=axes,
                          opset_version=opset, dynamo=False)
    require("onnx").checker.check_model(str(temporary))
    temporary.replace(path)
    pipe.net.to(pipe.device, memory_format=torch.channels_last)
    return path


class OnnxNetwork:
    """An ONNX Runtime session called like the network: (x, t, cond) tensors in, a float32 CPU tensor out."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [given.name for given in self.session.get_inputs()]

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        values = {"x": x, "t": t, "cond": cond}
        feed = {name: np.ascontiguousarray(values[name].detach().float().cpu().numpy()) for name in self.names}
        return torch.from_numpy(self.session.run(["out"], feed)[0])


def use_onnx(pipe, path: str | Path) -> None:
    """Run pipe's network through ONNX Runtime from an export of it (CPU only); the sampler's layout becomes
    contiguous (NCHW), the layout the session takes and gives."""
    from .pipeline import network_denoiser

    if pipe.device.type != "cpu":
        raise ValueError(f"onnx: ONNX Runtime runs here on the CPU only, not on {pipe.device}")
    network = OnnxNetwork(path)
    pipe.memory_format = torch.contiguous_format
    pipe.denoiser = network_denoiser(network, pipe.settings, pipe.process, dtype=torch.float32,
                                     memory_format=torch.contiguous_format)
