"""NIQE, the no-reference "completely blind" quality of Mittal, Soundararajan & Bovik (IEEE SPL 2013), as the official
MATLAB release (niqe_release.zip: computequality.m, computefeature.m, estimateaggdparam.m) computes it.

Steps: the image's gray level (MATLAB rgb2gray of 8-bit RGB, rounded) cropped to whole 96x96 blocks; at two scales
(the image, then MATLAB imresize 0.5 bicubic with antialiasing) the MSCN coefficients (x - mu) / (sigma + 1) under a
7x7 Gaussian window of sigma 7/6 (imfilter 'replicate'); per block (96 px, then 48 px) 18 features: an AGGD fit of
the coefficients (shape, mean scale) and of their products with the 4 neighbours (0,1), (1,0), (1,1), (-1,1)
(circularly shifted inside the block: shape, mean, left and right scale); the 36-d features' mean and covariance
(rows with NaN dropped, as nanmean and nancov) against the pristine model's, D = sqrt(dmu' pinv((S_p + S_d) / 2) dmu).

The pristine model (mu_pris_param, cov_pris_param, the official modelparameters.mat) is read as data from the
niqe_pris_params.npz that the BasicSR package ships; basicsr itself requires torchvision, so it is installed without
its dependencies (`pip install --no-deps basicsr`) and never imported. On the five calibration images of pyiqa
(ResultsCalibra/dist_dir) this gives the official MATLAB values to 4 decimals (tests/test_niqe.py).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.imresize import imresize
from .base import MetricInfo, PairMetric, package_data

PARAMS_PACKAGE = "basicsr"
PARAMS_FILE = "metrics/niqe_pris_params.npz"
INSTALL_HINT = "pip install --no-deps basicsr (shiftsr reads only its niqe_pris_params.npz; never import it)"
BLOCK = 96  # the official block side at the first scale; 48 at the second
WINDOW, WINDOW_SIGMA = 7, 7 / 6  # fspecial('gaussian', 7, 7/6)
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # MATLAB rgb2gray (inverse NTSC transform)
SHAPES = torch.arange(200, 10001, dtype=torch.float64) / 1000  # the AGGD shapes tried: 0.2:0.001:10
PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # computefeature.m's circshift offsets

INFO = MetricInfo("niqe", full_reference=False, lower_is_better=True, per_image=True,
                  description="NIQE (Mittal et al. 2013), no reference, the official MATLAB model; images of at "
                              "least 96x192 pixels", options=("crop_border",))


def params_path() -> Path:
    """The niqe_pris_params.npz inside the installed basicsr package (found, not imported); ImportError when absent."""
    return package_data(PARAMS_PACKAGE, PARAMS_FILE, what="the NIQE pristine model", hint=INSTALL_HINT)


@lru_cache(maxsize=1)
def pristine_model() -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, cov): the 36-d mean and 36x36 covariance of the official pristine model, float64."""
    path = params_path()
    with np.load(path, allow_pickle=False) as data:
        mu, cov = data["mu_pris_param"].reshape(-1), data["cov_pris_param"]
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"{path}: expected a 36-d mean and a 36x36 covariance, got {mu.shape} and {cov.shape}")
    return torch.from_numpy(mu.astype(np.float64)), torch.from_numpy(cov.astype(np.float64))


def gray_levels(rgb: torch.Tensor) -> torch.Tensor:
    """(B, H, W) float64 gray levels in [0, 255] of (B, 3, H, W) RGB in [0, 1]: MATLAB rgb2gray of the 8-bit image."""
    eight_bit = (rgb.detach().to("cpu", torch.float64) * 255).round().clamp(0, 255)
    return torch.einsum("c,bchw->bhw", torch.tensor(RGB2GRAY, dtype=torch.float64), eight_bit).round()


def gaussian_window() -> torch.Tensor:
    """The 7x7 Gaussian of sigma 7/6, summing to 1 (fspecial), as a (1, 1, 7, 7) float64 kernel."""
    offsets = torch.arange(WINDOW, dtype=torch.float64) - WINDOW // 2
    g = torch.exp(-offsets.square() / (2 * WINDOW_SIGMA**2))
    window = torch.outer(g, g)
    return (window / window.sum())[None, None]


