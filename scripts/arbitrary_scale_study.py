"""Non-native scales: x4 models at x2 and x3, and the prior's noise injection, on Set5 and Set14.

    OMP_NUM_THREADS=1 python scripts/arbitrary_scale_study.py          # about 30 minutes on one CPU thread

Writes docs/arbitrary_scale.md and the raw numbers beside it (docs/arbitrary_scale.json). Every row upscales
the benchmark LR (MATLAB bicubic, ../shared/data/benchmark/{set}/x{s}) to the HR size with seed 0 and is
scored by PSNR-Y (BT.601, border = scale) and ST-LPIPS (alex), through the evaluation engine (shiftsr.eval). The noise-level section reads the prior's
calibration table (src/shiftsr/weights/prior-x4/noise_levels.json, measured on training crops by
scripts/calibrate_noise.py); nothing here is tuned on the benchmark.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from shiftsr.bundle import resolve_model
from shiftsr.eval import (benchmark_pairs, bicubic_upscaler, create_metrics, evaluate, json_text, mean, metric_infos,
                          model_upscaler, summarise)
from shiftsr.files import write_atomic
from shiftsr.pipeline import DEFAULT_STRATEGY, load
from shiftsr.processes import NOISE_TABLE_FILE, recoverable_time

# (label, model, pipeline keywords); "t1" and "paper" stand for start times resolved per model and scale
ROWS = (
    ("DoSSR `default`, x4 then resize, 1 sample", "default", dict(strategy="resize", samples=1)),
    ("DoSSR `default`, direct (shortened path, KL rule), 1 sample", "default", dict(strategy="direct", samples=1)),
    ("DoSSR `default`, direct from t1 (LR resized to s/4, then x4), 1 sample", "default",
     dict(strategy="direct", samples=1, t_start="t1")),
    ("DoSSR `default`, x4 then resize, mean of 8", "default", dict(strategy="resize", samples=8)),
    ("DoSSR `default`, direct (shortened path, KL rule), mean of 8", "default", dict(strategy="direct", samples=8)),
    ("ResShift `resshift-x4`, x4 then resize", "resshift-x4", dict(strategy="resize")),
    ("ResShift `resshift-x4`, direct (shortened path, KL rule)", "resshift-x4", dict(strategy="direct")),
    ("prior `prior-x4`, noise injection, t from the table (default)", "prior-x4", dict()),
    ("prior `prior-x4`, noise injection, t from the paper's fractions", "prior-x4", dict(t_start="paper")),
)


def resolve_start(pipe, value, scale: int):
    """A row's t_start: a number, the model's t1, or the paper's noise-injection time at this scale."""
    if value == "t1":
        return pipe.process.t1
    if value == "paper":
        return recoverable_time(pipe.process, scale)
    return value


def run(args) -> dict:
    """Every row on every set and scale through the evaluation engine; bicubic first."""
    pipes = {model: load(model, device="cpu") for model in dict.fromkeys(model for _, model, _ in ROWS)}
    labels = ["MATLAB bicubic", *(label for label, _, _ in ROWS)]
    results: dict = {"rows": labels, "scores": {}}
    for scale in args.scales:
        metrics = create_metrics(metric_infos(["psnr", "stlpips"]), crop_border=scale)
        upscalers = [bicubic_upscaler(scale=scale)]
        for label, model, keywords in ROWS:
            start = resolve_start(pipes[model], keywords.get("t_start"), scale)
            upscalers.append(model_upscaler(pipes[model], label, seed=0, scale=scale,
                                            **{**keywords, "t_start": start}))
        for name in args.sets:
            cell = results["scores"].setdefault(f"x{scale}", {}).setdefault(name, {})
            outputs = evaluate(benchmark_pairs(args.root, name, scale), upscalers, metrics, desc=f"x{scale} {name}")
            for label, upscaler, images in zip(labels, upscalers, outputs):
                row = summarise(name, upscaler, images, ["psnr", "stlpips-alex"])
                cell[label] = {"psnr_y": row["psnr"], "stlpips": row["stlpips-alex"], "seconds": row["seconds"]}
                print(f"x{scale} {name} {label}: {json.dumps(cell[label])}", flush=True)
    return results


def noise_section(model: str) -> list[str]:
    """The calibration table of the prior as markdown, with the paper's and the KL rule's times beside it."""
    table = json.loads((resolve_model(model) / NOISE_TABLE_FILE).read_text())
    measured = table["measured"]
    grid = measured["grid"]
    lines = ["| scale | best t (ST-LPIPS) | table t | paper t | KL rule t (mean) | ST-LPIPS at best / at t = 0 "
             "(bicubic) | PSNR-Y at best / at t = 0 |", "|---|---|---|---|---|---|---|"]
    for i, scale in enumerate(table["scales"]):
        best = grid.index(int(table["best_t"][i]))
        lpips, psnr = measured["stlpips_alex"][i], measured["psnr_y"][i]
        lines.append(f"| x{scale:g} | {table['best_t'][i]:g} | {table['t_start'][i]:g} | "
                     f"{measured['paper_t'][i]:.0f} | {measured['kl_rule_t'][i]:.0f} | "
                     f"{lpips[best]:.3f} / {lpips[0]:.3f} | {psnr[best]:.2f} / {psnr[0]:.2f} |")
    rising = all(b >= a for a, b in zip(table["best_t"], table["best_t"][1:]))
    strictly = [s for s, t in zip(table["scales"], table["best_t"]) if t > 0]
    lines += ["", f"Images: {', '.join(measured['images'])} ({measured['crop']} px centre crops; "
              f"{measured['degradation']}; {measured['sampler']}). Grid of t: {', '.join(map(str, grid))}.",
              f"Reproduce: `{measured['command']}`.", "",
              f"Does the best level grow with the scale? {'Yes, it never falls' if rising else 'No'}: best t "
              + ", ".join(f"{t:g} at x{s:g}" for s, t in zip(table["scales"], table["best_t"]))
              + (f". It is above zero from x{strictly[0]:g} on; below that no injected noise beats the bicubic "
                 "upscale itself." if strictly and strictly[0] != table["scales"][0] else ".")]
    return lines


