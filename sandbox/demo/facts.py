"""What the simulated platform says after a run: roles, services, task queues, and the host operations expected."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from actions import settings_xml
from bot.config import Config, Host
from sandbox.demo.cast import CHANGING

if TYPE_CHECKING:
    from sandbox.rehearsal import Rehearsal

Op = tuple[str, str]  # (host, operation)


def settings_bytes(r: Rehearsal, host: Host) -> bytes | None:
    paths = r.config.redstor
    relative = paths.account_server.settings if host.role == "account_server" else paths.storage_server.settings
    try:
        return r.platform.states[host.name].resolve(r.config.windows_path(relative)).read_bytes()
    except (OSError, ValueError):
        return None


def is_slave_on(r: Rehearsal, host: Host) -> bool | None:
    raw = settings_bytes(r, host)
    if raw is None:
        return None
    try:
        value = settings_xml.read_is_slave(raw)
    except Exception:  # a malformed file is a failed check, not a crash of the demo
        return None
    return False if value is None else value  # absent means False (PRODUCT.md §1)


def server_guid(r: Rehearsal, host: Host) -> str | None:
    raw = settings_bytes(r, host)
    try:
        return settings_xml.read_server_guid(raw) if raw is not None else None
    except Exception:
        return None


def services_on(r: Rehearsal, host: Host) -> dict[str, str]:
    return r.platform.states[host.name].services()


def backup_server_roles(r: Rehearsal) -> dict[str, str]:
    """BackupServer roles in the database of the AccountServer that is Master after a failover (site-b)."""
    return {row.name: row.role for row in r.platform.database(r.config.site(r.config.primary_site).partner).rows()}


def waiting_tasks(r: Rehearsal, host: Host) -> list[str]:
    try:
        folder = r.platform.states[host.name].resolve(r.config.windows_path(r.config.redstor.account_server.task_queue))
    except (OSError, ValueError):
        return ["(task queue folder missing)"]
    return sorted(p.name for p in folder.iterdir())


def changing_ops(ops: list[dict[str, object]]) -> list[Op]:
    return [
        (str(o["host"]), str(o["operation"])) for o in ops if o["operation"] in CHANGING and o.get("outcome") == "ok"
    ]


def answers_http(url: str) -> bool:
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


def multiset_diff(seen: list[Op], expected: list[Op]) -> str:
    extra = Counter(seen) - Counter(expected)
    missing = Counter(expected) - Counter(seen)
    parts = []
    if extra:
        parts.append("more than expected: " + ", ".join(f"{h} {o} ×{n}" for (h, o), n in sorted(extra.items())))
    if missing:
        parts.append("missing: " + ", ".join(f"{h} {o} ×{n}" for (h, o), n in sorted(missing.items())))
    return "; ".join(parts)


def wait_until(what: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
