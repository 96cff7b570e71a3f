"""Reads and writes of action runs and dead letters. The worker's writes are single UPDATEs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, literal, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from workers.errors import NotFound
from workers.redaction import redact
from workers.status import FINAL_ACTION_STATUSES, OPEN_ACTION_STATUSES, ActionStatus, is_dead_lettered
from workers.store import audit
from workers.store.db import get_engine, outcome_engine, require, session, submit_engine
from workers.store.models import ActionRun, AuditPending, DeadLetter, FinishedTally, as_utc, table_of, utcnow


@dataclass(frozen=True)
class ActionView:
    id: str
    platform: str
    action: str
    params: dict[str, Any]
    priority: str
    queue: str
    status: str
    attempts: int
    max_attempts: int
    result: dict[str, Any] | None
    error: str | None
    error_kind: str | None
    idempotency_key: str | None
    replay_of: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    #: succeeded by finding the effect of an attempt whose answer was lost (no second call)
    reconciled: bool = False
    #: when a `scheduled` action is due; its deadline (expires_in), if it has one
    scheduled_for: datetime | None = None
    expires_at: datetime | None = None
    fail_fast: bool = False
    #: set when the action is a workflow's step
    workflow_id: str | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL_ACTION_STATUSES

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("created_at", "started_at", "finished_at", "next_attempt_at", "scheduled_for", "expires_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["duration_s"] = self.duration_s
        return out




def _view(row: ActionRun) -> ActionView:
    return ActionView(**{f: as_utc(getattr(row, f)) for f in ActionView.__dataclass_fields__})


# Statements on the hot path are built once: building a statement per call cost more CPU than the
# database round trip itself (see docs/PERFORMANCE.md).
_T = table_of(ActionRun)
_AUDIT_PENDING = table_of(AuditPending)
_INSERT = insert(_T)
# PostgreSQL: the record and its pending audit entry in one statement (one round trip, atomic).
# Every parameter is prefixed: one named like a column ("id", "action") would be added to the other INSERT.
_INSERT_WITH_AUDIT = insert(_T).values({c.name: bindparam(f"run_{c.name}", type_=c.type) for c in _T.c}).add_cte(
    insert(_AUDIT_PENDING).values(
        {c.name: bindparam(f"audit_{c.name}", type_=c.type) for c in _AUDIT_PENDING.c if c.name != "id"}
    ).cte("submit_audit"))
_BY_ID = _T.c.id == bindparam("aid")
_STARTED = func.coalesce(_T.c.started_at, bindparam("started_at", type_=_T.c.started_at.type))
_SUCCEEDED = update(_T).where(_BY_ID).values(
    status=ActionStatus.SUCCEEDED, attempts=bindparam("attempts"), result=bindparam("result"), error=None,
    reconciled=bindparam("reconciled"),
    error_kind=None, finished_at=bindparam("now"), next_attempt_at=None, started_at=_STARTED,
    updated_at=bindparam("now"))
# Only from an open status: a retry's record must not bring back an action cancelled meanwhile (workers.cancel).
_RETRYING = update(_T).where(_BY_ID, _T.c.status.in_([ActionStatus.QUEUED, ActionStatus.RETRYING])).values(
    status=ActionStatus.RETRYING, attempts=bindparam("attempts"), error=bindparam("error"),
    error_kind=bindparam("error_kind"), next_attempt_at=bindparam("next_at"), started_at=_STARTED,
    updated_at=bindparam("now"))
_FAILED = update(_T).where(_BY_ID).values(
    status=ActionStatus.FAILED, attempts=bindparam("attempts"), error=bindparam("error"),
    error_kind=bindparam("error_kind"),
    finished_at=bindparam("now"), next_attempt_at=None, started_at=_STARTED, updated_at=bindparam("now"))


def create(*, action_id: str, platform: str, action: str, params: dict[str, Any], priority: str,
           queue: str, max_attempts: int, idempotency_key: str | None = None, fail_fast: bool = False,
           replay_of: str | None = None, actor: str | None = None, scheduled_for: datetime | None = None,
           expires_at: datetime | None = None) -> None:
    """The action's record and its audit entry, committed together. With `scheduled_for` it is `scheduled`:
    no message is sent until then (workers.scheduling). The entry is deferred (chained by
    the next seal, see workers.store.audit): locking the chain's head on every submit serialised submitters.
    On PostgreSQL both rows go in one statement on an autocommit connection: one round trip."""
    now = utcnow()
    row = {
        "id": action_id, "platform": platform, "action": action, "params": redact(params, urls=True),
        "priority": priority, "queue": queue,
        "status": ActionStatus.SCHEDULED if scheduled_for is not None else ActionStatus.QUEUED, "attempts": 0,
        "max_attempts": max_attempts, "idempotency_key": idempotency_key, "replay_of": replay_of,
        "workflow_id": None, "fail_fast": fail_fast, "reconciled": False,
        "result": None, "error": None, "error_kind": None, "started_at": None, "finished_at": None,
        "next_attempt_at": None, "created_at": now, "updated_at": now, "scheduled_for": scheduled_for,
        "expires_at": expires_at}
    detail: dict[str, Any] = {"platform": platform, "action": action, "priority": priority, "replay_of": replay_of}
    if scheduled_for is not None:
        detail["scheduled_for"] = scheduled_for.isoformat()
    if expires_at is not None:
        detail["expires_at"] = expires_at.isoformat()
    entry = audit.pending_entry("submit", f"action:{action_id}", detail, actor=actor)
    engine = submit_engine()
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            audit.defer(conn, entry)
            conn.execute(_INSERT, row)
        return
    both = {f"run_{k}": v for k, v in row.items()} | {f"audit_{k}": v for k, v in entry.items()}
    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                conn.execute(_INSERT_WITH_AUDIT, both)
            return
        except IntegrityError:
            # The retry found the record: the first attempt committed and only its answer was lost.
            if attempt == 2 and find(action_id) is not None:
                return
            raise
        except DBAPIError as exc:
            # No ping before use on this engine: a connection the server dropped (restart, failover)
            # fails here first. SQLAlchemy has then discarded the pool's connections; once more with a
            # fresh one. It is one statement: both rows were written, or neither.
            if attempt == 2 or not exc.connection_invalidated:
                raise


def discard(action_id: str, reason: str = "the broker refused the message") -> None:
    """Undo create() when the message could not be sent: no half-enqueued action is left behind, and no
    `submit` entry in the audit trail for a submit that did not happen (withdrawn in the same transaction)."""
    with session() as s:
        s.execute(delete(ActionRun).where(ActionRun.id == action_id))
        audit.withdraw_pending(s.connection(), "submit", f"action:{action_id}", reason)


def mark_retrying(action_id: str, attempt: int, error: str, error_kind: str, delay_s: float,
                  started_at: datetime) -> None:
    now = utcnow()
    with outcome_engine().begin() as conn:
        conn.execute(_RETRYING, {"aid": action_id, "attempts": attempt, "error": error, "error_kind": error_kind,
                                 "next_at": now + timedelta(seconds=delay_s), "started_at": started_at, "now": now})


def mark_succeeded(action_id: str, attempt: int, result: dict[str, Any], started_at: datetime | None, *,
                   reconciled: bool = False) -> None:
    """`started_at` is when this worker began the attempt. The worker writes no 'running' row: while an
    action runs, its live state is the guards' lease in Redis (see workers.guards.execution). `reconciled`:
    the effect of an attempt whose answer was lost was found, not made again."""
    mark_succeeded_many([succeeded_row(action_id, attempt, result, started_at, reconciled=reconciled)])


def succeeded_row(action_id: str, attempt: int, result: dict[str, Any], started_at: datetime | None, *,
                  reconciled: bool = False) -> dict[str, Any]:
    now = utcnow()
    return {"aid": action_id, "attempts": attempt, "result": redact(result), "started_at": started_at or now,
            "now": now, "reconciled": reconciled}


def mark_succeeded_many(rows: list[dict[str, Any]]) -> None:
    """Success records (from succeeded_row) in one transaction: the worker's write-behind batches
    (workers.store.outcomes) and single writes alike. Committed durably, never asynchronously: a success
    is final, and once its commit returns the writer forgets it, so a commit that a PostgreSQL crash could
    still undo (synchronous_commit=off) would leave the action open until detect_stuck. Batched, the WAL
    flush costs the writer's thread one wait per batch, not the task."""
    with get_engine().begin() as conn:
        write_succeeded(conn, rows)


