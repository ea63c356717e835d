"""Progress of a run, seen from its denoiser calls: each reports how far the run has come, and can stop it.

The monitor hangs on the pipeline's x0 denoiser as a forward pre-hook (every call, tiled, streamed or not, goes
through it) and only reads the time, so the image of a watched run is the one `shiftsr upscale` writes for the
same settings and seed, bit for bit.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

ALMOST_DONE = 0.99  # the most a run reports before it has ended


class JobCancelled(Exception):
    """The client went away: the run stops at its next denoiser call."""


class Monitor:
    """Watches one run of K samples: reports the fraction done from the times of the denoiser calls.

    Within a sample the time falls from its start towards 0, so a rise starts the next sample (tiles of one step
    share its time); with one step, each call is a sample (exact without tiles). Below 1 until the run has ended.
    """

    def __init__(self, *, report: Callable[[float], None] = lambda fraction: None,
                 cancelled: threading.Event | None = None) -> None:
        self.report = report
        self.cancelled = cancelled or threading.Event()
        self.samples = self.steps = 1
        self.sample = -1  # the sample running now
        self.t_first = self.t_last = 0.0

    def check(self) -> None:
        """Raise JobCancelled once the client has gone."""
        if self.cancelled.is_set():
            raise JobCancelled("the client closed the connection")

    def on_call(self, module: torch.nn.Module, args: tuple) -> None:
        """A denoiser call (x_t, t, cond)."""
        self.check()
        now = float(args[1].flatten()[0])
        if self.sample < 0 or now > self.t_last or (self.steps == 1 and now == self.t_last):
            self.sample, self.t_first = self.sample + 1, now
        self.t_last = now
        within = 1 - now / self.t_first if self.t_first > 0 else 0.0
        self.report(min(ALMOST_DONE, (self.sample + within) / self.samples))


@contextmanager
def watching(pipe, monitor: Monitor, plan) -> Iterator[Monitor]:
    """Runs of pipe inside report their progress to monitor, which expects plan's samples and steps; 1.0 once
    done."""
    monitor.samples, monitor.steps = plan.samples, plan.steps
    denoiser = getattr(pipe, "denoiser", None)  # a model without sampling (a regressor) has none
    hook = denoiser.register_forward_pre_hook(monitor.on_call) if isinstance(denoiser, torch.nn.Module) else None
    try:
        yield monitor
    finally:
        if hook is not None:
            hook.remove()
    monitor.report(1.0)
