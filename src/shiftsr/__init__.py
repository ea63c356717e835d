"""shiftsr: few-step diffusion image super-resolution (DoSSR, ResShift, BCSR, Diff-SR) in one sampler core."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shiftsr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["load", "ShiftSRPipeline", "__version__"]


def __getattr__(name: str):
    """Import the pipeline (and with it torch and diffusers) only when it is asked for."""
    if name in ("load", "ShiftSRPipeline"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'shiftsr' has no attribute {name!r}")
