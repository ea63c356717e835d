"""The one table of sampling methods: each name users pick, the model family that runs it, its grid and sampler.

The CLI, the pipeline, the boundary search, eval and the docs read this table; nothing else lists methods.
A family is what a model is to the sampler: `dossr` (domain-shift process), `resshift` (residual shifting),
`sr3` (a VP model that sees the LR, sampled from pure noise), `prior` (an unconditional VP model, used by
noise injection) and `regressor` (no diffusion network: the preprocessor's output is the answer, at t = 0). Every
start is the family's own: see `shiftsr.processes.start`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .processes import DomainShiftProcess, ResShiftProcess, VPProcess
from .samplers import sample_ddim, sample_ddpm, sample_dossr, sample_dpmpp_2m, sample_resshift, vp_timesteps

FAMILIES = ("dossr", "resshift", "sr3", "prior", "regressor")
Sampler = Callable[..., Tensor]  # (denoiser, x, ts, *, process, y, cond, order, generator, callback) -> x0


def linear_grid(process, steps: int, t_start: float) -> list[float]:
    """steps uniform steps from t_start to the clean state (DoSSR Sec. 3.3; the default grid ends at t = 0)."""
    return torch.linspace(t_start, 0, steps + 1, dtype=torch.float64).tolist()


def resshift_grid(process, steps: int, t_start: float) -> list[float]:
    """ResShift's integer chain from the first step at or above t_start, respaced to `steps` network calls, then 0.

    All steps of the chain is the paper's sampler (Eq. 6-7); fewer keep every n-th integer time (guided-diffusion's
    space_timesteps rule, T' - round(i (T' - 1) / (steps - 1))), which the posterior of Eq. 7 allows between any two times.
    """
    top = resshift_chain_steps(process, t_start)
    if steps > top:
        raise ValueError(f"steps: this ResShift chain has {top} steps from t = {t_start:g}, not {steps}")
    picked = [top] if steps == 1 else sorted({top - round(i * (top - 1) / (steps - 1)) for i in range(steps)})[::-1]
    return [float(t) for t in picked] + [0.0]


def resshift_chain_steps(process, t_start: float) -> int:
    """How many network calls ResShift's integer chain has from t_start: its whole steps at or below it."""
    return min(int(process.t_max), max(1, math.ceil(t_start)))


def any_steps(process, t_start: float) -> float:
    """No bound on the steps of a continuous-time grid."""
    return math.inf


def vp_grid(process, steps: int, t_start: float) -> list[float]:
    """A VP sampler's uniform grid from t_start (see samplers.vp.vp_timesteps)."""
    return vp_timesteps(process, steps, t_start=t_start)


def clean_grid(process, steps: int, t_start: float) -> list[float]:
    """A regressor's grid: the clean state alone (its start, t = 0, is its answer)."""
    return [0.0]


