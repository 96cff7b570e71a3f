"""Fixtures shared by the integration tests (the services themselves are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.api_server import ApiServer
from workers.settings import reload_settings
from workers.store import db


@pytest.fixture
def pg_url(pg_database_url, monkeypatch) -> str:
    """This process's store on the (emptied) PostgreSQL database; no Redis, no sandbox."""
    monkeypatch.setenv("OPSQ_DATABASE_URL", pg_database_url)
    reload_settings()
    db.reset_engine()
    return pg_database_url


@pytest.fixture
def api_started(tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """Starts `opsq api` processes (tests.support.api_server) with the given environment; stopped at the end."""
    started: list[ApiServer] = []

    def start(env: dict[str, str], *args: str) -> ApiServer:
        server = ApiServer(env, tmp_path, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
