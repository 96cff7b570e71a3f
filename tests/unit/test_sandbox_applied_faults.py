"""The sandbox's ambiguous faults (issue 11): the request is applied (the object exists), then its answer is
lost: held past the read timeout, the connection dropped, or a gateway's 502. Real HTTP on a random port,
through the executors' own HTTP layer, so what a worker would see is what is checked."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from executors.errors import RetryableError
from executors.http import HttpClient
from executors.sandbox import SandboxClient, SandboxServer
from executors.sandbox.server import APPLIED_MODES, FAULT_MODES, Sandbox

TOKEN = "sbx-applied-T0K3N"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def client(sbx: SandboxClient) -> SandboxClient:
    """This module's name for the emptied sandbox (tests/unit/conftest.py)."""
    return sbx


def create_file(server: SandboxServer, http: HttpClient, name: str = "report.txt") -> dict[str, Any]:
    return http.json("POST", f"{server.url}/gdrive/drive/v3/files", platform="gdrive",
                     json={"name": name}, headers=BEARER)


def test_the_modes_are_known() -> None:
    assert set(APPLIED_MODES) <= set(FAULT_MODES)
    assert set(APPLIED_MODES) == {"applied_timeout", "applied_reset", "applied_502"}


@pytest.mark.parametrize("mode", APPLIED_MODES)
def test_applied_then_answer_lost_is_ambiguous(server: SandboxServer, client: SandboxClient, quick_http: HttpClient,
                                                mode: str) -> None:
    client.fault("gdrive", mode, times=1)
    with pytest.raises(RetryableError) as caught:
        create_file(server, quick_http)
    assert caught.value.ambiguous, caught.value.message
    # The object was created all the same: the client cannot tell, which is the point.
    (made,) = client.state("gdrive")["files"]
    assert made["name"] == "report.txt"
    (entry,) = client.requests("gdrive")
    assert entry["fault"] == mode and entry["applied"] is True and entry["answer"] == "lost"
    assert entry["applied_status"] == 200 and entry["applied_response"]["id"] == made["id"]
    # times=1: the next call is answered, and makes a second file (the sandbox does not deduplicate).
    again = create_file(server, quick_http)
    assert again["id"] != made["id"] and len(client.state("gdrive")["files"]) == 2
    second = client.requests("gdrive")[-1]
    assert second["fault"] is None and second["applied"] is True and second["answer"] == "sent"


def test_applied_timeout_is_a_read_timeout(server: SandboxServer, client: SandboxClient) -> None:
    client.fault("slack", "applied_timeout", latency_ms=5000, times=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/slack/chat.postMessage", json={"channel": "#ops", "text": "hi"},
                   headers=BEARER, timeout=0.3)
    assert len(client.state("slack")["messages"]) == 1


def test_applied_reset_closes_without_a_response(server: SandboxServer, client: SandboxClient) -> None:
    client.fault("slack", "applied_reset", times=1)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(f"{server.url}/slack/chat.postMessage", json={"channel": "#ops", "text": "hi"},
                   headers=BEARER, timeout=5)
    assert len(client.state("slack")["messages"]) == 1
    (entry,) = client.requests("slack")
    assert entry["status"] is None and entry["response"] is None and entry["answer"] == "lost"
    assert entry["applied_response"]["ok"] is True


def test_applied_502_answers_502(server: SandboxServer, client: SandboxClient) -> None:
    client.fault("slack", "applied_502", times=1)
    response = httpx.post(f"{server.url}/slack/chat.postMessage", json={"channel": "#ops", "text": "hi"},
                          headers=BEARER, timeout=5)
    assert response.status_code == 502
    assert len(client.state("slack")["messages"]) == 1
    (entry,) = client.requests("slack")
    assert entry["status"] == 502 and entry["applied_status"] == 200


def test_a_held_answer_does_not_block_other_requests(server: SandboxServer, client: SandboxClient) -> None:
    client.fault("gdrive", "applied_timeout", match="/files", times=1)  # default hold: far past any timeout
    held: dict[str, BaseException] = {}

    def call() -> None:
        try:
            httpx.post(f"{server.url}/gdrive/drive/v3/files", json={"name": "a"}, headers=BEARER, timeout=10)
        except httpx.HTTPError as exc:
            held["exc"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    try:
        # While that answer is held, the lookup a next attempt would make is answered and sees the file.
        for _ in range(200):
            if client.requests("gdrive"):
                break
            threading.Event().wait(0.01)
        listed = httpx.get(f"{server.url}/gdrive/drive/v3/files", headers=BEARER, timeout=5).json()
        assert [f["name"] for f in listed["files"]] == ["a"]
        first, lookup = client.requests("gdrive")
        assert first["status"] is None and first["answer"] == "lost"
        assert lookup["method"] == "GET" and lookup["answer"] == "sent"
    finally:
        client.reset()  # lets the held request go
        caller.join(5)
    assert not caller.is_alive()


def test_applied_modes_honour_rate_times_and_match(server: SandboxServer, client: SandboxClient,
                                                   quick_http: HttpClient) -> None:
    client.fault("gdrive", "applied_502", rate=0.0)
    create_file(server, quick_http)
    assert client.faults()[0]["hits"] == 0
    client.fault("gdrive", "applied_502", match="/about", times=2)
    create_file(server, quick_http)  # not matched: answered
    assert client.requests("gdrive")[-1]["fault"] is None
    for _ in range(2):
        with pytest.raises(RetryableError):
            quick_http.json("GET", f"{server.url}/gdrive/drive/v3/about", platform="gdrive", params={"fields": "user"},
                            headers=BEARER)
    assert client.faults() == []
    quick_http.json("GET", f"{server.url}/gdrive/drive/v3/about", platform="gdrive", params={"fields": "user"},
                    headers=BEARER)


def test_a_refused_request_is_not_applied_even_under_an_applied_fault(server: SandboxServer,
                                                                      client: SandboxClient) -> None:
    """Without credentials the platform refuses before acting: the log says so (applied false)."""
    client.fault("gdrive", "applied_502", times=1)
    response = httpx.post(f"{server.url}/gdrive/drive/v3/files", json={"name": "a"}, timeout=5)
    assert response.status_code == 502
    (entry,) = client.requests("gdrive")
    assert entry["applied"] is False and entry["applied_status"] == 401
    assert client.state("gdrive")["files"] == []


def test_ordinary_faults_are_not_applied(server: SandboxServer, client: SandboxClient) -> None:
    client.fault("gdrive", "error", status=503, times=1)
    assert httpx.post(f"{server.url}/gdrive/drive/v3/files", json={"name": "a"}, headers=BEARER,
                      timeout=5).status_code == 503
    (entry,) = client.requests("gdrive")
    assert entry["applied"] is False and entry["answer"] == "sent"
    assert client.state("gdrive")["files"] == []


def test_stop_releases_a_held_applied_answer() -> None:
    sandbox = Sandbox()
    sandbox.add_fault({"platform": "webhook", "mode": "applied_timeout"})
    sandbox.release_held(stopping=True)
    reply = sandbox.handle("POST", "/webhook/x", {}, b"{}")
    assert reply.status == 200 and sandbox.state("webhook")["webhook"]["received"]
