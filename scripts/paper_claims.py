"""Check the DoSSR and ResShift papers' ablation claims at this project's scale; write docs/results.md and .json.

    python scripts/paper_claims.py [--sets Set5 Set14] [--fresh] [--out docs/results.md] [--threads N]

Every row upscales the x4 benchmark sets (MATLAB-bicubic LR) with one sample, seed 0, and is scored by PSNR-Y
(border 4) and ST-LPIPS (alex), with seconds per image (wall clock) and network evaluations (NFE) per image.
Rows are cached in the JSON beside the Markdown file, keyed by model and sampler and tied to a hash of the model's
files: a rerun computes only rows (or sets) not there yet, or whose model changed; --fresh recomputes all.
A model that is not trained yet (or still training) is skipped with the command that trains it.
Verdicts are computed from the pooled numbers (all images of all sets); each claim states its rule.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import safe_open

from shiftsr.imageio import read_image
from shiftsr.metrics import create, psnr_y
from shiftsr.pipeline import load, resolve_model
from shiftsr.processes import DomainShiftProcess
from shiftsr.samplers import dossr_start, dossr_timesteps, randn_like, sample_dossr
from shiftsr.training.config import load_config

NO_DOSG = "dossr-no-dosg"  # DoSSR Solver-k with guidance=False (eta = 0); on a VP model from pure noise at T
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


# --- models: what exists, what it cost, whether it changed --------------------------------------------------

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


def fingerprint(model: Model) -> str:
    """SHA-256 over the model folder's files, so a retrained model invalidates its cached rows."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model.folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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


# --- evaluation ------------------------------------------------------------------------------------------------

class Counted:
    """A denoiser that counts its calls (network evaluations)."""

    def __init__(self, denoiser: Callable):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, *args):
        """The wrapped denoiser's output; one more call counted."""
        self.calls += 1
        return self.denoiser(*args)


@torch.no_grad()
def upscale_without_dosg(pipe, lr: torch.Tensor, *, steps: int, order: int, seed: int) -> torch.Tensor:
    """DoSSR Solver-k with guidance=False (DoSSR Sec. 4.3): from dossr_start at t1, or on a VP model from noise at T."""
    xh = pipe.codec.encode(pipe.source_image(lr) * 2 - 1)
    generator = [torch.Generator().manual_seed(seed)]
    process = pipe.process
    if isinstance(process, DomainShiftProcess):
        ts = dossr_timesteps(process, steps)
        x = dossr_start(process, xh, ts[0], generator)
    else:
        ts = torch.linspace(process.t_max, 0, steps + 1, dtype=torch.float64).tolist()
        x = randn_like(xh, generator)
    x0 = sample_dossr(pipe.denoiser, x, ts, process=process, xh=xh, cond=xh, order=order, guidance=False,
                      generator=generator)
    return ((pipe.codec.decode(x0).float() + 1) / 2).clamp(0, 1).cpu()


def evaluate(row: Row, pipe, folder: Path, stlpips) -> dict:
    """Mean PSNR-Y, ST-LPIPS, seconds and NFE per image over one benchmark folder (HR/ and LR/)."""
    names = sorted(p.name for p in (folder / "LR").glob("*.png"))
    if not names:
        raise FileNotFoundError(f"{folder / 'LR'}: no PNG images")
    sums = {"psnr_y": 0.0, "stlpips": 0.0, "seconds": 0.0, "nfe": 0.0}
    for name in names:
        lr, hr = read_image(folder / "LR" / name).rgb[None], read_image(folder / "HR" / name).rgb[None]
        pipe.denoiser.calls = 0
        started = time.perf_counter()
        if row.method == NO_DOSG:
            sr = upscale_without_dosg(pipe, lr, steps=row.steps, order=row.order, seed=0)
        else:
            sr = pipe(lr, method=row.method, steps=row.steps, order=row.order, samples=1, seed=0)
        sums["seconds"] += time.perf_counter() - started
        sums["nfe"] += pipe.denoiser.calls
        sums["psnr_y"] += float(psnr_y(sr, hr, border=4))
        sums["stlpips"] += float(stlpips(sr, hr).mean())
    return {"images": len(names), **{key: value / len(names) for key, value in sums.items()}}


def pooled(entry: dict, sets: list[str]) -> dict:
    """Image-weighted means over the sets."""
    images = sum(entry["sets"][s]["images"] for s in sets)
    return {key: sum(entry["sets"][s][key] * entry["sets"][s]["images"] for s in sets) / images
            for key in ("psnr_y", "stlpips", "seconds", "nfe")}


# --- claims ----------------------------------------------------------------------------------------------------

def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman rank correlation (no ties expected)."""
    def ranks(values):
        """0-based ranks of the values."""
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def fmt(m: dict) -> str:
    """PSNR-Y / ST-LPIPS of one row."""
    return f"{m['psnr_y']:.2f} / {m['stlpips']:.3f}"


def claim_dosg(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 2, rows DDPM and t1 = T: DoSG better on every metric."""
    with_, without = m
    return (with_["psnr_y"] > without["psnr_y"] and with_["stlpips"] < without["stlpips"],
            f"with DoSG {fmt(with_)}, without {fmt(without)}")


