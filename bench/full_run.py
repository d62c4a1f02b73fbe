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
Refused connections (site-a down) cost no latency and are not counted. Every host also charges
``handshake_ms`` on the first request of each new connection (faults.json; NTLM/Kerberos authenticates
a connection, and the simulated hosts keep connections alive as HTTP.sys does): the bound counts one
handshake per host, on its first request of the measurement (a client that keeps its connection never
needs another); the ``conns`` column is how many connections the bot actually opened.
docs/benchmarks.md explains it.

The scaling columns: CPU seconds of every process ``serve`` runs (the web process and its worker) per
host of the platform, and the peak of their summed resident memory (VmRSS, sampled every 50 ms).

Usage: ``.venv/bin/python bench/full_run.py [--servers 0 10 50 100 200] [--latency-ms 20]
[--handshake-ms 50] [--repeat 1] [--profile DIR]`` (0 = the example platform, two StorageServers per site).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.platforms import site_hosts  # noqa: E402
from bench.served import (  # noqa: E402
    TreeSampler,
    WinRMRequest,
    cpu_seconds,
    process_tree,
    served_bot,
    tree_cpu_seconds,
)

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
OUTSIDE = "(waiting on people: OTP reveals)"
APPROVALS = ("step.approve", "step.auto_approve")
ENDS = ("step.succeed", "step.done", "step.skip", "step.not_needed", "step.mark_done", "step.probe_in_place")


@dataclass
class Phases:
    """Per step: bot seconds and per-host requests of its preview (post) and its execution (exec)."""

    requests: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    handshakes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # first contacts
    bot_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    refused: int = 0
    connections: int = 0  # new connections the bot opened (requests that paid a handshake)
    contacted: set[str] = field(default_factory=set)

    def chain(self) -> dict[str, int]:
        return {phase: max(c.values()) for phase, c in self.requests.items() if phase != OUTSIDE and c}

    def cost_ms(self, latency_ms: int, handshake_ms: int) -> dict[str, int]:
        """Per phase, the busiest host's round trips plus its unavoidable handshakes, in milliseconds."""
        out = {}
        for phase, c in self.requests.items():
            if phase == OUTSIDE or not c:
                continue
            hs = self.handshakes.get(phase, Counter())
            out[phase] = max(n * latency_ms + hs[host] * handshake_ms for host, n in c.items())
        return out

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
    for t, host, refused, fresh in seen:
        if not first <= t <= last + 0.5:
            continue
        if refused:
            p.refused += 1
            continue
        phase = next((name for lo, hi, name in windows if lo <= t <= hi), OUTSIDE)
        p.requests[phase][host] += 1
        p.connections += fresh
        if host not in p.contacted:
            p.contacted.add(host)
            p.handshakes[phase][host] += 1


