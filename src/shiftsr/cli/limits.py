"""What one file of `shiftsr upscale` may ask of the machine: decoded input pixels, output pixels, working memory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Peak RSS growth per output pixel of `shiftsr upscale` on the CPU (fp32, auto tiles, one sample, default model):
# 263 and 229 bytes measured between 256^2 and 512^2 and between 512^2 and 1024^2 outputs. Tiles bound the
# network's activations; what grows with the image is its whole-image tensors (source image, model-space state
# and estimate, decoded sum, colour fix, the planes written).
BYTES_PER_OUTPUT_PIXEL = 256


@dataclass(frozen=True)
class Limits:
    """The largest decoded input and output (pixels, raised by --max-pixels / --max-output-pixels), and whether
    the output's predicted working memory is checked against the free memory (on the CPU, where running out
    kills the process instead of raising)."""

    input_pixels: int
    output_pixels: int
    check_memory: bool = False

    def read(self, path: Path):
        """read_image(path) under the input limit; over it, an error that says which flag allows it."""
        from ..imageio import ImageTooLargeError, read_image

        try:
            return read_image(path, max_pixels=self.input_pixels)
        except ImageTooLargeError as error:
            raise ImageTooLargeError(f"{error}; pass --max-pixels N with a larger N to read it") from None

    def check_output(self, path: Path, size: tuple[int, int]) -> None:
        """ValueError naming path unless an output of size (height, width) is within the limits."""
        from ..memory import free_bytes

        pixels = size[0] * size[1]
        if pixels > self.output_pixels:
            raise ValueError(f"{path}: the output would be {size[1]}x{size[0]}, over {self.output_pixels:,} pixels; "
                             f"pass --max-output-pixels {pixels} (or a smaller --scale or --target) to allow it")
        free = free_bytes("cpu") if self.check_memory else None
        needed = BYTES_PER_OUTPUT_PIXEL * pixels
        if free is not None and needed > free:
            raise ValueError(f"{path}: a {size[1]}x{size[0]} output needs about {needed / 2**30:.1f} GiB of memory, "
                             f"{free / 2**30:.1f} GiB is free; ask for a smaller --scale or --target")