def claim_dosg_sampler(m: list[dict]) -> tuple[bool, str]:
    """Guided beats eta = 0 sampling of the same DoSSR model, at orders 1 and 3."""
    g1, g3, u1, u3 = m
    holds = all(g["psnr_y"] > u["psnr_y"] and g["stlpips"] < u["stlpips"] for g, u in ((g1, u1), (g3, u3)))
    return holds, f"order 1: with {fmt(g1)}, without {fmt(u1)}; order 3: with {fmt(g3)}, without {fmt(u3)}"


def claim_order(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 3: order 3 best at 5 steps."""
    best = min(range(3), key=lambda k: m[k]["stlpips"]) + 1
    return best == 3, "; ".join(f"order {k + 1}: {fmt(m[k])}" for k in range(3)) + f"; lowest ST-LPIPS: order {best}"


def claim_steps(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Fig. 4(a): reference-based metrics decline as steps grow."""
    steps = list(range(1, len(m) + 1))
    rho_psnr = spearman(steps, [r["psnr_y"] for r in m])
    rho_lpips = spearman(steps, [r["stlpips"] for r in m])
    best = min(steps, key=lambda n: m[n - 1]["stlpips"])
    return rho_psnr < 0, (f"Spearman rho(steps, PSNR-Y) = {rho_psnr:+.2f} (1 step {m[0]['psnr_y']:.2f} dB, "
                          f"{steps[-1]} steps {m[-1]['psnr_y']:.2f} dB); rho(steps, ST-LPIPS) = {rho_lpips:+.2f}, "
                          f"lowest ST-LPIPS at {best} steps")


def claim_t1_best(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 2: t1 = T/2 best."""
    names = ("T", "T/2", "T/3")
    best = min(range(3), key=lambda k: m[k]["stlpips"])
    return best == 1, "; ".join(f"{n}: {fmt(r)}" for n, r in zip(names, m)) + f"; lowest ST-LPIPS: {names[best]}"


def claim_t1_fidelity(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Sec. 4.3: a smaller t1 stays closer to the LR."""
    return (m[0]["psnr_y"] < m[1]["psnr_y"] < m[2]["psnr_y"],
            "PSNR-Y at t1 = T, T/2, T/3: " + ", ".join(f"{r['psnr_y']:.2f}" for r in m) + " dB")


def trade_off(name: str) -> Callable[[list[dict]], tuple[bool, str]]:
    """The ResShift Table 1 direction: the changed setting has higher PSNR-Y and higher (worse) LPIPS."""
    def rule(m: list[dict]) -> tuple[bool, str]:
        """Higher PSNR-Y and higher ST-LPIPS than the paper's default setting."""
        base, other = m
        return (other["psnr_y"] > base["psnr_y"] and other["stlpips"] > base["stlpips"],
                f"{name} {fmt(other)} vs T = 15, p = 0.3, kappa = 2 {fmt(base)}")
    return rule


def claim_kappa(m: list[dict]) -> tuple[bool, str]:
    """ResShift Table 1: kappa = 2 at least as good as kappa = 1."""
    base, k1 = m
    return (base["psnr_y"] >= k1["psnr_y"] and base["stlpips"] <= k1["stlpips"],
            f"kappa = 2 {fmt(base)} vs kappa = 1 {fmt(k1)}")


def claim_vp_quality(m: list[dict]) -> tuple[bool, str]:
    """DoSSR Table 1: 5 NFE no worse than many-step diffusion SR."""
    ours, ddim, ddpm = m
    holds = all(ours["psnr_y"] >= b["psnr_y"] and ours["stlpips"] <= b["stlpips"] for b in (ddim, ddpm))
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


def write_atomic(path: Path, text: str) -> None:
    """Write text through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def compute(args: argparse.Namespace, cache: dict) -> tuple[dict, dict[str, str]]:
    """Fill the cache with every missing (row, set); return it and {model path: why it was skipped}."""
    stlpips, pipes, skipped = None, {}, {}
    rows = cache.setdefault("rows", {})
    for row in all_rows():
        why = training_state(row.model)
        if why:
            skipped[row.model.path] = why
            continue
        stamp = fingerprint(row.model)
        entry = rows.get(row.key)
        if entry is None or entry.get("fingerprint") != stamp:
            entry = rows[row.key] = {"label": row.label, "model": row.model.path, "sampler": row.sampler,
                                     "fingerprint": stamp, "sets": {}}
        for name in [s for s in args.sets if s not in entry["sets"]]:
            if row.model.path not in pipes:
                pipes[row.model.path] = load(row.model.folder, device="cpu")
                pipes[row.model.path].denoiser = Counted(pipes[row.model.path].denoiser)
            stlpips = stlpips or create("stlpips")
            entry["sets"][name] = evaluate(row, pipes[row.model.path], args.root / name / "x4", stlpips)
            print(f"{row.label} [{row.model.path}, {row.sampler}] {name}: {json.dumps(entry['sets'][name])}",
                  flush=True)
            write_atomic(args.out.with_suffix(".json"), json.dumps(cache, indent=2) + "\n")
    return cache, skipped


def judge(cache: dict, sets: list[str], skipped: dict[str, str]) -> list[dict]:
    """Each claim with its verdict from the cached numbers, or the models it still waits for."""
    out = []
    for claim in CLAIMS:
        head = {"source": claim.source, "says": claim.says, "rule": claim.rule}
        missing = sorted({skipped[r.model.path] for r in claim.rows if r.model.path in skipped})
        if missing:
            out.append({**head, "verdict": "not evaluated", "numbers": "; ".join(missing)})
            continue
        holds, numbers = claim.check([pooled(cache["rows"][r.key], sets) for r in claim.rows])
        out.append({**head, "verdict": "holds" if holds else "does not hold", "numbers": numbers})
    return out


def markdown(cache: dict, claims: list[dict], sets: list[str], skipped: dict[str, str], command: str) -> str:
    """docs/results.md: the budget, the claims with verdicts, and every group's table."""
    models = {r.model.path: r.model for r in all_rows()}
    lines = ["# The papers' claims at our scale", "",
             f"Generated by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
             f"Evaluation: {', '.join(sets)} x4 (MATLAB-bicubic LR); one sample, seed 0; PSNR-Y (border 4) and "
             "ST-LPIPS (alex, lower is better) averaged over all images of these sets; wall-clock seconds per "
             f"image on the CPU with {torch.get_num_threads()} torch thread(s); NFE = network evaluations per image.",
             ""]
    prior = next((ROOT / PRIOR_RUN).glob("train_config.*"), None)
    prior_budget = budget(prior) if prior else "its recipe is not in this checkout"
    lines += [f"Training budget of each model (the prior `{PRIOR_RUN}/model`: {prior_budget}, not counted):", ""]
    lines += [f"- `{path}`: {model_budget(model)}" + (f" ({skipped[path]})" if path in skipped else "")
              for path, model in models.items()]
    sizes = sorted({parameters(m) for m in models.values() if m.path not in skipped})
    lines += ["", "ST-LPIPS stands in for the papers' perceptual metrics (DoSSR reports only no-reference ones for "
              f"its ablations: CLIPIQA, MUSIQ, MANIQA, TOPIQ). Our networks have {sizes[0] / 1e6:.2f}-"
              f"{sizes[-1] / 1e6:.2f}M parameters and short training runs, so a claim that does not hold here says "
              "little about the papers' scale.",
              "", "## Claims", "",
              "| Source | The paper says | Our rule | Our numbers (PSNR-Y dB / ST-LPIPS) | Verdict |",
              "|---|---|---|---|---|"]
    lines += [f"| {c['source']} | {c['says']} | {c['rule']} | {c['numbers']} | **{c['verdict']}** |" for c in claims]
    for title, rows in GROUPS.items():
        lines += ["", f"## {title}", "",
                  "| Row | Model | Sampler | NFE | " + " | ".join(f"{s} PSNR-Y / ST-LPIPS" for s in sets)
                  + " | All | s/image |", "|" + "---|" * (6 + len(sets))]
        for row in rows:
            entry = cache.get("rows", {}).get(row.key)
            if row.model.path in skipped or entry is None or any(s not in entry["sets"] for s in sets):
                why = skipped.get(row.model.path, "not computed")
                lines.append(f"| {row.label} | `{row.model.path}` | {row.sampler} | - | "
                             + " | ".join("-" for _ in sets) + f" | {why} | - |")
                continue
            total = pooled(entry, sets)
            cells = " | ".join(fmt(entry["sets"][s]) for s in sets)
            lines.append(f"| {row.label} | `{row.model.path}` | {row.sampler} | {total['nfe']:.0f} | {cells} | "
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
    for name in args.sets:
        if not (args.root / name / "x4" / "LR").is_dir():
            raise SystemExit(f"paper_claims: {args.root / name / 'x4' / 'LR'}: no such folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    cache_path = args.out.with_suffix(".json")
    cache = {} if args.fresh or not cache_path.is_file() else json.loads(cache_path.read_text())
    cache, skipped = compute(args, cache)
    for why in sorted(set(skipped.values())):
        print(why)
    cache["claims"] = judge(cache, args.sets, skipped)
    cache["sets"] = args.sets
    command = "python scripts/paper_claims.py --sets " + " ".join(args.sets)
    write_atomic(cache_path, json.dumps(cache, indent=2) + "\n")
    write_atomic(args.out, markdown(cache, cache["claims"], args.sets, skipped, command))
    for claim in cache["claims"]:
        print(f"{claim['verdict']:>14s}: {claim['source']}: {claim['numbers']}")


if __name__ == "__main__":
    main()
