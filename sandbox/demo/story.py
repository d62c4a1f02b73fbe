"""``failover-bot demo``'s story: site-a goes down, a failover, site-a comes back, a failback, the reports."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from bot.blocks.render import render_blocks, render_thread
from bot.config import load_config
from bot.errors import ConfigError
from bot.runs.machine import FINISHED_STEP_STATES
from sandbox.demo.cast import (
    ACTION_NAMES,
    ALICE,
    BOB,
    CARD_DEADLINE_S,
    CAROL,
    CHANNEL,
    EXAMPLE_CONFIG,
    HTTPS_HOST,
    NAMES,
    NTLM_HOST,
    PEOPLE,
    SITE,
)
from sandbox.demo.checks import check_failback, check_failover
from sandbox.demo.facts import answers_http, wait_until
from sandbox.demo.printing import WIDTH, Demo, RunOutcome, verdict
from sandbox.demo.reports import find_leaks, secret_values, write_reports
from sandbox.demo.startup import (
    PortBusy,
    check_out,
    check_ports,
    demo_environment,
    log_to,
    make_out,
    secure_config,
    winrm_ports,
)

if TYPE_CHECKING:
    from sandbox.rehearsal import Rehearsal

# The rehearsal, the bot and its store are imported only once the demo's logging goes to its log file:
# importing them logs (alembic), and a newcomer's terminal should show the story, not library chatter.

log = logging.getLogger("sandbox.demo")


def run_demo(out: Path | None = None, quiet: bool = False) -> int:
    """Run the whole demo; 0 if every check held, 1 if one did not, 2 if it could not start."""
    started = time.monotonic()
    config = load_config(EXAMPLE_CONFIG)
    try:
        wanted = check_out(out)
        check_ports(config)
    except (PortBusy, ConfigError) as exc:
        print(f"failover-bot demo: {exc}", file=sys.stderr)
        return 2
    out_dir = make_out(wanted)
    demo = Demo(quiet=quiet)
    state_dir = out_dir / "platform"
    config_path = secure_config(EXAMPLE_CONFIG, out_dir / "failover.yml", state_dir)
    title = "failover-bot demo — a whole failover and failback, rehearsed on this machine"
    demo.say(title)
    demo.say("═" * len(title))
    demo.say(f"Everything stays on 127.0.0.1. Output folder: {out_dir}")
    with demo_environment(), log_to(out_dir / "demo.log"):
        try:
            from sandbox.rehearsal import rehearsal

            with rehearsal(
                config_path, state_dir, db_url=f"sqlite:///{out_dir / 'failover-bot.db'}", people=PEOPLE
            ) as r:
                _story(demo, r, out_dir)
        except KeyboardInterrupt:  # everything was stopped on the way out of rehearsal()
            print(f"\nfailover-bot demo: interrupted; everything stopped. State left in {out_dir}", file=sys.stderr)
            return 130
        except ConfigError as exc:  # a port taken between our check and the platform's bind
            if "cannot listen" not in str(exc):
                raise
            print(
                f"failover-bot demo: {exc} — another `failover-bot demo` or `failover-bot simulate` may be running",
                file=sys.stderr,
            )
            return 2
        except Exception as exc:  # the verdict says what broke; the traceback is in demo.log
            log.exception("the demo stopped early")
            demo.check("The demo itself", "ran to the end", False, f"{type(exc).__name__}: {exc} (see demo.log)")
    leaks = find_leaks("\n".join(demo.printed), demo.secrets)
    demo.check("Audit and secrets", "nothing secret in what the demo printed", not leaks, f"found: {', '.join(leaks)}")
    return verdict(demo, out_dir, time.monotonic() - started)


def _story(demo: Demo, r: Rehearsal, out_dir: Path) -> None:
    config = r.config
    p = config.site(SITE)
    s = config.site(p.partner)
    down = [p.account_server, *p.storage_servers]
    demo.secrets = secret_values(r)

    demo.phase(1, "Setting up")
    ports = sorted(port for _, _, port in winrm_ports(config))
    demo.say(f"  Simulated Redstor platform '{config.platform}' (example-config.yml), state in {r.state_dir}")
    demo.say(
        f"    {NTLM_HOST} speaks NTLM with WinRM message encryption; {HTTPS_HOST} NTLM over HTTPS "
        "(certificate from the platform's test CA, validated)"
    )
    for site in (p, s):
        hosts = ", ".join(h.name for h in [site.account_server, *site.storage_servers])
        demo.say(f"    {site.name}: {hosts}")
    demo.say(f"    WinRM endpoints on 127.0.0.1:{ports[0]}–{ports[-1]}; every operation lands in operations.jsonl")
    demo.say(f"  Slack stand-in (Web API):   {r.slack.api_url}   channel #incident ({CHANNEL})")
    demo.say(f"  The bot's HTTP endpoint:    {r.http.url}/slack/events   (signed requests, as Slack sends them)")
    demo.say("  People: alice (operator, starts the runs); bob and carol (approvers, click the buttons)")

    demo.phase(2, f"{SITE} goes down")
    for host in down:
        r.faults(host.name, refuse=True)
    demo.say(f"  faults.json on {', '.join(h.name for h in down)}: refuse=true — they now reset every connection")
    refusing = [h.name for h in down if not answers_http(h.winrm.url)]
    demo.check(
        f"While {SITE} is down",
        f"{', '.join(h.name for h in down)} refuse connections",
        len(refusing) == len(down),
        f"still answering: {', '.join(sorted({h.name for h in down} - set(refusing)))}",
    )

    alerts = _readiness_round(demo, r)
    demo.check(
        f"While {SITE} is down",
        "one readiness alert names every host of site-a",
        len(alerts) == 1 and all(f"*{h.name}* winrm" in alerts[0] for h in down),
        f"readiness posted: {alerts!r}"[:300],
    )

    demo.phase(3, f"Failover {SITE} → {s.name}")
    fo = _run(demo, r, "start " + SITE, "Failover")
    if fo is not None:
        check_failover(demo, r, fo, p.name)

    demo.phase(4, f"{SITE} comes back")
    for host in down:
        r.faults(host.name)
    demo.say(f"  faults.json cleared on {', '.join(h.name for h in down)}")
    answering = [h.name for h in down if answers_http(h.winrm.url)]
    demo.check(
        f"When {SITE} is back",
        f"{', '.join(h.name for h in down)} answer again",
        len(answering) == len(down),
        f"not answering: {', '.join(sorted({h.name for h in down} - set(answering)))}",
    )

    if fo is not None:
        # as-a boots with its old Settings.xml: a second running Master beside the promoted as-b.
        alerts = _readiness_round(demo, r)
        brain = [a for a in alerts if a.startswith("<!here>")]
        demo.check(
            f"When {SITE} is back",
            f"readiness raises the split-brain alert (@here), naming {p.account_server.name} to stop",
            len(brain) == 1 and f"on {p.account_server.name} now" in brain[0],
            f"readiness posted: {alerts!r}"[:300],
        )

    fb = None
    if fo is not None:
        demo.phase(5, f"Failback to {SITE}")
        fb = _run(demo, r, "failback " + SITE, "Failback")
        if fb is not None:
            check_failback(demo, r, fb, p.name)

    demo.phase(6, "Audit reports")
    write_reports(demo, r, out_dir, [run for run in (fo, fb) if run is not None])
    if fo is None or fb is None:
        demo.check("After the failback", "the failback ran", False, "not started: the failover did not complete")


def _readiness_round(demo: Demo, r: Rehearsal) -> list[str]:
    """Run one readiness round now (the bot runs one every readiness.interval_s); print and return what it posted."""
    from bot.blocks.render import mrkdwn_to_text

    before = len(r.slack.channel_messages(CHANNEL))
    r.runtime.readiness.run_round()
    posted = [m.text for m in r.slack.channel_messages(CHANNEL)[before:]]
    demo.say("  Readiness round (read-only checks of both sites) posts in #incident:")
    for text in posted or ["(nothing: no change since the last round)"]:
        for line in mrkdwn_to_text(text, NAMES).splitlines():
            demo.say("    " + line)
    return posted


def _run(demo: Demo, r: Rehearsal, command: str, group: str) -> RunOutcome | None:
    """alice types ``/failover {command}``; bob and carol click through every step; the thread is printed."""
    from sandbox.rehearsal import RehearsalError

    ops_before = len(r.operations())
    clicks_before = len(r.log)
    started = time.monotonic()
    demo.say(f"  alice types /failover {command} in #incident")
    try:
        run_id = r.start(ALICE, command)
    except RehearsalError as exc:
        demo.check(f"After the {group.lower()}", f"/failover {command} opened a run", False, str(exc))
        return None
    demo.say(f"  → run {run_id} opened; bob and carol work through it step by step ...")
    error = ""
    try:
        r.run_through(run_id, initiator=ALICE, approvers=(BOB, CAROL))
    except RehearsalError as exc:
        error = str(exc)
    view = r.service.view(run_id)
    elapsed = time.monotonic() - started
    finished = sum(1 for sv in view.steps if sv.state in FINISHED_STEP_STATES)
    demo.say(f"  → {run_id} {view.run.state} in {elapsed:.1f} s: {finished} of {len(view.steps)} steps finished")
    demo.say("  " + _clicks_summary(r.log[clicks_before:]))
    for line in _reveals(r, run_id):
        demo.say("  " + line)
    demo.check(
        f"After the {group.lower()}",
        f"{run_id} completed: {finished} of {len(view.steps)} steps finished",
        view.run.state == "completed" and finished == len(view.steps) and not error,
        error or f"run is {view.run.state}",
    )
    if view.run.state == "completed":
        card_done = wait_until(lambda: _card_state(r, run_id) == "completed", CARD_DEADLINE_S)
        demo.check(
            f"After the {group.lower()}",
            "the status card in Slack says completed",
            card_done,
            f"after {CARD_DEADLINE_S:.0f} s the card says: {_card_state(r, run_id)}",
        )
    demo.say()
    demo.say(f"  The incident thread of {run_id}, as it reads in Slack:")
    demo.say("  " + "┄" * (WIDTH - 2))
    text = render_thread(r.thread(run_id), NAMES)
    for line in text.splitlines():
        demo.say(("  " + line).rstrip())
    demo.say("  " + "┄" * (WIDTH - 2))
    return RunOutcome(run_id, ops_before, text)


def _card_state(r: Rehearsal, run_id: str) -> str:
    """What the status card (the thread's parent message) says on its State line."""
    thread = r.thread(run_id)
    lines = render_blocks(thread[0].blocks).splitlines() if thread else []
    return next((line.split(":", 1)[1].strip(" ✅") for line in lines if line.startswith("State:")), "no State line")


def _clicks_summary(entries: list[str]) -> str:
    """'bob: 12 × Approve, ...' from the rehearsal's log of clicks."""
    per: dict[str, Counter[str]] = {}
    for entry in entries:
        user, _, rest = entry.partition(": ")
        action = rest.split(" on ", 1)[0]
        if action.startswith("/failover"):
            continue
        per.setdefault(NAMES.get(user, user), Counter())[ACTION_NAMES.get(action, action)] += 1
    parts = [
        f"{name}: " + ", ".join(f"{n} × {action}" for action, n in counts.most_common())
        for name, counts in sorted(per.items())
    ]
    return "clicks: " + ("; ".join(parts) if parts else "none")


def _reveals(r: Rehearsal, run_id: str) -> list[str]:
    from bot.report import build_report

    lines = []
    for e in build_report(r.runtime.store, run_id).events:
        if e["event"] == "otp.revealed":
            who = NAMES.get(e["actor"], e["actor"])
            hosts = ", ".join(e["detail"].get("hosts", []))
            lines.append(
                f"🔑 {who} revealed the one-time password(s) for {e['step_id']} ({hosts}) — shown only to {who}, "
                "ephemerally; not printed here"
            )
    return lines