def write_succeeded(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Success records (from succeeded_row) in the caller's transaction (a workflow step's, with its step)."""
    conn.execute(_SUCCEEDED, rows if len(rows) > 1 else rows[0])


def mark_failed(action_id: str, attempt: int, error: str, error_kind: str, *,
                started_at: datetime | None = None, conn: Connection | None = None) -> None:
    """Failed for good; dead-lettered in the same transaction when workers.status.is_dead_lettered says so (the
    one rule, whichever path records the failure: the attempt, a redelivery, the stuck detector, a purge).
    `conn`: in the caller's transaction (a queue clear writes it with its audit entry)."""
    if conn is None:
        with get_engine().begin() as own:
            mark_failed(action_id, attempt, error, error_kind, started_at=started_at, conn=own)
        return
    now = utcnow()
    conn.execute(_FAILED, {"aid": action_id, "attempts": attempt, "error": error, "error_kind": error_kind,
                           "started_at": started_at or now, "now": now})
    if is_dead_lettered(error_kind, step=False):  # the row is read only when its kind can be dead-lettered
        run = conn.execute(select(_T.c.platform, _T.c.action, _T.c.params, _T.c.priority, _T.c.workflow_id)
                           .where(_T.c.id == action_id)).first()
        if run is not None and is_dead_lettered(error_kind, step=run.workflow_id is not None):
            conn.execute(insert(table_of(DeadLetter)).values(
                action_id=action_id, platform=run.platform, action=run.action, params=run.params,
                priority=run.priority, attempts=attempt, error=error, error_kind=error_kind, created_at=now))


