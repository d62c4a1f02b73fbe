"""Benchmark: resident memory of ``failover-bot serve`` (a real subprocess), idle and during a big run.

This process runs the simulated platform with N StorageServers per site (default 50, i.e. 102 hosts,
20 ms latency per WinRM request) and the loopback Slack stand-in; ``failover-bot serve`` runs as a
child process on a free loopback port with its own SQLite database; three people in this process drive
a failover and a failback through the child's HTTP endpoint with signed requests. VmRSS (and VmHWM,
the peak) is read from ``/proc/<pid>/status`` every 50 ms and summed over every process ``serve`` runs
(the web process and the worker process it supervises).

Usage: ``.venv/bin/python bench/memory.py [--servers 50] [--latency-ms 20] [--idle-s 5]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.platforms import site_hosts, write_platform  # noqa: E402
from bench.served import process_tree, tree_rss_kib  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.runtime import build_runtime  # noqa: E402
from bot.store.db import Store  # noqa: E402
from sandbox.people import ButtonNotFound, SlackPerson  # noqa: E402
from sandbox.rehearsal import BOT_TOKEN, SIGNING_SECRET, Rehearsal  # noqa: E402
from sandbox.simulator import SimulatedPlatform  # noqa: E402
from sandbox.slack_api import FakeSlackApi  # noqa: E402
from tests.support.platform import free_port  # noqa: E402

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass
class Sampler:
    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append((time.monotonic(), tree_rss_kib(self.pid)))  # serve + its worker
            except (OSError, KeyError):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def between(self, start: float, end: float) -> list[int]:
        return [kib for t, kib in self.samples if start <= t <= end]


def wait_healthy(url: str, deadline_s: float = 60) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with opener.open(f"{url}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"failover-bot serve did not answer {url}/healthz within {deadline_s} s")
        time.sleep(0.1)


def patient(rh: Rehearsal) -> None:
    """Click once the card shows the button (the card may lag the run's state by a moment)."""
    click = rh.click

    def retrying(*args: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                return click(*args, **kwargs)
            except ButtonNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    rh.click = retrying  # type: ignore[method-assign]


class _Url:
    def __init__(self, url: str) -> None:
        self.url = url


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--servers", type=int, default=50, help="StorageServers per site")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        config_path = write_platform(Path(tmp) / "cfg", args.servers)
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        raw["slack"]["post_interval_s"] = 0  # no pacing against the local stand-in
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        config = load_config(config_path)
        state = Path(tmp) / "state"
        db_url = f"sqlite:///{Path(tmp) / 'bot.db'}"
        env = {
            "FAILOVER_WINRM_USER": "bench-admin",
            "FAILOVER_WINRM_PASSWORD": "bench-password-not-secret",
        }
        os.environ.update(env)
        platform = SimulatedPlatform(config, state).start()
        slack = FakeSlackApi(token=BOT_TOKEN).start()
        port = free_port()
        child_env = {
            **os.environ,
            **platform.odbc_env(),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
            "FAILOVER_DB_URL": db_url,
        }
        child_env.pop("SLACK_APP_TOKEN", None)
        log_path = Path(tmp) / "serve.log"
        with log_path.open("wb") as log:
            cmd = [
                str(ROOT / ".venv" / "bin" / "failover-bot"),
                "serve",
                "--config",
                str(config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
            child = subprocess.Popen(cmd, env=child_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        sampler = Sampler(child.pid)
        watcher = None
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url)
            sampler.start()
            t0 = time.monotonic()
            time.sleep(args.idle_s)
            t_idle = time.monotonic()
            # The bench reads run state from the same database (read-only views); its runtime is never started.
            os.environ.update(platform.odbc_env())
            watcher = build_runtime(
                config,
                store=Store(db_url, migrate=False),
                token=BOT_TOKEN,
                signing_secret=SIGNING_SECRET,
                api_url=slack.api_url,
            )
            rh = Rehearsal(config, platform, slack, watcher, _Url(url), state)  # type: ignore[arg-type]
            for uid, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
                rh.people[uid] = SlackPerson(uid, name, bot_url=url, signing_secret=SIGNING_SECRET, slack=slack)
            patient(rh)
            for host in site_hosts(config_path, "site-b"):
                rh.faults(host, latency_ms=args.latency_ms)
            for host in site_hosts(config_path, "site-a"):
                rh.faults(host, latency_ms=args.latency_ms, refuse=True)
            fo = rh.start(ALICE, "start site-a")
            fo_state = rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL)).run.state
            for host in site_hosts(config_path, "site-a"):
                rh.faults(host, latency_ms=args.latency_ms)
            fb = rh.start(ALICE, "failback site-a")
            fb_state = rh.run_through(fb, initiator=ALICE, approvers=(BOB, CAROL)).run.state
            t_run = time.monotonic()
            time.sleep(1.0)
            t_after = time.monotonic()
            hwm = sum(rss_kib(pid)[1] for pid in process_tree(child.pid))
            procs = len(process_tree(child.pid))
        finally:
            sampler.stop()
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
            if watcher is not None:
                watcher.close()
            slack.stop()
            platform.stop()
        idle = sampler.between(t0, t_idle)
        run = sampler.between(t_idle, t_run)
        after = sampler.between(t_run, t_after)
        hosts = len(config.hosts())
        print(f"failover-bot serve (pid {child.pid}): {args.servers} StorageServers per site ({hosts} hosts), ")
        print(f"{args.latency_ms} ms per WinRM request; runs {fo_state}/{fb_state} in {t_run - t_idle:.1f} s")
        print(f"{'phase':<22}{'samples':>8}{'min MiB':>9}{'max MiB':>9}")
        for name, values in (("idle (after start-up)", idle), ("during the run", run), ("after the run", after)):
            if values:
                print(f"{name:<22}{len(values):>8}{mib(min(values)):>9}{mib(max(values)):>9}")
        print(f"peak VmHWM summed over serve's {procs} processes (web + worker): {mib(hwm)} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