def _regression(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return x  # the start at t = 0 is the estimate itself


def _dossr(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return sample_dossr(denoiser, x, ts, process=process, xh=y, cond=cond, order=order, **common)


def _dossr_ode(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return sample_dossr(denoiser, x, ts, process=process, xh=y, cond=cond, order=1, deterministic=True, **common)


def _dossr_no_dosg(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return sample_dossr(denoiser, x, ts, process=process, xh=y, cond=cond, order=order, guidance=False, **common)


def _dpmpp_2m(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return sample_dpmpp_2m(denoiser, x, ts, process=process, y=y, cond=cond, **common)


def _resshift(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return sample_resshift(denoiser, x, ts, process=process, cond=cond, **common)


def _ddim(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return sample_ddim(denoiser, x, ts, process=process, y=y, cond=cond, eta=0.0, **common)


def _ddpm(denoiser, x, ts, *, process, y, cond, order, **common) -> Tensor:
    return sample_ddpm(denoiser, x, ts, process=process, cond=cond, **common)


@dataclass(frozen=True)
class Method:
    """One row: a method name, the families it runs on, its grid, its sampler and the settings it honours."""

    name: str
    families: tuple[str, ...]
    sample: Sampler
    grid: Callable[[object, int, float], list[float]]
    deterministic: bool  # no noise after the start: BCSR searches a start noise, else a seed
    uses_order: bool = False
    paper: str = ""
    max_steps: Callable[[object, float], float] = any_steps  # the most steps the grid has from a start time

    def check(self, *, order: int | None = None) -> None:
        """Refuse a setting this method cannot honour (ValueError naming the setting and the method)."""
        if order is not None and not self.uses_order:
            raise ValueError(f"order: method {self.name!r} has no solver order (only "
                             f"{', '.join(m.name for m in METHODS.values() if m.uses_order)} have one)")


METHODS: dict[str, Method] = {row.name: row for row in (
    Method("dossr", ("dossr",), _dossr, linear_grid, False, uses_order=True,
           paper="DoSSR Alg. 1-3, Eq. 42, 44, 47 (DoS-SDE Solver-1/2/3)"),
    Method("dossr-ode", ("dossr",), _dossr_ode, linear_grid, True,
           paper="DoSSR Sec. 3, the probability-flow form of Eq. 42 (docs/math.md)"),
    Method("ddim", ("sr3",), _ddim, vp_grid, True, paper="Song et al. 2021 Eq. 12 (eta = 0)"),
    Method("ddpm", ("sr3",), _ddpm, vp_grid, False, paper="Ho et al. 2020 Eq. 6-7"),
    Method("dpmpp-2m", ("dossr", "sr3"), _dpmpp_2m, linear_grid, True,
           paper="Lu et al. 2022 Alg. 2 (DPM-Solver++(2M)) on the model's path"),
    Method("dossr-no-dosg", ("dossr", "sr3"), _dossr_no_dosg, linear_grid, False, uses_order=True,
           paper="DoSSR Sec. 4.3 Table 2 'w/o DoSG': Solver-k on the eta = 0 equation"),
    Method("resshift", ("resshift",), _resshift, resshift_grid, False, paper="ResShift Eq. 6-7",
           max_steps=resshift_chain_steps),
    Method("resshift-ode", ("resshift",), _ddim, resshift_grid, True, paper="ResShift, DDIM form (eta = 0)",
           max_steps=resshift_chain_steps),
    Method("noise-injection", ("prior",), _ddim, vp_grid, True,
           paper="Diff-SR Sec. 3.2-3.4: noise injected into the upsampled LR, then DDIM"),
    Method("regression", ("regressor",), _regression, clean_grid, True,
           paper="Real-ESRGAN (Wang et al. 2021): the preprocessor's output, no sampling (NFE 0)"),
)}


def family_of(process, *, conditional: bool) -> str:
    """The family of a model with this process; a VP model is `sr3` when it sees the LR, else a `prior`."""
    if isinstance(process, DomainShiftProcess):
        return "dossr"
    if isinstance(process, ResShiftProcess):
        return "resshift"
    if isinstance(process, VPProcess):
        return "sr3" if conditional else "prior"
    raise ValueError(f"no sampling family for a {type(process).__name__}")


def methods_for(family: str) -> tuple[str, ...]:
    """The method names a family runs, in table order."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    return tuple(name for name, row in METHODS.items() if family in row.families)


def method_row(name: str, family: str) -> Method:
    """The row of a method a family runs; ValueError naming the method and the allowed ones otherwise."""
    allowed = methods_for(family)
    if name not in allowed:
        raise ValueError(f"method {name!r} does not apply to this model; allowed: {', '.join(allowed)}")
    return METHODS[name]


def markdown_table() -> str:
    """The table as Markdown, as the README shows it (`python -m shiftsr.methods` prints it)."""
    lines = ["| method (`--method`) | families | deterministic | settings | paper |", "|---|---|---|---|---|"]
    for row in METHODS.values():
        honours = "--steps, --order" if row.uses_order else "none" if row.grid is clean_grid else "--steps"
        lines.append(f"| `{row.name}` | {', '.join(row.families)} | {'yes' if row.deterministic else 'no'} | "
                     f"{honours} | {row.paper} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
