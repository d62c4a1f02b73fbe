"""``failover-bot demo``: three simulated people carry the example platform through a failover and failback, checked."""

from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from actions import settings_xml
from bot.blocks.render import render_blocks, render_thread
from bot.config import Config, Host, load_config
from bot.errors import ConfigError
from bot.runs.machine import FINISHED_STEP_STATES
from bot.runs.runbook import deletion_line
from sandbox.slack_api import BOT_USER_ID, UploadedFile

if TYPE_CHECKING:
    from sandbox.rehearsal import Rehearsal

# The rehearsal, the bot and its store are imported only once the demo's logging goes to its log file:
# importing them logs (alembic), and a newcomer's terminal should show the story, not library chatter.

EXAMPLE_CONFIG = Path(__file__).with_name("example-config.yml")
# As on a domain network, two hosts of the example platform authenticate with NTLM: one over plain HTTP
# with WinRM message encryption, one over HTTPS validated against the simulated platform's test CA.
NTLM_HOST = "as-b"
HTTPS_HOST = "ms-b1"
SITE = "site-a"
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
CHANNEL = "C0INCIDENT"  # the incident channel of the example configuration
PEOPLE = {ALICE: "alice", BOB: "bob", CAROL: "carol"}
NAMES = {**PEOPLE, BOT_USER_ID: "failover-bot", CHANNEL: "incident"}
WINRM_USER, WINRM_PASSWORD = "demo-admin", "demo-password-not-secret"
CHANGING = ("service.stop", "service.start", "service.restart", "file.replace", "taskqueue.drop")
ACTION_NAMES = {
    "step_approve": "Approve",
    "step_done": "Done",
    "step_reveal_otp": "Reveal one-time password",
    "step_mark_done": "Mark done",
    "step_retry": "Retry",
    "step_skip": "Skip",
}
CONSUME_DEADLINE_S = 10.0
CARD_DEADLINE_S = 10.0

log = logging.getLogger(__name__)
WIDTH = min(100, max(60, shutil.get_terminal_size((100, 24)).columns))

Op = tuple[str, str]  # (host, operation)


@dataclass(frozen=True)
class Check:
    """One line of the verdict: what was checked, whether it held, and what was seen when it did not."""

    group: str
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Demo:
    """What the demo has printed (or, quiet, would have printed) and what it has checked."""

    quiet: bool
    printed: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    secrets: list[tuple[str, str]] = field(default_factory=list)  # (what it is, its value): never to be shown

    def say(self, text: str = "") -> None:
        self.printed.append(text)
        if not self.quiet:
            print(text, flush=True)

    def phase(self, number: int, title: str) -> None:
        self.say()
        heading = f"── {number} · {title} "
        self.say(heading + "─" * max(3, WIDTH - len(heading)))

    def check(self, group: str, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(group, what, bool(ok), "" if ok else detail))
        return bool(ok)


class PortBusy(Exception):
    """One of the example platform's fixed loopback ports is taken."""

    def __init__(self, host: Host, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"port 127.0.0.1:{port} ({host.name}'s WinRM endpoint in the example platform) is already in use — "
            "another `failover-bot demo` or `failover-bot simulate` may be running; stop it and try again"
        )


# ---------------------------------------------------------------------------------------------- set-up


def winrm_ports(config: Config) -> list[tuple[Host, str, int]]:
    """Every (host, address, port) the simulated platform will listen on."""
    out: list[tuple[Host, str, int]] = []
    for host in config.hosts():
        parts = urlsplit(host.winrm.url)
        out.append((host, parts.hostname or "127.0.0.1", parts.port or 80))
    return out


def check_ports(config: Config) -> None:
    """Raise PortBusy for the first of the platform's ports that something already listens on."""
    for host, address, port in winrm_ports(config):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise PortBusy(host, port) from None
                raise


def _check_out(out: Path | None) -> Path | None:
    """The --out folder, resolved; a ConfigError unless it is new or empty (the demo starts a fresh platform there)."""
    if out is None:
        return None
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(str(out), "--out", "the demo needs a new or empty folder (it starts a fresh platform there)")
    return out


