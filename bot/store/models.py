"""SQLAlchemy 2.0 typed models of the bot's own state: runs, step runs, approvals and the audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One failover or failback of a platform."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # e.g. FO-7
    number: Mapped[int] = mapped_column(Integer)
    platform: Mapped[str] = mapped_column(String(200), index=True)
    direction: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(100))
    partner: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    storage: Mapped[str] = mapped_column(Text, default="")  # comma-separated StorageServer names
    rebuilt: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), index=True)
    initiator: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64), default="")
    thread_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    facts: Mapped[str] = mapped_column(Text, default="{}")  # JSON: recorded decisions (dns_redirected, ...)
    abort_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Bumped by the database (triggers, migration 0006) on every change to the run, its steps or its votes.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (UniqueConstraint("direction", "number", name="uq_runs_direction_number"),)


class ActiveRun(Base):
    """At most one active run per platform: the primary key is the lock."""

    __tablename__ = "active_runs"

    platform: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))


class StepRun(Base):
    """A step of a run (``target`` empty) or one target of a fan-out step."""

    __tablename__ = "step_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(100), default="")
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(24))
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    preview: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON, secrets removed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    message_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("run_id", "step_id", "target", name="uq_step_runs_step_target"),)


class Approval(Base):
    """One person's approval (or Mark-done / override vote) of one step; a person counts once."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # approve | mark_done | override | retry
    user_id: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer, default=0)  # bumped when approvals are voided
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("run_id", "step_id", "kind", "round", "user_id", name="uq_approvals_person_once"),
    )


class AuditEvent(Base):
    """Append-only audit log, hash-chained per run; ``(run_id, seq)`` is unique so the chain cannot fork."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(48))
    step_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    target: Mapped[str | None] = mapped_column(String(100), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256 with key ``key_id`` (SHA-256 when not keyed)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_audit_run_seq"),)


class ProcessedDelivery(Base):
    """Slack deliveries already handled (idempotency of retried requests and double clicks)."""

    __tablename__ = "processed_deliveries"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditHead(Base):
    """The last link of each run's audit chain, so that deleting the newest events is detected too."""

    __tablename__ = "audit_heads"

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class ReadinessRound(Base):
    """One scheduled (or ``--now``) read-only readiness round over every site."""

    __tablename__ = "readiness_rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    runner: Mapped[str] = mapped_column(String(100))  # host:pid of the process that ran it
    problems: Mapped[int] = mapped_column(Integer, default=0)


class ReadinessResult(Base):
    """One check of one host in a readiness round: host, check, outcome, detail, time."""

    __tablename__ = "readiness_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("readiness_rounds.id"), index=True)
    host: Mapped[str] = mapped_column(String(100))
    check: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(16))  # pass | fail | expected (a run is changing the host)
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReadinessProblem(Base):
    """An open readiness problem: announced once, again at most every ``repeat_hours``, deleted on recovery."""

    __tablename__ = "readiness_problems"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)  # host|check
    host: Mapped[str] = mapped_column(String(100))
    check: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    announced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
