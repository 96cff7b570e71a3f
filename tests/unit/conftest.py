"""Fixtures for the unit tests that talk HTTP to the sandbox: the session's server (`sandbox`, tests/conftest.py),
one control client, the sandbox emptied for each test, and the executors' HTTP layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from executors.http import HttpClient
from executors.sandbox.server import SandboxClient, SandboxServer


@pytest.fixture(scope="session")
def server(sandbox: SandboxServer) -> SandboxServer:
    """The unit tests' name for the session's sandbox: one server for every module (each test empties it)."""
    return sandbox


# Shared by the session: building an httpx.Client (its TLS context) costs ~50 ms each time.
@pytest.fixture(scope="session")
def control(server: SandboxServer) -> Iterator[SandboxClient]:
    with SandboxClient(server.url) as c:
        yield c


@pytest.fixture
def sbx(control: SandboxClient) -> SandboxClient:
    """The sandbox with no state, no fault and an empty request log. Not autouse (most unit tests never touch
    the sandbox): a module whose every test talks to it says `pytestmark = pytest.mark.usefixtures("sbx")`."""
    control.reset()
    control.clear_requests()
    return control


@pytest.fixture(scope="session")
def http() -> Iterator[HttpClient]:
    """The executors' HTTP layer with ordinary timeouts."""
    client = HttpClient(connect_timeout_s=2, read_timeout_s=5)
    yield client
    client.close()


@pytest.fixture(scope="session")
def quick_http() -> Iterator[HttpClient]:
    """A read timeout far below what a `timeout` or `applied_timeout` fault holds: the fault is seen in half
    a second."""
    client = HttpClient(connect_timeout_s=2, read_timeout_s=0.5)
    yield client
    client.close()
