"""A sampler as a chain of steps: one network call, then an elementwise update of the state.

Every sampler here is a list of `Step`s: the network is called on the state at the step's time, and the update
maps (state, prediction, y, the kept history, a fresh draw) to the next state pixel by pixel. `run_chain` runs the
chain on whole tensors in place (one state buffer, one noise buffer, history only as long as the order needs);
`shiftsr.streaming` runs the same steps band by band on a state kept on disk, so both give the same numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from .common import Callback, Denoiser, Generators, batch_time, randn_like, report

# (x, x0, y, memory, noise, fresh) -> next x. Elementwise. memory holds the history the chain keeps between steps
# (the update replaces its entries); it writes into x unless fresh, and never into x0, y or noise (the caller's)
Update = Callable[[Tensor, Tensor, Tensor | None, dict, Tensor | None, bool], Tensor]


@dataclass(frozen=True)
class Step:
    """One step: the network call at time t, then `update`; noisy = the update takes one fresh Gaussian draw."""

    t: float
    noisy: bool
    update: Update


def run_chain(steps: Sequence[Step], denoiser: Denoiser, x: Tensor, *, y: Tensor | None = None, cond=None,
              generator: Generators = None, callback: Callback = None) -> Tensor:
    """The chain on whole tensors from x (left untouched): the state updated in place, history kept only while a
    later step reads it.

    Each step's draw is made on a helper thread while the network runs (the draws of a chain do not depend on the
    state), into one of two buffers, in the same order from the same generators, so the numbers do not change.
    With a callback each step writes a new state, so the states it was handed stay valid.
    """
    memory: dict = {}
    noisy = [i for i, step in enumerate(steps) if step.noisy]
    buffers = [torch.empty(x.shape), torch.empty(x.shape)] if noisy else []  # float32 CPU: where randn_like draws
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shiftsr-noise") as pool:
        def draw(i: int):
            return pool.submit(draw_like, x, generator, buffers[noisy.index(i) % 2])

        pending = draw(noisy[0]) if noisy else None
        for i, step in enumerate(steps):
            x0 = denoiser(x, batch_time(step.t, x), cond)
            report(callback, i, step.t, x, x0)
            noise = None
            if step.noisy:
                noise = pending.result()
                later = [j for j in noisy if j > i]
                pending = draw(later[0]) if later else None
            x = step.update(x, x0, y, memory, noise, i == 0 or callback is not None)
    return x


def draw_like(x: Tensor, generator: Generators, buffer: Tensor | None) -> Tensor:
    """randn_like(x, generator, out=buffer) in x's memory layout (the same numbers at the same places), so the
    update's noise term is a contiguous pass; channels-last as one 2-D transpose per image, the fastest copy."""
    noise = randn_like(x, generator, out=buffer)
    if x.ndim != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return noise
    out = torch.empty_like(x, memory_format=torch.channels_last)
    channels = x.shape[1]
    for target, source in zip(out.permute(0, 2, 3, 1), noise):
        target.view(-1, channels).copy_(source.reshape(channels, -1).t())
    return out
