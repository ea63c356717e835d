"""Stand-in torchvision.ops."""
from . import misc

__all__ = ["misc"]