def _make_out(out: Path | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="failover-bot-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _odbc_variables() -> list[str]:
    """The ODBC variables the example platform names (one per site)."""
    return load_config(EXAMPLE_CONFIG).odbc_envs()


@contextmanager
def _demo_environment() -> Iterator[None]:
    """The demo's own values for what the rehearsal reads from the environment, restored afterwards."""
    forced = {
        "FAILOVER_WINRM_USER": WINRM_USER,
        "FAILOVER_WINRM_PASSWORD": WINRM_PASSWORD,
        **dict.fromkeys(_odbc_variables(), None),  # the rehearsal points them at the simulated databases
        "SLACK_APP_TOKEN": None,
    }
    no_proxy = "127.0.0.1,localhost"
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name)
        forced[name] = f"{current},{no_proxy}" if current else no_proxy
    from sandbox.rehearsal import environment

    with environment(forced):
        yield


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Send the bot's and the platform's logging to ``path`` instead of the terminal while the demo runs."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    for h in saved_handlers:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)


# ---------------------------------------------------------------------------------------------- platform facts


def _settings_bytes(r: Rehearsal, host: Host) -> bytes | None:
    paths = r.config.redstor
    relative = paths.account_server.settings if host.role == "account_server" else paths.storage_server.settings
    try:
        return r.platform.states[host.name].resolve(r.config.windows_path(relative)).read_bytes()
    except (OSError, ValueError):
        return None


def _is_slave(r: Rehearsal, host: Host) -> bool | None:
    raw = _settings_bytes(r, host)
    if raw is None:
        return None
    try:
        value = settings_xml.read_is_slave(raw)
    except Exception:  # a malformed file is a failed check, not a crash of the demo
        return None
    return False if value is None else value  # absent means False (PRODUCT.md §1)


def _guid(r: Rehearsal, host: Host) -> str | None:
    raw = _settings_bytes(r, host)
    try:
        return settings_xml.read_server_guid(raw) if raw is not None else None
    except Exception:
        return None


def _services(r: Rehearsal, host: Host) -> dict[str, str]:
    return r.platform.states[host.name].services()


def _roles(r: Rehearsal) -> dict[str, str]:
    """BackupServer roles in the database of the AccountServer that is Master after a failover (site-b)."""
    return {row.name: row.role for row in r.platform.database(r.config.site(r.config.primary_site).partner).rows()}


def _waiting_tasks(r: Rehearsal, host: Host) -> list[str]:
    try:
        folder = r.platform.states[host.name].resolve(r.config.windows_path(r.config.redstor.account_server.task_queue))
    except (OSError, ValueError):
        return ["(task queue folder missing)"]
    return sorted(p.name for p in folder.iterdir())


def _changing_ops(ops: list[dict[str, object]]) -> list[Op]:
    return [
        (str(o["host"]), str(o["operation"])) for o in ops if o["operation"] in CHANGING and o.get("outcome") == "ok"
    ]


def _answers(url: str) -> bool:
    """True if something answers HTTP at ``url`` (any status); False if the connection is refused or reset."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=b"", method="POST", headers={"Content-Type": "application/soap+xml"})
    try:
        with opener.open(request, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # 401 without credentials: the host is up
    except (urllib.error.URLError, ConnectionError, http.client.HTTPException, TimeoutError, OSError):
        return False


def expected_failover_ops(config: Config, site: str) -> list[Op]:
    """F1–F4 and F7 on the partner's AccountServer, in order."""
    as_s = config.site(config.site(site).partner).account_server.name
    return [
        (as_s, "service.stop"),
        (as_s, "file.replace"),
        (as_s, "service.start"),
        (as_s, "taskqueue.drop"),
        (as_s, "taskqueue.drop"),
    ]


