"""Benchmark: a whole failover plus failback, people clicking at once, N ms latency per WinRM request.

The bot runs as a real ``failover-bot serve`` process; the simulated platform runs in a process of its
own and the Slack stand-in and the three people in this one (bench/served.py). Every host gets
``faults.json`` ``latency_ms``; during the failover site-a's hosts also refuse connections (the site
is down), then come back for the failback. People click the moment a step waits on them.

The lower bound is computed from what the platform saw, not from inside the bot: the platform notes
the arrival time and host of every WinRM request; the bot's audit log says when each step was posted
(``step.post``), approved (``step.approve``/``step.auto_approve``) and finished. Requests between the
previous step's end and a step's post are that step's preview reads; requests between its approval
and its end are its execution; requests while it waits on people (OTP reveals) are outside any step.
Requests to one host are sequential (one shell per host, one lock in the bot), requests to different
hosts may overlap, so per phase the busiest host's request count is a chain of round trips that
cannot be shortened without sending fewer requests; their sum times the latency is the bound.
Refused connections (site-a down) cost no latency and are not counted. docs/benchmarks.md explains it.

Usage: ``.venv/bin/python bench/full_run.py [--servers 0 10 50] [--latency-ms 20] [--repeat 1]``
(0 = the example platform, two StorageServers per site).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.platforms import site_hosts  # noqa: E402
from bench.served import WinRMRequest, cpu_seconds, served_bot  # noqa: E402

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
OUTSIDE = "(waiting on people: OTP reveals)"
APPROVALS = ("step.approve", "step.auto_approve")
ENDS = ("step.succeed", "step.done", "step.skip", "step.not_needed", "step.mark_done", "step.probe_in_place")


@dataclass
class Phases:
    """Per step: bot seconds and per-host requests of its preview (post) and its execution (exec)."""

    requests: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    bot_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    refused: int = 0

    def chain(self) -> dict[str, int]:
        return {phase: max(c.values()) for phase, c in self.requests.items() if phase != OUTSIDE and c}

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.requests.values())


def attribute(events: list[tuple[float, str, str | None, str | None]], seen: list[WinRMRequest], p: Phases) -> None:
    """Split one run's time and WinRM requests into per-step phases (see the module docstring)."""
    windows: list[tuple[float, float, str]] = []
    prev_end = next(t for t, ev, _s, _t in events if ev == "run.started")
    run_end = events[-1][0]
    order: list[str] = []
    marks: dict[str, dict[str, float]] = defaultdict(dict)
    for t, ev, step, target in events:
        if step is None or target is not None:
            continue
        if step not in marks:
            order.append(step)
        m = marks[step]
        if ev == "step.post":
            m.setdefault("post", t)
        elif ev in APPROVALS:
            m["approved"] = t
        elif ev in ENDS:
            m["end"] = t
            m.setdefault("post", t)  # not needed: never posted
    for step in order:
        m = marks[step]
        post, end = m.get("post", prev_end), m.get("end", run_end)
        windows.append((prev_end, post, f"{step} post"))
        p.bot_s[f"{step} post"] += post - prev_end
        if "approved" in m and m["approved"] <= end:
            windows.append((m["approved"], end, f"{step} exec"))
            p.bot_s[f"{step} exec"] += end - m["approved"]
        prev_end = end
    first, last = windows[0][0], windows[-1][1]
    for t, host, refused in seen:
        if not first <= t <= last + 0.5:
            continue
        if refused:
            p.refused += 1
            continue
        phase = next((name for lo, hi, name in windows if lo <= t <= hi), OUTSIDE)
        p.requests[phase][host] += 1


