"""Networks: ShiftNet (the denoiser) and RRDBNet (the Real-ESRGAN x4plus preprocessor)."""
from .rrdbnet import RRDBNet, load_ncnn_into, realesrgan_x4plus
from .shiftnet import ShiftNet

__all__ = ["ShiftNet", "RRDBNet", "realesrgan_x4plus", "load_ncnn_into"]