def expected_failback_ops(config: Config, site: str) -> list[Op]:
    """Every host operation of a failback of ``site`` (scope all), once each."""
    p = config.site(site)
    as_p, as_s = p.account_server.name, config.site(p.partner).account_server.name
    ss = [h.name for h in p.storage_servers]
    ms = [h.mirror or "" for h in p.storage_servers]
    return [
        (as_p, "service.stop"),
        (as_p, "file.replace"),
        (as_p, "service.start"),  # B1 B2 B5
        *[(h, "service.restart") for h in ss],  # B8
        (as_s, "service.stop"),  # B16
        (as_p, "service.stop"),
        (as_p, "file.replace"),
        (as_p, "service.start"),  # B17 B18 B19
        (as_s, "file.replace"),
        (as_s, "service.start"),
        (as_s, "service.restart"),  # B21 B22 B24
        *[(h, "service.stop") for h in ms],  # B29
        *[(h, "service.restart") for h in ss],  # B31
        *[(h, "service.start") for h in ms],  # B32
        (as_p, "taskqueue.drop"),  # B35
    ]


def _multiset_diff(seen: list[Op], expected: list[Op]) -> str:
    extra = Counter(seen) - Counter(expected)
    missing = Counter(expected) - Counter(seen)
    parts = []
    if extra:
        parts.append("more than expected: " + ", ".join(f"{h} {o} ×{n}" for (h, o), n in sorted(extra.items())))
    if missing:
        parts.append("missing: " + ", ".join(f"{h} {o} ×{n}" for (h, o), n in sorted(missing.items())))
    return "; ".join(parts)


