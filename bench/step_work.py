"""Benchmark: the bot's own work per step, counted (not timed): snapshot builds and database transactions.

The whole product runs in this process (sandbox/rehearsal.py: the HTTP bot, the Slack stand-in, three people
and the simulated platform with N StorageServers per site); a failover (site-a down) and a failback are
clicked through. Counted over both runs:

- ``view() calls``: RunService.view() calls by the bot (the people's own reads are not counted);
- ``builds``: snapshots built from the rows (without a snapshot cache, every call builds one);
- ``write txns`` / ``read txns``: committed transactions and read-only ones, on the bot's database engine.

Per step: divided by the steps that were executed or finished (not skipped as not needed); per target:
the write transactions of the fan-out steps' targets (claim, result, facts) divided by their targets.

Usage: ``.venv/bin/python bench/step_work.py [--servers 10]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import event  # noqa: E402

from bench.platforms import site_hosts, write_platform  # noqa: E402
from bot.store.models import StepRun  # noqa: E402
from sandbox.rehearsal import rehearsal  # noqa: E402

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
PEOPLE = ("/sandbox/", "/bench/")


def _counting(service: Any, counts: Counter[str]) -> None:
    """Count the bot's view() calls and every snapshot build, on this service only."""
    cls = type(service)
    real_view = cls.view
    lock = threading.Lock()
    builds_before = getattr(service, "view_builds", None)

    def view(self: Any, run_id: str) -> Any:
        caller = sys._getframe(1).f_code.co_filename
        by_people = any(p in caller for p in PEOPLE)
        with lock:
            counts["people view() calls" if by_people else "view() calls"] += 1
        return real_view(self, run_id)

    cls.view = view
    counts["_builds_base"] = builds_before if builds_before is not None else -1


def _transactions(engine: sa.Engine, counts: Counter[str]) -> None:
    @event.listens_for(engine, "commit")
    def _commit(_conn: Any) -> None:
        counts["write txns"] += 1

    @event.listens_for(engine, "rollback")
    def _rollback(_conn: Any) -> None:
        counts["read txns"] += 1


def measure(servers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cfg = write_platform(base / "cfg", servers)
        with rehearsal(cfg, base / "state", people={ALICE: "alice", BOB: "bob", CAROL: "carol"}) as rh:
            counts: Counter[str] = Counter()
            service = rh.service
            _counting(service, counts)
            _transactions(service.store.engine, counts)
            target_writes = _target_writes(service.store.engine)
            for host in site_hosts(cfg, "site-a"):
                rh.faults(host, refuse=True)  # site-a is down
            fo = rh.start(ALICE, "start site-a")
            rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
            for host in site_hosts(cfg, "site-a"):
                rh.faults(host)
            fb = rh.start(ALICE, "failback site-a")
            rh.run_through(fb, initiator=ALICE, approvers=(BOB, CAROL))
            builds = getattr(service, "view_builds", None)
            calls = counts["view() calls"] + counts["people view() calls"]
            with service.store.read_session() as s:
                rows = list(s.scalars(sa.select(StepRun)))
            steps = sum(1 for r in rows if r.target == "" and r.state != "skipped")
            targets = sum(1 for r in rows if r.target != "")
            return {
                "servers per site": servers,
                "steps run or done": steps,
                "fan-out targets": targets,
                "view() calls (bot)": counts["view() calls"],
                "view() calls (people)": counts["people view() calls"],
                "snapshot builds": builds if builds is not None else calls,
                "write txns": counts["write txns"],
                "read txns": counts["read txns"],
                "view() calls per step": round(counts["view() calls"] / max(steps, 1), 1),
                "builds per step": round((builds if builds is not None else calls) / max(steps, 1), 1),
                "write txns per step": round(counts["write txns"] / max(steps, 1), 1),
                "read txns per step": round(counts["read txns"] / max(steps, 1), 1),
                "write txns per target": round(target_writes["target"] / max(targets, 1), 2),
            }


def _target_writes(engine: sa.Engine) -> Counter[str]:
    """Committed transactions made on the fan-out target threads (named ``target_*`` by the worker)."""
    counts: Counter[str] = Counter()

    @event.listens_for(engine, "commit")
    def _commit(_conn: Any) -> None:
        if threading.current_thread().name.startswith("target"):
            counts["target"] += 1

    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[10])
    args = parser.parse_args()
    rows = [measure(n) for n in args.servers]
    width = max(len(k) for k in rows[0])
    for key in rows[0]:
        print(f"{key:<{width}}  " + "  ".join(f"{row[key]:>8}" for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