def mscn(image: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients (x - mu) / (sigma + 1) of a (B, 1, H, W) image (Eq. 1)."""
    window = gaussian_window().to(image)
    pad = (WINDOW // 2,) * 4

    def smooth(x: torch.Tensor) -> torch.Tensor:  # imfilter(x, window, 'replicate')
        return F.conv2d(F.pad(x, pad, mode="replicate"), window)

    mu = smooth(image)
    sigma = (smooth(image.square()) - mu.square()).abs().sqrt()
    return (image - mu) / (sigma + 1)


def aggd_fit(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shape, left scale, right scale) of an asymmetric generalised Gaussian fitted to each row of values
    (N, M) by the moment matching of estimateaggdparam.m (Lasmar et al. 2009): the shape on the 0.001 grid."""
    negative, positive = values < 0, values > 0
    left = ((values.square() * negative).sum(1) / negative.sum(1)).sqrt()  # NaN for a row without negatives
    right = ((values.square() * positive).sum(1) / positive.sum(1)).sqrt()
    ratio = left / right
    rhat = values.abs().mean(1).square() / values.square().mean(1)
    rhat_norm = rhat * (ratio**3 + 1) * (ratio + 1) / (ratio.square() + 1).square()
    shapes = SHAPES.to(values)
    moments = torch.exp(2 * torch.lgamma(2 / shapes) - torch.lgamma(1 / shapes) - torch.lgamma(3 / shapes))
    # without a fit (no negative or no positive value: rhat_norm NaN) MATLAB's min() returns the first index
    shape = torch.where(rhat_norm.isnan(), shapes[0], shapes[(moments[None] - rhat_norm[:, None]).square().argmin(1)])
    scale = torch.exp(0.5 * (torch.lgamma(1 / shape) - torch.lgamma(3 / shape)))
    return shape, left * scale, right * scale


def block_features(coefficients: torch.Tensor, block: int) -> torch.Tensor:
    """(N, 18) computefeature.m features of every block x block tile of a (1, 1, H, W) MSCN map (sides multiples)."""
    tiles = F.unfold(coefficients, block, stride=block).transpose(1, 2).reshape(-1, block, block)
    shape, left, right = aggd_fit(tiles.flatten(1))
    features = [shape, (left + right) / 2]
    for shift in PAIR_SHIFTS:
        products = (tiles * tiles.roll(shift, dims=(1, 2))).flatten(1)
        shape, left, right = aggd_fit(products)
        mean = (right - left) * torch.exp(torch.lgamma(2 / shape) - torch.lgamma(1 / shape))
        features += [shape, mean, left, right]
    return torch.stack(features, dim=1)


def niqe_features(gray: torch.Tensor) -> torch.Tensor:
    """(N, 36) features of the N 96x96 blocks of an (H, W) gray image in [0, 255]: scale 1, then scale 1/2."""
    height, width = (side // BLOCK * BLOCK for side in gray.shape)
    if height == 0 or width == 0 or height * width < 2 * BLOCK * BLOCK:
        raise ValueError(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks, got a {gray.shape[1]}x{gray.shape[0]} "
                         "image")
    image = gray[None, None, :height, :width]
    scales = []
    for block in (BLOCK, BLOCK // 2):
        scales.append(block_features(mscn(image), block))
        image = imresize(image, scale=0.5)  # MATLAB imresize(im, 0.5) of the double image
    return torch.cat(scales, dim=1)


def niqe_score(features: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> float:
    """D = sqrt(dmu' pinv((S_p + S_d) / 2) dmu) between the features' Gaussian and the pristine one (Eq. 10)."""
    complete = features[~features.isnan().any(1)]
    if len(complete) < 2:
        raise ValueError(f"NIQE needs at least two blocks with finite features, got {len(complete)}")
    difference = mu - features.nanmean(0)
    inverse = torch.linalg.pinv((cov + torch.cov(complete.T, correction=1)) / 2)
    return math.sqrt(max(float(difference @ inverse @ difference), 0.0))


def niqe(rgb: torch.Tensor, *, crop_border: int = 0, model: tuple[torch.Tensor, torch.Tensor] | None = None
         ) -> torch.Tensor:
    """NIQE of each image of a (B, 3, H, W) batch in [0, 1] (lower is more natural), float64 (B,); crop_border
    pixels are cut from each side first; model: (mu, cov), else the official pristine model."""
    mu, cov = model or pristine_model()
    grays = gray_levels(rgb)
    if crop_border:
        grays = grays[:, crop_border:-crop_border, crop_border:-crop_border]
    return torch.tensor([niqe_score(niqe_features(gray), mu, cov) for gray in grays], dtype=torch.float64)


class NIQE(PairMetric):
    """NIQE as a registry metric: one value per image, no reference needed (a given one is ignored)."""

    info = INFO

    def __init__(self, *, device: str | torch.device = "cpu", crop_border: int = 0) -> None:
        if not isinstance(crop_border, int) or isinstance(crop_border, bool) or crop_border < 0:
            raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
        self.crop_border = crop_border
        self.model = pristine_model()  # fails at creation, naming the install, when the model is absent

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        self._check_batches(sr, None, same_size=False)
        return niqe(sr, crop_border=self.crop_border, model=self.model)
