"""Benchmark: a whole failover plus failback, people clicking at once, N ms latency per WinRM request.

Everything runs in this process on loopback, as in the rehearsal (bot/sandbox/rehearsal.py): the
simulated platform, the Slack stand-in, the bot's real HTTP endpoint and three people sending signed
clicks the moment a step waits on them. Every host gets ``faults.json`` ``latency_ms``; during the
failover site-a's hosts also refuse connections (the site is down), then come back for the failback.

Next to the wall time it prints the critical path of WinRM round trips: every HTTP request the bot sends
is recorded with its host and the step the worker was on (posting a step reads its preview; executing it
runs the operations). Requests to one host are sequential (one shell, one lock), requests to different
hosts may overlap, so per step the busiest host's request count is a chain that cannot be shortened
without dropping requests; the sum over steps times the latency is the lower bound. docs/benchmarks.md
explains the model.

Usage: ``.venv/bin/python bench/full_run.py [--servers 0 10 50] [--latency-ms 20]`` (0 = the example
platform, two StorageServers per site).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actions.winrm import RequestEvent  # noqa: E402
from bench.platforms import site_hosts, write_platform  # noqa: E402
from bot.runs.worker import Worker  # noqa: E402
from bot.sandbox.people import ButtonNotFound  # noqa: E402
from bot.sandbox.rehearsal import Rehearsal, rehearsal  # noqa: E402

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
OUTSIDE = "(no step: OTP reveals, shutdown)"
CLICK_PATIENCE_S = 10.0


@dataclass
class Trace:
    """Every WinRM HTTP request, attributed to the step the worker is posting or executing."""

    current: str | None = None
    by_step: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    actions: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    bot_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: RequestEvent) -> None:
        with self._lock:
            self.by_step[self.current or OUTSIDE][event.host] += 1
            self.actions[event.action or "?"] += 1
            self.connections += event.new_connections

    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.by_step.values())

    def chain(self) -> dict[str, int]:
        """Per step: the requests of its busiest host (sequential there; other hosts may overlap)."""
        return {step: max(c.values()) for step, c in self.by_step.items() if step != OUTSIDE}


def patient_clicks(rh: Rehearsal) -> None:
    """Click only once the button is on the message: the run's state can be ahead of the message's update.

    (Rehearsal.settled returns when the step's state waits on people; the presenter may not yet have
    updated the card, e.g. still "Approve delete (1 of 2)" after the second approval. A person would
    see the new card a moment later and click then; so do these people.)
    """
    click = rh.click

    def patient(*args: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + CLICK_PATIENCE_S
        while True:
            try:
                return click(*args, **kwargs)
            except ButtonNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    rh.click = patient  # type: ignore[method-assign]


def instrument(rh: Rehearsal, trace: Trace) -> None:
    """Record requests per step: wrap the worker's post and execute (on its instance, not the class)."""
    worker: Worker = rh.runtime.context.worker
    rh.runtime.executor._on_request = trace  # channels are created lazily: every request is seen
    post, execute = worker._post, worker.execute

    def timed(label: str, fn: Any, *args: Any) -> Any:
        trace.current = label
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            trace.bot_seconds[label] += time.monotonic() - started
            trace.current = None

    # F and B step ids are distinct, so the step id alone names a step of either run.
    worker._post = lambda view, sv: timed(sv.step.id, post, view, sv)  # type: ignore[method-assign]
    worker.execute = lambda view, sv: timed(sv.step.id, execute, view, sv)  # type: ignore[method-assign]


