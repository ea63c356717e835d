"""Check the DoSSR and ResShift papers' ablation claims at this project's scale; write docs/results.md and .json.

    python scripts/paper_claims.py [--sets Set5 Set14] [--fresh] [--out docs/results.md] [--threads N]

Every row upscales the x4 benchmark sets (MATLAB-bicubic LR) with one sample, seed 0, and is scored by PSNR-Y
(border 4) and ST-LPIPS (alex), with seconds per image (wall clock) and network evaluations (NFE) per image.
Everything is measured by the evaluation engine (shiftsr.eval): its loop, its NFE (the pipeline's count), its
statistics and its cache, the JSON beside the Markdown file, keyed by model and sampler and tied to the model's
fingerprint (weights and settings): a rerun computes only rows (or sets) not there yet, or whose model changed;
--fresh recomputes all. A model that is not trained yet (or still training) is named with the command that trains
it; its rows come from the cache where an earlier run measured them (marked "cached"), else they are left out.
Verdicts are computed from the pooled numbers (all images of all sets); each claim states its rule.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import safe_open

from shiftsr.boundary import model_fingerprint
from shiftsr.bundle import resolve_model
from shiftsr.eval import (ImagePair, ResultCache, Upscaler, benchmark_pairs, create_metrics, evaluate, mean,
                          metric_infos, model_upscaler, spearman, summarise)
from shiftsr.files import write_atomic
from shiftsr.pipeline import load
from shiftsr.training.config import load_config

NO_DOSG = "dossr-no-dosg"  # DoSSR's w/o-DoSG ablation (Solver-k on the eta = 0 equation), a method of the table
PSNR, LPIPS = "psnr", "stlpips-alex"  # the engine's metric names: PSNR-Y (border 4), ST-LPIPS (alex)
ROOT = Path(__file__).resolve().parents[1]  # model and recipe paths below are relative to the repository
PRIOR_RUN = "runs/prior"


@dataclass(frozen=True)
class Model:
    """A model folder (or bundled name) and the recipe that trains it."""

    path: str
    config: str | None = None

    @property
    def bundled(self) -> bool:
        """A model shipped in the package (no recipe here)."""
        return self.config is None

    @property
    def folder(self) -> Path:
        """The model folder on disk."""
        return resolve_model(self.path if self.bundled else ROOT / self.path)


DEFAULT = Model("default")
T1_T = Model("runs/claims/dossr_t1_T/model", "configs/claims/dossr_t1_T.yaml")
T1_T2 = Model("runs/ablation_dossr_finetune/model", "configs/ablation_dossr_finetune.yaml")
T1_T3 = Model("runs/claims/dossr_t1_T3/model", "configs/claims/dossr_t1_T3.yaml")
VP = Model("runs/claims/vp_finetune/model", "configs/claims/vp_finetune.yaml")
RS_15 = Model("runs/ablation_resshift_scratch/model", "configs/ablation_resshift_scratch.yaml")
RS_T4 = Model("runs/claims/resshift_T4/model", "configs/claims/resshift_T4.yaml")
RS_K1 = Model("runs/claims/resshift_kappa1/model", "configs/claims/resshift_kappa1.yaml")
RS_P1 = Model("runs/claims/resshift_p1/model", "configs/claims/resshift_p1.yaml")


@dataclass(frozen=True)
class Row:
    """One model with one sampler."""

    label: str
    model: Model
    method: str
    steps: int | None = None
    order: int | None = None

    @property
    def key(self) -> str:
        """The cache key: model and sampler (not the label, which differs between groups)."""
        return f"{self.model.path} | {self.method} | steps {self.steps} | order {self.order}"

    @property
    def sampler(self) -> str:
        """The sampler in words."""
        steps = "T steps" if self.steps is None else f"{self.steps} steps"
        return self.method + f", {steps}" + ("" if self.order is None else f", order {self.order}")


def dossr(model: Model, label: str, steps: int = 5, order: int = 3) -> Row:
    """A DoSSR Solver-k row."""
    return Row(label, model, "dossr", steps, order)


STEP_ROWS = [dossr(DEFAULT, f"default, {n} steps", n, min(n, 3)) for n in range(1, 11)]
ORDER_ROWS = [dossr(DEFAULT, f"default, order {k}", 5, k) for k in (1, 2, 3)]
UNGUIDED_ROWS = [Row(f"default w/o DoSG, order {k}", DEFAULT, NO_DOSG, 5, k) for k in (1, 3)]
DOSG_PAPER_ROWS = [dossr(T1_T, "DoSSR t1 = T (with DoSG)"),
                   Row("VP, same solver (eta = 0: no DoSG)", VP, NO_DOSG, 5, 3)]
T1_ROWS = [dossr(T1_T, "t1 = T"), dossr(T1_T2, "t1 = T/2"), dossr(T1_T3, "t1 = T/3")]
RESSHIFT_ROWS = [Row("T = 15, p = 0.3, kappa = 2", RS_15, "resshift"), Row("T = 4", RS_T4, "resshift"),
                 Row("p = 1", RS_P1, "resshift"), Row("kappa = 1", RS_K1, "resshift")]
VP_ROWS = [dossr(T1_T2, "DoSSR, 5 steps"), Row("VP, DDIM-50", VP, "ddim", 50), Row("VP, DDPM-100", VP, "ddpm", 100)]
GROUPS = {
    "DoSG (paper protocol: t1 = T, two models trained from the same prior)": DOSG_PAPER_ROWS,
    "DoSG (sampler only: the default model sampled with eta = 0)": [ORDER_ROWS[0], ORDER_ROWS[2], *UNGUIDED_ROWS],
    "DoSSR solver order at 5 steps (default model)": ORDER_ROWS,
    "DoSSR steps 1-10, order min(steps, 3) (default model)": STEP_ROWS,
    "DoSSR starting time t1, 5 steps, order 3": T1_ROWS,
    "ResShift T, p, kappa (same network and budget, from scratch)": RESSHIFT_ROWS,
    "DoSSR 5 steps vs a VP model with DDIM-50 / DDPM-100 (same prior and budget)": VP_ROWS,
}


# --- models: what exists and what it cost ---------------------------------------------------------------------

def training_state(model: Model) -> str | None:
    """None when the model is ready, else why not (with the command that trains it)."""
    if model.bundled:
        return None
    folder, hint = ROOT / model.path, f"missing: run `shiftsr train {model.config}`"
    if not (folder / "shiftsr.json").is_file():
        return hint
    log = folder.parent / "log.jsonl"
    if log.is_file():  # runs from the current trainer end their log with an "end" event
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if not any(e.get("event") == "end" for e in events):
            step = max((e.get("step", 0) for e in events), default=0)
            total = load_config(ROOT / model.config).optim.iterations
            return f"{hint} (training in progress: step {step} of {total})"
    return None


def budget(config: Path) -> str:
    """Iterations x batch x patch of a training recipe, and what it starts from."""
    cfg = load_config(config)
    start = f", fine-tuned from `{cfg.model.init_from}`" if cfg.model.init_from else ", from scratch"
    return f"{cfg.optim.iterations} it x {cfg.data.batch} x {cfg.data.patch}px{start}"


def model_budget(model: Model) -> str:
    """The budget of a model's recipe, or where a bundled model's is written down."""
    return "bundled model (budget in its MODEL_CARD.md)" if model.bundled else budget(ROOT / model.config)


def parameters(model: Model) -> int:
    """Number of network parameters, read from the safetensors header."""
    with safe_open(model.folder / "diffusion_pytorch_model.safetensors", framework="pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


# --- evaluation (the engine's loop and cache) -------------------------------------------------------------------

def compute(sets: dict[str, list[ImagePair]], cache: ResultCache) -> dict[str, str]:
    """Measure every (row, set) the cache lacks for the models on disk; returns {model path: why it is absent}."""
    metrics = create_metrics(metric_infos([PSNR, LPIPS]), crop_border=4)
    pipes, stamps, skipped = {}, {}, {}
    for row in all_rows():
        why = training_state(row.model)
        if why:
            skipped[row.model.path] = why
            continue
        if row.model.path not in pipes:
            pipes[row.model.path] = load(row.model.folder, device="cpu")
            stamps[row.model.path] = model_fingerprint(pipes[row.model.path])
        upscaler = model_upscaler(pipes[row.model.path], row.model.path, method=row.method, steps=row.steps,
                                  order=row.order, samples=1, seed=0)
        for name, pairs in sets.items():
            cache.row(row.key, stamps[row.model.path], name, lambda: measure(row, upscaler, name, pairs, metrics),
                      label=row.label, model=row.model.path, sampler=row.sampler)
    return skipped


def measure(row: Row, upscaler: Upscaler, set_name: str, pairs: list[ImagePair], metrics: list) -> dict:
    """The engine's summary of one row on one set, printed as it comes."""
    (images,) = evaluate(pairs, [upscaler], metrics, desc=set_name)
    summary = summarise(set_name, upscaler, images, [PSNR, LPIPS])
    print(f"{row.label} [{row.model.path}, {row.sampler}] {set_name}: {fmt(summary)}, NFE {summary['nfe']}, "
          f"{summary['seconds']:.2f} s/image", flush=True)
    return summary


