"""The shared declarative Base and the runtime's tables: action runs, dead letters, the audit trail.

Each layer owns its tables and declares them on this Base: workflows.models (runs, steps,
compensations, approvals, events) and beat.models (alerts, maintenance runs). Params are stored with
secrets removed (see workers.redaction)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workers.status import ActionStatus

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: Any) -> Any:
    """A datetime as an aware UTC one; anything else unchanged. SQLite hands timestamps back without
    their zone (every time opsqueue stores is UTC); PostgreSQL hands them back in the session's time
    zone, which a connection may set to anything."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """A model's Table, for Core statements (insert/update/delete). SQLAlchemy types `__table__` as any
    FromClause (a model may be mapped to a join or a select); every model here declares a __tablename__,
    so it is a Table."""
    table = model.__table__
    assert isinstance(table, Table), f"{model.__name__} is not mapped to a table"
    return table


class ActionRun(Base):
    __tablename__ = "action_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    priority: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(32))
    # workers.status.ActionStatus: queued -> (retrying)* -> succeeded | failed; skipped (a workflow's step
    # whose workflow stopped before its turn). `running` is never stored: it is the live lease in Redis.
    status: Mapped[str] = mapped_column(String(16), default=ActionStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    replay_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Set when the action is a workflow's step: the stuck detector then leaves it to its workflow.
    workflow_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    fail_fast: Mapped[bool] = mapped_column(Boolean, default=False)
    #: succeeded by finding the effect of an attempt whose answer was lost, not by a second call
    reconciled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: When a `scheduled` action is due (sent to its queue then, by the beat leader: workers.scheduling).
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Its deadline: not admitted by then, it ends `expired` without a platform call.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_action_runs_status_created", "status", "created_at"),
        Index("ix_action_runs_status_scheduled", "status", "scheduled_for"),
        Index("ix_action_runs_platform_created", "platform", "created_at"),
        Index("ix_action_runs_idempotency_key", "idempotency_key"),
        Index("ix_action_runs_workflow_id", "workflow_id"),
    )


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    action_id: Mapped[str] = mapped_column(ForeignKey("action_runs.id"), index=True)
    platform: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    priority: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    error_kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    replayed_as: Mapped[str | None] = mapped_column(String(32), nullable=True)


class FinishedTally(Base):
    """Actions finished before their records were deleted by the retention clean-up (beat.maintenance), by
    platform, action, outcome and error kind ('' for a success). The store's count of finished actions is
    its records' plus these (workers.store.actions.finished_counts): it never goes down when old records go,
    so Prometheus and `opsq metrics` read one figure that only grows."""

    __tablename__ = "finished_tallies"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    action: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    error_kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AuditEntry(Base):
    """Append-only; each entry carries the hash of the one before it, so an edit or a deletion
    anywhere breaks the chain from that entry on (`opsq audit verify`)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditPending(Base):
    """Entries written but not yet chained: frequent operations (every submit) land here in their own
    transaction, without locking the chain's head; `workers.store.audit.seal` moves them onto the chain, in
    id order, every few seconds (beat) and before anything reads the trail."""

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)


class AuditHead(Base):
    """One row: the newest hash. Appends lock it first, so concurrent appends form one chain."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class ApiToken(Base):
    """A token of the HTTP API (workers.store.api_tokens): its name (the actor of what it changes), its role,
    and the SHA-256 of its secret; the secret itself is shown once, at creation, and kept nowhere."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The person the token acts for (migration 0011): approval policies count it as that person.
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)


class ApiAction(Base):
    """Which API token submitted an action: a `submit` token reads only its own."""

    __tablename__ = "api_actions"

    action_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_name: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