@dataclass
class Result:
    platform: str
    hosts: int
    latency_ms: int
    handshake_ms: int
    failover_s: float
    failback_s: float
    phases: Phases
    states: tuple[str, str]
    cpu: tuple[float, float, float]  # CPU seconds during the runs: serve (all its processes), platform, this one
    peak_rss_kib: int = 0  # summed over serve's processes
    peak_pss_kib: int = 0  # the same, shared pages split between them (sampled every 0.5 s)
    processes: int = 0  # how many processes serve ran

    @property
    def wall_s(self) -> float:
        return self.failover_s + self.failback_s

    @property
    def chain(self) -> int:
        return sum(self.phases.chain().values())

    @property
    def bound_s(self) -> float:
        return sum(self.phases.cost_ms(self.latency_ms, self.handshake_ms).values()) / 1000

    @property
    def bot_s(self) -> float:
        return sum(self.phases.bot_s.values())

    def row(self) -> str:
        return (
            f"{self.platform:<18}{self.hosts:>6}{self.failover_s:>9.2f}{self.failback_s:>9.2f}{self.wall_s:>9.2f}"
            f"{self.bot_s:>8.2f}{self.phases.total():>8}{self.phases.connections:>7}{self.chain:>7}{self.bound_s:>9.2f}"
            f"{self.wall_s / self.bound_s:>8.2f}x{self.bot_s / self.bound_s:>8.2f}x"
            f"{self.cpu[0]:>8.1f}{1000 * self.cpu[0] / self.hosts:>9.0f}"
            f"{self.peak_rss_kib / 1024:>8.1f} ({self.processes})  {'/'.join(self.states)}"
        )

    def slowest(self, n: int = 6) -> str:
        chain = self.phases.chain()
        top = sorted(self.phases.bot_s.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{k} {v:.2f} s/{chain.get(k, 0)}" for k, v in top)


HEADER = (
    f"{'platform':<18}{'hosts':>6}{'fo s':>9}{'fb s':>9}{'wall s':>9}{'bot s':>8}{'reqs':>8}{'conns':>7}{'chain':>7}"
    f"{'bound s':>9}{'wall/b':>9}{'bot/b':>9}{'cpu s':>8}{'ms/host':>9}{'RSS MiB (procs)':>16}  states"
)


def run_once(
    servers: int, latency_ms: int, handshake_ms: int = 0, profile: Path | None = None, postgres: str | None = None
) -> Result:
    with served_bot(servers or None, prefix="bench-full-run-", postgres=postgres) as b:
        rh = b.rh
        site_a, site_b = site_hosts(b.config_path, "site-a"), site_hosts(b.config_path, "site-b")
        for host in site_b:
            rh.faults(host, latency_ms=latency_ms, handshake_ms=handshake_ms)
        for host in site_a:
            rh.faults(host, latency_ms=latency_ms, handshake_ms=handshake_ms, refuse=True)  # site-a is down
        serve_pid, platform_pid = b.serve.proc.pid, b.platform.proc.pid  # type: ignore[union-attr]
        spies = start_profilers(serve_pid, profile, servers) if profile else []
        cpu0 = [tree_cpu_seconds(serve_pid), cpu_seconds(platform_pid), time.process_time()]
        sampler = TreeSampler(serve_pid).__enter__()
        started = time.monotonic()
        fo = rh.start(ALICE, "start site-a")
        fo_view = rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
        failover_s = time.monotonic() - started
        for host in site_a:
            rh.faults(host, latency_ms=latency_ms, handshake_ms=handshake_ms)  # site-a is back
        started = time.monotonic()
        fb = rh.start(ALICE, "failback site-a")
        fb_view = rh.run_through(fb, initiator=ALICE, approvers=(BOB, CAROL))
        failback_s = time.monotonic() - started
        cpu1 = [tree_cpu_seconds(serve_pid), cpu_seconds(platform_pid), time.process_time()]
        sampler.__exit__()
        stop_profilers(spies)
        time.sleep(0.3)  # requests in flight land before the platform is asked
        seen = b.platform.requests()
        phases = Phases()
        attribute(b.events(fo), seen, phases)
        attribute(b.events(fb), seen, phases)
        return Result(
            platform="example (2+2)" if not servers else f"generated {servers}+{servers}",
            hosts=len(site_a) + len(site_b),
            latency_ms=latency_ms,
            handshake_ms=handshake_ms,
            failover_s=failover_s,
            failback_s=failback_s,
            phases=phases,
            states=(fo_view.run.state, fb_view.run.state),
            cpu=(cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2]),
            peak_rss_kib=sampler.peak_kib,
            peak_pss_kib=sampler.peak_pss_kib,
            processes=max((n for _t, _k, n in sampler.samples), default=0),
        )


PY_SPY = os.environ.get("PY_SPY", "py-spy")


def start_profilers(serve_pid: int, out: Path, servers: int) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """py-spy (``PY_SPY``, installed apart: ``pip install --target DIR py-spy``) on every serve process."""
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in process_tree(serve_pid):
        role = "worker" if "worker" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") else "web"
        path = out / f"{role}-{servers}.txt"
        cmd = [PY_SPY, "record", "--nonblocking", "--pid", str(pid), "--rate", "100", "--format", "raw"]
        cmd += ["--output", str(path)]  # --nonblocking: never pause serve to sample it
        spies.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return spies


def stop_profilers(spies: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _path in spies:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for proc, path in spies:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"    profile: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--servers", type=int, nargs="+", default=[0, 10, 50], help="StorageServers per site; 0 = example"
    )
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--handshake-ms", type=int, default=50, help="cost of each new WinRM connection")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy every serve process into DIR")
    parser.add_argument("--postgres", default=None, metavar="URL", help="the bot's database: a fresh schema there")
    parser.add_argument("--repeat", type=int, default=1, help="runs per platform")
    parser.add_argument("--verbose", action="store_true", help="print every phase's requests and seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(
        f"failover + failback, people click at once, {args.latency_ms} ms per WinRM request, "
        f"{args.handshake_ms} ms per new connection; bot in `serve` (web + worker process)"
    )
    print(HEADER, flush=True)
    for n in args.servers:
        for _ in range(max(1, args.repeat)):
            result = run_once(n, args.latency_ms, args.handshake_ms, args.profile, args.postgres)
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
                "    CPU seconds during the runs: serve (all processes) {:.1f}, simulated platform {:.1f}, "
                "Slack stand-in and people {:.1f} ({} cores: {:.1f} core-seconds available)".format(
                    *result.cpu, os.cpu_count(), (os.cpu_count() or 1) * result.wall_s
                )
            )
            print(f"    slowest phases (bot s / chain requests): {result.slowest()}", flush=True)
            print(
                f"    peak memory of serve's processes: RSS summed {result.peak_rss_kib / 1024:.1f} MiB, "
                f"PSS summed {result.peak_pss_kib / 1024:.1f} MiB; handshakes in the bound: "
                f"{sum(sum(c.values()) for c in result.phases.handshakes.values())}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
