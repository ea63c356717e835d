"""ST-LPIPS: the shift-tolerant LPIPS of Ghildyal & Liu (ECCV 2022), on the weights shipped by stlpips-pytorch.

The network is the "vST0.0" shift-tolerant variant: AlexNet or VGG-16 whose first convolution runs at stride 1
and whose every downsampling is max-pool at stride 1 followed by a 3x3 binomial blur-pool (reflect padding of
2 pixels per side, stride 2), in front of the LPIPS head (unit-normalised channels, learned 1x1 weights, spatial
mean, sum over five layers). Module and buffer names follow the weight files so that they load strictly.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import MetricInfo, PairMetric

NETS = ("alex", "vgg")
WEIGHTS_PACKAGE = "stlpips_pytorch"
_WEIGHT_FILES = {"alex": "alex_shift_tolerant.pth", "vgg": "vgg_shift_tolerant.pth"}
_TAPPED_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
# LPIPS v0.1 input scaling of images in [-1, 1], per RGB channel: (x - shift) / scale.
_SHIFT, _SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
_BINOMIAL = (1.0, 2.0, 1.0)  # blur-pool taps; the 3x3 filter is their outer product over 16
_BLUR_PAD = 2  # reflect padding per side of every blur-pool (twice the usual 1: the ST variant's "pad_more")
_NORM_EPS = 1e-10
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_MIN_SIZE = 21  # smallest side for which every reflect padding of the AlexNet trunk is valid (VGG: 18)

INFOS = {
    net: MetricInfo(f"stlpips-{net}", full_reference=True, lower_is_better=True, per_image=True,
                    description=f"shift-tolerant LPIPS distance (Ghildyal & Liu 2022), {net} trunk, RGB in [-1, 1]")
    for net in NETS
}


def weights_path(net: str) -> Path:
    """The .pth file of the shift-tolerant `net` trunk inside the installed stlpips-pytorch package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ST-LPIPS reads its weights from the stlpips-pytorch package: pip install stlpips-pytorch")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "vST0.0" / _WEIGHT_FILES[net]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ST-LPIPS weight file missing; reinstall stlpips-pytorch")
    return path


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling (Zhang 2019, "Making CNNs shift-invariant again"): binomial blur, stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor(_BINOMIAL)
        kernel = torch.outer(taps, taps) / taps.sum() ** 2
        self.register_buffer("filt", kernel.expand(channels, 1, *kernel.shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (_BLUR_PAD,) * 4, mode="reflect")
        return F.conv2d(padded, self.filt, stride=2, groups=x.shape[1])


class InputScaling(nn.Module):
    """LPIPS v0.1 per-channel input normalisation (x - shift) / scale of images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class Trunk(nn.Module):
    """A feature network cut into slice1..slice5 whose outputs are the five tapped activations."""

    def __init__(self, layers: list[nn.Module], slice_ends: tuple[int, ...]) -> None:
        super().__init__()
        start = 0
        for number, end in enumerate(slice_ends, start=1):
            # Keys keep the layer's index in the full network, as in the weight files ("slice2.5.weight").
            block = nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(start, end)))
            self.add_module(f"slice{number}", block)
            start = end

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for block in self.children():
            x = block(x)
            taps.append(x)
        return taps


class LinearHead(nn.Module):
    """The learned non-negative channel weights w_l of LPIPS as a 1x1 convolution, stored as model.1.weight."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Index 0 held a dropout layer in the training code; the weight files name the convolution "1".
        self.model = nn.Sequential(OrderedDict([("1", nn.Conv2d(channels, 1, kernel_size=1, bias=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def alexnet_trunk() -> Trunk:
    """Shift-tolerant AlexNet: stride-1 11x11 conv, then blur-pools in place of the strided conv and max-pools."""
    layers = [
        nn.Conv2d(3, 64, 11, padding=2), BlurPool(64), nn.ReLU(),
        nn.MaxPool2d(3, stride=1), BlurPool(64), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=1), BlurPool(192), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    ]
    return Trunk(layers, (3, 7, 11, 13, 15))


def vgg16_trunk() -> Trunk:
    """Shift-tolerant VGG-16 up to relu5_3: each 2x2 stride-2 max-pool becomes a stride-1 max-pool and a blur-pool."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers += [nn.MaxPool2d(2, stride=1), BlurPool(channels)]
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    return Trunk(layers, (4, 10, 18, 26, 34))


class STLPIPS(nn.Module):
    """ST-LPIPS d(x, y) = sum_l mean_hw w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 (LPIPS, Zhang 2018, eq. 1)."""

    def __init__(self, net: str = "alex", *, pretrained: bool = True) -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"unknown ST-LPIPS trunk {net!r}; choose one of {', '.join(NETS)}")
        # With weights to load, the layers are built on the meta device (no random init) and the strict load
        # assigns every parameter and buffer from the file.
        with torch.device("meta" if pretrained else "cpu"):
            self.scaling_layer = InputScaling()
            self.net = alexnet_trunk() if net == "alex" else vgg16_trunk()
            for index, channels in enumerate(_TAPPED_CHANNELS[net]):
                self.add_module(f"lin{index}", LinearHead(channels))
        if pretrained:
            state = torch.load(weights_path(net), map_location="cpu", weights_only=True)
            self.load_state_dict(state, strict=True, assign=True)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances, shape (B,), of two equal-size Bx3xHxW RGB batches in [0, 1] (mapped to [-1, 1] inside)."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two Bx3xHxW batches of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < _MIN_SIZE:
            size = tuple(x.shape[-2:])
            raise ValueError(f"ST-LPIPS needs images of at least {_MIN_SIZE}x{_MIN_SIZE} pixels, got {size}")
        taps = self.net(self.scaling_layer(2 * torch.cat([x, y]) - 1))
        total = x.new_zeros(x.shape[0])
        for index, features in enumerate(taps):
            unit_x, unit_y = _unit_channels(features).chunk(2)
            head = getattr(self, f"lin{index}")
            total = total + head((unit_x - unit_y) ** 2).mean(dim=(1, 2, 3))
        return total


class STLPIPSMetric(PairMetric):
    """ST-LPIPS as a registry metric: one distance per image pair, lower is more similar."""

    def __init__(self, net: str, *, device: str | torch.device = "cpu") -> None:
        self.info = INFOS[net]
        self.device = torch.device(device)
        self.network = STLPIPS(net).to(self.device)

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        self._check_batches(sr, hr, same_size=True)
        with torch.inference_mode():
            values = self.network(sr.to(self.device, torch.float32), hr.to(self.device, torch.float32))
        return values.to("cpu", torch.float64)


def _unit_channels(features: torch.Tensor) -> torch.Tensor:
    """Each feature vector divided by its Euclidean norm over channels (plus 1e-10), as LPIPS does."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + _NORM_EPS)
