"""Crash-safe outputs: every file shiftsr writes is written beside its target, then renamed into place."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh hidden file beside path to write; renamed over path when the block succeeds, removed otherwise.

    A reader sees the old file or the new one, never half of one; an error or an interrupt leaves nothing behind.
    """
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: output folder {directory} does not exist")
    temporary = directory / f".{path.name[:200]}.tmp-{secrets.token_hex(4)}"
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except PermissionError as error:
        raise PermissionError(f"{path}: cannot write in folder {directory} ({error.strerror})") from None
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write bytes or text (UTF-8) to path atomically; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)