def pooled(cache: ResultCache, row: Row, sets: list[str]) -> dict | None:
    """Image-weighted means over the sets (all images of all sets), or None where a set was never measured."""
    found = [cache.cached(row.key, name) for name in sets]
    if any(summary is None for summary in found):
        return None
    weights = [summary["images"] for summary in found]
    return {key: mean([summary[key] for summary in found], weights=weights) for key in (PSNR, LPIPS, "seconds", "nfe")}


# --- claims ----------------------------------------------------------------------------------------------------

def fmt(m: dict) -> str:
    """PSNR-Y / ST-LPIPS of one row."""
    return f"{m[PSNR]:.2f} / {m[LPIPS]:.3f}"


def claim_dosg(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 2, rows DDPM and t1 = T: DoSG better on every metric."""
    with_, without = m
    return (with_[PSNR] > without[PSNR] and with_[LPIPS] < without[LPIPS],
            f"with DoSG {fmt(with_)}, without {fmt(without)}")


def claim_dosg_sampler(m: list[dict]) -> tuple[bool, str]:
    """Guided beats eta = 0 sampling of the same DoSSR model, at orders 1 and 3."""
    g1, g3, u1, u3 = m
    holds = all(g[PSNR] > u[PSNR] and g[LPIPS] < u[LPIPS] for g, u in ((g1, u1), (g3, u3)))
    return holds, f"order 1: with {fmt(g1)}, without {fmt(u1)}; order 3: with {fmt(g3)}, without {fmt(u3)}"


def claim_order(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 3: order 3 best at 5 steps."""
    best = min(range(3), key=lambda k: m[k][LPIPS]) + 1
    return best == 3, "; ".join(f"order {k + 1}: {fmt(m[k])}" for k in range(3)) + f"; lowest ST-LPIPS: order {best}"


def claim_steps(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Fig. 4(a): reference-based metrics decline as steps grow."""
    steps = list(range(1, len(m) + 1))
    rho_psnr = spearman(steps, [r[PSNR] for r in m])
    rho_lpips = spearman(steps, [r[LPIPS] for r in m])
    best = min(steps, key=lambda n: m[n - 1][LPIPS])
    return rho_psnr < 0, (f"Spearman rho(steps, PSNR-Y) = {rho_psnr:+.2f} (1 step {m[0][PSNR]:.2f} dB, "
                          f"{steps[-1]} steps {m[-1][PSNR]:.2f} dB); rho(steps, ST-LPIPS) = {rho_lpips:+.2f}, "
                          f"lowest ST-LPIPS at {best} steps")


def claim_t1_best(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 2: t1 = T/2 best."""
    names = ("T", "T/2", "T/3")
    best = min(range(3), key=lambda k: m[k][LPIPS])
    return best == 1, "; ".join(f"{n}: {fmt(r)}" for n, r in zip(names, m)) + f"; lowest ST-LPIPS: {names[best]}"


def claim_t1_fidelity(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Sec. 4.3: a smaller t1 stays closer to the LR."""
    return (m[0][PSNR] < m[1][PSNR] < m[2][PSNR],
            "PSNR-Y at t1 = T, T/2, T/3: " + ", ".join(f"{r[PSNR]:.2f}" for r in m) + " dB")


def trade_off(name: str) -> Callable[[list[dict]], tuple[bool, str]]:
    """The ResShift Table 1 direction: the changed setting has higher PSNR-Y and higher (worse) LPIPS."""
    def rule(m: list[dict]) -> tuple[bool, str]:
        """Higher PSNR-Y and higher ST-LPIPS than the paper's default setting."""
        base, other = m
        return (other[PSNR] > base[PSNR] and other[LPIPS] > base[LPIPS],
                f"{name} {fmt(other)} vs T = 15, p = 0.3, kappa = 2 {fmt(base)}")
    return rule


def claim_kappa(m: list[dict]) -> tuple[bool, str]:
    """ResShift Table 1: kappa = 2 at least as good as kappa = 1."""
    base, k1 = m
    return (base[PSNR] >= k1[PSNR] and base[LPIPS] <= k1[LPIPS],
            f"kappa = 2 {fmt(base)} vs kappa = 1 {fmt(k1)}")


def claim_vp_quality(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 1: 5 NFE no worse than many-step diffusion SR."""
    ours, ddim, ddpm = m
    holds = all(ours[PSNR] >= b[PSNR] and ours[LPIPS] <= b[LPIPS] for b in (ddim, ddpm))
    return holds, (f"DoSSR-5 {fmt(ours)} ({ours['nfe']:.0f} NFE); DDIM-50 {fmt(ddim)} ({ddim['nfe']:.0f} NFE); "
                   f"DDPM-100 {fmt(ddpm)} ({ddpm['nfe']:.0f} NFE)")


def claim_vp_speed(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Sec. 4.2: 5-7x faster than earlier diffusion-prior SR."""
    ours, ddim, ddpm = m
    speedup = min(ddim["seconds"], ddpm["seconds"]) / ours["seconds"]
    return speedup >= 5, (f"{ours['seconds']:.2f} s/image vs DDIM-50 {ddim['seconds']:.2f}, "
                          f"DDPM-100 {ddpm['seconds']:.2f}: {speedup:.1f}x faster than the faster baseline")


@dataclass(frozen=True)
class Claim:
    """A paper's claim, the rule that tests it here, its rows and the check computing the verdict."""

    source: str
    says: str
    rule: str
    rows: list[Row]
    check: Callable[[list[dict]], tuple[bool, str]]


CLAIMS = [
    Claim("DoSSR Sec. 4.3, Table 2 (DDPM vs t1 = T)",
          "\"the introduction of DoSG leads to a significant improvement across all metrics\"",
          "with DoSG: higher PSNR-Y and lower ST-LPIPS", DOSG_PAPER_ROWS, claim_dosg),
    Claim("DoSSR Sec. 4.3 (our sampler-only variant, not the paper's protocol)",
          "DoSG \"enhances the efficiency of inference\" (Sec. 3.3)",
          "guided beats eta = 0 sampling of the same model on both metrics, orders 1 and 3",
          [ORDER_ROWS[0], ORDER_ROWS[2], *UNGUIDED_ROWS], claim_dosg_sampler),
    Claim("DoSSR Sec. 4.3, Table 3",
          "\"high-order samplers can achieve superior non-reference metrics under the same limited inference "
          "step conditions\"; order 3 is the default",
          "order 3 has the lowest ST-LPIPS at 5 steps (perceptual proxy for the paper's no-reference metrics)",
          ORDER_ROWS, claim_order),
    Claim("DoSSR Sec. 4.3, Fig. 4(a)",
          "\"As the number of inference steps increases, reference-based metrics tend to decline\"",
          "PSNR-Y falls with steps: Spearman rho(steps, PSNR-Y) < 0 over 1-10 steps", STEP_ROWS, claim_steps),
    Claim("DoSSR Sec. 4.3, Table 2",
          "\"SR performance improves as t1 gradually decreases from T to T/2 ... further decreasing t1 from T/2 to "
          "T/3 conversely compromises SR performance\"",
          "t1 = T/2 has the lowest ST-LPIPS of T, T/2, T/3", T1_ROWS, claim_t1_best),
    Claim("DoSSR Sec. 4.3 (choice of t1)",
          "\"a smaller t1 means less noises, so the prediction is prone to be more consistent with the LR image\"",
          "PSNR-Y rises as t1 falls: T < T/2 < T/3", T1_ROWS, claim_t1_fidelity),
    Claim("ResShift Sec. 4.2, Table 1 (T)",
          "\"both of T and p render a trade-off between the fidelity ... and the realism\"; T = 10 vs 15: "
          "PSNR 25.20 vs 25.01, LPIPS 0.2517 vs 0.2312",
          "T = 4 has higher PSNR-Y and higher ST-LPIPS than T = 15", RESSHIFT_ROWS[:2], trade_off("T = 4")),
    Claim("ResShift Sec. 4.2, Table 1 (p)",
          "\"when it [p] increases, the reference metrics improve while the non-reference metrics deteriorate\"; "
          "p = 1.0 vs 0.3: PSNR 25.12 vs 25.01, LPIPS 0.2613 vs 0.2312",
          "p = 1 has higher PSNR-Y and higher ST-LPIPS than p = 0.3", [RESSHIFT_ROWS[0], RESSHIFT_ROWS[2]],
          trade_off("p = 1")),
    Claim("ResShift Sec. 4.2, Table 1 (kappa)",
          "\"When kappa is in the range of [1.0, 2.0], our method achieves the most realistic quality\"; kappa = 2 "
          "vs 1: PSNR 25.01 vs 24.84, LPIPS 0.2312 vs 0.2354",
          "kappa = 2 at least as good as kappa = 1 on both metrics", [RESSHIFT_ROWS[0], RESSHIFT_ROWS[3]],
          claim_kappa),
    Claim("DoSSR Sec. 4.2, Table 1",
          "Table 1 sets DoSSR at 5 NFE against StableSR (200 NFE), DiffBIR (50) and SeeSR (50), with comparable "
          "or better quality",
          "DoSSR-5 no worse than VP DDIM-50 and DDPM-100 on both metrics", VP_ROWS, claim_vp_quality),
    Claim("DoSSR Sec. 4.2 (efficiency)",
          "\"requiring only 5 function evaluations to achieve speeds 5-7 times faster than previous SD-based "
          "models\"",
          "DoSSR-5 at least 5x faster (s/image) than the faster VP baseline", VP_ROWS, claim_vp_speed),
]


# --- the run ---------------------------------------------------------------------------------------------------

def all_rows() -> list[Row]:
    """Every distinct row of every group and claim, in order."""
    seen: dict[str, Row] = {}
    for row in [r for rows in GROUPS.values() for r in rows] + [r for c in CLAIMS for r in c.rows]:
        seen.setdefault(row.key, row)
    return list(seen.values())


def judge(cache: ResultCache, sets: list[str], skipped: dict[str, str]) -> list[dict]:
    """Each claim with its verdict from the pooled numbers, or the models it still waits for."""
    out = []
    for claim in CLAIMS:
        head = {"source": claim.source, "says": claim.says, "rule": claim.rule}
        numbers = [pooled(cache, row, sets) for row in claim.rows]
        if any(m is None for m in numbers):
            missing = sorted({skipped.get(r.model.path, "not computed") for r, m in zip(claim.rows, numbers)
                              if m is None})
            out.append({**head, "verdict": "not evaluated", "numbers": "; ".join(missing)})
            continue
        holds, text = claim.check(numbers)
        out.append({**head, "verdict": "holds" if holds else "does not hold", "numbers": text})
    return out


def markdown(cache: ResultCache, claims: list[dict], sets: list[str], skipped: dict[str, str], command: str) -> str:
    """docs/results.md: the budget, the claims with verdicts, and every group's table."""
    models = {r.model.path: r.model for r in all_rows()}
    lines = ["# The papers' claims at our scale", "",
             f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
             f"Evaluation: {', '.join(sets)} x4 (MATLAB-bicubic LR); one sample, seed 0; PSNR-Y (border 4) and "
             "ST-LPIPS (alex, lower is better) averaged over all images of these sets; wall-clock seconds per "
             f"image on the CPU with {torch.get_num_threads()} torch thread(s); NFE = network evaluations per image, "
             "as the pipeline counts them. Rows marked (cached) are of a model not in this checkout, measured by an "
             "earlier run of this script.", ""]
    prior = next((ROOT / PRIOR_RUN).glob("train_config.*"), None)
    prior_budget = budget(prior) if prior else "its recipe is not in this checkout"
    lines += [f"Training budget of each model (the prior `{PRIOR_RUN}/model`: {prior_budget}, not counted):", ""]
    lines += [f"- `{path}`: {model_budget(model)}" + (f" ({skipped[path]})" if path in skipped else "")
              for path, model in models.items()]
    sizes = sorted({f"{parameters(m) / 1e6:.2f}" for m in models.values() if m.path not in skipped}, key=float)
    lines += ["", "ST-LPIPS stands in for the papers' perceptual metrics (DoSSR reports only no-reference ones for "
              f"its ablations: CLIPIQA, MUSIQ, MANIQA, TOPIQ). Our networks in this checkout have "
              f"{'-'.join(dict.fromkeys([sizes[0], sizes[-1]]))}M parameters and short training runs, so a claim that "
              "does not hold here says little about the papers' scale.",
              "", "## Claims", "",
              "| Source | The paper says | Our rule | Our numbers (PSNR-Y dB / ST-LPIPS) | Verdict |",
              "|---|---|---|---|---|"]
    lines += [f"| {c['source']} | {c['says']} | {c['rule']} | {c['numbers']} | **{c['verdict']}** |" for c in claims]
    for title, rows in GROUPS.items():
        lines += ["", f"## {title}", "",
                  "| Row | Model | Sampler | NFE | " + " | ".join(f"{s} PSNR-Y / ST-LPIPS" for s in sets)
                  + " | All | s/image |", "|" + "---|" * (6 + len(sets))]
        for row in rows:
            total = pooled(cache, row, sets)
            if total is None:
                lines.append(f"| {row.label} | `{row.model.path}` | {row.sampler} | - | "
                             + " | ".join("-" for _ in sets) + f" | {skipped.get(row.model.path, 'not computed')} | - |")
                continue
            label = row.label + (" (cached)" if row.model.path in skipped else "")
            cells = " | ".join(fmt(cache.cached(row.key, s)) for s in sets)
            lines.append(f"| {label} | `{row.model.path}` | {row.sampler} | {total['nfe']:.0f} | {cells} | "
                         f"{fmt(total)} | {total['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Compute the missing rows, judge the claims, write the Markdown and JSON files."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("../shared/data/benchmark"), help="benchmark folder")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"), help="Markdown file; JSON beside it")
    parser.add_argument("--fresh", action="store_true", help="ignore the cached rows and recompute everything")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        sets = {name: benchmark_pairs(args.root, name, 4) for name in args.sets}
    except (OSError, ValueError) as error:
        raise SystemExit(f"paper_claims: {error}") from None
    cache = ResultCache(args.out.with_suffix(".json"), fresh=args.fresh)
    skipped = compute(sets, cache)
    for why in sorted(set(skipped.values())):
        print(why)
    cache.document.update(claims=judge(cache, args.sets, skipped), sets=args.sets)
    cache.save()
    command = "python scripts/paper_claims.py --sets " + " ".join(args.sets)
    write_atomic(args.out, markdown(cache, cache.document["claims"], args.sets, skipped, command))
    for claim in cache.document["claims"]:
        print(f"{claim['verdict']:>14s}: {claim['source']}: {claim['numbers']}")


if __name__ == "__main__":
    main()