@dataclass
class Result:
    platform: str
    servers_per_site: int
    hosts: int
    latency_ms: int
    failover_s: float
    failback_s: float
    requests: int
    connections: int
    chain_requests: int
    host_steps: int
    bot_s: float
    people_clicks: int
    states: tuple[str, str]
    slowest: list[tuple[str, float, int]]

    @property
    def wall_s(self) -> float:
        return self.failover_s + self.failback_s

    @property
    def bound_s(self) -> float:
        return self.chain_requests * self.latency_ms / 1000

    def row(self) -> str:
        return (
            f"{self.platform:<18}{self.hosts:>6}{self.failover_s:>9.2f}{self.failback_s:>9.2f}{self.wall_s:>9.2f}"
            f"{self.bot_s:>8.2f}{self.requests:>8}{self.chain_requests:>7}{self.bound_s:>9.2f}"
            f"{self.wall_s / self.bound_s:>8.2f}x{self.bot_s / self.bound_s:>8.2f}x  {'/'.join(self.states)}"
        )


HEADER = (
    f"{'platform':<18}{'hosts':>6}{'fo s':>9}{'fb s':>9}{'wall s':>9}{'bot s':>8}{'reqs':>8}{'chain':>7}"
    f"{'bound s':>9}{'wall/b':>9}{'bot/b':>9}  states"
)


def run_once(servers: int, latency_ms: int) -> tuple[Result, Trace]:
    with tempfile.TemporaryDirectory(prefix="bench-full-run-") as tmp:
        config_path = write_platform(Path(tmp) / "cfg", servers or None)
        site_a, site_b = site_hosts(config_path, "site-a"), site_hosts(config_path, "site-b")
        trace = Trace()
        with rehearsal(config_path, Path(tmp) / "state") as rh:
            instrument(rh, trace)
            patient_clicks(rh)
            for host in site_b:
                rh.faults(host, latency_ms=latency_ms)
            for host in site_a:
                rh.faults(host, latency_ms=latency_ms, refuse=True)  # site-a is down
            started = time.monotonic()
            fo = rh.start(ALICE, "start site-a")
            fo_view = rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
            failover_s = time.monotonic() - started
            for host in site_a:
                rh.faults(host, latency_ms=latency_ms)  # site-a is back
            started = time.monotonic()
            fb = rh.start(ALICE, "failback site-a")
            fb_view = rh.run_through(fb, initiator=ALICE, approvers=(BOB, CAROL))
            failback_s = time.monotonic() - started
            clicks = sum(1 for line in rh.log if ": " in line)
    chain = trace.chain()
    steps = sorted(trace.bot_seconds.items(), key=lambda kv: -kv[1])[:5]
    result = Result(
        platform="example (2+2)" if not servers else f"generated {servers}+{servers}",
        servers_per_site=servers or 2,
        hosts=len(site_a) + len(site_b),
        latency_ms=latency_ms,
        failover_s=failover_s,
        failback_s=failback_s,
        requests=trace.requests(),
        connections=trace.connections,
        chain_requests=sum(chain.values()),
        host_steps=len(chain),
        bot_s=sum(trace.bot_seconds.values()),
        people_clicks=clicks,
        states=(fo_view.run.state, fb_view.run.state),
        slowest=[(s, t, chain.get(s, 0)) for s, t in steps],
    )
    return result, trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--servers", type=int, nargs="+", default=[0, 10, 50], help="StorageServers per site; 0 = example"
    )
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--verbose", action="store_true", help="print the requests of every step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"failover + failback, people click at once, {args.latency_ms} ms per WinRM request")
    print(HEADER)
    results = []
    for n in args.servers:
        result, trace = run_once(n, args.latency_ms)
        results.append(result)
        print(result.row(), flush=True)
        if args.verbose:
            for step, hosts in trace.by_step.items():
                busiest = max(hosts.values())
                print(
                    f"    {step:<24} hosts {len(hosts):>3} requests {sum(hosts.values()):>5} busiest {busiest:>3} "
                    f"bot {trace.bot_seconds.get(step, 0.0):6.2f} s"
                )
            print("    WS-Man actions: " + json.dumps(dict(trace.actions)))
        print(
            "    slowest steps (bot s, chain requests): "
            + ", ".join(f"{s} {t:.2f} s/{c}" for s, t, c in result.slowest),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
