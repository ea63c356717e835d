"""Network architectures, one per file."""
from .shiftnet import ShiftNet

__all__ = ["ShiftNet"]
