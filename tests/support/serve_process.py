"""`failover-bot serve` as real subprocesses (SIGKILL and restart on the same state), driven by signed clicks.

The simulated platform and the loopback Slack stand-in run in the test process; each bot replica is
``python -m bot serve --config F --port P`` with the environment a deployment would give it. The
people click exactly what the thread shows (the sandbox rehearsal's logic), and a click can go to one
replica, alternate between them, or go to every replica at once, as a load balancer replaying it would.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from bot.config import load_config
from bot.runs.service import RunService
from bot.store import audit
from bot.store.db import Store, normalise_url
from sandbox.people import Response, SlackPerson
from sandbox.rehearsal import BOT_TOKEN, SIGNING_SECRET, Rehearsal, RehearsalError
from sandbox.slack_api import FakeSlackApi
from tests.support.paths import ROOT
from tests.support.platform import TEST_WINRM_PASSWORD, TEST_WINRM_USER, free_port, running_platform, write_config

HEALTH_TIMEOUT_S = 60.0
Route = Literal["first", "second", "both", "alternate"]


class ServeProcess:
    """One ``failover-bot serve`` process on a fixed loopback port; SIGKILL it and start it again at will."""

    def __init__(
        self, name: str, config_path: Path, port: int, env: dict[str, str], log_dir: Path, args: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.args = args  # e.g. ("--role", "web")
        self.config_path = config_path
        self.port = port
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = HEALTH_TIMEOUT_S) -> ServeProcess:
        """Start the process and wait (with a deadline) until ``GET /healthz`` answers 200."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bot",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--port",
                    str(self.port),
                    "--host",
                    "127.0.0.1",
                    *self.args,
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_healthy(time.monotonic() + timeout_s)
        return self

    def _wait_healthy(self, deadline: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with opener.open(f"{self.url}/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not answer /healthz in time:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no clean-up runs in the bot, exactly like a host that loses power."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class ReplicaPerson(SlackPerson):
    """A Slack user whose deliveries reach one replica, alternate between them, or reach all of them at once."""

    def __init__(self, user_id: str, user_name: str, *, served: Served, slack: FakeSlackApi) -> None:
        super().__init__(user_id, user_name, bot_url=served.replicas[0].url, signing_secret=SIGNING_SECRET, slack=slack)
        self.served = served

    def _post(self, body: str, headers: dict[str, str]) -> Response:
        urls = self.served.targets()
        if len(urls) == 1:
            return self._post_to(f"{urls[0]}/slack/events", body, headers)
        with ThreadPoolExecutor(max_workers=len(urls)) as pool:  # the same delivery, at the same moment
            answers = list(pool.map(lambda url: self._post_to(f"{url}/slack/events", body, headers), urls))
        return answers[0]


@dataclass
class Served(Rehearsal):
    """The rehearsal with the bot in other processes: state is read from the shared database."""

    store: Store | None = None
    replicas: list[ServeProcess] = field(default_factory=list)
    route: Route = "first"
    _turn: Any = field(default_factory=lambda: itertools.count())
    _run_service: RunService | None = None

    @property
    def service(self) -> RunService:
        assert self._run_service is not None
        return self._run_service

    def targets(self) -> list[str]:
        """Where the next delivery goes, according to ``route`` (replicas that are down are skipped)."""
        up = [r for r in self.replicas if r.alive]
        if not up:
            raise RehearsalError("no bot replica is running")
        if self.route == "both" or len(up) == 1:
            return [r.url for r in up]
        if self.route == "alternate":
            return [up[next(self._turn) % len(up)].url]
        wanted = self.replicas[0 if self.route == "first" else 1]
        return [wanted.url] if wanted.alive else [up[0].url]

    # ------------------------------------------------------------------ the audit log, as the test reads it

    def events(self, run_id: str) -> list[dict[str, Any]]:
        with self.service.store.session() as s:
            return [
                {
                    "seq": e.seq,
                    "event": e.event,
                    "actor": e.actor,
                    "step_id": e.step_id,
                    "target": e.target,
                    "detail": json.loads(e.detail),
                }
                for e in audit.events_of(s, run_id)
            ]

    def has_event(self, run_id: str, event: str, step_id: str | None = None) -> bool:
        return any(e["event"] == event and (step_id is None or e["step_id"] == step_id) for e in self.events(run_id))

    def wait_event(self, run_id: str, event: str, step_id: str | None = None, timeout: float = 30.0) -> None:
        self.wait_until(f"audit event {event} {step_id or ''}", lambda: self.has_event(run_id, event, step_id), timeout)

    def changing_operations(self) -> list[tuple[str, str]]:
        """Operations that changed something on a host, as the simulated platform recorded them."""
        return [
            (o["host"], o["operation"])
            for o in self.operations()
            if o["operation"] in ("service.stop", "service.start", "service.restart", "file.replace", "taskqueue.drop")
            and o.get("outcome") == "ok"
        ]

    def wait_quiet(self, seconds: float, timeout: float = 30.0) -> None:
        """Wait until the platform has recorded no operation for ``seconds`` (requests in flight have landed)."""
        deadline = time.monotonic() + timeout
        count, since = len(self.operations()), time.monotonic()
        while time.monotonic() - since < seconds:
            if time.monotonic() > deadline:
                raise RehearsalError(f"the platform kept working for {timeout} s")
            time.sleep(0.05)
            now = len(self.operations())
            if now != count:
                count, since = now, time.monotonic()


def _bot_env(config_path: Path, slack: FakeSlackApi, db_url: str, odbc: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAILOVER_", "SLACK_")) and k not in ("CI_DEBUG",)}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "FAILOVER_DB_URL": db_url,
            "FAILOVER_CONFIG": str(config_path),
            "FAILOVER_WINRM_USER": TEST_WINRM_USER,
            "FAILOVER_WINRM_PASSWORD": TEST_WINRM_PASSWORD,
            **odbc,
        }
    )
    return env


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server at ``url``; yields a URL that uses it; dropped afterwards."""
    base = normalise_url(url)
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def served(
    tmp_path: Path,
    *,
    replicas: int = 1,
    db_url: str | None = None,
    people: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    serve_args: tuple[str, ...] = (),
) -> Iterator[Served]:
    """The simulated platform and the Slack stand-in here, ``replicas`` bot processes on one database.

    ``config`` is merged into the example configuration (e.g. ``{"readiness": {"interval_s": 5}}``).
    """
    overrides: dict[str, Any] = {"slack": {"post_interval_s": 0}, **(config or {})}
    config_path = write_config(tmp_path / "cfg", **overrides)
    loaded = load_config(config_path)
    state = tmp_path / "state"
    db_url = db_url or f"sqlite:///{tmp_path / 'failover-bot.db'}"
    names = people or {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol"}
    with running_platform(config_path, state) as platform, FakeSlackApi(token=BOT_TOKEN) as slack:
        store = Store(db_url)  # migrates once, before any replica starts
        env = _bot_env(config_path, slack, db_url, platform.odbc_env())
        procs = [
            ServeProcess(f"bot-{i + 1}", config_path, free_port(), env, tmp_path / "logs", serve_args)
            for i in range(replicas)
        ]
        h = Served(
            loaded,
            platform,
            slack,
            None,  # type: ignore[arg-type]  # the bot runs elsewhere: no in-process runtime
            None,  # type: ignore[arg-type]
            state,
            store=store,
            replicas=procs,
            _run_service=RunService(store, loaded),
        )
        try:
            starting = [threading.Thread(target=p.start) for p in procs]
            for t in starting:
                t.start()
            for t in starting:
                t.join(HEALTH_TIMEOUT_S + 5)
            for p in procs:
                if not p.alive:
                    raise RuntimeError(f"{p.name} did not start:\n{p.log_tail()}")
            for uid, name in names.items():
                h.people[uid] = ReplicaPerson(uid, name, served=h, slack=slack)
            yield h
        finally:
            for p in procs:
                p.kill()
            store.dispose()
