"""Evaluation reports: the markdown table, the quality-vs-NFE plot, and JSON without Infinity or NaN."""
from __future__ import annotations

import io
import json
import math

MARKERS = "osD^vPX*"  # one per plot line, so that lines on the same points stay visible


def finite(value):
    """value with every non-finite float (an infinite PSNR of identical images, a nan) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def json_text(document, *, indent: int | None = None) -> str:
    """Strict JSON (no Infinity or NaN, which JSON does not have): non-finite numbers are written as null."""
    return json.dumps(finite(document), indent=indent, allow_nan=False)


def format_value(name: str, value: float | None, *, psnr_decimals: int = 2) -> str:
    """PSNR with psnr_decimals decimals (inf for identical images), seconds with 2, other metrics with 4, '-' for
    a missing value."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    decimals = {"psnr": psnr_decimals, "seconds": 2}.get(name, 4)
    return f"{value:.{decimals}f}"


def markdown_table(rows: list[dict], metrics: list[str], *, title: str, notes: list[str]) -> str:
    """Markdown: a title, note lines, then one table row per result row (a '-' where a setting does not apply)."""
    from ..metrics import metric_info

    heads = [f"{name.upper()} {'↓' if metric_info(name).lower_is_better else '↑'}" for name in metrics]
    lines = [f"# {title}", "", *notes, "",
             "| set | method | steps | order | samples | NFE | " + " | ".join(heads) + " | s/image |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(metrics) + "---:|"]
    for row in rows:
        settings = ["-" if row[key] is None else str(row[key]) for key in ("steps", "order", "samples")]
        nfe = "-" if row["nfe"] is None else row["nfe"] if isinstance(row["nfe"], int) else f"{row['nfe']:.1f}"
        cells = [row["set"], f"`{row['method']}`", *settings, str(nfe),
                 *(format_value(name, row[name]) for name in metrics), format_value("seconds", row["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def line_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows of one set grouped into plot lines: one per method spec, split by order and samples where those vary."""
    varies = {}
    for key in ("order", "samples"):
        for spec in {row["method"] for row in rows}:
            varies[spec, key] = len({row[key] for row in rows if row["method"] == spec}) > 1
    groups: dict[str, list[dict]] = {}
    for row in rows:
        label = row["method"]
        if varies[row["method"], "order"]:
            label += f" order {row['order']}"
        if varies[row["method"], "samples"]:
            label += f" {row['samples']} samples"
        groups.setdefault(label, []).append(row)
    return groups


def quality_vs_nfe_png(rows: list[dict], metrics: list[str]) -> bytes:
    """PNG: a subplot per set (rows) and metric (columns), NFE on a log axis; NFE-0 rows (bicubic) as dashed levels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    sets = list(dict.fromkeys(row["set"] for row in rows))
    figure, axes = plt.subplots(len(sets), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(sets)), squeeze=False,
                                layout="constrained")
    for set_axes, set_name in zip(axes, sets):
        groups = line_groups([row for row in rows if row["set"] == set_name])
        ticks = sorted({row["nfe"] for group in groups.values() for row in group if row["nfe"] > 0})
        for axis, metric in zip(set_axes, metrics):
            for index, (label, group) in enumerate(groups.items()):
                color = f"C{index % 10}"
                if all(row["nfe"] == 0 for row in group):
                    axis.axhline(group[0][metric], linestyle="--", color=color, label=f"{label} (NFE 0)")
                    continue
                group = sorted(group, key=lambda row: row["nfe"])
                axis.plot([row["nfe"] for row in group], [row[metric] for row in group], linestyle="-",
                          marker=MARKERS[index % len(MARKERS)], markersize=9 - 1.5 * (index % 3), color=color,
                          label=label)
            axis.set_xscale("log")
            if ticks:
                axis.set_xticks(ticks)
            axis.xaxis.set_major_formatter(ScalarFormatter())
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_xlabel("NFE (network calls per image)")
            axis.set_ylabel(metric.upper())
            axis.set_title(f"{set_name}: {metric.upper()}")
            axis.grid(True, which="both", alpha=0.3)
        set_axes[0].legend(fontsize="small")
    return figure_png(figure)


def figure_png(figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
