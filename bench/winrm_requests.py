"""Benchmark: HTTP requests, TCP connections and wall time of our executor against pywinrm's Session.run_ps.

Runs 20 read-only operations on one simulated host with 20 ms latency per request and 150 ms per new
connection (``handshake_ms``: the NTLM/Kerberos handshake a new connection costs on a domain network)
injected through faults.json; connections are counted by the simulated host (TCP connections accepted).
Usage: ``.venv/bin/python bench/winrm_requests.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import winrm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from winrm.transport import Transport  # noqa: E402

from actions import remote  # noqa: E402
from actions.request_counting import RequestCounter, RequestHook, count_session  # noqa: E402
from actions.winrm import WinRMExecutor  # noqa: E402
from bot.config import Config, Host, load_config  # noqa: E402
from tests.support.platform import running_platform, write_config  # noqa: E402

HOST = "as-b"
ROUNDS = 5  # x 4 operations = 20
LATENCY_MS = 20
HANDSHAKE_MS = 150


@dataclass
class Measurement:
    name: str
    requests: int
    connections: int
    seconds: float
    succeeded: int
    actions: dict[str, int]


def ours(config: Config, host: Host) -> Measurement:
    counter = RequestCounter()
    settings = config.windows_path(config.redstor.account_server.settings)
    queue = config.windows_path(config.redstor.account_server.task_queue)
    service = config.redstor.account_server.service
    started = time.monotonic()
    done = 0
    with WinRMExecutor(on_request=counter) as ex:
        for _ in range(ROUNDS):
            remote.query_service(ex, host, service)
            remote.read_file(ex, host, settings)
            remote.path_exists(ex, host, queue)
            remote.task_queue_status(ex, host, queue)
            done += 4
    return Measurement(
        "WinRMExecutor", counter.requests, counter.connections, time.monotonic() - started, done, dict(counter.actions)
    )


def count_every_session(transport: Transport, host: str, hook: RequestHook) -> None:
    """pywinrm's Session.run_ps builds (and closes) an HTTP session per command: count each one it builds.

    Wrapping ``build_session`` is for this bench only; our executor is given the hook and mounts it itself.
    """
    build = transport.build_session

    def build_session() -> requests.Session:
        fresh = transport.session is None
        session = build()
        if fresh:
            count_session(session, host, hook)
        return session

    transport.build_session = build_session  # type: ignore[method-assign]


def run_ps(config: Config, host: Host) -> Measurement:
    counter = RequestCounter()
    settings = config.windows_path(config.redstor.account_server.settings)
    queue = config.windows_path(config.redstor.account_server.task_queue)
    service = config.redstor.account_server.service
    scripts = [
        f"(Get-Service -Name '{service}').Status.ToString()",
        f"[Convert]::ToBase64String([IO.File]::ReadAllBytes('{settings}'))",
        f"Test-Path -LiteralPath '{queue}'",
        f"Test-Path -LiteralPath '{queue}\\{remote.TASK_FILE}'",
    ]
    session = winrm.Session(
        host.winrm.url,
        auth=(host.winrm.credentials.username, host.winrm.credentials.password),
        transport="basic",
        message_encryption="never",
        proxy=None,
        ca_trust_path=None,
        read_timeout_sec=host.winrm.read_timeout_s,
        operation_timeout_sec=host.winrm.operation_timeout_s,
    )
    count_every_session(session.protocol.transport, host.name, counter)
    started = time.monotonic()
    succeeded = 0
    for _ in range(ROUNDS):
        for script in scripts:
            succeeded += session.run_ps(script).status_code == 0
    return Measurement(
        "Session.run_ps",
        counter.requests,
        counter.connections,
        time.monotonic() - started,
        succeeded,
        dict(counter.actions),
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="winrm-bench-") as tmp:
        config_path = write_config(Path(tmp) / "config")
        state = Path(tmp) / "state"
        with running_platform(config_path, state) as platform:
            config = load_config(config_path)
            host = config.host(HOST)
            faults = {"latency_ms": LATENCY_MS, "handshake_ms": HANDSHAKE_MS}
            (state / HOST / "faults.json").write_text(json.dumps(faults), encoding="utf-8")
            results = []
            for measure in (ours, run_ps):
                before = platform.connections(HOST)
                result = measure(config, host)
                result.connections = platform.connections(HOST) - before
                results.append(result)
    print(
        f"{ROUNDS * 4} operations on one host, {LATENCY_MS} ms latency per request, "
        f"{HANDSHAKE_MS} ms per new connection"
    )
    print(f"{'client':<16}{'requests':>10}{'connections':>13}{'wall s':>9}{'ok':>5}  WS-Man actions")
    for m in results:
        actions = ", ".join(f"{k} {v}" for k, v in sorted(m.actions.items()))
        print(f"{m.name:<16}{m.requests:>10}{m.connections:>13}{m.seconds:>9.2f}{m.succeeded:>5}  {actions}")
    mine, theirs = results
    print(
        f"ratio requests {mine.requests / theirs.requests:.2f}x, connections {mine.connections} vs "
        f"{theirs.connections}, wall time {mine.seconds / theirs.seconds:.2f}x"
    )
    if theirs.succeeded < ROUNDS * 4:
        print(
            "note: the simulated platform runs only the executor's command line, so it answers run_ps's "
            "'powershell -encodedcommand' with an error; the WS-Man exchange (and its cost) is the same."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
