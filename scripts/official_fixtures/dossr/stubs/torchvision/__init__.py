"""Stand-in torchvision for recording DoSSR fixtures: only the names the official code and open_clip import."""
from . import ops, transforms, utils

__version__ = "0.0-stand-in"
__all__ = ["ops", "transforms", "utils"]
