"""Stand-in torchvision.transforms: names imported by open_clip and DoSSR's colour fix, none used when sampling."""
from enum import Enum

from . import functional


class InterpolationMode(Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"stand-in torchvision: {type(self).__name__} is not available")


class Normalize(_Unavailable): ...
class Compose(_Unavailable): ...
class RandomResizedCrop(_Unavailable): ...
class ToTensor(_Unavailable): ...
class ToPILImage(_Unavailable): ...
class Resize(_Unavailable): ...
class CenterCrop(_Unavailable): ...
class ColorJitter(_Unavailable): ...
class Grayscale(_Unavailable): ...


__all__ = ["functional", "InterpolationMode", "Normalize", "Compose", "RandomResizedCrop", "ToTensor",
           "ToPILImage", "Resize", "CenterCrop", "ColorJitter", "Grayscale"]
