"""Crash-safe outputs: a file or folder is written completely beside its target, then renamed into place."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to PATH.tmp, then rename it over PATH (a reader sees the old file or the new one, never half)."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text)
    os.replace(staging, path)


def staging_folder(target: Path) -> Path:
    """TARGET.tmp, where a new version of target is written before replace_folder swaps it in."""
    return target.with_name(target.name + ".tmp")


def replace_folder(staging: Path, target: Path) -> None:
    """Swap a completely written folder in: target -> TARGET.old, staging -> target, then drop TARGET.old."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(target: Path) -> None:
    """After a crash between the two renames of replace_folder, put TARGET.old (the last good version) back."""
    old = target.with_name(target.name + ".old")
    if old.is_dir() and not target.exists():
        old.rename(target)
