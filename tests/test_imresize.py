import math
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from shiftsr.ops.imresize import bicubic_degrade, contributions, imresize, modcrop

BENCHMARK = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark" / "Set5" / "x4"


def _keys_cubic(t):
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _mirror(j, n):
    """1-based index folded into 1..n with the edge pixel repeated (MATLAB padarray 'symmetric')."""
    while not 1 <= j <= n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def _reference_taps(n_in, n_out, s):
    """For each output sample, a list of (0-based input index, weight), computed one tap at a time."""
    width = 4 / s if s < 1 else 4
    taps = []
    for i in range(1, n_out + 1):
        u = i / s + 0.5 * (1 - 1 / s)
        first = math.floor(u - width / 2)
        raw = []
        for j in range(first, first + math.ceil(width) + 2):
            w = s * _keys_cubic(s * (u - j)) if s < 1 else _keys_cubic(u - j)
            raw.append((_mirror(j, n_in) - 1, w))
        total = sum(w for _, w in raw)
        taps.append([(j, w / total) for j, w in raw])
    return taps


def _reference_imresize(image, s):
    """Slow 2-D MATLAB bicubic imresize of a 2-D numpy array by scale s, one output pixel at a time."""
    h, w = image.shape
    rows, cols = _reference_taps(h, math.ceil(h * s), s), _reference_taps(w, math.ceil(w * s), s)
    out = np.zeros((len(rows), len(cols)))
    for p, row_taps in enumerate(rows):
        for q, col_taps in enumerate(cols):
            out[p, q] = sum(wr * wc * image[j, k] for j, wr in row_taps for k, wc in col_taps)
    return out


def _dense_matrix(n_in, n_out, s):
    """The n_out x n_in resampling matrix of one axis, summed from the loop reference's taps."""
    matrix = np.zeros((n_out, n_in))
    for i, row_taps in enumerate(_reference_taps(n_in, n_out, s)):
        for j, w in row_taps:
            matrix[i, j] += w
    return matrix


