"""What every metric says about itself, and the two ways metrics are called: per image pair, or per image set."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch


def package_data(package: str, file: str, *, what: str, hint: str) -> Path:
    """The data file `file` inside the installed package (found, never imported); ImportError naming `what` (the
    metric's model) and the install hint when the package or the file is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{what} comes from the {package} package: {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / file
    if not path.is_file():
        raise ImportError(f"{path}: {what} is missing; reinstall {package}: {hint}")
    return path


@dataclass(frozen=True)
class MetricInfo:
    """Metadata of a metric: its name, whether it needs reference images and which direction is better."""

    name: str
    full_reference: bool
    lower_is_better: bool
    per_image: bool  # False for distribution metrics such as FID, which give one value per image set
    description: str
    options: tuple[str, ...] = ()  # keyword options that create() passes on to the metric


class Metric(ABC):
    """A metric built by shiftsr.metrics.create; its MetricInfo fields are readable as attributes."""

    info: MetricInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def full_reference(self) -> bool:
        return self.info.full_reference

    @property
    def lower_is_better(self) -> bool:
        return self.info.lower_is_better

    @property
    def per_image(self) -> bool:
        return self.info.per_image

    def _check_batches(self, sr: torch.Tensor, hr: torch.Tensor | None, *, same_size: bool) -> None:
        """Raise ValueError unless sr (and hr where the metric needs one) are Bx3xHxW float batches."""
        if self.full_reference and hr is None:
            raise ValueError(f"{self.name} is a full-reference metric: pass the reference images as hr")
        for label, batch in (("sr", sr), ("hr", hr)):
            if batch is not None and (batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point()):
                raise ValueError(f"{self.name}: {label} must be a float Bx3xHxW RGB batch in [0, 1], "
                                 f"got {batch.dtype} {tuple(batch.shape)}")
        if hr is not None and (sr.shape[0] != hr.shape[0] or (same_size and sr.shape != hr.shape)):
            raise ValueError(f"{self.name}: sr and hr batches differ in shape: {tuple(sr.shape)} and {tuple(hr.shape)}")


class PairMetric(Metric):
    """A metric with one value per image: metric(sr, hr) -> tensor of shape (B,), float64 on the CPU."""

    @abstractmethod
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        """Values of a batch of Bx3xHxW RGB images in [0, 1] against their references."""


class DistributionMetric(Metric):
    """A metric of two image sets: update(sr, hr) batch by batch, then compute(); reset() starts again."""

    @abstractmethod
    def update(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> None:
        """Add a batch of Bx3xHxW RGB images in [0, 1] (and of reference images) to the sets."""

    @abstractmethod
    def compute(self) -> float:
        """The metric of all images added since the last reset."""

    @abstractmethod
    def reset(self) -> None:
        """Forget all images added so far."""