def _wait(what: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------------------------- the story


def run_demo(out: Path | None = None, quiet: bool = False) -> int:
    """Run the whole demo; 0 if every check held, 1 if one did not, 2 if it could not start."""
    started = time.monotonic()
    config = load_config(EXAMPLE_CONFIG)
    try:
        wanted = _check_out(out)
        check_ports(config)
    except (PortBusy, ConfigError) as exc:
        print(f"failover-bot demo: {exc}", file=sys.stderr)
        return 2
    out_dir = _make_out(wanted)
    demo = Demo(quiet=quiet)
    state_dir = out_dir / "platform"
    config_path = secure_config(EXAMPLE_CONFIG, out_dir / "failover.yml", state_dir)
    title = "failover-bot demo — a whole failover and failback, rehearsed on this machine"
    demo.say(title)
    demo.say("═" * len(title))
    demo.say(f"Everything stays on 127.0.0.1. Output folder: {out_dir}")
    with _demo_environment(), _log_to(out_dir / "demo.log"):
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
    leaks = _leaks("\n".join(demo.printed), demo.secrets)
    demo.check("Audit and secrets", "nothing secret in what the demo printed", not leaks, f"found: {', '.join(leaks)}")
    return _verdict(demo, out_dir, time.monotonic() - started)


def secure_config(example: Path, path: Path, state_dir: Path) -> Path:
    """The example configuration with NTLM_HOST over NTLM (sealed messages) and HTTPS_HOST over HTTPS.

    The example file itself stays as it is (it must load unchanged); the demo runs this copy of it.
    """
    import yaml

    raw = yaml.safe_load(example.read_text(encoding="utf-8"))
    for site in raw["sites"].values():
        for host in [site["account_server"], *site.get("storage_servers", [])]:
            if host["name"] not in (NTLM_HOST, HTTPS_HOST):
                continue
            winrm = host["winrm"] if isinstance(host["winrm"], dict) else {"url": host["winrm"]}
            winrm["transport"] = "ntlm"
            if host["name"] == HTTPS_HOST:
                winrm["url"] = str(winrm["url"]).replace("http://", "https://", 1)
                winrm["server_cert_validation"] = "validate"
                winrm["ca_trust_path"] = str((state_dir / "tls" / "ca.pem").resolve())
            host["winrm"] = winrm
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _secrets(r: Rehearsal) -> list[tuple[str, str]]:
    from sandbox.rehearsal import BOT_TOKEN, SIGNING_SECRET

    found = [("WinRM password", WINRM_PASSWORD), ("signing secret", SIGNING_SECRET), ("bot token", BOT_TOKEN)]
    for host in r.config.hosts():
        guid = _guid(r, host)
        if guid:
            found.append((f"{host.name}'s ServerGuid", guid))
            found.append((f"{host.name}'s one-time password", settings_xml.otp_from_guid(guid)))
    return found


def _leaks(text: str, secrets: list[tuple[str, str]]) -> list[str]:
    lowered = text.lower()
    return sorted({label for label, value in secrets if value and value.lower() in lowered})


def _story(demo: Demo, r: Rehearsal, out_dir: Path) -> None:
    config = r.config
    p = config.site(SITE)
    s = config.site(p.partner)
    down = [p.account_server, *p.storage_servers]
    demo.secrets = _secrets(r)

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
    refusing = [h.name for h in down if not _answers(h.winrm.url)]
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
        _check_failover(demo, r, fo, p.name)

    demo.phase(4, f"{SITE} comes back")
    for host in down:
        r.faults(host.name)
    demo.say(f"  faults.json cleared on {', '.join(h.name for h in down)}")
    answering = [h.name for h in down if _answers(h.winrm.url)]
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
            _check_failback(demo, r, fb, p.name)

    demo.phase(6, "Audit reports")
    _reports(demo, r, out_dir, [run for run in (fo, fb) if run is not None])
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


@dataclass
class _RunOutcome:
    run_id: str
    ops_before: int  # operations.jsonl entries before the run started
    thread: str  # the incident thread as printed


def _run(demo: Demo, r: Rehearsal, command: str, group: str) -> _RunOutcome | None:
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
        card_done = _wait(lambda: _card_state(r, run_id) == "completed", CARD_DEADLINE_S)
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
    return _RunOutcome(run_id, ops_before, text)


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


def _check_failover(demo: Demo, r: Rehearsal, outcome: _RunOutcome, site: str) -> None:
    group = "After the failover"
    config = r.config
    as_s = config.site(config.site(site).partner).account_server
    service = config.redstor.account_server.service
    is_slave = _is_slave(r, as_s)
    demo.check(
        group,
        f"{as_s.name} is the Master: IsSlave False in its Settings.xml",
        is_slave is False,
        f"IsSlave is {is_slave}",
    )
    role = _roles(r).get(as_s.name)
    demo.check(
        group,
        f"BackupServer: {as_s.name}'s role is MasterAccountServer",
        role == "MasterAccountServer",
        f"role is {role}",
    )
    state = _services(r, as_s).get(service)
    demo.check(group, f"{as_s.name}'s {service} service is Running", state == "Running", f"it is {state}")
    _check_tasks(demo, r, group, as_s, outcome)
    seen = _changing_ops(r.operations()[outcome.ops_before :])
    expected = expected_failover_ops(config, site)
    demo.check(
        group,
        f"operations.jsonl: {len(expected)} host operations, each once, in order (F1 F2 F3 F4 F7 on {as_s.name})",
        seen == expected,
        f"saw {seen}",
    )


def _check_tasks(demo: Demo, r: Rehearsal, group: str, account: Host, outcome: _RunOutcome) -> None:
    """Every task file dropped in the run was consumed by the Master (within a second), and no queue holds one."""
    queues = [site.account_server for site in r.config.sites.values()]
    emptied = _wait(lambda: not any(_waiting_tasks(r, h) for h in queues), CONSUME_DEADLINE_S)
    ops = r.operations()[outcome.ops_before :]
    created = sum(
        1
        for o in ops
        if o["host"] == account.name
        and o["operation"] == "taskqueue.drop"
        and o.get("changed") is not False
        and o.get("outcome") == "ok"
    )
    consumed = sum(1 for o in ops if o["host"] == account.name and o["operation"] == "taskqueue.consume")
    names = " and ".join(h.name for h in queues)
    demo.check(
        group,
        f"task files consumed: {consumed} of {created} by {account.name}; the task queues of {names} are empty",
        emptied and consumed >= 1 and consumed == created,
        f"waiting: { {h.name: _waiting_tasks(r, h) for h in queues} }; dropped {created}, consumed {consumed}",
    )


def _check_failback(demo: Demo, r: Rehearsal, outcome: _RunOutcome, site: str) -> None:
    from bot.report import build_report

    group = "After the failback"
    config = r.config
    p = config.site(site)
    as_p, as_s = p.account_server, config.site(p.partner).account_server
    slaves = {h.name: _is_slave(r, h) for h in (as_p, as_s)}
    demo.check(
        group,
        f"roles restored in Settings.xml: {as_p.name} IsSlave False (Master), {as_s.name} IsSlave True (Slave)",
        slaves[as_p.name] is False and slaves[as_s.name] is True,
        f"IsSlave: {slaves}",
    )
    roles = _roles(r)
    demo.check(
        group,
        f"BackupServer: {as_p.name} MasterAccountServer, {as_s.name} SlaveAccountServer",
        roles.get(as_p.name) == "MasterAccountServer" and roles.get(as_s.name) == "SlaveAccountServer",
        f"roles: {roles}",
    )
    not_running = {
        f"{h.name}/{svc}": st for h in config.hosts() for svc, st in _services(r, h).items() if st != "Running"
    }
    empty = [h.name for h in config.hosts() if not _services(r, h)]
    demo.check(
        group,
        f"every service Running on all {len(config.hosts())} hosts",
        not not_running and not empty,
        f"not running: {not_running}; no services on: {empty}",
    )
    _check_tasks(demo, r, group, as_p, outcome)
    seen = _changing_ops(r.operations()[outcome.ops_before :])
    expected = expected_failback_ops(config, site)
    demo.check(
        group,
        f"operations.jsonl: the failback's {len(expected)} host operations, each exactly once",
        Counter(seen) == Counter(expected),
        _multiset_diff(seen, expected),
    )
    view = r.service.view(outcome.run_id)
    destructive = [sv for sv in view.steps if sv.step.risk == "destructive"]
    bad = {
        sv.step.id: [NAMES.get(u, u) for u in sv.approvers]
        for sv in destructive
        if len(set(sv.approvers)) < 2 or ALICE in sv.approvers
    }
    lines = [deletion_line(d) for sv in destructive for d in sv.step.deletions]
    messages = r.slack.thread(view.run.channel, view.run.thread_ts or "")
    versions = [m.blocks for m in messages] + [blocks for m in messages for _, blocks in m.history]
    thread = json.dumps(versions, ensure_ascii=False)
    demo.check(
        group,
        f"every deletion was shown as DELETE … · KEEP … ({len(lines)} lines, e.g. {lines[0] if lines else '-'})",
        bool(lines) and all(line in thread for line in lines),
        "a DELETE … · KEEP … line is missing from the step cards",
    )
    if view.plan.has("B4"):
        b4 = json.loads(view.step("B4").row.result or "{}")
        right = r.platform.database(p.partner).path.name
        wrong = r.platform.database(site).path.name
        preview = view.step("B4").row.preview or ""
        demo.check(
            group,
            f"B4 changed only the promoted Master's database: {as_s.name}'s {right} (verified against its "
            f"Settings.xml), not {wrong}",
            b4.get("database_of") == as_s.name and right in preview and wrong not in preview,
            f"B4 result {b4}; preview {preview[:300]}",
        )
    approvers = sorted({NAMES.get(u, u) for sv in destructive for u in sv.approvers})
    demo.check(
        group,
        f"deletes ({', '.join(sv.step.id for sv in destructive)}) approved by two different people: "
        + " and ".join(approvers),
        bool(destructive) and not bad,
        f"approvers: {bad}" if destructive else "no destructive step in the run",
    )
    revealed = {
        e["actor"]
        for run in (outcome.run_id,)
        for e in build_report(r.runtime.store, run).events
        if e["event"] == "otp.revealed"
    }
    told = {e.user for e in r.slack.ephemerals() if "One-time password" in e.text}
    demo.check(
        group,
        "one-time passwords revealed only ephemerally, to "
        + ", ".join(sorted(NAMES.get(u, u) for u in told))
        + ", and audited",
        bool(revealed) and told == revealed,
        f"audited reveals by {sorted(revealed)}, ephemeral answers to {sorted(told)}",
    )


def _attached_files(r: Rehearsal, run_id: str, timeout: float = 60.0) -> list[UploadedFile]:
    """The files the bot attached in the run's thread (its report and timeline), once both are there."""
    run = r.service.get_run(run_id)
    if not run.thread_ts:
        return []

    def both() -> list[UploadedFile]:
        found = r.slack.files(run.channel, run.thread_ts)
        return found if len(found) >= 2 else []

    try:
        return r.slack.wait_for(both, timeout=timeout, what=f"the report of {run_id} in its thread")
    except TimeoutError:
        return r.slack.files(run.channel, run.thread_ts)


def _reports(demo: Demo, r: Rehearsal, out_dir: Path, runs: list[_RunOutcome]) -> None:
    from bot.report import build_report

    written: list[Path] = []
    intact: dict[str, bool] = {}
    attached: dict[str, list[str]] = {}
    for run in runs:
        report = build_report(r.runtime.store, run.run_id)
        path = out_dir / f"{run.run_id}.md"
        # the report and its timeline as the bot attached them in the run's thread when the run ended
        uploaded = _attached_files(r, run.run_id)
        attached[run.run_id] = [f.filename for f in uploaded]
        by_name = {f.filename: f.content or b"" for f in uploaded}
        path.write_bytes(by_name.get(f"{run.run_id}-report.md") or report.to_markdown().encode("utf-8"))
        picture = by_name.get(f"{run.run_id}-timeline.png")
        if picture:
            (out_dir / f"{run.run_id}-timeline.png").write_bytes(picture)
        (out_dir / f"{run.run_id}-thread.txt").write_text(run.thread + "\n", encoding="utf-8")
        written.append(path)
        intact[run.run_id] = report.chain_intact
        chain = "hash chain intact" if report.chain_intact else "hash chain BROKEN"
        demo.say(
            f"  {run.run_id}: {path}  ({len(report.events)} audit events, {chain}; thread: {run.run_id}-thread.txt"
            + (f"; timeline: {run.run_id}-timeline.png" if picture else "")
            + ")"
        )
    demo.check(
        "Audit and secrets",
        "each run's thread got its summary, the full report and the timeline picture as files",
        bool(attached)
        and all(names == [f"{run_id}-report.md", f"{run_id}-timeline.png"] for run_id, names in attached.items()),
        f"attached: {attached}",
    )
    demo.say(f"  Bot log: {out_dir / 'demo.log'};  the bot's database: {out_dir / 'failover-bot.db'}")
    if runs:
        demo.say(
            f"  Read a report again: FAILOVER_DB_URL=sqlite:///{out_dir / 'failover-bot.db'} "
            f"failover-bot report {runs[0].run_id}"
        )
    demo.check(
        "Audit and secrets",
        f"audit reports written, hash chains intact ({', '.join(intact)})",
        bool(written) and all(p.is_file() and p.stat().st_size > 0 for p in written) and all(intact.values()),
        f"chains: {intact}",
    )
    public = [
        m.text + repr(m.blocks)
        for channel in {r.service.get_run(run.run_id).channel for run in runs}
        for m in r.slack.channel_messages(channel) + [m for run in runs for m in r.thread(run.run_id)]
    ]
    files = [p.read_text(encoding="utf-8") for p in written]
    log_file = out_dir / "demo.log"
    files.append(log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else "")
    leaks = _leaks("\n".join(public + files), demo.secrets)
    demo.check(
        "Audit and secrets",
        "no one-time password, ServerGuid or credential in the threads, the channel, the reports or the log",
        not leaks,
        f"found: {', '.join(leaks)}",
    )


# ---------------------------------------------------------------------------------------------- verdict


def _verdict(demo: Demo, out_dir: Path, elapsed: float) -> int:
    lines = ([] if demo.quiet else [""]) + ["── Verdict " + "─" * (WIDTH - 11)]
    groups: dict[str, list[Check]] = {}
    for c in demo.checks:
        groups.setdefault(c.group, []).append(c)
    for group, checks in groups.items():
        lines.append(f"  {group}")
        for c in checks:
            lines.append(f"    {'✓' if c.ok else '✗'} {c.what}")
            if not c.ok and c.detail:
                lines.extend(textwrap.wrap(c.detail, WIDTH - 8, initial_indent=" " * 8, subsequent_indent=" " * 8))
    failed = [c for c in demo.checks if not c.ok]
    lines.append("")
    if failed:
        lines.append(f"  ✗ {len(failed)} of {len(demo.checks)} checks failed ({elapsed:.1f} s) — exit status 1")
    else:
        lines.append(f"  ✓ all {len(demo.checks)} checks hold ({elapsed:.1f} s) — exit status 0")
    lines.append(f"  Output folder: {out_dir}")
    for line in lines:
        print(line, flush=True)
    return 1 if failed else 0