@dataclass
class Result:
    platform: str
    hosts: int
    latency_ms: int
    failover_s: float
    failback_s: float
    phases: Phases
    states: tuple[str, str]
    cpu: tuple[float, float, float]  # CPU seconds during the runs: serve, platform, this process

    @property
    def wall_s(self) -> float:
        return self.failover_s + self.failback_s

    @property
    def chain(self) -> int:
        return sum(self.phases.chain().values())

    @property
    def bound_s(self) -> float:
        return self.chain * self.latency_ms / 1000

    @property
    def bot_s(self) -> float:
        return sum(self.phases.bot_s.values())

    def row(self) -> str:
        return (
            f"{self.platform:<18}{self.hosts:>6}{self.failover_s:>9.2f}{self.failback_s:>9.2f}{self.wall_s:>9.2f}"
            f"{self.bot_s:>8.2f}{self.phases.total():>8}{self.chain:>7}{self.bound_s:>9.2f}"
            f"{self.wall_s / self.bound_s:>8.2f}x{self.bot_s / self.bound_s:>8.2f}x  {'/'.join(self.states)}"
        )

    def slowest(self, n: int = 6) -> str:
        chain = self.phases.chain()
        top = sorted(self.phases.bot_s.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{k} {v:.2f} s/{chain.get(k, 0)}" for k, v in top)


HEADER = (
    f"{'platform':<18}{'hosts':>6}{'fo s':>9}{'fb s':>9}{'wall s':>9}{'bot s':>8}{'reqs':>8}{'chain':>7}"
    f"{'bound s':>9}{'wall/b':>9}{'bot/b':>9}  states"
)


def run_once(servers: int, latency_ms: int) -> Result:
    with served_bot(servers or None, prefix="bench-full-run-") as b:
        rh = b.rh
        site_a, site_b = site_hosts(b.config_path, "site-a"), site_hosts(b.config_path, "site-b")
        for host in site_b:
            rh.faults(host, latency_ms=latency_ms)
        for host in site_a:
            rh.faults(host, latency_ms=latency_ms, refuse=True)  # site-a is down
        pids = (b.serve.proc.pid, b.platform.proc.pid)  # type: ignore[union-attr]
        cpu0 = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
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
        cpu1 = [cpu_seconds(pid) for pid in pids] + [time.process_time()]
        time.sleep(0.3)  # requests in flight land before the platform is asked
        seen = b.platform.requests()
        phases = Phases()
        attribute(b.events(fo), seen, phases)
        attribute(b.events(fb), seen, phases)
        return Result(
            platform="example (2+2)" if not servers else f"generated {servers}+{servers}",
            hosts=len(site_a) + len(site_b),
            latency_ms=latency_ms,
            failover_s=failover_s,
            failback_s=failback_s,
            phases=phases,
            states=(fo_view.run.state, fb_view.run.state),
            cpu=(cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2]),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--servers", type=int, nargs="+", default=[0, 10, 50], help="StorageServers per site; 0 = example"
    )
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs per platform")
    parser.add_argument("--verbose", action="store_true", help="print every phase's requests and seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"failover + failback, people click at once, {args.latency_ms} ms per WinRM request; bot in `serve`")
    print(HEADER, flush=True)
    for n in args.servers:
        for _ in range(max(1, args.repeat)):
            result = run_once(n, args.latency_ms)
            print(result.row(), flush=True)
            if args.verbose:
                chain = result.phases.chain()
                for phase, secs in result.phases.bot_s.items():
                    hosts = result.phases.requests.get(phase, Counter())
                    print(
                        f"    {phase:<14} hosts {len(hosts):>3} requests {sum(hosts.values()):>5} "
                        f"busiest {chain.get(phase, 0):>3} bot {secs:6.2f} s"
                    )
                outside = result.phases.requests.get(OUTSIDE, Counter())
                print(f"    {OUTSIDE}: {sum(outside.values())} requests; refused connections: {result.phases.refused}")
            print(
                "    CPU seconds during the runs: serve {:.1f}, simulated platform {:.1f}, Slack stand-in and "
                "people {:.1f} (2 cores: {:.1f} core-seconds available)".format(*result.cpu, 2 * result.wall_s)
            )
            print(f"    slowest phases (bot s / chain requests): {result.slowest()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
