"""The HTTP API's failed-authentication limit (issue 15): counted in Redis, so every `opsq api` process on one
Redis shares it and a restart forgets nothing; with Redis down it fails open (workers.api.failed_auths says why)
and the API answers, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.redis_server import OwnedRedis
from tests.support.wait import wait_for
from workers.guards import keys
from workers.store import api_tokens

pytestmark = pytest.mark.integration

GUESS = "opsq_not-a-token"


def test_failed_authentications_are_counted_once_for_every_api_process(opsq_env_sqlite, api_started, redis_client):
    env = opsq_env_sqlite(OPSQ_API_AUTH_FAILURES_PER_MIN="4")
    good = api_tokens.create("ops", "admin", actor="test")
    a, b = api_started(env), api_started(env)

    for server in (a, b, a):
        assert server.call("GET", "/v1/approvals", GUESS).status_code == 401
    assert b.call("GET", "/v1/approvals", good).status_code == 200  # 3 failures of 4: still admitted
    assert b.call("GET", "/v1/approvals", GUESS).status_code == 401  # the 4th, counted by the other process
    for server in (a, b):  # each refuses the address now, even with a good token
        limited = server.call("GET", "/v1/approvals", good)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"].startswith("too many failed authentications from 127.0.0.1: try again in")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert a.call("GET", "/v1/health").status_code == 200  # not authenticated, not limited

    # A restarted API process remembers: the count is in Redis, with the window's expiry.
    a.stop()
    c = api_started(env)
    assert c.call("GET", "/v1/approvals", good).status_code == 429
    key = keys.api_auth_failures("127.0.0.1")
    assert int(redis_client.get(key)) == 4 and 0 < redis_client.ttl(key) <= 60
    # The window over (its key expires), the address is admitted again.
    redis_client.pexpire(key, 1)
    wait_for(lambda: c.call("GET", "/v1/approvals", good).status_code == 200, 10, "the address admitted again")


def test_with_redis_down_the_limit_fails_open_and_nothing_is_a_500(opsq_env_sqlite, api_started, tmp_path: Path):
    owned = OwnedRedis(tmp_path / "redis").start()
    try:
        env = opsq_env_sqlite(OPSQ_REDIS_URL=owned.url(), OPSQ_API_AUTH_FAILURES_PER_MIN="2")
        good = api_tokens.create("ops", "admin", actor="test")
        api = api_started(env)
        owned.stop()

        for _ in range(3):  # past the limit, but nothing can count them: still 401, not 429 nor 500
            assert api.call("GET", "/v1/approvals", GUESS).status_code == 401
        assert api.call("GET", "/v1/approvals", good).status_code == 200  # the database is enough for this
        submit = api.call("POST", "/v1/actions", good, json={"platform": "noop", "action": "noop"})
        assert submit.status_code == 503, submit.text

        owned.start()  # back: counted again (once the limiter asks Redis again: failed_auths.QUIET_AFTER_FAILURE_S)

        def limited_again() -> bool:
            status = api.call("GET", "/v1/approvals", GUESS).status_code
            assert status in (401, 429)
            return status == 429

        wait_for(limited_again, 30, "failed authentications counted again", interval=0.5)
        assert api.call("GET", "/v1/approvals", good).status_code == 429
        assert int(owned.client().get(keys.api_auth_failures("127.0.0.1"))) == 2
        assert "failed authentications are not counted until it is back" in api.log.read_text()
    finally:
        owned.stop()


def test_x_forwarded_for_is_ignored_unless_it_comes_from_a_trusted_proxy(opsq_env_sqlite, api_started,
                                                                          redis_client):
    """By default the connection's address is the client's, whatever X-Forwarded-For says (uvicorn alone would
    believe it from 127.0.0.1): varying the header neither buys more guesses nor charges them to another address."""
    env = opsq_env_sqlite(OPSQ_API_AUTH_FAILURES_PER_MIN="4")
    good = api_tokens.create("ops", "admin", actor="test")
    api = api_started(env)

    statuses = [api.call("GET", "/v1/approvals", GUESS, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
                for i in range(6)]
    assert statuses == [401] * 4 + [429] * 2
    limited = api.call("GET", "/v1/approvals", good, headers={"X-Forwarded-For": "10.0.0.99"})
    assert limited.status_code == 429 and "from 127.0.0.1:" in limited.json()["error"], limited.text
    assert int(redis_client.get(keys.api_auth_failures("127.0.0.1"))) == 4
    assert [redis_client.get(keys.api_auth_failures(f"10.0.0.{i}")) for i in range(6)] == [None] * 6


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted_ipv6_by_its_64(opsq_env_sqlite, api_started,
                                                                                  redis_client):
    """With OPSQ_API_TRUSTED_PROXIES naming the proxy (here the test, on 127.0.0.1), each forwarded client has its
    own count; an IPv6 client is counted by its /64, so varying the low 64 bits buys nothing."""
    env = opsq_env_sqlite(OPSQ_API_AUTH_FAILURES_PER_MIN="3", OPSQ_API_TRUSTED_PROXIES="10.9.0.0/16, 127.0.0.1")
    good = api_tokens.create("ops", "admin", actor="test")
    api = api_started(env)

    def call(token: str, client: str) -> int:
        return api.call("GET", "/v1/approvals", token, headers={"X-Forwarded-For": client}).status_code

    assert [call(GUESS, "10.0.0.1") for _ in range(3)] == [401] * 3
    assert call(good, "10.0.0.1") == 429
    assert call(good, "10.0.0.2") == 200  # another client behind the same proxy is not locked out
    assert call(good, "203.0.113.7, 10.0.0.2") == 200  # a chain: the right-most untrusted hop is the client
    assert int(redis_client.get(keys.api_auth_failures("10.0.0.1"))) == 3
    assert redis_client.get(keys.api_auth_failures("127.0.0.1")) is None

    assert [call(GUESS, f"2001:db8:5:6::{i:x}") for i in range(1, 4)] == [401] * 3
    assert call(good, "2001:db8:5:6:ffff:ffff:ffff:ffff") == 429  # same /64
    assert call(good, "2001:db8:5:7::1") == 200  # the next /64
    assert int(redis_client.get(keys.api_auth_failures("2001:db8:5:6::/64"))) == 3
