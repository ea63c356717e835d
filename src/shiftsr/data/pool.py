"""A fixed pool of degraded, preprocessed training pairs, for preprocessors too slow to run at every step on a CPU."""
from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] float images to uint8, rounding as an 8-bit image file would."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def cut_crops(hr: Tensor, xh: Tensor, *, patch: int, count: int, step: int,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """count random patch x patch crops of each region, the same place in hr and xh, at multiples of step (the
    scale, so a crop starts on an LR pixel)."""
    hrs, xhs = [], []
    for region_hr, region_xh in zip(hr, xh):
        for _ in range(count):
            top, left = (int(torch.randint((side - patch) // step + 1, (1,), generator=generator)) * step
                         for side in region_hr.shape[-2:])
            hrs.append(region_hr[:, top:top + patch, left:left + patch])
            xhs.append(region_xh[:, top:top + patch, left:left + patch])
    return torch.stack(hrs), torch.stack(xhs)


@torch.no_grad()
def build_pool(stream: Iterator[tuple[Tensor, Tensor]], preprocess: Callable[[Tensor], Tensor], *,
               count: int, patch: int | None = None, crops_per_region: int = 1, scale: int = 1,
               seed: int = 0) -> dict[str, Tensor]:
    """Draw count (hr, lr) pairs from the stream and keep (hr, preprocess(lr)) as uint8 tensors.

    patch: the stream yields regions larger than the training patch; each region's LR is preprocessed whole and
    crops_per_region patches are cut from it, so a patch's preprocessed image has the context it has in a whole
    photo (a preprocessor run on the patch alone sees borders a photo does not have there)."""
    generator = torch.Generator().manual_seed(seed)
    hrs, xhs, total = [], [], 0
    with tqdm(total=count, desc="pool") as bar:
        while total < count:
            hr, lr = next(stream)
            xh = preprocess(lr)
            if patch is not None:
                hr, xh = cut_crops(hr, xh, patch=patch, count=crops_per_region, step=scale, generator=generator)
            hrs.append(to_uint8(hr))
            xhs.append(to_uint8(xh))
            total += len(hr)
            bar.update(len(hr))
    return {"hr": torch.cat(hrs)[:count], "xh": torch.cat(xhs)[:count]}


def save_pool(path: str | Path, pool: dict[str, Tensor]) -> None:
    """Write the pool as safetensors, atomically (a temporary file, then a rename)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    save_file(pool, str(partial))
    os.replace(partial, path)


def load_pool(path: str | Path) -> dict[str, Tensor]:
    """Read a pool written by save_pool, checking it holds matching hr and xh stacks."""
    try:
        pool = load_file(str(path))
    except Exception as error:
        raise ValueError(f"{path}: not a readable pair pool ({error})") from error
    if set(pool) != {"hr", "xh"} or pool["hr"].shape != pool["xh"].shape or pool["hr"].dtype != torch.uint8:
        raise ValueError(f"{path}: a pair pool holds uint8 'hr' and 'xh' stacks of one shape")
    return pool


def load_pool_parts(pattern: str | Path) -> dict[str, Tensor]:
    """One pool from a file or from every file a glob matches (the parts of a pool made in several runs), in
    sorted order; ValueError naming the pattern when nothing matches."""
    paths = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
    if not paths:
        raise ValueError(f"{pattern}: no pool file matches")
    parts = [load_pool(path) for path in paths]
    return {key: torch.cat([part[key] for part in parts]) for key in ("hr", "xh")}


class PoolPairs:
    """Endless (hr, xh) batches in [0, 1] drawn from a pool with the 8 dihedral transforms."""

    def __init__(self, pool: dict[str, Tensor], *, batch: int, seed: int = 0):
        self.pool, self.batch = pool, batch
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            index = torch.randint(len(self.pool["hr"]), (self.batch,), generator=self.generator)
            pair = torch.stack([self.pool["hr"][index], self.pool["xh"][index]]).float() / 255
            flips = torch.randint(2, (self.batch,), generator=self.generator)
            turns = torch.randint(4, (self.batch,), generator=self.generator)
            out = torch.stack([torch.rot90(p.flip(-1) if f else p, int(k), dims=(-2, -1))
                               for p, f, k in zip(pair.unbind(1), flips, turns)], dim=1)
            yield out[0], out[1]


def main(argv: list[str] | None = None) -> None:
    """python -m shiftsr.data.pool --data DIR --preset realesrgan --preprocessor realesrgan_x4plus -o POOL.

    --val-images N leaves out the N images a recipe with data.val_images N validates on (the same split), so
    that no pool part holds a crop of them; parts made with different --seed values join through a glob.
    """
    from ..training.validation import split_held_out
    from .degradations import load_preset
    from .pairs import load_training_images
    from .real_pairs import RealPairs
    from ..preprocess import build_preprocessor

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", nargs="+", default=["../shared/data/train"])
    parser.add_argument("--preset", default="realesrgan")
    parser.add_argument("--preprocessor", default="realesrgan_x4plus")
    parser.add_argument("--count", type=int, default=1024)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--region", type=int, default=0,
                        help="degrade and preprocess regions of this side, then cut the patches from them (0: the "
                             "patches alone)")
    parser.add_argument("--crops-per-region", type=int, default=4)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=0, help="held-out images to leave out (data.val_images)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.output.exists():
        raise SystemExit(f"{args.output}: exists; remove it first")
    if args.region and args.region < args.patch:
        raise SystemExit(f"--region {args.region} is smaller than --patch {args.patch}")
    side = args.region or args.patch
    images = split_held_out(load_training_images(args.data, min_side=args.patch), args.val_images)[0]
    images = [image for image in images if min(image.shape[-2:]) >= side]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    regions = args.region > 0
    stream = iter(RealPairs(images, patch=side, scale=args.scale, batch=2 if regions else 8, seed=args.seed,
                            config=load_preset(args.preset)))
    pool = build_pool(stream, build_preprocessor(args.preprocessor, "cpu"), count=args.count,
                      patch=args.patch if regions else None, crops_per_region=args.crops_per_region,
                      scale=args.scale, seed=args.seed)
    save_pool(args.output, pool)
    print(args.output)


if __name__ == "__main__":
    main()
