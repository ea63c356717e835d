"""The run's JSON-lines log (OUTPUT/log.jsonl), written by the main process only."""
from __future__ import annotations

import json
from pathlib import Path

from .files import write_text_atomic


class RunLog:
    """One JSON object per line; a resumed run first drops the records after its checkpoint's step."""

    def __init__(self, path: Path, *, enabled: bool, keep_until: int | None):
        self.path, self.enabled = path, enabled
        if enabled:
            kept = [line for line in self._lines() if keep_until is not None and _step(line) <= keep_until]
            write_text_atomic(path, "".join(line + "\n" for line in kept))

    def _lines(self) -> list[str]:
        """The existing records (none when there is no log yet)."""
        return self.path.read_text().splitlines() if self.path.exists() else []

    def write(self, event: str, **fields) -> None:
        """Append {"event": event, **fields}."""
        if self.enabled:
            with self.path.open("a") as log:
                log.write(json.dumps({"event": event, **fields}) + "\n")


def _step(line: str) -> float:
    """The step of a record; a line cut short by a crash counts as past every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
