"""What a run covers (RunOptions): parsing ``scope=… storage=… rebuilt`` and where a failback's defaults come from."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Literal, cast

from bot.errors import UsageError
from bot.runs.machine import RunState

Direction = Literal["failover", "failback"]
Scope = Literal["all", "account", "storage"]

DIRECTIONS: tuple[str, ...] = ("failover", "failback")
SCOPES: tuple[str, ...] = ("all", "account", "storage")
# The word people type (`/failover start`, `failover-bot plan start`) -> the runbook it runs.
COMMAND_WORDS: Mapping[str, Direction] = MappingProxyType({"start": "failover", "failback": "failback"})


def direction_of(word: str) -> Direction:
    """The direction a command word asks for: ``start`` -> failover, ``failback`` -> failback."""
    try:
        return COMMAND_WORDS[word]
    except KeyError:
        raise UsageError(f"unknown command {word!r}: use start or failback") from None


def command_word(direction: str) -> str:
    """The word people type for ``direction``: failover -> ``start``."""
    return next(word for word, d in COMMAND_WORDS.items() if d == direction)


@dataclass(frozen=True)
class RunOptions:
    """What a run covers: AccountServer and/or StorageServer steps, which StorageServers, rebuilt site."""

    scope: Scope = "all"
    storage: tuple[str, ...] = ()  # empty: every StorageServer of P
    rebuilt: bool = False


def check_direction(direction: str) -> None:
    """UsageError unless ``direction`` is failover or failback."""
    if direction not in DIRECTIONS:
        raise UsageError(f"unknown direction {direction!r}: use failover or failback")


def check_options(direction: str, options: RunOptions) -> None:
    """UsageError for options no runbook can be resolved with (however they were made)."""
    check_direction(direction)
    if options.scope not in SCOPES:
        raise UsageError(f"unknown scope {options.scope!r}: use all, account or storage")
    if options.rebuilt and direction != "failback":
        raise UsageError(_REBUILT_FAILBACK_ONLY)


_REBUILT_FAILBACK_ONLY = "rebuilt applies only to failback (a primary site that had to be rebuilt)"


def parse_options(direction: Direction, args: Sequence[str]) -> RunOptions:
    """``scope=…``, ``storage=a,b`` and (failback only) ``rebuilt``; UsageError on anything else."""
    check_direction(direction)
    usage = "scope=all|account|storage, storage=<name,...>" + (", rebuilt" if direction == "failback" else "")
    scope: str | None = None
    storage: list[str] | None = None
    rebuilt = False
    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.strip().lower()
        if eq and key == "scope":
            if scope is not None:
                raise UsageError("scope= given more than once")
            scope = value.strip().lower()
            if scope not in SCOPES:
                raise UsageError(f"unknown scope {value!r}: use scope=all, scope=account or scope=storage")
        elif eq and key == "storage":
            if storage is not None:
                raise UsageError("storage= given more than once; list the names separated by commas")
            names = [n.strip() for n in value.split(",")]
            if not value.strip() or any(not n for n in names):
                raise UsageError("storage= needs StorageServer names separated by commas, e.g. storage=ss-a1,ss-a2")
            storage = list(dict.fromkeys(names))
        elif not eq and key == "rebuilt":
            if direction != "failback":
                raise UsageError(_REBUILT_FAILBACK_ONLY)
            rebuilt = True
        else:
            raise UsageError(f"unknown option {arg!r}; {direction} takes {usage}")
    return RunOptions(scope=cast(Scope, scope or "all"), storage=tuple(storage or ()), rebuilt=rebuilt)


# --------------------------------------------------------------------------- a run's options as stored


def stored_storage(options: RunOptions) -> str:
    """The StorageServers of ``options`` as a run row stores them ("ss-a1,ss-a2"; "" for all)."""
    return ",".join(options.storage)


def options_from_stored(scope: str, storage: str, rebuilt: bool) -> RunOptions:
    """The RunOptions a run row stores (scope, comma-separated StorageServers, rebuilt)."""
    return RunOptions(scope=cast(Scope, scope), storage=tuple(s for s in storage.split(",") if s), rebuilt=rebuilt)


# --------------------------------------------------------------------------- failback defaults


@dataclass(frozen=True)
class PastFailover:
    """An earlier failover of the site, as far as a failback's defaults need it."""

    id: str
    state: str  # a RunState
    scope: str
    storage: str  # as stored: comma-separated, "" for every StorageServer
    created_at: datetime  # aware (UTC)


class HistoryUnavailable(Exception):
    """The runs of earlier failovers cannot be read; says why in words that end "..., so scope=all"."""


FailoverHistory = Callable[[str], Sequence[PastFailover]]  # site -> its failovers, oldest first

GIVEN = "scope and StorageServers: as given in the command"


def scope_given(args: Sequence[str]) -> bool:
    """True when the command itself chose the scope or the StorageServers."""
    return any(a.startswith(("scope=", "storage=")) for a in args)


def explain_options(
    direction: Direction, site: str, args: Sequence[str], history: FailoverHistory
) -> tuple[RunOptions, str]:
    """The run's options and, for a failback, where its scope and StorageServers came from.

    THE failback default: the scope and StorageServers of the last completed failover of ``site``, unless the
    command gives ``scope=`` or ``storage=``; a later aborted failover is named as a warning, never used.
    ``history`` is only asked when the default is needed; HistoryUnavailable from it means scope=all.
    """
    options = parse_options(direction, list(args))
    if direction != "failback":
        return options, ""
    if scope_given(args):
        return options, GIVEN
    try:
        failovers = list(history(site))
    except HistoryUnavailable as exc:
        return options, f"scope and StorageServers: {exc}, so scope=all"
    completed = [r for r in failovers if r.state == RunState.COMPLETED]
    previous = completed[-1] if completed else None
    if previous is not None:
        last = options_from_stored(previous.scope, previous.storage, False)
        options = RunOptions(scope=last.scope, storage=last.storage, rebuilt=options.rebuilt)
        source = (
            f"scope and StorageServers: from {previous.id}, the last completed failover of {site} "
            f"(scope={previous.scope}" + (f", storage={previous.storage}" if previous.storage else "") + ")"
        )
    else:
        source = (
            f"scope and StorageServers: no completed failover of {site} is recorded, so scope=all and every "
            "StorageServer (give scope= or storage= to choose)"
        )
    since = previous.created_at if previous is not None else None
    later = [r.id for r in failovers if r.state == RunState.ABORTED and (since is None or r.created_at > since)]
    if later:
        source += (
            f". Warning: {', '.join(later)} (a later failover of {site}) was aborted; its scope is not used: "
            "check what it changed, and give scope= and storage= if it differs"
        )
    return options, source
