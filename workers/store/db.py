"""One SQLAlchemy engine per process (re-made after fork), and schema migrations."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from workers.errors import NotFound, OpsqError
from workers.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest migration's revision id; tests check it against Alembic's own head, and processes use it
# to skip importing Alembic at all when the schema is current.
HEAD_REVISION = "0011"

# Seconds a new PostgreSQL connection may take (libpq's connect_timeout; `?connect_timeout=` in the URL wins).
# Without it a database host that drops packets holds the caller for the OS's connect timeout (psycopg: 130 s):
# every `GET /v1/health`, outage probe and worker that opens a connection would hang that long.
PG_CONNECT_TIMEOUT = 5

_lock = threading.Lock()
_engine: Engine | None = None
_engine_pid: int | None = None
_sessionmaker: sessionmaker[Session] | None = None
# Engines with other connection settings for one hot path each (outcome_engine, submit_engine).
_purpose_engines: dict[str, Engine] = {}
_purpose_pid: int | None = None


class DatabaseError(RuntimeError):
    pass


class SchemaNotReadable(OpsqError):
    """A read-only process found no schema, or one older than this code, and does not migrate it."""


# While an `opsq` read command runs (workers.cli.options.read_only): the oldest schema revision it reads.
# get_engine() then never migrates.
_reading_only: str | None = None


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    # WAL lets the client, several worker processes and the CLI read while one writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()
    _sqlite_reading_pragmas(dbapi_conn, _record)


def _sqlite_reading_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    """Without the journal mode: setting WAL writes the file's header, and a read command must leave a copy
    kept for an investigation as it found it."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, async_commit: bool = False, pre_ping: bool = True, autocommit: bool = False,
                reading: bool = False) -> Engine:
    """`reading`: for a process that only reads (workers.store.db.reading_only): on SQLite, the file keeps its
    journal mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not reading:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15}, pool_pre_ping=False)
        event.listen(engine, "connect", _sqlite_reading_pragmas if reading else _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// would pick psycopg2, which we do not ship: use psycopg 3.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    connect_args: dict[str, Any] = {}
    pg = make_url(url).get_backend_name() == "postgresql"
    if pg and "connect_timeout" not in make_url(url).query:  # the URL's own value is the operator's: it stays
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT
    if async_commit:
        existing = make_url(url).query.get("options", "")
        existing = existing if isinstance(existing, str) else " ".join(existing)
        connect_args["options"] = f"{existing} -c synchronous_commit=off".strip()
    extra: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=5, max_overflow=5, pool_recycle=1800,
                         connect_args=connect_args, **extra)


def get_engine() -> Engine:
    """The process's engine. A forked child (Celery prefork) must not reuse the parent's sockets."""
    global _engine, _engine_pid, _sessionmaker
    pid = os.getpid()
    if _engine is not None and _engine_pid == pid:
        return _engine
    with _lock:
        if _engine is not None and _engine_pid != pid:
            _engine.dispose(close=False)
            _engine = None
        if _engine is None:
            settings = get_settings()
            if _reading_only:
                engine = _readable_engine(settings.resolved_database_url, _reading_only)
            else:
                engine = make_engine(settings.resolved_database_url)
                if settings.auto_migrate:
                    ensure_schema(engine)
            _engine, _engine_pid = engine, pid
            _sessionmaker = sessionmaker(engine, expire_on_commit=False)
    return _engine


@contextlib.contextmanager
def reading_only(oldest: str = HEAD_REVISION) -> Iterator[None]:
    """While it lasts, the process's engine is made without migrating anything, whatever OPSQ_AUTO_MIGRATE
    says: a read command writes nothing, and an operator who points one at a copy kept for an investigation
    or at a database another version still runs on must find it as it was. It reads a schema at revision
    `oldest` or newer (migrations only add: what an older opsq reads is still there, as during a rolling
    upgrade); `oldest` is older than this code's only for tables that have not changed since."""
    global _reading_only
    before, _reading_only = _reading_only, oldest
    try:
        yield
    finally:
        _reading_only = before


def _readable_engine(url: str, oldest: str) -> Engine:
    """An engine on a schema at revision `oldest` or newer, or SchemaNotReadable in one line saying what to do."""
    parsed = make_url(url)
    name = parsed.render_as_string(hide_password=True)
    nothing = (f"database {name} has no opsqueue schema (nothing recorded yet, or the wrong OPSQ_DATABASE_URL): "
               "`opsq db upgrade` creates it")
    sqlite_file = parsed.database if parsed.get_backend_name() == "sqlite" and parsed.database != ":memory:" else None
    if sqlite_file and not Path(sqlite_file).exists():  # connecting would create the file
        raise SchemaNotReadable(nothing)
    engine = make_engine(url, reading=True)
    try:
        revision = current_revision(engine)
    except Exception:
        engine.dispose()
        raise
    # Revision ids are four-digit numbers in order (workers/migrations/versions).
    if revision is not None and revision.isdigit() and int(revision) >= int(oldest):
        return engine
    engine.dispose()
    if revision is None:
        raise SchemaNotReadable(nothing)
    raise SchemaNotReadable(f"database {name}: the schema is at revision {revision}, this opsq needs "
                            f"{HEAD_REVISION}: run `opsq db upgrade` (a read command never migrates)")


