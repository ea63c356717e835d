"""Evaluation rows kept in a JSON file, tied to the model they measured, so a rerun computes only what is new."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..files import write_atomic
from .report import json_text


class ResultCache:
    """document["rows"][key] = {**info, "fingerprint", "sets": {set name: summary row}}; saved after every new row.

    A key names a model and a sampler setting; a row is reused while its model's fingerprint is unchanged (see
    shiftsr.boundary.model_fingerprint), and computed again once the model is retrained. fresh=True starts empty.
    Other top-level entries of the document (verdicts, settings) are the caller's and are kept.
    """

    def __init__(self, path: str | Path, *, fresh: bool = False):
        self.path = Path(path)
        self.document: dict = {} if fresh or not self.path.is_file() else json.loads(self.path.read_text())
        self.rows: dict[str, dict] = self.document.setdefault("rows", {})

    def row(self, key: str, fingerprint: str, set_name: str, compute: Callable[[], dict], **info) -> dict:
        """The summary of key on set_name: the cached one while the fingerprint matches, else compute()'s, saved."""
        entry = self.rows.get(key)
        if entry is None or entry.get("fingerprint") != fingerprint:
            entry = self.rows[key] = {"fingerprint": fingerprint, "sets": {}}
        entry.update(info)
        if set_name not in entry["sets"]:
            entry["sets"][set_name] = compute()
            self.save()
        return entry["sets"][set_name]

    def cached(self, key: str, set_name: str) -> dict | None:
        """The stored summary whatever its fingerprint (for a model not on disk to check), or None."""
        return self.rows.get(key, {}).get("sets", {}).get(set_name)

    def save(self) -> None:
        """Write the document atomically (strict JSON), creating its folder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json_text(self.document, indent=2) + "\n")
