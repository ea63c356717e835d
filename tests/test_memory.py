"""Peak memory of whole upscales, measured in a child process (slow: they run the bundled model on large images)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def test_a_16x12000_png_upscales_under_1_gb(tmp_path):
    """Memory linear in the image side: imresize's banded weights, no dense out x in matrices."""
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 12000, 3), dtype=np.uint8)).save(path)
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "shiftsr", "upscale", str(path), "-o", str(tmp_path / "out"),
                                  "--steps", "1", "--samples", "1", "-q"], stderr=stderr)
        # this child's own peak: RUSAGE_CHILDREN would also hold the largest child any earlier test waited for
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        assert child.returncode == 0, stderr.read()
    peak_kib = usage.ru_maxrss
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert Image.open(tmp_path / "out" / "wide_out.png").size == (48000, 64)