class _PeakTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages that torch ops create while active, and their peak while alive."""

    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak = {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.live:
                storage = t.untyped_storage()
                self.live[storage.data_ptr()] = storage.nbytes()
                self.now += storage.nbytes()
                self.peak = max(self.peak, self.now)
                weakref.finalize(storage, self._free, storage.data_ptr())
        return out

    def _free(self, key):
        self.now -= self.live.pop(key)


def test_constant_image_stays_constant():
    x = torch.full((2, 3, 10, 13), 0.37, dtype=torch.float64)
    for out in (imresize(x, scale=1 / 3), imresize(x, scale=2.5), imresize(x, size=(7, 29))):
        assert torch.allclose(out, torch.full_like(out, 0.37), atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 3.0])
def test_matches_loop_reference(scale):
    image = np.random.default_rng(1).random((9, 8))
    expected = _reference_imresize(image, scale)
    out = imresize(torch.from_numpy(image)[None], scale=scale)[0].numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_known_values_of_the_matlab_formula():
    # imresize([1 2 3 4], 0.5): output 1 sits at u = 1.5 with normalised weights cubic(k/2 - 0.25)/2 over
    # mirrored pixels [3 2 1 1 2 3 4 4], giving 1.4609375; output 2 is 5 minus it by symmetry.
    row = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=torch.float64)
    assert imresize(row, scale=0.5).flatten().tolist() == [1.4609375, 3.5390625]
    # imresize([1 2 3 4], 2): u = i/2 + 1/4, taps weighted by cubic at 0.25/0.75/1.25/1.75 (0.8671875,
    # 0.2265625, -0.0703125, -0.0234375); values worked out by hand from those weights.
    expected = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375]
    up = imresize(row, scale=2)
    assert up.shape == (1, 2, 8)  # the single row becomes two identical rows
    for line in up[0]:
        assert line.tolist() == pytest.approx(expected, abs=1e-14)


def test_output_sizes_and_upscaling_a_linear_ramp():
    x = torch.rand(3, 5, 7)
    assert imresize(x, scale=4).shape == (3, 20, 28)
    assert imresize(torch.rand(1, 10, 11), scale=1 / 3).shape == (1, 4, 4)  # ceil(3.33), ceil(3.67)
    assert imresize(x, size=(9, 13)).shape == (3, 9, 13)
    # Keys' cubic reproduces linear functions, so away from the borders a ramp stays a ramp.
    ramp = torch.arange(12, dtype=torch.float64).expand(1, 6, 12)
    up = imresize(ramp, scale=4)
    centres = (torch.arange(48, dtype=torch.float64) + 0.5) / 4 - 0.5
    assert torch.allclose(up[0, 8:16, 8:40], centres[8:40].expand(8, 32), atol=1e-12)


def test_batch_equals_singles_and_dtype_is_kept():
    batch = torch.rand(3, 2, 12, 10)
    out = imresize(batch, scale=1 / 4)
    assert out.dtype == torch.float32
    for i in range(3):
        assert torch.allclose(out[i], imresize(batch[i], scale=1 / 4), atol=1e-6)
    assert imresize(batch.double(), size=(5, 6)).dtype == torch.float64


def test_bicubic_degrade_crops_to_a_multiple_of_the_scale():
    hr = torch.rand(3, 18, 21)
    assert modcrop(hr, 4).shape == (3, 16, 20)
    lr = bicubic_degrade(hr, 4)
    assert lr.shape == (3, 4, 5)
    assert torch.allclose(lr, imresize(hr[:, :16, :20], scale=1 / 4), atol=1e-6)


def test_bad_arguments_are_rejected():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x, scale=2, size=(4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x)
    with pytest.raises(ValueError, match="float tensor"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), scale=2)
    with pytest.raises(ValueError, match="positive"):
        imresize(x, scale=0)
    with pytest.raises(ValueError, match="two positive ints"):
        imresize(x, size=(4, 0))
    with pytest.raises(ValueError, match="positive int"):
        bicubic_degrade(x, 2.5)


@pytest.mark.skipif(not (BENCHMARK / "HR").is_dir(), reason="benchmark data not present")
def test_reproduces_stored_set5_x4_lr():
    within, total = 0, 0
    for hr_path in sorted((BENCHMARK / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path).convert("RGB"), dtype=np.float32) / 255
        stored = np.asarray(Image.open(BENCHMARK / "LR" / hr_path.name).convert("RGB")).astype(np.int64)
        lr = bicubic_degrade(torch.from_numpy(hr).permute(2, 0, 1), 4)
        ours = (lr * 255).round().clamp(0, 255).permute(1, 2, 0).long().numpy()
        assert ours.shape == stored.shape
        within += int((np.abs(ours - stored) <= 1).sum())
        total += ours.size
    assert within / total > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_banded_weights_equal_the_dense_matrices(dtype):
    generator = torch.Generator().manual_seed(0)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    for h, w in [(1, 1), (1, 6), (5, 3), (7, 8), (12, 11)]:
        batch = torch.rand(2, 3, h, w, generator=generator, dtype=dtype)
        requests = [({"scale": s}, (math.ceil(h * s), math.ceil(w * s)), (s, s))
                    for s in (0.2, 1 / 4, 1 / 3, 0.5, 0.8, 1.0, 1.7, 2, 3, 4)]
        requests += [({"size": size}, size, (size[0] / h, size[1] / w)) for size in [(1, 1), (2 * h + 1, w + 3), (3, 9)]]
        for kwargs, (out_h, out_w), (s_h, s_w) in requests:
            rows = torch.from_numpy(_dense_matrix(h, out_h, s_h)).to(dtype)
            cols = torch.from_numpy(_dense_matrix(w, out_w, s_w)).to(dtype)
            expected = rows @ batch @ cols.T
            torch.testing.assert_close(imresize(batch, **kwargs), expected, atol=tolerance, rtol=0)
            torch.testing.assert_close(imresize(batch[1], **kwargs), expected[1], atol=tolerance, rtol=0)


def test_contributions_are_out_by_taps_and_inside_the_image():
    for n_in, n_out, s in [(10, 40, 4.0), (40, 10, 0.25), (9, 3, 1 / 3), (7, 7, 1.0)]:
        index, weights = contributions(n_in, n_out, s)
        taps = math.ceil(4 * max(1, 1 / s)) + 2
        assert index.shape == weights.shape == (n_out, taps)
        assert 0 <= index.min() and index.max() < n_in
        assert torch.allclose(weights.sum(dim=1), torch.ones(n_out, dtype=torch.float64), atol=1e-12)


def test_memory_is_linear_in_the_side():
    # A 16 x 12000 image x4 is 64 x 48000 (12.3 MB in float32); dense 48000 x 12000 weights would be 4.6 GB.
    x = torch.rand(1, 16, 12000, generator=torch.Generator().manual_seed(0))
    with _PeakTensorBytes() as counter:
        out = imresize(x, scale=4)
    assert out.shape == (1, 64, 48000)
    assert counter.peak < 64 * 2**20
    torch.testing.assert_close(out[:, :, 1000:1008], imresize(x[:, :, 240:262], scale=4)[:, :, 40:48], atol=1e-6, rtol=0)
