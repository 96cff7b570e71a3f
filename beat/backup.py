"""Backups of the state store: a portable gzip'd JSON of every table, restorable into an empty database
of either kind (SQLite or PostgreSQL)."""

from __future__ import annotations

import contextlib
import gzip
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, event, func, insert, select, text

# Every layer declares its tables on the one Base when its models are imported: a backup must know them all,
# whichever modules the process that runs it (the CLI, a beat worker) happened to load before.
import beat.models  # noqa: F401
import workflows.models  # noqa: F401
from workers.settings import get_settings
from workers.store import audit
from workers.store.db import get_engine, make_engine, row_conversions_after, upgrade
from workers.store.models import Base, as_utc

FORMAT = "opsqueue-backup/1"


def _tables() -> list[Any]:
    return list(Base.metadata.sorted_tables)  # parents before children


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": as_utc(value).isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$dt"}:
        return datetime.fromisoformat(value["$dt"])
    return value


def _sqlite_snapshot_engine(engine: Engine) -> Engine:
    """An engine for the same SQLite file whose transactions really BEGIN on the first statement.

    pysqlite opens a transaction only before writes, so SELECTs on a plain connection each see the
    database as it is at that moment. SQLAlchemy's "serializable isolation for pysqlite" recipe: no
    implicit transaction handling by the driver (isolation_level None), and an explicit BEGIN when
    SQLAlchemy begins one. Under WAL, the reads of that transaction then all see one snapshot, while
    writers carry on."""
    snap = make_engine(engine.url.render_as_string(hide_password=False))

    @event.listens_for(snap, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None

    @event.listens_for(snap, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN")

    return snap


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection inside one read-only transaction that sees a single snapshot of every table."""
    if engine.dialect.name == "sqlite":
        snap = _sqlite_snapshot_engine(engine)
        try:
            with snap.connect() as conn, conn.begin():
                yield conn
        finally:
            snap.dispose()
        return
    options: dict[str, Any] = {"isolation_level": "REPEATABLE READ"}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    with engine.connect().execution_options(**options) as conn, conn.begin():
        yield conn


def dump(engine: Engine) -> dict[str, Any]:
    """Every table, read in one transaction: a consistent snapshot (PostgreSQL: REPEATABLE READ, read
    only; SQLite: one deferred transaction under WAL), however busy the workers are meanwhile."""
    data: dict[str, Any] = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(), "tables": {}}
    with _snapshot(engine) as conn:
        data["revision"] = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        for table in _tables():
            pk = list(table.primary_key.columns)
            rows = conn.execute(select(table).order_by(*pk))
            data["tables"][table.name] = [{k: _encode(v) for k, v in r._mapping.items()} for r in rows]
    return data


def create(directory: Path | None = None) -> Path:
    settings = get_settings()
    directory = directory or settings.resolved_backup_dir
    directory.mkdir(parents=True, exist_ok=True)
    audit.seal()  # the backup's chain then holds every submit so far (later ones stay pending, and are kept)
    data = dump(get_engine())
    path = directory / f"opsq-backup-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json.gz"
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
    tmp.replace(path)  # never a half-written backup under the real name
    return path


def list_backups(directory: Path | None = None) -> list[dict[str, Any]]:
    directory = directory or get_settings().resolved_backup_dir
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.glob("opsq-backup-*.json.gz")):
        st = p.stat()
        out.append({"path": str(p), "bytes": st.st_size,
                    "created_at": datetime.fromtimestamp(st.st_mtime, UTC).isoformat()})
    return out


def prune(retention_days: float, directory: Path | None = None) -> list[str]:
    cutoff = time.time() - retention_days * 86400
    removed = []
    for item in list_backups(directory):
        p = Path(item["path"])
        if p.stat().st_mtime < cutoff:
            p.unlink()
            removed.append(str(p))
    return removed


def load(path: Path) -> dict[str, Any]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not an opsqueue backup: {exc}") from None
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an opsqueue backup (format {data.get('format')!r})")
    return data


def restore(path: Path, *, database_url: str | None = None, force: bool = False,
            actor: str | None = None) -> dict[str, int]:
    """Into an empty database (migrated first); `force` empties a database that has data. A backup taken
    at an older schema revision is converted as the migrations since then converted the rows they found."""
    data = load(path)
    engine = make_engine(database_url or get_settings().resolved_database_url)
    upgrade(engine)
    tables = _tables()
    with engine.begin() as conn:
        existing = {t.name: conn.execute(select(func.count()).select_from(t)).scalar() for t in tables}
        has_data = any(n for name, n in existing.items() if name != "audit_head")
        if has_data and not force:
            raise ValueError("the database is not empty; restore into an empty one, or pass --force to replace it")
        for table in reversed(tables):
            conn.execute(delete(table))
        counts = {}
        for table in tables:
            rows = [{k: _decode(v) for k, v in row.items()} for row in data["tables"].get(table.name, [])]
            if rows:
                conn.execute(insert(table), rows)
            counts[table.name] = len(rows)
        # Rows from an older schema get what its later migrations did to the rows that were there.
        for convert in row_conversions_after(engine, data.get("revision")):
            convert(lambda sql: conn.execute(text(sql)))
        if conn.dialect.name == "postgresql":  # keep the sequences past the restored ids
            for table in tables:
                pk = list(table.primary_key.columns)
                if len(pk) == 1 and pk[0].autoincrement is not False and pk[0].type.python_type is int \
                        and table.name != "audit_head":
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk[0].name}'), "
                                      f"COALESCE((SELECT MAX({pk[0].name}) FROM {table.name}), 0) + 1, false)"))
        # In the restore's transaction, so in the database restored into (not the process's), and only if
        # the restore commits.
        audit.append("backup_restore", str(path), {"rows": counts}, actor=actor, conn=conn)
    engine.dispose()
    return counts