def mark_skipped(action_id: str, why: str) -> None:
    """A workflow's step that will not run: its workflow stopped before the step's turn."""
    now = utcnow()
    with get_engine().begin() as conn:
        conn.execute(update(_T).where(_BY_ID, _T.c.status.in_(list(OPEN_ACTION_STATUSES))).values(
            status=ActionStatus.SKIPPED, error=why, error_kind=None, finished_at=now, next_attempt_at=None,
            updated_at=now), {"aid": action_id})


#: What a cancel or a deadline can still stop: nothing has called the platform for good yet.
CANCELLABLE = (ActionStatus.SCHEDULED, ActionStatus.QUEUED, ActionStatus.RETRYING)


def end_unstarted(action_id: str, status: ActionStatus, why: str, *, conn: Connection | None = None) -> bool:
    """`cancelled` or `expired`, only from a status in CANCELLABLE (a conditional UPDATE: of a cancel and a
    worker's write, one wins). True if this call ended it."""
    if conn is None:
        with get_engine().begin() as own:
            return end_unstarted(action_id, status, why, conn=own)
    now = utcnow()
    res = conn.execute(update(_T).where(_BY_ID, _T.c.status.in_(list(CANCELLABLE))).values(
        status=status, error=why, error_kind=None, finished_at=now, next_attempt_at=None, updated_at=now),
        {"aid": action_id})
    return bool(res.rowcount)


def due_scheduled(now: datetime, limit: int = 500) -> list[ActionView]:
    """`scheduled` actions whose time has come, the earliest first."""
    with session() as s:
        rows = s.scalars(select(ActionRun).where(ActionRun.status == ActionStatus.SCHEDULED,
                                                 ActionRun.scheduled_for <= now)
                         .order_by(ActionRun.scheduled_for).limit(limit)).all()
        return [_view(r) for r in rows]


def claim_scheduled(action_id: str) -> bool:
    """`scheduled` -> `queued`, only once: the caller that gets True sends its message (workers.scheduling),
    however many schedulers look at the same moment."""
    now = utcnow()
    with get_engine().begin() as conn:
        res = conn.execute(update(_T).where(_BY_ID, _T.c.status == ActionStatus.SCHEDULED).values(
            status=ActionStatus.QUEUED, updated_at=now), {"aid": action_id})
        return bool(res.rowcount)


