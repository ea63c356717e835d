"""Where and how every chain starts: the one start formula and the one start-time policy of every family.

Every start is the forward marginal x = a x0 + b y + s eps at the start time, with x0 replaced by the best estimate
there is (the LR brought to HR): DoSSR starts at t1 (Alg. 1 line 1), ResShift at T (Eq. 4), noise injection at the
time where the injected noise drowns the detail the LR lacks (Diff-SR Sec. 3.4), a shortened path (SDEdit, Meng
et al. 2022) at a given time. Only an SR3-style VP model starts from pure noise, N(0, I) at T.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..samplers.common import combine

RULES = ("paper", "kl", "table")
# Diff-SR Sec. 3.4 / 4.3: about 20% of T at 2x, 40% at 4x, 50-65% at 8x (mid-band 57.5%); 0 at 1x (nothing lost)
PAPER_LOG2_SCALES, PAPER_FRACTIONS = (0.0, 1.0, 2.0, 3.0), (0.0, 0.2, 0.4, 0.575)
PAPER_MAX_SCALE = 8.0
NOISE_TABLE_FILE = "noise_levels.json"  # a model folder's measured injection times per scale


def start_state(process, estimate: Tensor | None, y: Tensor | None, t: float, noise: Tensor) -> Tensor:
    """x_t = a estimate + b y + s noise: the forward marginal q(x_t | x0, y) at t with x0 replaced by an estimate.

    Without an estimate the start is pure noise, N(0, I): an SR3-style model's prior at T.
    """
    if estimate is None:
        return noise
    a, b, s = (float(c) for c in process.coefficients(t))
    if b != 0 and y is None:
        raise ValueError("start_state: this process shifts the mean to y (b(t) != 0); pass y")
    return combine(estimate, a, [(s, noise), (b, y)], fresh=True)  # one pass per term


def start_time(process, family: str, *, factor: float, direct: bool, table: NoiseTable | None = None,
               x_up: Tensor | None = None) -> float | None:
    """The time a family's chain starts at for an upscale by `factor`; None when it depends on the image (no x_up).

    A regressor (no diffusion network) starts and ends at 0: its estimate is the answer, at any size by resizing.
    Native sampling: t1 for DoSSR, T for ResShift and SR3. Noise injection (the prior): the model's measured
    table, else the paper's fractions up to x8, else the KL rule on x_up. A conditional model sampled directly at
    a non-native size: the shortened path from where the noise drowns the estimate's error (KL rule), or the
    whole chain when no time does (ResShift keeps a little signal at T).
    """
    if family == "regressor":
        if direct:
            raise ValueError("strategy: a regressor has no chain to sample at another size; it resizes its output "
                             "(strategy 'resize')")
        return 0.0
    if family == "prior":
        if factor <= 1:
            raise ValueError(f"scale: noise injection upscales, the scale must exceed 1, got {factor:.4g}")
        if table is not None and factor <= table.scales[-1]:
            return recoverable_time(process, factor, rule="table", table=table)
        if factor <= PAPER_MAX_SCALE:
            return recoverable_time(process, factor)
        return None if x_up is None else recoverable_time(process, factor, rule="kl", x_up=x_up)
    if not direct:
        return float(process.t1) if family == "dossr" else float(process.t_max)
    if x_up is None:
        return None
    try:
        return recoverable_time(process, max(factor, 1.0), rule="kl", x_up=x_up)
    except ValueError:
        return float(process.t_max)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (B, C, H, W) tensor, replicate padding, radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = (k / k.sum()).repeat(x.shape[1], 1, 1, 1)
    x = F.pad(x, (radius,) * 4, mode="replicate")
    x = F.conv2d(x, k, groups=x.shape[1])
    return F.conv2d(x, k.transpose(2, 3), groups=x.shape[1])


def lost_energy(x_up: Tensor, scale: float) -> float:
    """Per-pixel energy of the detail a x`scale` LR lacks, E_lost of MATH.md Sec. 4, estimated from x_up alone."""
    # 1. the LR's own top octave: x_up minus a blur of 1.25 * scale HR pixels (keeps ~[0.15, 0.5] / scale cycles)
    top = (x_up - _gaussian_blur(x_up, 1.25 * scale)).square().mean().item()
    # 2. natural images carry about equal energy per octave (1/f^2 power spectrum), and log2(scale) octaves are
    #    missing; on synthetic 1/f^2 images this is within 15% of the true loss for scales 2-16 (steeper spectra:
    #    an overestimate, so more noise)
    return math.log2(scale) * top if scale > 1 else 0.0


def recoverable_time(process, scale: float, *, rule: str = "paper", x_up: Tensor | None = None,
                     tolerance: float = 0.01, table: NoiseTable | None = None) -> float:
    """Diff-SR Sec. 3.4 injection time: the paper's fractions, the KL rule of MATH.md Sec. 4, or a measured table."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULES)}")
    if rule == "table":
        if table is None:
            raise ValueError("the table rule needs a NoiseTable (table=load_noise_table(path))")
        return table.time(scale, process)
    if rule == "paper":
        if not 1 <= scale <= 8:
            raise ValueError(f"the paper's rule covers scales 1 to 8, got {scale}; use rule='kl' beyond")
        # 1. interpolate the paper's fractions of T linearly in log2(scale)
        return float(np.interp(math.log2(scale), PAPER_LOG2_SCALES, PAPER_FRACTIONS)) * process.t_max
    if x_up is None or scale < 1:
        raise ValueError(f"the KL rule needs x_up and a scale >= 1, got scale {scale}")
    # 2. smallest integer t with KL = a^2 E_lost / (2 s^2) <= tolerance nats per pixel (no division: s(0) = 0);
    #    0.01 puts a 4x, std-0.5, 1/f^2 image at 38% of T on the linear schedule (paper: 40%), but the rule is
    #    flatter in scale than the paper's (31% at 2x, 42% at 8x). With x0 replaced by x_up in y = x_t / a, the
    #    same test holds for any (a, b, s) process (DoSSR, ResShift): the error x0 - x_up against noise s / a.
    energy = lost_energy(x_up, scale)
    times = torch.arange(0, int(process.t_max) + 1, dtype=torch.float64)
    a, _, s = process.coefficients(times)
    ok = (a.square() * energy <= 2 * tolerance * s.square()).nonzero()
    if len(ok) == 0:
        raise ValueError(f"no t <= {process.t_max} brings the KL below {tolerance} (E_lost = {energy:.3g})")
    return float(times[ok[0, 0]])


