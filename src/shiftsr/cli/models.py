"""`shiftsr models`: the presets and bundled models with their scale, default sampler and start time."""
from __future__ import annotations

import click


@click.command()
def models() -> None:
    """List the presets and the bundled models: scale, default sampler and where the chain starts at that scale."""
    from ..bundle import bundled_models
    from ..pipeline import load
    from ..presets import presets

    rows = []
    for name, kind, notes in [*((n, "model", None) for n in bundled_models()),
                              *((p.name, f"preset: {p.model}", p.description) for p in presets().values())]:
        pipe = load(name, device="cpu")
        plan = pipe.plan((64, 64))  # the native scale: the start time does not depend on the size there
        start = "per image" if plan.t_start is None else f"{plan.t_start:g}"
        rows.append((name, kind, f"x{pipe.scale}", plan.method, str(plan.steps),
                     "-" if plan.order is None else str(plan.order), str(plan.samples), start,
                     notes or f"LR -> {pipe.settings.preprocessor}"))
    if not rows:
        click.echo("no bundled models; pass a model folder with --model PATH")
        return
    table = [("name", "kind", "scale", "method", "steps", "order", "samples", "t_start", "notes"), *rows]
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("".join(cell.ljust(width) for cell, width in zip(row, widths)) + row[-1])