def unclaim_scheduled(action_id: str) -> None:
    """Back to `scheduled` when its message could not be sent: the next tick tries again."""
    with get_engine().begin() as conn:
        conn.execute(update(_T).where(_BY_ID, _T.c.status == ActionStatus.QUEUED).values(
            status=ActionStatus.SCHEDULED, updated_at=utcnow()), {"aid": action_id})


def is_final(action_id: str) -> bool:
    with session() as s:
        status = s.scalar(select(ActionRun.status).where(ActionRun.id == action_id))
    return status in FINAL_ACTION_STATUSES


def not_final(action_ids: list[str], conn: Connection) -> list[str]:
    """Those of `action_ids` that have not yet succeeded or failed for good (unknown ids included), read
    on `conn` (a `polling_connection()` when asking again and again)."""
    final: set[str] = set()
    for i in range(0, len(action_ids), 500):  # SQLite allows 999 bound parameters per statement
        # The status is filtered here, not in SQL: with `status IN (...)` in the WHERE clause the
        # PostgreSQL planner chose the status index on a freshly filled table and read every finished
        # row (5 ms a poll instead of 0.1).
        rows = conn.execute(select(_T.c.id, _T.c.status).where(_T.c.id.in_(action_ids[i:i + 500])))
        final.update(aid for aid, status in rows if status in FINAL_ACTION_STATUSES)
    return [a for a in action_ids if a not in final]


@contextmanager
def polling_connection() -> Iterator[Connection]:
    """One connection for a loop of reads, in autocommit: each read sees the latest commits (a held
    transaction would show SQLite's snapshot from the first read), with no BEGIN, ROLLBACK or pool
    ping per poll."""
    with get_engine().connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def get(action_id: str) -> ActionView:
    with session() as s:
        return _view(require(s, ActionRun, action_id, "action"))


_GET = select(_T).where(_BY_ID)


def read(action_id: str, conn: Connection) -> ActionView:
    """get(), as one statement on `conn` (a `polling_connection()`): what a waiter reads, with no session,
    transaction or pool ping per read."""
    row = conn.execute(_GET, {"aid": action_id}).first()
    if row is None:
        raise NotFound(f"no action with id {action_id}")
    return _view(row)  # type: ignore[arg-type]  # a Row has the columns as attributes, as the model has


def read_many(action_ids: list[str], conn: Connection) -> dict[str, ActionView]:
    """read() of each (those that exist), by id: one statement per 500 (SQLite's bound-parameter limit)."""
    out: dict[str, ActionView] = {}
    for i in range(0, len(action_ids), 500):
        for row in conn.execute(select(_T).where(_T.c.id.in_(action_ids[i:i + 500]))):
            out[row.id] = _view(row)  # type: ignore[arg-type]  # a Row has the columns as attributes
    return out


def find(action_id: str) -> ActionView | None:
    with session() as s:
        row = s.get(ActionRun, action_id)
        return _view(row) if row else None


def list_recent(*, limit: int = 50, status: str | None = None, platform: str | None = None,
                since: datetime | None = None, before: tuple[datetime, str] | None = None,
                among: Any = None) -> list[ActionView]:
    """The newest first. `since`: created then or later. `before` (created_at, id): those after this one in
    this order (a page's cursor; the id breaks ties of the same instant). `among`: a subquery of ids to keep."""
    q = select(ActionRun).order_by(ActionRun.created_at.desc(), ActionRun.id.desc()).limit(limit)
    if since is not None:
        q = q.where(ActionRun.created_at >= since)
    if before is not None:
        at, last_id = before
        q = q.where(or_(ActionRun.created_at < at, and_(ActionRun.created_at == at, ActionRun.id < last_id)))
    if among is not None:
        q = q.where(ActionRun.id.in_(among))
    if status:
        q = q.where(ActionRun.status == status)
    if platform:
        q = q.where(ActionRun.platform == platform)
    with session() as s:
        return [_view(r) for r in s.scalars(q)]


@dataclass(frozen=True)
class DeadLetterView:
    id: int
    action_id: str
    platform: str
    action: str
    params: dict[str, Any]
    priority: str
    attempts: int
    error: str
    error_kind: str
    created_at: datetime
    replayed_at: datetime | None
    replayed_as: str | None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["created_at"] = self.created_at.isoformat()
        out["replayed_at"] = self.replayed_at.isoformat() if self.replayed_at else None
        return out


