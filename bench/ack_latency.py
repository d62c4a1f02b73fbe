"""Benchmark: how fast the bot's HTTP endpoint acknowledges signed Slack requests, 1 / 10 / 50 at once.

The bot runs as a real ``failover-bot serve`` process (16 waitress threads, as deployed); the
simulated example platform runs in a process of its own; the Slack stand-in and the people who read
the thread run in this one (bench/served.py). The load comes from a further process (spawned, its own
interpreter and GIL, like Slack's servers would be), which opens a new TCP connection per request, as
Slack does, and releases each burst of C requests together behind a barrier. Latency is measured
there: connect, send, read the whole answer.

Two kinds of request:

* ``status``: ``/failover status`` from an operator while a failover waits on an approval (the answer
  is the acknowledgement; the status text goes to ``response_url``).
* ``click``: bursts of button clicks on the step that waits, as when several people press at once:
  Approve (or Done on a manual step) by the two approvers alternately, with their own action_ts; one
  click moves the step on, the others are refused (already approved, stale card) or counted as a
  second approval on a two-person delete. The bursts walk a whole failover and failback of the
  example platform; between bursts the people wait until the bot has taken the step in.

Usage: ``.venv/bin/python bench/ack_latency.py [--concurrency 1 10 50] [--samples 200]``.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import math
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
Request = tuple[str, dict[str, str]]  # (body, headers) as Slack would POST them


# --------------------------------------------------------------------------- the load process


def _fire(port: int, path: str, request: Request, barrier: threading.Barrier, out: list[Any], i: int) -> None:
    body, headers = request
    barrier.wait(timeout=30)
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body.encode("utf-8"), headers=headers)
        reply = conn.getresponse()
        reply.read()
        out[i] = (reply.status, time.perf_counter() - started)
    except OSError as exc:
        out[i] = (-1, time.perf_counter() - started, str(exc))
    finally:
        conn.close()


def load_process(pipe: Connection, url: str) -> None:
    """Serve bursts until told to stop: receive a list of requests, send them all at once, reply timings."""
    parts = urlsplit(url)
    port, path = int(parts.port or 80), parts.path or "/slack/events"
    while True:
        batch = pipe.recv()
        if batch is None:
            return
        out: list[Any] = [None] * len(batch)
        barrier = threading.Barrier(len(batch))
        threads = [
            threading.Thread(target=_fire, args=(port, path, req, barrier, out, i)) for i, req in enumerate(batch)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        pipe.send(out)


# --------------------------------------------------------------------------- the bot side


@dataclass
class Stats:
    kind: str
    concurrency: int
    latencies: list[float]
    statuses: Counter[int]

    def row(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] * 1000
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        top = lat[-1] * 1000
        return f"{self.kind:<8}{self.concurrency:>6}{len(lat):>9}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}  HTTP {codes}"


HEADER = f"{'request':<8}{'conc.':>6}{'samples':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  answers"


def capture(person: Any) -> Any:
    """A SlackPerson that signs and records its deliveries instead of posting them."""
    from sandbox.people import Response

    captured: list[Request] = []

    def post(body: str, headers: dict[str, str]) -> Response:
        captured.append((body, dict(headers)))
        return Response(200, "", 0.0)

    person._post = post
    person.captured = captured
    return person


class Bench:
    def __init__(self, rh: Any, pipe: Connection, url: str) -> None:
        self.rh = rh
        self.pipe = pipe
        from sandbox.people import SlackPerson
        from sandbox.rehearsal import SIGNING_SECRET

        self.signers = {
            uid: capture(SlackPerson(uid, p.user_name, bot_url=url, signing_secret=SIGNING_SECRET, slack=rh.slack))
            for uid, p in rh.people.items()
        }

    def burst(self, requests: list[Request]) -> list[tuple[int, float]]:
        self.pipe.send(requests)
        out = self.pipe.recv()
        return [(r[0], r[1]) for r in out]

    def sign(self, user: str, act: Any) -> Request:
        signer = self.signers[user]
        act(signer)
        return signer.captured.pop()  # type: ignore[no-any-return]

    def sign_click(self, user: str, message: Any, action: str, value: str | None) -> Request:
        return self.sign(user, lambda p: p.click(message, action, value))

    # ---- /failover status

    def status(self, concurrency: int, samples: int) -> Stats:
        stats = Stats("status", concurrency, [], Counter())
        users = [ALICE, BOB, CAROL]
        for _ in range(max(1, math.ceil(samples / concurrency))):
            batch = [self.sign(users[i % 3], lambda p: p.command("status")) for i in range(concurrency)]
            for code, seconds in self.burst(batch):
                stats.statuses[code] += 1
                stats.latencies.append(seconds)
        return stats

    # ---- click bursts through a whole failover and failback

    def clicks(self, concurrency: int, samples: int, run_id: str) -> Stats:
        """Bursts on the step that waits. A card whose button opens a modal (a deletion approved with its
        DELETE/KEEP list, B25's list) or that does not show the button yet is handled by the people the
        sandbox rehearsal plays (views.open, then view_submission), never a failure of the benchmark."""
        from bot.runs.machine import StepState
        from bot.runs.rules import bot_executes
        from bot.slack_ids import ActionId
        from sandbox.rehearsal import RehearsalError

        rh = self.rh
        stats = Stats("click", concurrency, [], Counter())
        approvers = (BOB, CAROL)
        for _ in range(400):
            view = rh.settled(run_id)
            cur = view.current
            if view.run.state != "active" or cur is None:
                return stats
            step = cur.step
            if cur.state == StepState.FAILED:
                raise RuntimeError(f"{step.id} failed: {cur.row.error}")
            action = ActionId.APPROVE
            if cur.state == StepState.AWAITING_APPROVAL and not (step.risk == "destructive" or bot_executes(step)):
                action = ActionId.DONE
            elif cur.state == StepState.APPROVED and not bot_executes(step):
                action = ActionId.DONE
            choice = step.spec.choices[0] if action == ActionId.DONE and step.spec.choices else None
            found = self._button(run_id, step.id, str(action), choice)
            if found is None or found[1].endswith(":modal"):
                rh.act_once(run_id, cur, approvers)  # a modal, or a card not (yet) showing the button
                continue
            message, action_id, value = found
            first = CAROL if cur.approvers and cur.approvers[0] == BOB else BOB
            order = [first, *(a for a in approvers if a != first)]
            batch = [self.sign_click(order[i % 2], message, action_id, value) for i in range(concurrency)]
            before = (cur.state, cur.row.attempt, len(cur.approvers), len(cur.mark_done_votes))
            for code, seconds in self.burst(batch):
                stats.statuses[code] += 1
                stats.latencies.append(seconds)
            try:
                rh.wait_until(f"{step.id} to move on", partial(rh._moved, run_id, step.id, before), timeout=10)
            except RehearsalError:  # every click was refused (the card changed under it): people act instead
                rh.act_once(run_id, rh.settled(run_id).current, approvers)
        raise RuntimeError(f"{run_id} did not finish")

    def _button(self, run_id: str, step_id: str, action: str, choice: str | None) -> tuple[Any, str, str] | None:
        """The step's card once it shows the button: (message, action_id, value); None after a few seconds.

        Buttons are matched on their action_id (``step_done:<choice>``, ``step_approve:modal``), never on a
        value rebuilt here: the value carries the card's round and fingerprint.
        """
        from sandbox.people import buttons

        deadline = time.monotonic() + 5
        while True:
            msg = self.rh.message_of(run_id, step_id)
            for b in buttons(msg.blocks):
                base, _, suffix = b.action_id.partition(":")
                if base == action and (choice is None or suffix == choice):
                    return msg, b.action_id, b.value
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)

    # ---- while a big run executes

    def stale_clicks(self, concurrency: int, button: tuple[Any, str, str]) -> list[tuple[int, float]]:
        """A burst of clicks on a card the run has left behind: each is verified, deduplicated, recorded and
        acknowledged, then refused in the background (the step is no longer waiting)."""
        message, action_id, value = button
        batch = [self.sign_click((BOB, CAROL)[i % 2], message, action_id, value) for i in range(concurrency)]
        return self.burst(batch)


def _loader(ctx: multiprocessing.context.SpawnContext, url: str) -> tuple[Connection, Any]:
    parent, child = ctx.Pipe()
    loader = ctx.Process(target=load_process, args=(child, f"{url}/slack/events"), daemon=True)
    loader.start()
    return parent, loader


def _stop_loader(parent: Connection, loader: Any) -> None:
    parent.send(None)
    loader.join(30)
    if loader.is_alive():
        loader.terminate()


def _pin(b: Any, loader: Any, pin_serve: set[int] | None) -> str:
    """Pin serve's processes to ``pin_serve`` and everything else to the other CPUs; say what was done."""
    from bench.served import pin, process_tree

    if not pin_serve:
        return "contended: serve, the platform, the Slack stand-in and the load share every CPU"
    others = set(range(os.cpu_count() or 1)) - pin_serve or pin_serve
    pin(process_tree(b.serve.proc.pid), pin_serve)
    pin([os.getpid(), b.platform.proc.pid, loader.pid], others)
    return f"serve pinned to CPU {sorted(pin_serve)}, everything else to CPU {sorted(others)}"


def measure(
    concurrency: int, samples: int, ctx: multiprocessing.context.SpawnContext, pin_serve: set[int] | None = None
) -> tuple[list[Stats], str]:
    """Alone: ``status`` while the example platform's failover waits on F1, then click bursts through a whole
    failover and failback of the example platform."""
    from bench.platforms import site_hosts
    from bench.served import served_bot

    with served_bot(None, prefix="bench-ack-") as b:
        rh = b.rh
        parent, loader = _loader(ctx, b.url)
        try:
            note = _pin(b, loader, pin_serve)
            bench = Bench(rh, parent, b.url)
            for host in site_hosts(b.config_path, "site-a"):
                rh.faults(host, refuse=True)
            fo = rh.start(ALICE, "start site-a")
            rh.settled(fo)  # F1 waits on an approval
            results = [bench.status(concurrency, samples)]
            click = bench.clicks(concurrency, samples, fo)
            for host in site_hosts(b.config_path, "site-a"):
                rh.faults(host)
            fb = rh.start(ALICE, "failback site-a")
            more = bench.clicks(concurrency, samples, fb)
            click.latencies += more.latencies
            click.statuses += more.statuses
            results.append(click)
            for view_id in (fo, fb):
                state = rh.service.view(view_id).run.state
                if state != "completed":
                    print(f"note: {view_id} ended {state}")
        finally:
            _stop_loader(parent, loader)
    return results, note


def measure_during_run(
    concurrency: int,
    servers: int,
    latency_ms: int,
    ctx: multiprocessing.context.SpawnContext,
    pin_serve: set[int] | None = None,
    every_s: float = 2.0,
) -> tuple[list[Stats], str]:
    """While a ``servers``+``servers`` failover and failback execute (people clicking through them as fast
    as they can on another thread), every ``every_s`` seconds a burst of ``status`` and a burst of clicks
    on a card the run has left behind (F1's Approve, once F1 is done), until the run ends. Back to back,
    the bursts would be hundreds of requests a second: the work they queue would starve the run's own
    clicks, which is an overload test, not this measurement."""
    from bench.platforms import site_hosts
    from bench.served import served_bot
    from bot.runs.rules import bot_executes

    with served_bot(servers, prefix="bench-ack-run-") as b:
        rh = b.rh
        parent, loader = _loader(ctx, b.url)
        try:
            note = _pin(b, loader, pin_serve)
            bench = Bench(rh, parent, b.url)
            site_a, site_b = site_hosts(b.config_path, "site-a"), site_hosts(b.config_path, "site-b")
            for host in site_b:
                rh.faults(host, latency_ms=latency_ms)
            for host in site_a:
                rh.faults(host, latency_ms=latency_ms, refuse=True)
            fo = rh.start(ALICE, "start site-a")
            cur = rh.settled(fo).current
            assert cur is not None and bot_executes(cur.step)
            stale = bench._button(fo, cur.step.id, "step_approve", None)
            assert stale is not None, f"no Approve on {cur.step.id}'s card"
            done = threading.Event()
            failure: list[BaseException] = []

            def drive() -> None:
                try:
                    rh.run_through(fo, initiator=ALICE, approvers=(BOB, CAROL))
                    for host in site_a:
                        rh.faults(host, latency_ms=latency_ms)
                    fb = rh.start(ALICE, "failback site-a")
                    rh.run_through(fb, initiator=ALICE, approvers=(BOB, CAROL))
                except BaseException as exc:  # noqa: BLE001 - reported after the measurement
                    failure.append(exc)
                finally:
                    done.set()

            driver = threading.Thread(target=drive, name="people", daemon=True)
            started = time.monotonic()
            driver.start()
            rh.wait_until("F1 to be done", lambda: rh.service.view(fo).step(cur.step.id).state != cur.state, 60)
            status = Stats("status*", concurrency, [], Counter())
            click = Stats("click*", concurrency, [], Counter())
            users = [ALICE, BOB, CAROL]
            while not done.wait(every_s):
                batch = [bench.sign(users[i % 3], lambda p: p.command("status")) for i in range(concurrency)]
                for code, seconds in bench.burst(batch):
                    status.statuses[code] += 1
                    status.latencies.append(seconds)
                for code, seconds in bench.stale_clicks(concurrency, stale):
                    click.statuses[code] += 1
                    click.latencies.append(seconds)
            driver.join(600)
            wall = time.monotonic() - started
            if failure:  # the acknowledgements measured until then still count; say how the run ended
                note += f"; the run under load did not finish ({failure[0]!r} after {wall:.1f} s)"
            else:
                note += f"; the {servers}+{servers} failover + failback took {wall:.1f} s under this load"
        finally:
            _stop_loader(parent, loader)
    return [status, click], note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--samples", type=int, default=200, help="status requests per concurrency level")
    parser.add_argument(
        "--during-run", type=int, default=0, metavar="N", help="also measure while an N+N run executes (e.g. 50)"
    )
    parser.add_argument("--latency-ms", type=int, default=20, help="WinRM latency of the run under load")
    parser.add_argument("--pin-serve", type=int, nargs="*", default=None, metavar="CPU", help="e.g. --pin-serve 1")
    parser.add_argument("--skip-alone", action="store_true", help="only the measurement during a run")
    parser.add_argument("--every-s", type=float, default=2.0, help="seconds between bursts during the run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    ctx = multiprocessing.get_context("spawn")
    pin_serve = set(args.pin_serve) if args.pin_serve else None
    print("acknowledgement latency of `failover-bot serve`, new TCP connection per request, separate load process")
    print("(* = measured while a whole failover + failback executes)")
    print(HEADER, flush=True)
    notes: list[str] = []
    for c in args.concurrency:
        if not args.skip_alone:
            rows, note = measure(c, args.samples, ctx, pin_serve)
            for stats in rows:
                print(stats.row(), flush=True)
            notes.append(f"{c} alone: {note}")
        if args.during_run:
            rows, note = measure_during_run(c, args.during_run, args.latency_ms, ctx, pin_serve, args.every_s)
            for stats in rows:
                print(stats.row(), flush=True)
            notes.append(f"{c} during the run: {note}")
    for note in notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
