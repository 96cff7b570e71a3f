"""Fixtures shared by the integration tests (the services themselves are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from workers.settings import reload_settings
from workers.store import db


@pytest.fixture
def pg_url(pg_database_url, monkeypatch) -> str:
    """This process's store on the (emptied) PostgreSQL database; no Redis, no sandbox."""
    monkeypatch.setenv("OPSQ_DATABASE_URL", pg_database_url)
    reload_settings()
    db.reset_engine()
    return pg_database_url
