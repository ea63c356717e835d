import math

import pytest
import torch
import torch.nn.functional as F

from shiftsr.denoisers import TiledDenoiser, auto_tile_size


def _affine(x, t, cond):
    """Pointwise, position-independent denoiser that also uses t and a Tensor cond."""
    return x * 0.5 + 0.25 + t.reshape(-1, 1, 1, 1) * cond


def _blur(x, t, cond):
    """Fixed 3x3 box blur with replicate padding: local and position-independent."""
    kernel = torch.full((x.shape[1], 1, 3, 3), 1 / 9, dtype=x.dtype)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def _add_tile_mean(x, t, cond):
    """Denoiser whose output depends on the tile: adds each sample's mean over the tile."""
    return x + x.mean(dim=(1, 2, 3), keepdim=True)


def _horizontal_grad(x):
    return (x[..., 1:] - x[..., :-1]).abs().max().item()


@pytest.mark.parametrize("size", [(16, 20), (20, 20), (7, 3)])
def test_one_tile_equals_untiled_bit_for_bit(size):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 3, 3, padding=1)
    base = lambda x, t, c: torch.tanh(conv(torch.cat([x, c], 1))) * t.reshape(-1, 1, 1, 1)  # noqa: E731
    x, cond, t = torch.randn(2, 3, *size), torch.randn(2, 3, *size), torch.tensor([0.3, 0.9])
    tiled = TiledDenoiser(base, tile=20, overlap=4)
    assert torch.equal(tiled(x, t, cond), base(x, t, cond))


@pytest.mark.parametrize("size", [(37, 50), (10, 50), (64, 64)])
@pytest.mark.parametrize("tile_batch", [1, 3, 100])
def test_pointwise_denoiser_is_unchanged_by_tiling(size, tile_batch):
    gen = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 3, *size, generator=gen), torch.randn(2, 3, *size, generator=gen)
    t = torch.tensor([0.5, 2.0])
    tiled = TiledDenoiser(_affine, tile=16, overlap=5, tile_batch=tile_batch)
    torch.testing.assert_close(tiled(x, t, cond), _affine(x, t, cond), atol=1e-6, rtol=0)


def test_smooth_image_with_affine_denoiser_is_identical():
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(52.0), indexing="ij")
    x = (0.02 * cols + torch.sin(rows / 7)).expand(1, 3, 40, 52)
    zero = torch.zeros_like(x)
    out = TiledDenoiser(_affine, tile=16, overlap=6)(x, torch.ones(1), zero)
    torch.testing.assert_close(out, x * 0.5 + 0.25, atol=1e-6, rtol=0)


def test_blur_is_exact_away_from_tile_edges_and_bounded_on_them():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 50, 50, dtype=torch.float64)
    overlap = 8
    out = TiledDenoiser(_blur, tile=16, overlap=overlap)(x, torch.ones(1), None)
    reference = _blur(x, None, None)
    # Tiles start at 0, 8, ..., 32 and the last one is flush at 34; the blur is wrong only on
    # the outermost row/column of each tile edge that is not an image border.
    starts = [0, 8, 16, 24, 32, 34]
    edges = {s for s in starts if s > 0} | {s + 15 for s in starts if s + 16 < 50}
    contaminated = torch.zeros(50, 50, dtype=torch.bool)
    for e in edges:
        contaminated[e, :] = True
        contaminated[:, e] = True
    diff = (out - reference).abs()[0].amax(0)
    assert diff[~contaminated].max() < 1e-6
    tile_error = max(
        (_blur(x[..., y : y + 16, s : s + 16], None, None) - reference[..., y : y + 16, s : s + 16]).abs().max()
        for y in starts
        for s in starts
    )
    # A tile's outermost pixel has window weight sin^2(pi / (2 (overlap + 1))) next to a neighbour
    # weighing at least 1 minus that, so each axis contributes at most that share of a tile's error.
    edge_share = math.sin(0.5 * math.pi / (overlap + 1)) ** 2
    assert 1e-3 < diff[contaminated].max() <= 2 * edge_share * tile_error


