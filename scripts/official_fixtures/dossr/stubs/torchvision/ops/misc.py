"""Stand-in torchvision.ops.misc: open_clip only tests isinstance against FrozenBatchNorm2d."""
import torch


class FrozenBatchNorm2d(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("stand-in torchvision: FrozenBatchNorm2d is not available")
