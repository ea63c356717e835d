"""What every command shares: the one-line error reporter and device resolution."""
from __future__ import annotations

import sys

import click
from tqdm import tqdm


def report_error(message: str) -> None:
    """Print `shiftsr: error: <file>: <problem>` as one line on stderr, above any progress bar."""
    tqdm.write("shiftsr: error: " + " ".join(message.splitlines()), file=sys.stderr)


def resolve_device(device: str) -> str:
    """auto -> cuda when available, else cpu; anything torch.device rejects or cannot find is a usage error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise click.BadParameter(f"{device!r}; allowed: auto, cpu, cuda, cuda:N", param_hint="--device") from None
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise click.BadParameter(f"{device!r} is not available ({torch.cuda.device_count()} CUDA devices found)",
                                 param_hint="--device")
    return device