def test_tile_dependent_denoiser_has_no_seam():
    x = (0.01 * torch.arange(64.0)).expand(2, 3, 32, 64).clone()
    x[1] *= -2
    untiled = _add_tile_mean(x, None, None)
    overlap, stride = 8, 8
    mean_step = 2 * 0.01 * stride  # neighbouring tile means differ by slope * stride (sample 1 has slope -0.02)
    smooth = TiledDenoiser(_add_tile_mean, tile=16, overlap=overlap)(x, torch.ones(2), None)
    assert _horizontal_grad(smooth) <= _horizontal_grad(untiled) + mean_step * math.pi / (overlap + 1)
    hard = TiledDenoiser(_add_tile_mean, tile=16, overlap=0)(x, torch.ones(2), None)
    assert _horizontal_grad(hard) >= _horizontal_grad(untiled) + 0.99 * 2 * 0.01 * 16


def test_tile_batch_does_not_change_result():
    x = torch.randn(3, 3, 45, 38, generator=torch.Generator().manual_seed(0))
    t = torch.ones(3)
    outs = [TiledDenoiser(_add_tile_mean, tile=16, overlap=4, tile_batch=k)(x, t, None) for k in (1, 4, 100)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_dict_and_tuple_cond_are_split_or_repeated():
    gen = torch.Generator().manual_seed(0)
    x, image = torch.randn(2, 3, 30, 40, generator=gen), torch.randn(2, 3, 30, 40, generator=gen)
    embedding = torch.randn(2, 5, generator=gen)

    def base(x_t, t, cond):
        assert cond["name"] == "lr"
        return x_t + cond["image"] * cond["embedding"].sum(1).reshape(-1, 1, 1, 1)

    cond = {"image": image, "embedding": embedding, "name": "lr"}
    tiled = TiledDenoiser(base, tile=16, overlap=4, tile_batch=2)
    torch.testing.assert_close(tiled(x, torch.ones(2), cond), base(x, None, cond), atol=1e-6, rtol=0)

    def tuple_base(x_t, t, cond):
        return x_t * cond[0] + cond[1]

    pair = (image, embedding[:, :1, None, None].expand(2, 3, 30, 40))
    tuple_tiled = TiledDenoiser(tuple_base, tile=16, overlap=4, tile_batch=2)
    torch.testing.assert_close(tuple_tiled(x, torch.ones(2), pair), tuple_base(x, None, pair), atol=1e-6, rtol=0)


def test_cond_that_cannot_be_tiled_is_an_error():
    tiled, x = TiledDenoiser(_affine, tile=16, overlap=4), torch.randn(2, 3, 30, 40)
    with pytest.raises(ValueError, match="15x20 cannot be tiled with x_t of size 30x40"):
        tiled(x, torch.ones(2), torch.randn(2, 3, 15, 20))
    with pytest.raises(ValueError, match="batch size 2"):
        tiled(x, torch.ones(2), torch.randn(1, 5))


def test_constructor_errors():
    with pytest.raises(ValueError, match="0 <= overlap < tile=16"):
        TiledDenoiser(_affine, tile=16, overlap=16)
    with pytest.raises(ValueError, match="auto_tile_size"):
        TiledDenoiser(_affine, tile=0, overlap=0)
    with pytest.raises(ValueError, match="tile_batch"):
        TiledDenoiser(_affine, tile=16, overlap=0, tile_batch=0)


def test_auto_tile_size_rule():
    assert auto_tile_size(height=40, width=60, channels=4, budget=4 * 40 * 60) == 60
    assert auto_tile_size(height=100, width=100, channels=3, budget=3 * 64 * 64) == 64
    assert auto_tile_size(height=100, width=100, channels=3, budget=3 * 70 * 70) == 64
    assert auto_tile_size(height=100, width=100, channels=3, batch=2, budget=2 * 3 * 72 * 72, multiple=16) == 64
    with pytest.raises(ValueError, match="need at least 192"):
        auto_tile_size(height=100, width=100, channels=3, budget=100)
