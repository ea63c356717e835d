"""Image operations of inference: MATLAB-compatible bicubic imresize, modcrop and the benchmark LR."""
from .imresize import bicubic_degrade, imresize, modcrop

__all__ = ["imresize", "modcrop", "bicubic_degrade"]