def _dl_view(row: DeadLetter) -> DeadLetterView:
    return DeadLetterView(**{f: as_utc(getattr(row, f)) for f in DeadLetterView.__dataclass_fields__})


def dead_letters(*, include_replayed: bool = False, limit: int | None = 100, platform: str | None = None,
                 error_kind: str | None = None, action: str | None = None, since: datetime | None = None,
                 oldest_first: bool = False) -> list[DeadLetterView]:
    """Newest first (`oldest_first`: in the order they died, as a bulk replay runs them); each filter given
    narrows the list; `since`: dead-lettered at or after it. limit None: every one that matches."""
    q = select(DeadLetter).order_by(DeadLetter.id.asc() if oldest_first else DeadLetter.id.desc()).limit(limit)
    if not include_replayed:
        q = q.where(DeadLetter.replayed_at.is_(None))
    if platform is not None:
        q = q.where(DeadLetter.platform == platform)
    if error_kind is not None:
        q = q.where(DeadLetter.error_kind == error_kind)
    if action is not None:
        q = q.where(DeadLetter.action == action)
    if since is not None:
        q = q.where(DeadLetter.created_at >= since)
    with session() as s:
        return [_dl_view(r) for r in s.scalars(q)]


def dead_letter(dl_id: int) -> DeadLetterView:
    with session() as s:
        return _dl_view(require(s, DeadLetter, dl_id, "dead letter"))


def claim_dead_letter(dl_id: int) -> bool:
    """Marks the dead letter replayed, only if nobody did yet: of two replays at once, exactly one gets
    True (one conditional UPDATE). The replay then submits, and records what it submitted."""
    with get_engine().begin() as conn:
        res = conn.execute(update(DeadLetter).where(DeadLetter.id == dl_id, DeadLetter.replayed_at.is_(None))
                           .values(replayed_at=utcnow()))
    return res.rowcount == 1


def unclaim_dead_letter(dl_id: int) -> None:
    """Undoes claim_dead_letter when the submit failed: the dead letter can be replayed again."""
    with get_engine().begin() as conn:
        conn.execute(update(DeadLetter).where(DeadLetter.id == dl_id, DeadLetter.replayed_as.is_(None))
                     .values(replayed_at=None))


def mark_replayed(dl_id: int, new_action_id: str, *, audit_entry: tuple[str, str, dict[str, Any]] | None = None,
                  actor: str | None = None) -> None:
    """After claim_dead_letter and a successful submit: which action the replay is; `audit_entry` (action,
    target, detail) is written in the same transaction."""
    with get_engine().begin() as conn:
        conn.execute(update(DeadLetter).where(DeadLetter.id == dl_id).values(replayed_as=new_action_id))
        if audit_entry is not None:
            audit.append(*audit_entry, actor=actor, conn=conn)


def touch(action_id: str) -> None:
    """Moves updated_at: the stuck detector waits a full period before looking at it again."""
    with get_engine().begin() as conn:
        conn.execute(update(_T).where(_BY_ID).values(updated_at=bindparam("now")), {"aid": action_id, "now": utcnow()})


#: The outcomes an action's finish is counted under (a skipped workflow step never ran: not a finish).
FINISHED = (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED, ActionStatus.EXPIRED)


RecordCount = tuple[str, str, str, str, int]
FinishedKey = tuple[str, str, str, str]


