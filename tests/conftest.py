"""Shared fixtures: the real Redis and PostgreSQL, the sandbox, and real worker processes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import inspect, text

from executors.registry import TOKEN_PLATFORMS
from executors.sandbox.server import SandboxClient, SandboxServer
from tests.support.services import PostgresService, RedisService, find_postgres, find_redis
from tests.support.worker import WorkerProcess
from workers import executor_pool
from workers.queues import CONTROL_QUEUE, PLATFORM_QUEUES
from workers.settings import reload_settings
from workers.store import db
from workers.store.db import make_engine

_TMP = Path(tempfile.mkdtemp(prefix="opsq-tests-"))
_REDIS: RedisService | None = None
PLATFORMS_WITH_TOKENS = TOKEN_PLATFORMS


def pytest_configure(config: pytest.Config) -> None:
    global _REDIS
    # Read on first use (settings, the Celery app), never at import: set before any test runs.
    os.environ["OPSQ_HOME"] = str(_TMP / "home")
    _REDIS = find_redis(_TMP / "embedded")
    os.environ["OPSQ_REDIS_URL"] = _REDIS.url


def pytest_report_header(config: pytest.Config) -> list[str]:
    assert _REDIS is not None
    lines = [f"opsqueue tests: Redis {_REDIS.url}"]
    if _REDIS.note:
        lines.append(f"NOTE: {_REDIS.note}")
    return lines


@pytest.fixture(scope="session")
def redis_url() -> str:
    assert _REDIS is not None
    return _REDIS.url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresService]:
    service = find_postgres()
    yield service
    service.drop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'opsq.db'}"
    return request.getfixturevalue("pg_database_url")


@pytest.fixture
def pg_database_url(postgres: PostgresService) -> str:
    """For what only PostgreSQL has (a server that drops connections, its planner)."""
    if postgres.url is None:
        pytest.skip(f"needs PostgreSQL: {postgres.reason}")
    _truncate_pg(postgres.url)
    return postgres.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'opsq.db'}"


def _truncate_pg(url: str) -> None:
    engine = make_engine(url)
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    if tables:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            if "audit_head" in tables:  # as the migration leaves it: the chain starts at GENESIS
                conn.execute(text("INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, :h)"), {"h": "0" * 64})
    engine.dispose()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer().start()
    yield server
    server.stop()


@pytest.fixture
def sandbox_client(sandbox: object) -> object:
    client = SandboxClient(sandbox.url)  # type: ignore[attr-defined]
    client.reset()
    client.clear_requests()
    return client


def make_env(redis_url: str, database_url: str, sandbox_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    env.update({
        "OPSQ_HOME": str(_TMP / "home"),
        "OPSQ_REDIS_URL": redis_url,
        "OPSQ_DATABASE_URL": database_url,
        "OPSQ_PLATFORM_BASE_URL": sandbox_url,
        "OPSQ_RETRY_BASE_S": "0.2",
        "OPSQ_RETRY_CAP_S": "2",
        "OPSQ_MAX_ATTEMPTS": "4",
        "OPSQ_HTTP_READ_TIMEOUT_S": "5",
        "OPSQ_TRELLO_API_KEY": "test-key",
        # The sandbox listens on loopback: the webhook SSRF guard refuses it unless allow-listed.
        "OPSQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
    })
    for platform in PLATFORMS_WITH_TOKENS:
        env[f"OPSQ_{platform.upper()}_TOKEN"] = f"test-token-{platform}"
    env.update(overrides)
    return env


@pytest.fixture
def opsq_env(redis_client: redis.Redis, redis_url: str, database_url: str, sandbox: object,
             sandbox_client: object, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, str]]:
    """Configures this process (the client) and returns a factory of worker environments."""
    return _configure(redis_url, database_url, sandbox, monkeypatch)


@pytest.fixture
def opsq_env_sqlite(redis_client: redis.Redis, redis_url: str, sqlite_url: str, sandbox: object,
                    sandbox_client: object, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, str]]:
    return _configure(redis_url, sqlite_url, sandbox, monkeypatch)


@pytest.fixture
def opsq_env_pg(redis_client: redis.Redis, redis_url: str, pg_database_url: str, sandbox: object,
                sandbox_client: object, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, str]]:
    return _configure(redis_url, pg_database_url, sandbox, monkeypatch)


def _configure(redis_url: str, database_url: str, sandbox: object,
               monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, str]]:
    base = make_env(redis_url, database_url, sandbox.url)  # type: ignore[attr-defined]
    for key in [k for k in os.environ if k.startswith("OPSQ_")]:
        monkeypatch.delenv(key)
    for key, value in base.items():
        if key.startswith("OPSQ_"):
            monkeypatch.setenv(key, value)
    reload_settings()
    db.reset_engine()
    executor_pool.reset()

    def factory(**overrides: str) -> dict[str, str]:
        return {**base, **overrides}

    yield_env = factory
    return yield_env


@pytest.fixture
def workers_started(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], queues: str = ",".join((*PLATFORM_QUEUES, CONTROL_QUEUE)),
              concurrency: int = 2, **kw: object) -> WorkerProcess:
        worker = WorkerProcess(env, queues, concurrency, log_dir=tmp_path, **kw)  # type: ignore[arg-type]
        started.append(worker)
        return worker.start()

    yield start
    # SIGKILL, not a warm shutdown: the test is over and the next one starts on an emptied Redis db, so nothing a
    # warm shutdown would tidy matters, and it costs ~1.6 s per worker (87 tests use this fixture). A test about
    # shutting down calls worker.stop() itself.
    for worker in started:
        worker.kill()


@pytest.fixture(autouse=True)
def _reset_process_state() -> Iterator[None]:
    yield
    db.reset_engine()
    executor_pool.reset()
    reload_settings()
