"""What the worker notes while a step executes: each remote operation, and the ``execution.finished`` detail."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bot.config import Host
from bot.errors import ExecutionError
from bot.store import audit


def output_digest(value: Any) -> str:
    """SHA-256 of what an execution returned, secrets masked first (the digest never hides a secret)."""
    return hashlib.sha256(audit.canonical({"output": audit.scrub(value)}).encode("utf-8")).hexdigest()


class RecordingExecutor:
    """The executor as the worker uses it: while a step executes, each remote operation it performs is noted
    (host, operation, exit status, digest of the output) for the step's ``execution.finished`` audit event.
    Previews and probes run outside ``recording()`` and are not noted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._local = threading.local()

    def run(self, host: Host, op: str, data: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        noted: list[dict[str, Any]] | None = getattr(self._local, "noted", None)
        started = time.monotonic()
        try:
            result: dict[str, Any] = self.inner.run(host, op, data, timeout_s=timeout_s)
        except ExecutionError as exc:
            if noted is not None:
                noted.append(
                    {
                        "host": host.name,
                        "op": op,
                        "ok": False,
                        "exit_status": None,
                        "error": str(exc),
                        "error_kind": type(exc).__name__,
                        "output_sha256": output_digest(str(exc)),
                        "duration_s": round(time.monotonic() - started, 3),
                    }
                )
            raise
        if noted is not None:
            noted.append(
                {
                    "host": host.name,
                    "op": op,
                    "ok": True,
                    "exit_status": 0,  # the executor returns only results of scripts that exited 0
                    "output_sha256": output_digest(result),
                    "duration_s": round(time.monotonic() - started, 3),
                }
            )
        return result

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        """Note the remote operations this thread performs until the block ends."""
        noted: list[dict[str, Any]] = []
        self._local.noted = noted
        try:
            yield noted
        finally:
            self._local.noted = None

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def finished_detail(ok: bool, output: Any, noted: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """The ``execution.finished`` audit detail: status, error, digest of the output and the remote operations."""
    detail: dict[str, Any] = {
        "ok": ok,
        "exit_status": 0 if ok else 1,  # of the step: 0 done, 1 failed (each operation has its own below)
        "output_sha256": output_digest(output if ok else str(output)),
        "duration_s": round(duration_s, 3),
        "operations": list(noted),
    }
    if not ok:
        detail["error"] = str(output)
        detail["error_kind"] = type(output).__name__
    return detail
