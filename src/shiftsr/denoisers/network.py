"""A network called the way inference wants it: in the chosen precision, channels-last, output in float32."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor


class NetworkCall(torch.nn.Module):
    """net(x, t, cond) under autocast to `dtype` (fp32: none) with channels-last inputs; float32 contiguous output.

    Channels-last convolutions run about a quarter faster on CPU (oneDNN) and on GPU tensor cores. channels keeps
    the first output channels (the eps half of a network that also predicts its variance, as ADM's do).
    """

    def __init__(self, net: torch.nn.Module, *, dtype: torch.dtype = torch.float32, channels: int | None = None):
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.channels = channels

    def forward(self, x: Tensor, t: Tensor, cond) -> Tensor:
        autocast = (torch.autocast(x.device.type, dtype=self.dtype) if self.dtype != torch.float32
                    else contextlib.nullcontext())
        with autocast:
            x = x.contiguous(memory_format=torch.channels_last)
            cond = cond.contiguous(memory_format=torch.channels_last) if torch.is_tensor(cond) else cond
            out = self.net(x, t, cond)
        out = out.sample if hasattr(out, "sample") else out
        out = out if self.channels is None else out[:, : self.channels]
        return out.float().contiguous()
