"""A PostgreSQL server that never answers (a host dropping packets, a hung server) makes a new connection fail
after the engine's connect timeout instead of holding the caller for the OS's (psycopg: 130 s): every
`GET /v1/health`, outage probe and worker opening a connection would otherwise hang that long."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from workers.store import db

pytestmark = pytest.mark.integration


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose TCP handshake completes (the kernel does it) and where nothing is ever read or answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _connect_in_thread(url: str) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            with db.make_engine(url).connect():
                pass
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    return thread, errors


def test_connecting_to_a_server_that_never_answers_fails_instead_of_hanging(silent_server, monkeypatch):
    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT", 2)  # the default's value is not the point: that there is one
    thread, errors = _connect_in_thread(f"postgresql+psycopg://opsq@127.0.0.1:{silent_server}/opsq")
    thread.join(60)  # far above the timeout, far below psycopg's own 130 s
    assert not thread.is_alive(), "the connection attempt still hangs: no connect timeout"
    assert len(errors) == 1 and isinstance(errors[0], OperationalError), errors
    assert "timeout" in str(errors[0]).lower(), errors[0]


def test_the_urls_own_connect_timeout_is_the_one_used(silent_server, monkeypatch):
    monkeypatch.setattr(db, "PG_CONNECT_TIMEOUT", 3600)  # were it used instead of the URL's, the join would expire
    thread, errors = _connect_in_thread(f"postgresql+psycopg://opsq@127.0.0.1:{silent_server}/opsq?connect_timeout=2")
    thread.join(60)
    assert not thread.is_alive(), "the URL's connect_timeout was overridden"
    assert len(errors) == 1 and isinstance(errors[0], OperationalError), errors
