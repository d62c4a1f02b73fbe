"""The append-only audit log: a chain per run sealed with a keyed MAC, with secrets masked before anything is written.

Each event's ``hash`` is HMAC-SHA256 over the event and the previous event's ``hash``, with the key named
by the event's ``key_id`` (the keys are not in the database: see ``AuditKeys``). Without a key the seal is a
plain SHA-256, which anyone who can write the database can recompute: such a chain is "not keyed".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from actions.guid import mask_guids
from bot.store.db import Store, as_utc, changed_rows, utcnow
from bot.store.keys import AuditKeys
from bot.store.models import AuditEvent, AuditHead

GENESIS = "0" * 64
_SECRET_KEYS = re.compile(r"(password|passwd|pwd|token|secret|otp|content_b64|connection_string)", re.I)


def scrub(value: Any) -> Any:
    """A copy of ``value`` with secret-looking fields removed and GUIDs masked."""
    if isinstance(value, Mapping):
        return {k: ("***" if _SECRET_KEYS.search(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return mask_guids(value)
    return value


def canonical(detail: Mapping[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), default=str)


MAX_TEXT = 4000  # characters of one string in an event's detail (host errors can be long); longer ones are cut


def keys_of(session: Session) -> AuditKeys:
    found = session.info.get("audit_keys")
    return found if isinstance(found, AuditKeys) else AuditKeys()


def _digest(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    event: str,
    step_id: str | None,
    target: str | None,
    detail: str,
    key_id: str | None = None,
    key: bytes | None = None,
) -> str:
    fields: list[Any] = [prev_hash, seq, as_utc(at).isoformat(), actor, event, step_id or "", target or "", detail]
    if key_id is None:
        return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode("utf-8")).hexdigest()
    body = json.dumps([*fields, key_id], separators=(",", ":")).encode("utf-8")
    return hmac.new(key or b"", body, hashlib.sha256).hexdigest()


def cap(value: Any, limit: int = MAX_TEXT) -> Any:
    """A copy of ``value`` whose strings are at most ``limit`` characters, cut visibly."""
    if isinstance(value, Mapping):
        return {k: cap(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [cap(v, limit) for v in value]
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… [truncated: {len(value)} characters in all]"
    return value


def append(
    session: Session,
    run_id: str,
    actor: str,
    event: str,
    *,
    step_id: str | None = None,
    target: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Add one event at the end of ``run_id``'s chain, inside the caller's transaction.

    The unique ``(run_id, seq)`` makes a concurrent writer that read the same tail fail on
    commit instead of forking the chain; ``record`` retries such a loser.
    """
    # Lock the chain head (FOR UPDATE on PostgreSQL; SQLite serialises writers anyway) so that
    # concurrent writers queue instead of racing; the unique (run_id, seq) is the backstop.
    head = session.execute(
        sa.select(AuditHead).where(AuditHead.run_id == run_id).with_for_update()
    ).scalar_one_or_none()
    seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
    at = utcnow()
    text = canonical(cap(scrub(dict(detail or {}))))
    keys = keys_of(session)
    key_id = keys.current if keys.keyed else None
    row = AuditEvent(
        run_id=run_id,
        seq=seq,
        at=at,
        actor=actor,
        event=event,
        step_id=step_id,
        target=target,
        detail=text,
        prev_hash=prev,
        key_id=key_id,
        hash=_digest(prev, seq, at, actor, event, step_id, target, text, key_id, keys.keys.get(key_id or "")),
    )
    session.add(row)
    # Compare-and-set on the chain head: of two writers that read the same tail, one loses here.
    if seq == 1:
        session.add(AuditHead(run_id=run_id, seq=seq, hash=row.hash))
    else:
        moved = changed_rows(
            session,
            sa.update(AuditHead)
            .where(AuditHead.run_id == run_id, AuditHead.seq == seq - 1)
            .values(seq=seq, hash=row.hash),
        )
        if moved != 1:
            raise IntegrityError("audit head moved", None, Exception("concurrent audit append"))
    session.flush()
    return row