def counts() -> tuple[list[RecordCount], dict[FinishedKey, int]]:
    """(platform, action, status, error kind or '', how many records) for every combination that has one (the
    exporter's `opsq_actions`), and every action that ever finished, by (platform, action, outcome, error kind
    or ''): the records' count plus the tallies of those the retention clean-up deleted (`opsq_actions_finished`,
    the one count of finished actions; `finished_since` counts the same records over a window for beat's
    success-rate alert and `opsq metrics`).

    One statement (records UNION ALL tallies), so one snapshot on SQLite and PostgreSQL alike: read apart, a
    clean-up committing between the two reads would count the records it moved twice, and the next scrape would
    see the count drop. It only grows, except when a record's outcome is corrected (a failure the stuck detector
    declared, then the success that was only late): that moves one count between outcomes, which a gauge (and
    PromQL's delta()) reads as it is."""
    t = table_of(FinishedTally)
    records = select(ActionRun.platform, ActionRun.action, ActionRun.status, func.coalesce(ActionRun.error_kind, ""),
                     func.count(), literal("r")).group_by(
        ActionRun.platform, ActionRun.action, ActionRun.status, ActionRun.error_kind)
    tallies = select(t.c.platform, t.c.action, t.c.outcome, t.c.error_kind, t.c.count, literal("t"))
    rows: list[RecordCount] = []
    finished: dict[FinishedKey, int] = {}
    with get_engine().connect() as conn:
        for platform, action, status, kind, n, source in conn.execute(records.union_all(tallies)):
            if source == "r":
                rows.append((platform, action, status, kind, int(n)))
                if status not in FINISHED:
                    continue
                kind = "" if status == ActionStatus.SUCCEEDED else kind
            key = (platform, action, status, kind)
            finished[key] = finished.get(key, 0) + int(n)
    return rows, finished


def finished_since(since: datetime) -> dict[str, dict[str, int]]:
    """{platform: {"succeeded": n, "failed": n}} of the actions that finished at or after `since` (workflow
    steps included): beat's success-rate alert and `opsq metrics` (the window of `opsq_actions_finished`)."""
    q = (select(ActionRun.platform, ActionRun.status, func.count())
         .where(ActionRun.finished_at >= since, ActionRun.status.in_(FINISHED))
         .group_by(ActionRun.platform, ActionRun.status))
    out: dict[str, dict[str, int]] = {}
    with get_engine().connect() as conn:
        for platform, status, n in conn.execute(q):
            out.setdefault(platform, {str(s): 0 for s in FINISHED})[status] = int(n)
    return out


def tally_deleted(conn: Connection, deleted: Any) -> None:
    """Add the finished records `deleted` (a select of action_runs rows about to be deleted) to the tallies,
    in the caller's transaction, so the count of finished actions (counts()) does not drop when they go."""
    grouped = conn.execute(
        select(ActionRun.platform, ActionRun.action, ActionRun.status, ActionRun.error_kind, func.count())
        .where(ActionRun.id.in_(deleted), ActionRun.status.in_(FINISHED))
        .group_by(ActionRun.platform, ActionRun.action, ActionRun.status, ActionRun.error_kind)).all()
    tallies = table_of(FinishedTally)
    for platform, action, status, kind, n in grouped:
        key = {"platform": platform, "action": action, "outcome": status,
               "error_kind": "" if status == ActionStatus.SUCCEEDED else (kind or "")}
        match = [tallies.c[k] == v for k, v in key.items()]
        if conn.execute(update(tallies).where(*match).values(count=tallies.c.count + n)).rowcount == 0:
            conn.execute(insert(tallies).values(**key, count=n))


def dead_letter_counts() -> list[tuple[str, str, str, int]]:
    """(platform, action, error kind, how many) of the dead letters not replayed yet."""
    q = (select(DeadLetter.platform, DeadLetter.action, DeadLetter.error_kind, func.count())
         .where(DeadLetter.replayed_at.is_(None))
         .group_by(DeadLetter.platform, DeadLetter.action, DeadLetter.error_kind))
    with get_engine().connect() as conn:
        return [(p, a, k, int(n)) for p, a, k, n in conn.execute(q)]


def dead_letters_waiting(at: datetime | None = None) -> int:
    """How many dead letters were waiting (not replayed) now, or at `at` (from their created and replayed
    times): the exporter's `opsq_dead_letters` now, and beat's "dead letters growing" compares now with the
    start of its window, as the Prometheus rule compares the gauge with its value 15 minutes before."""
    q = select(func.count()).select_from(DeadLetter)
    if at is None:
        q = q.where(DeadLetter.replayed_at.is_(None))
    else:
        q = q.where(DeadLetter.created_at <= at, (DeadLetter.replayed_at.is_(None)) | (DeadLetter.replayed_at > at))
    with get_engine().connect() as conn:
        return int(conn.execute(q).scalar() or 0)
