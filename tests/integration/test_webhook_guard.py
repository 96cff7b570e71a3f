"""Outgoing webhooks through a real worker (issue 15 item 4): the call is signed with the configured secret and
a receiver verifies it with the recipe in docs/ARCHITECTURE.md; a destination the SSRF guard refuses fails the
action at once (permanent, one attempt, a clear error) and the listener behind it receives nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.connect_proxy import start_connect_proxy
from tests.support.receiver import Receiver, doc_recipe, start_receiver
from workers.client import submit_action

pytestmark = pytest.mark.integration

SECRET = "whsec-e2e-8c2d"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.close()


def test_signed_through_a_worker_and_refused_destinations_send_nothing(opsq_env_sqlite, workers_started,
                                                                       receiver: Receiver) -> None:
    # Allowed by name only: the same listener reached as 127.0.0.1 or 169.254.169.254 is refused.
    env = opsq_env_sqlite(OPSQ_WEBHOOK_SECRET=SECRET, OPSQ_WEBHOOK_ALLOW_HOSTS="localhost")
    workers_started(env, queues="webhook")
    allowed = f"http://localhost:{receiver.port}/hooks/deploy"
    sent = submit_action("webhook", "post", {"url": allowed, "json": {"deploy": 42}})
    refused = {url: submit_action("webhook", "post", {"url": url, "json": {"deploy": 43}}, max_attempts=5)
               for url in (f"http://127.0.0.1:{receiver.port}/hooks/deploy", "http://169.254.169.254/latest/")}

    view = sent.wait(timeout=30)
    assert (view.status, view.result) == ("succeeded", {"status": 200, "body": {"ok": True}}), view.error
    (got,) = receiver.log
    assert doc_recipe()(SECRET, got.headers["x-opsq-signature"], got.body)
    assert got.headers["idempotency-key"] == sent.id
    for url, handle in refused.items():
        view = handle.wait(timeout=30)
        assert (view.status, view.error_kind, view.attempts) == ("failed", "permanent", 1), (url, view.error)
        assert "webhook destination refused" in (view.error or "") and "OPSQ_WEBHOOK_ALLOW_HOSTS" in (view.error or "")
    assert len(receiver.log) == 1


def test_through_the_webhook_proxy_from_a_worker(opsq_env_sqlite, workers_started, receiver: Receiver) -> None:
    """OPSQ_WEBHOOK_PROXY on a worker: the signed call reaches the receiver through a real CONNECT proxy, tunnelled
    to the checked address (never the name); a refused destination reaches neither; HTTP(S)_PROXY, set too, are not
    used."""
    proxy = start_connect_proxy()
    try:
        env = opsq_env_sqlite(OPSQ_WEBHOOK_SECRET=SECRET, OPSQ_WEBHOOK_ALLOW_HOSTS="localhost",
                              OPSQ_WEBHOOK_PROXY=f"http://localhost:{proxy.port}",
                              HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
        workers_started(env, queues="webhook")
        sent = submit_action("webhook", "post", {"url": f"http://localhost:{receiver.port}/hooks/deploy",
                                                 "json": {"deploy": 44}})
        refused = submit_action("webhook", "post", {"url": "http://169.254.169.254/latest/", "json": {}},
                                max_attempts=5)
        view = sent.wait(timeout=30)
        assert (view.status, view.result) == ("succeeded", {"status": 200, "body": {"ok": True}}), view.error
        (got,) = receiver.log
        assert doc_recipe()(SECRET, got.headers["x-opsq-signature"], got.body)
        assert proxy.targets[-1] == f"127.0.0.1:{receiver.port}" and all("localhost" not in t for t in proxy.targets)
        view = refused.wait(timeout=30)
        assert (view.status, view.error_kind, view.attempts) == ("failed", "permanent", 1), view.error
        assert all("169.254" not in t for t in proxy.targets) and len(receiver.log) == 1
    finally:
        proxy.close()


def test_a_webhook_proxy_setting_that_cannot_be_used_fails_each_call_not_the_worker(opsq_env_sqlite, workers_started,
                                                                                    receiver: Receiver) -> None:
    env = opsq_env_sqlite(OPSQ_WEBHOOK_ALLOW_HOSTS="localhost", OPSQ_WEBHOOK_PROXY="https://user:pw@proxy.corp:3128")
    workers_started(env, queues="webhook")
    handle = submit_action("webhook", "post", {"url": f"http://localhost:{receiver.port}/x", "json": {}},
                           max_attempts=5)
    view = handle.wait(timeout=30)
    assert (view.status, view.error_kind, view.attempts) == ("failed", "permanent", 1), view.error
    assert (view.error or "").startswith("OPSQ_WEBHOOK_PROXY must be an http:// URL") and "pw" not in view.error
    assert receiver.log == []  # never sent direct instead