def record(store: Store, run_id: str, actor: str, event: str, **kwargs: Any) -> None:
    """Append one event in its own transaction, retrying when another writer took the same seq."""
    for attempt in range(20):
        try:
            with store.session() as session:
                append(session, run_id, actor, event, **kwargs)
            return
        except IntegrityError:
            if attempt == 19:
                raise
            time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))


@dataclass(frozen=True)
class ChainCheck:
    intact: bool
    problems: tuple[str, ...]
    keyed: bool = False  # every event is sealed with a key (else anyone who can write the database could re-seal)


def verify(events: list[AuditEvent], head: AuditHead | None = None, keys: AuditKeys | None = None) -> ChainCheck:
    """Check the chain of one run's events (ordered by seq): every link, every seal, and the head.

    A chain with events but no head is broken (the head is what shows that the newest events are all
    there); so is an unkeyed event after a keyed one (a re-sealed tail), and an event whose key is unknown
    cannot be checked.
    """
    keys = keys or AuditKeys()
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    keyed_seen = False
    for ev in events:
        if ev.seq != expected_seq:
            problems.append(f"event #{expected_seq} is missing or out of order (found #{ev.seq})")
            expected_seq = ev.seq
        if ev.prev_hash != prev:
            problems.append(f"event #{ev.seq} does not follow the event before it (chain broken)")
        if ev.key_id is None and keyed_seen:
            problems.append(f"event #{ev.seq} is not sealed with a key although the events before it are")
        if ev.key_id is not None:
            keyed_seen = True
        key = keys.keys.get(ev.key_id) if ev.key_id is not None else None
        if ev.key_id is not None and key is None:
            problems.append(f"event #{ev.seq} is sealed with key {ev.key_id!r}, which is not available to check it")
        else:
            digest = _digest(
                ev.prev_hash, ev.seq, ev.at, ev.actor, ev.event, ev.step_id, ev.target, ev.detail, ev.key_id, key
            )
            if not hmac.compare_digest(digest, ev.hash):
                problems.append(f"event #{ev.seq} ({ev.event}) was altered after it was written")
        prev = ev.hash
        expected_seq += 1
    if events and head is None:
        problems.append("the chain's head is missing (its newest events may have been removed)")
    if head is not None and (head.seq != expected_seq - 1 or head.hash != prev):
        problems.append(f"the log ends at event #{expected_seq - 1} but #{head.seq} was written (events removed)")
    keyed = bool(events) and all(ev.key_id is not None for ev in events)
    return ChainCheck(intact=not problems, problems=tuple(problems), keyed=keyed)


def check_run(session: Session, run_id: str) -> ChainCheck:
    """Verify ``run_id``'s chain as of one moment, even while another process is still writing it.

    Under READ COMMITTED (PostgreSQL) each statement sees the newest commits: an event added between reading
    the events and reading the head would look like "events removed". So the head is read before and after
    the events, and the read is repeated until no event was added in between.
    """
    head = _head_now(session, run_id)
    for _ in range(20):
        events = events_of(session, run_id)
        after = _head_now(session, run_id)
        if after == head:
            break
        head = after
    stored = AuditHead(run_id=run_id, seq=head[0], hash=head[1]) if head else None  # a copy, never flushed
    return verify(events, stored, keys_of(session))


def _head_now(session: Session, run_id: str) -> tuple[int, str] | None:
    """The stored head (sequence number, hash) as the database has it now, not the session's cached copy."""
    row = session.execute(sa.select(AuditHead.seq, AuditHead.hash).where(AuditHead.run_id == run_id)).first()
    return (row[0], row[1]) if row else None


def events_of(session: Session, run_id: str) -> list[AuditEvent]:
    return list(
        session.scalars(
            sa.select(AuditEvent).where(AuditEvent.run_id == run_id).order_by(AuditEvent.seq, AuditEvent.id)
        )
    )