def outcome_engine() -> Engine:
    """For the worker's retry records.
    On PostgreSQL these commit asynchronously (synchronous_commit=off): the commit does not wait for the
    WAL flush. What that risks: a PostgreSQL *server* crash can lose the last fraction of a second of such
    updates (never corrupt anything). The outcome was written to Redis first (the execution record, kept
    for OPSQ_IDEMPOTENCY_TTL_S), so the action is never run twice because of it. OPSQ_DB_ASYNC_COMMIT=false
    turns it off. Submits, a standalone action's success (store.mark_succeeded_many: final, and forgotten by
    the write-behind once committed), failures and dead letters always commit durably.

    It keeps the pool's ping: a retry record (mark_retrying) has no retry of its own."""
    engine = get_engine()
    if engine.dialect.name != "postgresql" or not get_settings().db_async_commit:
        return engine
    return _purpose_engine("outcome", async_commit=True)


def submit_engine() -> Engine:
    """For the submit's INSERT on PostgreSQL: autocommit (the record and its audit entry go in one
    statement, so BEGIN and COMMIT would be two more round trips) and no ping per checkout (another);
    durable commits. A connection lost to a server restart is retried once by the caller
    (workers.store.actions.create). Elsewhere: the process's engine."""
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        return engine
    return _purpose_engine("submit", pre_ping=False, autocommit=True)


def _purpose_engine(purpose: str, **options: Any) -> Engine:
    global _purpose_engines, _purpose_pid
    with _lock:
        if _purpose_pid != os.getpid():
            for engine in _purpose_engines.values():
                engine.dispose(close=False)
            _purpose_engines, _purpose_pid = {}, os.getpid()
        if purpose not in _purpose_engines:
            _purpose_engines[purpose] = make_engine(get_settings().resolved_database_url, **options)
        return _purpose_engines[purpose]


def reset_engine(close: bool = True) -> None:
    """Forget the process's engines. `close=False` in a forked child (Celery's worker_process_init): the
    pooled connections are the parent's sockets, and closing them would end the parent's sessions (the
    child only drops its references; psycopg does not close a connection made by another process)."""
    global _engine, _engine_pid, _sessionmaker, _purpose_engines, _purpose_pid
    with _lock:
        if _engine is not None:
            _engine.dispose(close=close)
        for engine in _purpose_engines.values():
            engine.dispose(close=close)
        _engine = _engine_pid = _sessionmaker = _purpose_pid = None
        _purpose_engines = {}


@contextlib.contextmanager
def session() -> Iterator[Session]:
    get_engine()
    assert _sessionmaker is not None
    with _sessionmaker() as s, s.begin():
        yield s


def require(s: Session, model: type[Any], key: Any, what: str) -> Any:
    """The row with this primary key, or NotFound("no <what> with id <key>")."""
    row = s.get(model, key)
    if row is None:
        raise NotFound(f"no {what} with id {key}")
    return row


def current_revision(engine: Engine) -> str | None:
    """None when the schema was never migrated; an unreachable database raises (it is not 'unmigrated')."""
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):
            conn.rollback()
            return None


def ensure_schema(engine: Engine) -> None:
    if current_revision(engine) != HEAD_REVISION:
        upgrade(engine)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Two processes starting at once must not both run the migrations."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(727274)"))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(727274)"))
                conn.commit()
        return
    database = engine.url.database
    lock_path = Path(f"{database}.migrate.lock") if database and database != ":memory:" else None
    if lock_path is None:
        yield
        return
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    # Alembic is loaded only to migrate: a process that finds the schema current never imports it.
    from alembic.config import Config  # noqa: PLC0415

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def row_conversions_after(engine: Engine, revision: str | None) -> list[Callable[[Callable[[str], object]], None]]:
    """The data conversions (a migration's `convert_rows`) of the revisions newer than `revision`, oldest
    first: what rows written under `revision` need once they are put into the newest schema (a restored
    backup). Every revision's when `revision` is unknown; the conversions are idempotent."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only to restore, like the other Alembic uses

    script = ScriptDirectory.from_config(alembic_config(engine))
    newer = [r for r in script.walk_revisions() if revision is None or r.revision > revision]
    return [r.module.convert_rows for r in reversed(newer) if hasattr(r.module, "convert_rows")]


def upgrade(engine: Engine | None = None, revision: str = "head") -> str | None:
    from alembic import command  # noqa: PLC0415 - only to migrate, as above

    engine = engine or make_engine(get_settings().resolved_database_url)
    try:
        with _migration_lock(engine):
            if revision == "head" and current_revision(engine) == HEAD_REVISION:
                return HEAD_REVISION
            command.upgrade(alembic_config(engine), revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate {engine.url.render_as_string(hide_password=True)}: "
                            f"{exc.orig}") from None
    return current_revision(engine)
