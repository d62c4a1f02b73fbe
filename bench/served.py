"""What the benchmarks share: the bot as a real ``failover-bot serve`` process, the fakes elsewhere.

Three processes, each with its own interpreter and GIL, as in production where Slack's servers and the
Windows hosts are other machines:

* ``failover-bot serve`` (``python -m bot serve --config F --host 127.0.0.1 --port P``, started by
  ``tests/support/serve_process.ServeProcess``) with the environment a deployment gives it:
  ``FAILOVER_DB_URL`` (SQLite in a temporary directory), ``SLACK_API_URL`` (the Slack stand-in),
  WinRM credentials and the ODBC connection string of the simulated StoragePlatform database; its
  configuration sets ``slack.post_interval_s: 0`` (no pacing against the local stand-in);
* the simulated platform (``sandbox.simulator.SimulatedPlatform``) in a spawned process of its own,
  which also notes the arrival time and host of every WinRM request (and of every connection it
  refuses because the host is "down");
* this process: the loopback Slack stand-in (``FakeSlackApi``) and the people, who read the run's state
  from the bot's database (read-only sessions) and the thread from the stand-in, and click with signed
  requests over HTTP, as the tests in ``tests/test_crash_recovery.py`` do.

All traffic stays on 127.0.0.1; everything is stopped on exit.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.platforms import write_platform  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.runs.service import RunService  # noqa: E402
from bot.store import audit  # noqa: E402
from bot.store.db import Store, as_utc  # noqa: E402
from sandbox.rehearsal import BOT_TOKEN, environment  # noqa: E402
from sandbox.slack_api import FakeSlackApi  # noqa: E402
from tests.support.platform import TEST_WINRM_PASSWORD, TEST_WINRM_USER, free_port  # noqa: E402
from tests.support.serve_process import (  # noqa: E402
    ReplicaPerson,
    Served,
    ServeProcess,
    _bot_env,
    postgres_schema,
)

PEOPLE = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol"}
# (arrival, epoch seconds; host; refused: the host was "down"; fresh: the first request on a new connection,
# which pays faults.json's handshake_ms, standing for the NTLM/Kerberos authentication of a connection)
WinRMRequest = tuple[float, str, bool, bool]


# --------------------------------------------------------------------------- the platform's own process


def _platform_main(config_path: str, state_dir: str, conn: Connection) -> None:
    """Serve the simulated platform until told to stop (or until the benchmark process goes away)."""
    from sandbox.simulator import SimulatedPlatform, endpoint

    seen: list[WinRMRequest] = []  # list.append is atomic: no lock needed on the request threads
    do_post = endpoint._Handler.do_POST
    verify = endpoint.EndpointServer.verify_request

    def noted_post(self: Any) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0].rstrip("/").lower())
        if route is not None:
            seen.append((time.time(), route.state.name, False, bool(getattr(self, "fresh", False))))
        do_post(self)

    def noted_verify(self: Any, request: Any, client_address: Any) -> bool:
        ok = bool(verify(self, request, client_address))
        if not ok:
            for route in self.routes.values():
                seen.append((time.time(), route.state.name, True, False))
        return ok

    endpoint._Handler.do_POST = noted_post  # type: ignore[method-assign]
    endpoint.EndpointServer.verify_request = noted_verify  # type: ignore[method-assign]
    platform = SimulatedPlatform(load_config(Path(config_path)), Path(state_dir)).start()
    try:
        conn.send(platform.odbc_env())
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the benchmark process is gone
            if message == "requests":
                conn.send(list(seen))
            else:
                return
    finally:
        platform.stop()


class PlatformProcess:
    """The simulated platform in a spawned process; ``requests()`` returns the WinRM requests it saw."""

    def __init__(self, config_path: Path, state_dir: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_platform_main, args=(str(config_path), str(state_dir), child), name="simulated-platform"
        )
        self.proc.daemon = True
        self.proc.start()
        if not self._conn.poll(60):
            self.stop()
            raise RuntimeError("the simulated platform did not start within 60 s")
        self.odbc: dict[str, str] = self._conn.recv()  # ODBC variable → connection string, per site

    def requests(self) -> list[WinRMRequest]:
        self._conn.send("requests")
        if not self._conn.poll(30):
            raise RuntimeError("the simulated platform did not answer")
        return list(self._conn.recv())

    def stop(self) -> None:
        try:
            self._conn.send(None)
        except OSError:
            pass
        self.proc.join(20)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --------------------------------------------------------------------------- everything together


@dataclass
class Bench:
    rh: Served
    platform: PlatformProcess
    serve: ServeProcess
    config_path: Path
    tmp: Path

    @property
    def url(self) -> str:
        return self.serve.url

    def events(self, run_id: str) -> list[tuple[float, str, str | None, str | None]]:
        """The run's audit events as (epoch seconds, event, step, target)."""
        with self.rh.service.store.read_session() as s:
            return [(as_utc(e.at).timestamp(), e.event, e.step_id, e.target) for e in audit.events_of(s, run_id)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (``serve`` and the worker process it supervises)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its living children (a child that died takes its seconds with it)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
    return total


def tree_rss_kib(pid: int) -> int:
    """VmRSS summed over ``pid`` and its children, in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def tree_pss_kib(pid: int) -> int:
    """Proportional set size summed over ``pid``'s tree (shared pages split between the processes), in KiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class TreeSampler:
    """Samples the summed RSS (and counts the processes) of ``serve``'s tree every ``every_s`` seconds."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        import threading

        self.pid = pid
        self.every_s = every_s
        self.peak_kib = 0
        self.peak_pss_kib = 0
        self.samples: list[tuple[float, int, int]] = []  # (time, KiB, processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            kib, procs = tree_rss_kib(self.pid), len(process_tree(self.pid))
            self.samples.append((time.monotonic(), kib, procs))
            self.peak_kib = max(self.peak_kib, kib)
            if len(self.samples) % 10 == 0:  # smaps_rollup costs more to read: every tenth sample
                self.peak_pss_kib = max(self.peak_pss_kib, tree_pss_kib(self.pid))

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def pin(pids: list[int], cpus: set[int]) -> None:
    """Restrict each of ``pids`` (every thread) to ``cpus`` (sched_setaffinity, like ``taskset -a -p``)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except OSError:
                continue


def write_bench_config(directory: Path, servers: int | None) -> Path:
    """The example platform (``servers`` None) or a generated one, with Slack post pacing off."""
    path = write_platform(directory, servers)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw.setdefault("slack", {})["post_interval_s"] = 0
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def served_bot(servers: int | None = None, *, prefix: str = "bench-", postgres: str | None = None) -> Iterator[Bench]:
    """Platform process, Slack stand-in here, ``failover-bot serve`` subprocess; all stopped on exit.

    The bot's database is SQLite in a temporary directory, or a fresh schema on the PostgreSQL server at
    ``postgres`` (dropped afterwards).
    """
    if postgres:
        with postgres_schema(postgres) as url:
            with _served_bot(servers, prefix=prefix, _db_url=url) as bench:
                yield bench
        return
    with _served_bot(servers, prefix=prefix, _db_url=None) as bench:
        yield bench


@contextmanager
def _served_bot(servers: int | None, *, prefix: str, _db_url: str | None) -> Iterator[Bench]:
    # the platform checks these credentials; the bot sends them
    with environment({"FAILOVER_WINRM_USER": TEST_WINRM_USER, "FAILOVER_WINRM_PASSWORD": TEST_WINRM_PASSWORD}):
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
            tmp = Path(tmp_name)
            config_path = write_bench_config(tmp / "cfg", servers)
            config = load_config(config_path)
            state = tmp / "state"
            db_url = _db_url or f"sqlite:///{tmp / 'failover-bot.db'}"
            platform = PlatformProcess(config_path, state)
            try:
                with FakeSlackApi(token=BOT_TOKEN) as slack:
                    store = Store(db_url)  # migrated once, before serve starts
                    env = _bot_env(config_path, slack, db_url, platform.odbc)
                    proc = ServeProcess("serve", config_path, free_port(), env, tmp / "logs")
                    rh = Served(
                        config,
                        None,  # type: ignore[arg-type]  # in its own process
                        slack,
                        None,  # type: ignore[arg-type]  # the bot runs in serve
                        None,  # type: ignore[arg-type]
                        state,
                        store=store,
                        replicas=[proc],
                        _run_service=RunService(store, config),
                    )
                    try:
                        proc.start()
                        for uid, name in PEOPLE.items():
                            rh.people[uid] = ReplicaPerson(uid, name, served=rh, slack=slack)
                        yield Bench(rh, platform, proc, config_path, tmp)
                    except BaseException:
                        lines = proc.log_tail(20000).splitlines()
                        first = next((i for i, line in enumerate(lines) if " ERROR " in line), max(0, len(lines) - 40))
                        shown = "\n".join(lines[first : first + 60])
                        print(f"serve's log from its first error:\n{shown}", file=sys.stderr)
                        raise
                    finally:
                        _stop(proc)
                        store.dispose()
            finally:
                platform.stop()


def _stop(proc: ServeProcess) -> None:
    """SIGTERM first (serve shuts down cleanly), SIGKILL after a deadline."""
    p = proc.proc
    if p is None:
        return
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(15)
        except Exception:  # noqa: BLE001 - any failure to stop politely ends in SIGKILL
            pass
    proc.kill()
