"""`shiftsr search-bc`: search an optimal boundary condition (BCSR) of a model's sampler on reference HR/LR pairs."""

from __future__ import annotations

from pathlib import Path

import click

SEARCH_BC_EPILOG = """Candidate k is the standard-normal noise drawn by a generator seeded with --seed + k
(a deterministic method: noise-injection, resshift-ode, dossr-ode, ddim, dpmpp-2m) or, for a
stochastic method (dossr, resshift, ddpm), the sampling seed --seed + k itself. Each candidate
upscales all reference LR images (matched to HR images by file stem, centre-cropped to --patch HR
pixels) and is scored by the mean --metric against the HR images; the best is kept. The output
(safetensors) is rewritten atomically after every candidate; --resume continues it. Give it to
`shiftsr upscale --bc FILE`: a noise applies to images of any size (extended periodically).
Exit status: 0 done, 1 a file problem, 2 bad usage.

\b
Examples:
  shiftsr search-bc -m prior-x4 --hr refs/HR --lr refs/LR --patch 128 -o prior_bc.safetensors
  shiftsr search-bc -m resshift-x4 --method resshift-ode --hr refs/HR --lr refs/LR \\
      --patch 128 --candidates 64 -o bc.safetensors --resume
"""


@click.command(name="search-bc", epilog=SEARCH_BC_EPILOG)
@click.option("-m", "--model", default="default", show_default=True, help="Bundled model name or model folder.")
@click.option("--method", show_default="the model's", help="Sampling method the boundary condition is for.")
@click.option("--steps", type=click.IntRange(min=1), show_default="the model's", help="Sampling steps.")
@click.option("--order", type=click.IntRange(1, 3), show_default="the model's",
              help="Solver order (stochastic methods only).")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples averaged per output (stochastic methods only).")
@click.option("--hr", "hr_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of reference HR images.")
@click.option("--lr", "lr_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of their LR images, same file stems.")
@click.option("--candidates", type=click.IntRange(min=1), default=32, show_default=True,
              help="Number of candidate noises (or seeds) K.")
@click.option("--metric", default="stlpips", show_default=True,
              help="Per-image full-reference metric to optimise (its own direction: lower or higher is better).")
@click.option("--patch", type=click.IntRange(min=0), default=0, show_default=True,
              help="Centred HR crop side (a multiple of the scale); 0 = images as they are (all one size).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of candidate 0.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .safetensors file; refused if it exists, unless --resume.")
@click.option("--resume", is_flag=True, help="Continue the search recorded in --output, skipping candidates done.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def search_bc(model: str, method: str | None, steps: int | None, order: int | None, samples: int, hr_dir: Path,
              lr_dir: Path, candidates: int, metric: str, patch: int, seed: int, output: Path, resume: bool,
              device: str, quiet: bool) -> None:
    """Search the starting noise (or seed) that scores best on reference pairs and store it (BCSR)."""
    from ..metrics import create, metric_info
    from .common import fail, resolve_device

    try:
        info = metric_info(metric)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--metric") from None
    if not (info.full_reference and info.per_image):
        raise click.BadParameter(f"{info.name} is not a per-image full-reference metric", param_hint="--metric")
    if output.exists() and not resume:
        raise click.ClickException(f"{output}: already exists; pass --resume to continue its search")
    if not output.parent.is_dir():
        raise click.ClickException(f"{output.parent}: no such folder for the output")
    device = resolve_device(device)

    from ..boundary import reference_pairs, search_boundary
    from ..pipeline import load

    try:
        pipe = load(model, device=device)
    except (FileNotFoundError, ValueError) as error:  # a broken model folder: one line naming its file and key
        fail(str(error))
    if method is not None and method not in pipe.methods:
        raise click.BadParameter(f"{method!r} is not a method of this model; allowed: {', '.join(pipe.methods)}",
                                 param_hint="--method")
    try:
        hr, lr, names = reference_pairs(hr_dir, lr_dir, scale=pipe.scale, patch=patch)
        scorer = create(info.name, device=device)
        bc = search_boundary(pipe, lr, hr, scorer, method=method, steps=steps, order=order, samples=samples,
                             candidates=candidates, seed=seed, path=output, resume=resume, progress=not quiet,
                             info={"model": model, "references": names, "patch": patch})
    except (FileNotFoundError, FileExistsError, ImportError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if not quiet:
        scores = bc.meta["scores"]
        click.echo(f"{output}: best {bc.kind} (seed {bc.seed}) {info.name} {bc.score:.4f}; candidates "
                   f"mean {sum(scores) / len(scores):.4f}, min {min(scores):.4f}, max {max(scores):.4f} "
                   f"over {len(names)} references")