def write_markdown(results: dict, args) -> None:
    """docs/arbitrary_scale.md from the results (and the JSON beside it)."""
    lines = ["# Arbitrary scales: x4 models at other scales, and noise injection", "",
             "Generated by `scripts/arbitrary_scale_study.py`. Benchmark LR = MATLAB bicubic; PSNR-Y (BT.601, "
             "border = scale) / ST-LPIPS (alex, lower is better); seed 0; seconds per image on one CPU thread of a "
             "shared 2-core machine (indicative: other jobs ran beside it).", "",
             "## Sizes", "",
             "`pipe(lr, scale=2.7)` gives round(2.7 h) x round(2.7 w), halves rounded up; `pipe(lr, target=(W, H))` "
             "(width first, as in `--target 1920x1080` and PIL's `Image.size`) gives the largest size with the "
             "LR's aspect ratio inside the W x H box: the limiting side exactly, the other side its exact value "
             "rounded half up (so never outside the box). Sizes that are not multiples of the codec factor are "
             "mirror-padded at the bottom and right before encoding and cropped after decoding.", "",
             "## Strategies", "",
             "- **x4 then resize** (`strategy=\"resize\"`): sample at the native x4 size, MATLAB-bicubic resize "
             "to the size asked. If the world holds a 4x image X with LR = down4(X) and HR = down(4/s)(X), the "
             "resized samples are exactly samples of the posterior of HR given LR: the pushforward of the x4 "
             "posterior. It costs (4 / s)^2 times the pixels of the output.",
             "- **direct** (`strategy=\"direct\"`): sample at the size asked. The conditional model gets the input "
             "it was trained on, the bicubic x4 of the target-size estimate's own downscale by 4 (so its LR is "
             "the real LR downscaled by s/4: information lost for s < 4), and the chain starts at t from the "
             "forward marginal around the estimate (the LR bicubic-resized to the target): x_t = a est + b xh + "
             "s eps (SDEdit / CCDF). t is the smallest time whose noise drowns the estimate's estimated lost "
             "energy (KL <= 0.01 nats per pixel, MATH.md Sec. 4). Started at t1 instead it is plain DoSSR on "
             "the LR resized to s/4.",
             "- **noise injection** (the prior, always direct): Diff-SR; t from the prior's measured table.", ""]
    for scale, sets in results["scores"].items():
        names = list(sets)
        lines += [f"## {scale}", "", "| method | " + " | ".join(f"{n} PSNR-Y / ST-LPIPS" for n in names)
                  + " | s / image |", "|---" * (len(names) + 2) + "|"]
        for row in results["rows"]:
            cells = " | ".join(f"{sets[n][row]['psnr_y']:.2f} / {sets[n][row]['stlpips']:.3f}" for n in names)
            seconds = mean([sets[n][row]["seconds"] for n in names])
            lines.append(f"| {row} | {cells} | {seconds:.2f} |")
        lines.append("")
    lines += ["## Verdict", "", verdict(results), "", "## Noise injection: the injected level per scale", "",
              "Measured on training crops (never the benchmark) by `scripts/calibrate_noise.py` and stored in "
              "`src/shiftsr/weights/prior-x4/noise_levels.json`, which the pipeline uses by default (linear in "
              "log(scale) between the measured scales, from (x1, t = 0); beyond x8 the KL rule). t in process "
              "time, T = 1000 (SD scaled-linear betas).", "", *noise_section("prior-x4"), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, "\n".join(lines))
    write_atomic(args.out.with_suffix(".json"), json_text(results, indent=1) + "\n")


def verdict(results: dict) -> str:
    """Which DoSSR strategy wins each (scale, set, samples) in PSNR-Y and in ST-LPIPS."""
    wins = {"resize": 0, "direct": 0}
    total = 0
    for sets in results["scores"].values():
        for cell in sets.values():
            for samples in ("1 sample", "mean of 8"):
                resize = cell[f"DoSSR `default`, x4 then resize, {samples}"]
                direct = cell[f"DoSSR `default`, direct (shortened path, KL rule), {samples}"]
                for key, lower in (("psnr_y", False), ("stlpips", True)):
                    better_direct = direct[key] < resize[key] if lower else direct[key] > resize[key]
                    wins["direct" if better_direct else "resize"] += 1
                    total += 1
    return (f"Of {total} comparisons (scale x set x samples x metric), x4 then resize wins {wins['resize']} and "
            f"direct wins {wins['direct']}; the pipeline's default for conditional models at non-native scales "
            f"is **{DEFAULT_STRATEGY}** (`shiftsr.pipeline.DEFAULT_STRATEGY`).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/benchmark"))
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--out", type=Path, default=Path("docs/arbitrary_scale.md"))
    parser.add_argument("--rewrite", action="store_true", help="rewrite the markdown from the JSON beside it")
    args = parser.parse_args()
    write_markdown(json.loads(args.out.with_suffix(".json").read_text()) if args.rewrite else run(args), args)


if __name__ == "__main__":
    main()
