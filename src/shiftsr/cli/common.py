"""What every command shares: the one-line error reporter and device resolution."""
from __future__ import annotations

import sys
from typing import NoReturn

import click
from tqdm import tqdm


def report_error(message: str) -> None:
    """Print `shiftsr: error: <file>: <problem>` as one line on stderr, above any progress bar."""
    tqdm.write("shiftsr: error: " + " ".join(message.splitlines()), file=sys.stderr)


def fail(message: str, status: int = 2) -> NoReturn:
    """Report one error line and end the command with status (2: a bad flag, model, recipe or checkpoint)."""
    report_error(message)
    raise SystemExit(status)  # not click's Exit, a RuntimeError that a per-file handler would catch


def os_message(error: OSError) -> str:
    """An OSError as `<file>: <problem>`, without Python's [Errno N] prefix."""
    return f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)


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
