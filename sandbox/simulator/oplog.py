"""The platform's append-only record of every operation it performed: DIR/operations.jsonl."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OPERATIONS_FILE = "operations.jsonl"


class OperationLog:
    """Appends one JSON object per operation; safe to use from several threads."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / OPERATIONS_FILE
        self._lock = threading.Lock()

    def record(
        self,
        host: str,
        operation: str,
        target: str,
        outcome: str,
        *,
        changed: bool | None = None,
        error: str | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "host": host,
            "operation": operation,
            "target": target,
            "outcome": outcome,
        }
        if changed is not None:
            entry["changed"] = changed
        if error is not None:
            entry["error"] = error
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)


def read_operations(state_dir: Path) -> list[dict[str, Any]]:
    """Every operation recorded under ``state_dir`` so far, oldest first."""
    path = Path(state_dir) / OPERATIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
