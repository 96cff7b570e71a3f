"""Servers a fault test owns (it stops and starts them): never the machine's shared ones."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.owned_postgres import OwnedPostgres


@pytest.fixture
def owned_pg():
    # Not under pytest's tmp_path: that is private to root, and the server runs as `postgres`.
    home = Path(tempfile.mkdtemp(prefix="opsq-pg-"))
    server = OwnedPostgres(home).create()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)
