"""Who may do what: command roles, approvers, approvals a step needs, and approval fingerprints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bot.config import SlackSettings
from bot.errors import PermissionDenied

READ_ONLY_COMMANDS = frozenset({"status", "plan", "check", "report", "readiness", "help"})
OPERATOR_COMMANDS = frozenset({"start", "failback", "abort"})

GroupMembers = Callable[[str], Iterable[str]]


def check_channel(settings: SlackSettings, channel: str) -> None:
    if settings.channels and channel not in settings.channels:
        allowed = ", ".join(f"<#{c}>" for c in settings.channels)
        raise PermissionDenied(f"/failover works only in the incident channel(s): {allowed}")


def check_command(settings: SlackSettings, command: str, user: str) -> None:
    """Read-only commands are open to everyone in an allowed channel; the others to operators."""
    if command in OPERATOR_COMMANDS and user not in settings.operators:
        raise PermissionDenied(
            f"`/failover {command}` is for operators; ask one of " + _people(settings.operators) + "."
        )


def check_operator(settings: SlackSettings, user: str) -> None:
    """Starting, failing back and aborting a run are for operators, however they are asked for (spec v3 §3)."""
    if user not in settings.operators:
        raise PermissionDenied("Only operators may abort a run; ask one of " + _people(settings.operators) + ".")


def is_approver(settings: SlackSettings, user: str, group_members: GroupMembers | None) -> bool:
    if user in settings.approvers:
        return True
    if group_members is None:
        return False
    return any(user in set(group_members(g)) for g in settings.approver_groups)


def check_approver(settings: SlackSettings, user: str, group_members: GroupMembers | None) -> None:
    if not is_approver(settings, user, group_members):
        raise PermissionDenied("Only approvers may press this button; ask one of " + _people(settings.approvers) + ".")


def approvals_needed(kind: str, risk: str, settings: SlackSettings, action: str = "") -> int:
    """How many distinct people must approve before the step may run (0: runs by itself), under ``settings``."""
    return needed_approvals(kind, risk, action, settings.destructive_approvals)


def needed_approvals(kind: str, risk: str, action: str, destructive_approvals: int) -> int:
    """THE rule: distinct people who must approve (host/sql) or confirm (manual/wait/check) a step.

    Destructive steps need ``destructive_approvals``; the bot's own read-only probes (host/sql reads and the
    preflight) need nobody; every other step needs one approval or one person's *Done*.
    """
    if risk == "destructive":
        return destructive_approvals
    if risk == "read" and (kind in ("host", "sql") or action == "preflight"):
        return 0  # the bot's read-only probes run as soon as the step is reached
    return 1  # one approval, or one person's Done (checks a person confirms included)


def check_destructive_approver(settings: SlackSettings, user: str, initiator: str) -> None:
    if user == initiator and not settings.initiator_may_approve_destructive:
        raise PermissionDenied(
            "You started this run, so you cannot be one of the approvers of a destructive step; "
            "two other approvers must approve it."
        )


def weaker_delete_approval(settings: SlackSettings) -> str:
    """What a destructive step's card must say when deletes are approved under weaker rules ('' if not)."""
    notes = []
    if settings.destructive_approvals < 2:
        notes.append(f"{settings.destructive_approvals} approver suffices")
    if settings.initiator_may_approve_destructive:
        notes.append("the run's initiator may be one of the approvers")
    if not notes:
        return ""
    return "Weaker delete approval is configured (allow_weaker_delete_approval): " + "; ".join(notes) + "."


def fingerprint(step_id: str, targets: Iterable[str], params: Mapping[str, Any], preview: str) -> str:
    """What an approval is bound to: the step's resolved parameters and its preview."""
    body = json.dumps(
        {"step": step_id, "targets": list(targets), "params": dict(params), "preview": preview},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _people(users: Iterable[str]) -> str:
    names = [f"<@{u}>" for u in users]
    return ", ".join(names) if names else "(nobody is configured)"
