"""Pure judgement of one readiness round: which probe results are problems, split brain and role drift."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from actions.preflight import CheckResult
from bot.config import Config, Host

PASS, FAIL, EXPECTED = "pass", "fail", "expected"
SPLIT_BRAIN = "split-brain"
ROLE = "role"
IDENTITY = "identity"  # the ServerGuid a host answers with, against what it answered since the last completed run
_GUID = re.compile(r"ServerGuid (\S+?)(?:;|$)")
PLATFORM = "platform"  # the "host" of platform-wide checks


@dataclass(frozen=True)
class Roles:
    """The AccountServer roles the last completed run left (or the configuration, before any run)."""

    master: str  # host name of the AccountServer that should be the running Master
    slave: str | None  # the one that should be a Slave; None after a failover (the failed site's, not yet failed back)
    because: str  # e.g. "the last completed run FO-3 (failover of site-a)"


@dataclass(frozen=True)
class Finding:
    """One readiness result: a probe's, or a derived one (role, split-brain); ``outcome`` pass, fail or expected."""

    host: str
    check: str
    outcome: str
    detail: str
    todo: str = ""  # what to do about it, for a failure

    @property
    def key(self) -> str:
        return f"{self.host}|{self.check}"

    @property
    def failed(self) -> bool:
        return self.outcome == FAIL


def _todo(config: Config, r: CheckResult, host: Host | None) -> str:
    if r.host == "database":
        return "check the ODBC connection string and that the database server answers"
    if host is None:
        return ""
    site = config.sites[host.site]
    consequence = f"a failover to {host.site} (`/failover start {site.partner}`) would fail at F0"
    if r.check == "winrm":
        return f"{consequence}; bring {host.name} back or check WinRM (`failover-bot check {site.partner}`)"
    if r.check == "service":
        return f"{consequence}; start the service on {host.name}, or find out why it is {r.value or 'not running'}"
    if r.check == "Settings.xml":
        return f"{consequence}; repair {host.name}'s Settings.xml (the bot reads ServerGuid and IsSlave from it)"
    if r.check == "task queue":
        return f"{consequence} at F4; restore the AccountServer's task-queue folder on {host.name}"
    return consequence


def server_guid(detail: str) -> str | None:
    """The (masked) ServerGuid in a Settings.xml check's detail."""
    found = _GUID.search(detail)
    return found.group(1) if found else None


def judge(
    config: Config,
    results: Iterable[CheckResult],
    roles: Roles,
    changing: Sequence[str] = (),
    identities: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Every result of the round, with split brain and role drift derived from the probes.

    ``changing`` names the hosts an active run is changing: their states are the run's doing and are
    recorded as ``expected``, not announced. Split brain is always a failure. ``identities`` maps a host
    to the (masked) ServerGuid it first answered with after the last completed run: a host answering with
    another one now is something else at that address (a reinstalled server, a wrong DNS entry).
    """
    results = list(results)
    by: dict[tuple[str, str], CheckResult] = {(r.host, r.check): r for r in results}
    hosts = {h.name: h for h in config.hosts()}
    out: list[Finding] = []
    for r in results:
        host = hosts.get(r.host)
        ok = r.ok
        if ok and r.check == "service" and r.value != "Running":
            # An AccountServer that should be neither Master nor Slave (the failed site's, after a failover)
            # may be stopped; every other service should run.
            ok = host is not None and host.role == "account_server" and host.name not in (roles.master, roles.slave)
        outcome = PASS if ok else FAIL
        if outcome == FAIL and r.host in changing:
            outcome = EXPECTED
        out.append(Finding(r.host, r.check, outcome, r.detail, "" if ok else _todo(config, r, host)))
    out += _identities(results, identities or {}, changing)
    seen: dict[str, str] = {}
    running_masters = []
    for site in config.sites.values():
        a = site.account_server.name
        settings, service = by.get((a, "Settings.xml")), by.get((a, "service"))
        if settings is None or not settings.ok or not settings.value:
            continue
        seen[a] = settings.value
        if settings.value == "Master" and service is not None and service.ok and service.value == "Running":
            running_masters.append(a)
    split = len(running_masters) > 1
    for a, role in seen.items():
        if split and a in running_masters:
            continue  # the split-brain alert says what to do about these two
        out.append(_role(config, a, role, roles, changing))
    out.append(_split_brain(config, running_masters, roles))
    return out


def _role(config: Config, name: str, role: str, roles: Roles, changing: Sequence[str]) -> Finding:
    wanted = "Master" if name == roles.master else "Slave" if name == roles.slave else None
    if wanted is None or wanted == role:
        return Finding(name, ROLE, PASS, f"{role}" + (f" (as {roles.because} left it)" if wanted else ""))
    detail = f"answers as {role}, but {roles.because} left it {wanted}"
    if name in changing:
        return Finding(name, ROLE, EXPECTED, detail)
    service = config.redstor.account_server.service
    todo = (
        f"find out who changed IsSlave on {name}; set it back to {'True' if wanted == 'Slave' else 'False'} "
        f"and restart {service}, or run the failover/failback this change belongs to"
    )
    return Finding(name, ROLE, FAIL, detail, todo)


def _split_brain(config: Config, running_masters: list[str], roles: Roles) -> Finding:
    if len(running_masters) < 2:
        return Finding(PLATFORM, SPLIT_BRAIN, PASS, "at most one running Master AccountServer")
    stop = [m for m in running_masters if m != roles.master] or running_masters[1:]
    service = config.redstor.account_server.service
    detail = f"{len(running_masters)} AccountServers run as Master: {', '.join(running_masters)}"
    todo = (
        f"stop {service} on {' and '.join(stop)} now "
        f"({roles.master} is the Master {roles.because} left); then set its IsSlave to True before it starts again"
    )
    return Finding(PLATFORM, SPLIT_BRAIN, FAIL, detail, todo)


def _identities(results: list[CheckResult], identities: Mapping[str, str], changing: Sequence[str]) -> list[Finding]:
    out = []
    for r in results:
        was = identities.get(r.host)
        now = server_guid(r.detail) if r.check == "Settings.xml" and r.ok else None
        if was is None or now is None:
            continue
        if now == was:
            out.append(Finding(r.host, IDENTITY, PASS, f"ServerGuid {now}, as since the last completed run"))
            continue
        detail = f"answers with ServerGuid {now}, but answered with {was} since the last completed run"
        if r.host in changing:
            out.append(Finding(r.host, IDENTITY, EXPECTED, detail))
            continue
        todo = (
            f"find out what answers at {r.host}'s address: a reinstalled server must be added in the Console "
            "again (it has a new ServerGuid); a wrong DNS entry or address must be put right"
        )
        out.append(Finding(r.host, IDENTITY, FAIL, detail, todo))
    return out
