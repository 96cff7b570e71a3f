"""Fixtures for the unit tests that talk HTTP to an in-process sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from executors.sandbox.server import SandboxClient, SandboxServer


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as srv:
        yield srv


# Shared by the module: building an httpx.Client (its TLS context) costs ~50 ms each time.
@pytest.fixture(scope="module")
def control(server: SandboxServer) -> Iterator[SandboxClient]:
    with SandboxClient(server.url) as c:
        yield c
