"""Blur kernels of the Real-ESRGAN degradation model (Wang et al. 2021, Sec. 3.1) and their random sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
# Real-ESRGAN draws sinc cutoffs from [pi/3, pi] for kernels below this size and from [pi/5, pi] from it on.
LARGE_SINC_SIZE = 13


@dataclass(frozen=True)
class KernelConfig:
    """Ranges and probabilities of one random blur kernel; angles and cutoffs are in units of pi."""

    sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)  # odd side lengths, drawn uniformly
    kinds: tuple[str, ...] = KERNEL_KINDS
    kind_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma: tuple[float, float] = (0.2, 3.0)  # sigma_x, and sigma_y of the anisotropic kinds
    rotation_pi: tuple[float, float] = (-1.0, 1.0)
    betag: tuple[float, float] = (0.5, 4.0)  # shape of the generalized Gaussian
    betap: tuple[float, float] = (1.0, 2.0)  # shape of the plateau kernel
    sinc_prob: float = 0.1  # probability of a 2-D sinc instead of one of the kinds
    sinc_cutoff_pi: tuple[float, float] = (1 / 3, 1.0)  # sizes below LARGE_SINC_SIZE
    sinc_cutoff_large_pi: tuple[float, float] = (0.2, 1.0)  # sizes from LARGE_SINC_SIZE on

    def __post_init__(self) -> None:
        if not self.sizes or any(n < 1 or n % 2 == 0 for n in self.sizes):
            raise ValueError(f"sizes must be odd positive ints, got {list(self.sizes)}")
        unknown = set(self.kinds) - set(KERNEL_KINDS)
        if unknown:
            raise ValueError(f"kinds: unknown {sorted(unknown)}; allowed: {', '.join(KERNEL_KINDS)}")
        check_probs("kind_probs", self.kind_probs, len(self.kinds))
        check_range("sigma", self.sigma, low=0, open_low=True)
        check_range("rotation_pi", self.rotation_pi)
        check_range("betag", self.betag, low=0, open_low=True)
        check_range("betap", self.betap, low=0, open_low=True)
        check_prob("sinc_prob", self.sinc_prob)
        check_range("sinc_cutoff_pi", self.sinc_cutoff_pi, low=0, open_low=True)
        check_range("sinc_cutoff_large_pi", self.sinc_cutoff_large_pi, low=0, open_low=True)


def check_prob(name: str, p: float) -> None:
    """Raise ValueError unless 0 <= p <= 1."""
    if not 0 <= p <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def check_probs(name: str, probs: tuple[float, ...], count: int) -> None:
    """Raise ValueError unless probs has count non-negative entries that sum to 1."""
    if len(probs) != count:
        raise ValueError(f"{name} must have {count} entries, got {len(probs)}")
    if any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
        raise ValueError(f"{name} must be non-negative and sum to 1, got {list(probs)}")


def check_range(name: str, bounds: tuple[float, float], *, low: float = -math.inf, open_low: bool = False) -> None:
    """Raise ValueError unless bounds is (lo, hi) with lo <= hi and lo above low (strictly when open_low)."""
    lo, hi = bounds
    if lo > hi or lo < low or (open_low and lo == low):
        limit = f"{'>' if open_low else '>='} {low}" if low > -math.inf else "any"
        raise ValueError(f"{name} must be [low, high] with low <= high and low {limit}, got {list(bounds)}")


def uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    """One draw from U[lo, hi) with the generator."""
    return lo + (hi - lo) * torch.rand((), generator=generator, device=generator.device).item()


def bernoulli(generator: torch.Generator, p: float) -> bool:
    """True with probability p; consumes one draw whatever p is, so that later draws do not shift."""
    return uniform(generator, 0.0, 1.0) < p


def choose(generator: torch.Generator, weights: tuple[float, ...]) -> int:
    """An index drawn with probability proportional to weights (zero weights are never drawn)."""
    u = uniform(generator, 0.0, 1.0) * sum(weights)
    total = 0.0
    for index, weight in enumerate(weights):
        total += weight
        if u < total:
            return index
    return max(i for i, w in enumerate(weights) if w > 0)  # reached only through rounding in the sum


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """size x size values of c^T Sigma^-1 c on the centred grid c = (column, row), Real-ESRGAN Sec. 3.1."""
    # Sigma = R diag(sigma_x^2, sigma_y^2) R^T with R the rotation by theta; x runs along columns.
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd positive int, got {size}")
    if not (sigma_x > 0 and sigma_y > 0):
        raise ValueError(f"kernel sigmas must be positive, got {sigma_x}, {sigma_y}")
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    u = math.cos(theta) * x + math.sin(theta) * y
    v = -math.sin(theta) * x + math.cos(theta) * y
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalised(kernel: torch.Tensor) -> torch.Tensor:
    return (kernel / kernel.sum()).float()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """Isotropic (sigma_y None) or anisotropic Gaussian exp(-q / 2), rotated by theta radians; sums to 1."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalised(torch.exp(-0.5 * q))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, *, beta: float
) -> torch.Tensor:
    """Generalized Gaussian exp(-q^beta / 2), Real-ESRGAN Sec. 3.1; beta = 1 is the Gaussian."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalised(torch.exp(-0.5 * q**beta))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, *, beta: float
) -> torch.Tensor:
    """Plateau-shaped kernel 1 / (1 + q^beta), Real-ESRGAN Sec. 3.1."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalised(1 / (1 + q**beta))


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """2-D sinc, the circular low-pass of cutoff omega rad/pixel: omega J1(omega r) / (2 pi r), Real-ESRGAN Sec. 3.3."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd positive int, got {size}")
    if not 0 < cutoff:
        raise ValueError(f"sinc cutoff must be positive, got {cutoff}")
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    r = torch.hypot(axis[:, None], axis[None, :])
    centre = torch.full_like(r, cutoff**2 / (4 * math.pi))  # the limit r -> 0
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    kernel = torch.where(r > 0, cutoff * torch.special.bessel_j1(cutoff * safe_r) / (2 * math.pi * safe_r), centre)
    return _normalised(kernel)


def _random_beta(generator: torch.Generator, bounds: tuple[float, float]) -> float:
    """A shape parameter: below or above 1 with probability 1/2 each when bounds straddle 1 (as the official code)."""
    lo, hi = bounds
    if lo < 1 < hi:
        return uniform(generator, lo, 1.0) if bernoulli(generator, 0.5) else uniform(generator, 1.0, hi)
    return uniform(generator, lo, hi)


def random_sinc_kernel(
    generator: torch.Generator, sizes: tuple[int, ...], cutoff_pi: tuple[float, float]
) -> torch.Tensor:
    """A sinc kernel of a size drawn from sizes and a cutoff drawn from cutoff_pi (units of pi)."""
    size = sizes[choose(generator, (1.0,) * len(sizes))]
    return sinc_kernel(size, math.pi * uniform(generator, *cutoff_pi))


def random_kernel(config: KernelConfig, generator: torch.Generator) -> torch.Tensor:
    """One random kernel as in Real-ESRGAN Sec. 3.1: uniform odd size, sinc with sinc_prob, else a kind."""
    size = config.sizes[choose(generator, (1.0,) * len(config.sizes))]
    if bernoulli(generator, config.sinc_prob):
        bounds = config.sinc_cutoff_large_pi if size >= LARGE_SINC_SIZE else config.sinc_cutoff_pi
        return sinc_kernel(size, math.pi * uniform(generator, *bounds))
    kind = config.kinds[choose(generator, config.kind_probs)]
    sigma_x = uniform(generator, *config.sigma)
    sigma_y, theta = sigma_x, 0.0
    if kind.endswith("aniso"):
        sigma_y = uniform(generator, *config.sigma)
        theta = math.pi * uniform(generator, *config.rotation_pi)
    if kind.startswith("generalized"):
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta=_random_beta(generator, config.betag))
    if kind.startswith("plateau"):
        return plateau_kernel(size, sigma_x, sigma_y, theta, beta=_random_beta(generator, config.betap))
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each image of x (B,C,H,W) with its own kernel (B,k,k), or one shared (k,k); reflect padding."""
    # Computed with FFTs (several times faster than a grouped conv2d for the 21x21 kernels): the circular
    # convolution of the padded image with the flipped kernel, of which the samples from 2 * pad on are the
    # valid correlation; zeros appended up to a 5-smooth FFT size do not reach them. Images smaller than the
    # padding are padded by edge replication, which reflect cannot do.
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    b, _, h, w = x.shape
    if kernels.ndim == 2:
        kernels = kernels.expand(b, -1, -1)
    if kernels.ndim != 3 or kernels.shape[0] != b or kernels.shape[1] != kernels.shape[2] or kernels.shape[1] % 2 == 0:
        raise ValueError(f"kernels must have shape ({b}, k, k) or (k, k) with k odd, got {tuple(kernels.shape)}")
    pad = kernels.shape[-1] // 2
    dtype = torch.promote_types(x.dtype, torch.float32)
    padded = F.pad(x.to(dtype), (pad, pad, pad, pad), mode="reflect" if pad < min(h, w) else "replicate")
    size = (_fast_fft_size(h + 2 * pad), _fast_fft_size(w + 2 * pad))
    response = torch.fft.rfft2(kernels.flip(-2, -1).to(x.device, dtype), s=size)[:, None]
    full = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * response, s=size)
    return full[..., 2 * pad : 2 * pad + h, 2 * pad : 2 * pad + w].to(x.dtype)


def _fast_fft_size(n: int) -> int:
    """The smallest m >= n with no prime factor above 5 (FFTs of such lengths are fast)."""
    m = n
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1