@dataclass(frozen=True)
class NoiseTable:
    """Measured injection times per scale (a model folder's noise_levels.json), interpolated in log(scale).

    The times rise with the scale; at 1x nothing is lost, so (1, 0) anchors the curve below the first scale.
    Beyond the largest measured scale the table says nothing and `time` raises.
    """

    scales: tuple[float, ...]
    times: tuple[float, ...]
    t_max: float

    def __post_init__(self):
        if len(self.scales) != len(self.times) or not self.scales:
            raise ValueError(f"a noise table needs one time per scale, got {len(self.scales)} scales and "
                             f"{len(self.times)} times")
        if any(b <= a for a, b in zip(self.scales, self.scales[1:])) or self.scales[0] <= 1:
            raise ValueError(f"table scales must rise and exceed 1, got {list(self.scales)}")
        if any(b < a for a, b in zip(self.times, self.times[1:])) or not 0 <= self.times[0]:
            raise ValueError(f"table times must not fall with the scale, got {list(self.times)}")

    def time(self, scale: float, process=None) -> float:
        """The injection time at scale, linear in log(scale) between measured scales (and from (1, 0))."""
        if process is not None and process.t_max != self.t_max:
            raise ValueError(f"the table was measured for T = {self.t_max}, the process has T = {process.t_max}")
        if not 1 <= scale <= self.scales[-1]:
            raise ValueError(f"scale {scale} lies outside the noise table's range [1, {self.scales[-1]}]")
        return float(np.interp(math.log(scale), np.log([1.0, *self.scales]), [0.0, *self.times]))

    @classmethod
    def from_scores(cls, scales, times, scores, *, t_max: float) -> tuple[NoiseTable, list[float]]:
        """The table of the lowest score per scale (scores[i][j]: scale i, time j) and the raw argmin times.

        The table holds the argmins made monotone in the scale by the pool-adjacent-violators average
        (isotonic regression), which leaves an already rising sequence unchanged.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(scales), len(times)):
            raise ValueError(f"scores must be {len(scales)} x {len(times)}, got {scores.shape}")
        best = [float(times[j]) for j in np.argmin(scores, axis=1)]
        return cls(tuple(float(s) for s in scales), tuple(isotonic(best)), float(t_max)), best


def isotonic(values: list[float]) -> list[float]:
    """The least-squares non-decreasing fit of a sequence (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, count]
    for value in values:
        blocks.append([float(value), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [mean for mean, count in blocks for _ in range(int(count))]


def load_noise_table(path: str | Path) -> NoiseTable:
    """Read a noise_levels.json written by scripts/calibrate_noise.py (keys scales, t_start, t_max)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return NoiseTable(tuple(data["scales"]), tuple(data["t_start"]), float(data["t_max"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a noise-level table ({error})") from None
