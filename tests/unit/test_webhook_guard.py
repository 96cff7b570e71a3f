"""Outgoing webhooks, done safely (issue 15 item 4): the signature (and the receiver's recipe from
docs/ARCHITECTURE.md, run as written), and the SSRF guard against a real HTTP receiver on 127.0.0.1: a refused
destination is a clear permanent error and the receiver logs nothing."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from executors.base import Effect, ExecutorConfig
from executors.errors import PermanentError, RetryableError
from executors.http import HttpClient
from executors.urlguard import AddressGuard, DestinationRefused, refusal
from executors.webhook import SIGNATURE_HEADER, WebhookExecutor, origin, parse_secrets, sign
from tests.support.receiver import Receiver, doc_recipe, start_receiver
from workers import redaction
from workers.settings import reload_settings

SECRET = "whsec-test-5f1e"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.close()


@pytest.fixture
def http() -> Iterator[HttpClient]:
    client = HttpClient(connect_timeout_s=2, read_timeout_s=5)
    yield client
    client.close()


@pytest.fixture
def hook(http: HttpClient) -> Callable[..., WebhookExecutor]:
    made: list[WebhookExecutor] = []

    def build(**extra: str) -> WebhookExecutor:
        ex = WebhookExecutor(ExecutorConfig(base_url="", extra=extra), http)
        made.append(ex)
        return ex

    yield build  # type: ignore[misc]
    for ex in made:
        ex.http.close()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names the test makes resolve where it says (anything else: the real resolver)."""
    names: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in names[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


# -- Address classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6: judged as the IPv4 address it reaches
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("::ffff:10.0.0.1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("::ffff:169.254.169.254", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "private"),  # reserved, which Python also files as private
    ("100.64.0.1", "non-global"),  # shared address space (carrier NAT)
    ("93.184.216.34", None), ("8.8.8.8", None), ("2606:4700:4700::1111", None),
])
def test_refusal(address: str, reason: str | None) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


def test_allow_list_parsing_and_matching() -> None:
    guard = AddressGuard.parse(" 127.0.0.1/32, Sandbox.Internal. ,10.20.0.0/16;::1 ,")
    assert guard.hosts == {"sandbox.internal"}
    assert guard.host_allowed("SANDBOX.internal") and not guard.host_allowed("other.internal")
    for allowed in ("127.0.0.1", "10.20.3.4", "::1", "::ffff:127.0.0.1"):
        assert guard.address_allowed(ipaddress.ip_address(allowed)), allowed
    for refused in ("127.0.0.2", "10.21.0.1", "169.254.169.254"):
        assert not guard.address_allowed(ipaddress.ip_address(refused)), refused
    assert AddressGuard.parse(None) == AddressGuard.parse("") == AddressGuard()


def test_every_resolved_address_is_checked(fake_dns: dict[str, list[str]]) -> None:
    """A name with one public and one loopback address is refused: the connect could use either."""
    fake_dns["mixed.test"] = ["93.184.216.34", "127.0.0.1"]
    with pytest.raises(DestinationRefused, match=r"mixed\.test \(127\.0\.0\.1\) is a loopback address"):
        AddressGuard().resolve("mixed.test", 443)
    fake_dns["public.test"] = ["93.184.216.34", "2606:4700:4700::1111"]
    assert [str(a) for a in AddressGuard().resolve("public.test", 443)] == ["93.184.216.34", "2606:4700:4700::1111"]
    assert AddressGuard.parse("mixed.test").resolve("mixed.test", 443)  # allowed by name: anything


# -- The signature -------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1765110000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, 1765110000) == f"t=1765110000,v1={expected}"


def test_the_documented_recipe_verifies_and_refuses() -> None:
    verify = doc_recipe()
    body, now = b'{"deploy":42}', int(time.time())
    header = sign(SECRET, body, now)
    assert verify(SECRET, header, body)
    assert not verify("another-secret", header, body)
    assert not verify(SECRET, header, b'{"deploy":43}')  # body changed
    assert not verify(SECRET, sign(SECRET, body, now - 3600), body)  # a replay, an hour later
    assert not verify(SECRET, "garbage", body) and not verify(SECRET, "t=x,v1=y", body)


def test_secrets_are_per_origin() -> None:
    secrets = parse_secrets('{"https://Hooks.example.com": "a", "https://ops.example.net:8443": "b",'
                            ' "http://x.example:80": "c"}')
    assert secrets == {"https://hooks.example.com": "a", "https://ops.example.net:8443": "b", "http://x.example": "c"}
    assert origin("https://hooks.example.com:443/in/x?y=1") == "https://hooks.example.com"
    for bad in ("not json", '["a"]', '{"https://h.example": ""}'):
        with pytest.raises(ValueError, match="OPSQ_WEBHOOK_SECRETS") as caught:
            parse_secrets(bad)
        assert "a" not in str(caught.value).split("OPSQ")[0]


def test_a_real_call_is_signed_and_carries_the_idempotency_key(hook: Callable[..., WebhookExecutor],
                                                               receiver: Receiver) -> None:
    """A real receiver checks the signature with the documented recipe; the per-origin secret wins over the
    default; the action's own signature header is replaced."""
    verify = doc_recipe()
    ex = hook(allow_hosts="127.0.0.1/32", secret="default-secret",
              secrets=json.dumps({receiver.url: SECRET}))
    result = ex.execute("post", {"url": f"{receiver.url}/in/deploy", "json": {"deploy": 42, "who": "é"},
                                 "headers": {"x-opsq-signature": "forged"}}, Effect("act-sig-1"))
    assert result == {"status": 200, "body": {"ok": True}}
    (got,) = receiver.log
    assert json.loads(got.body) == {"deploy": 42, "who": "é"}
    assert got.headers["idempotency-key"] == "act-sig-1"
    assert got.headers["content-type"] == "application/json"
    assert verify(SECRET, got.headers["x-opsq-signature"], got.body)
    assert not verify("default-secret", got.headers["x-opsq-signature"], got.body)
    # Another origin (localhost, allowed by name) gets the default secret.
    hook(allow_hosts="localhost", secret="default-secret").execute(
        "post", {"url": f"http://localhost:{receiver.port}/other", "json": {}})
    assert verify("default-secret", receiver.log[-1].headers["x-opsq-signature"], receiver.log[-1].body)
    # No secret configured: unsigned.
    hook(allow_hosts="127.0.0.1/32").execute("post", {"url": f"{receiver.url}/plain"})
    assert SIGNATURE_HEADER.lower() not in receiver.log[-1].headers


def test_a_malformed_secrets_setting_fails_the_call_clearly(hook: Callable[..., WebhookExecutor],
                                                            receiver: Receiver) -> None:
    ex = hook(allow_hosts="127.0.0.1/32", secrets="{not json")
    with pytest.raises(PermanentError, match="OPSQ_WEBHOOK_SECRETS is not JSON"):
        ex.execute("post", {"url": f"{receiver.url}/x"})
    assert receiver.log == []


def test_a_malformed_origin_in_the_secrets_is_one_clear_error_naming_it(hook: Callable[..., WebhookExecutor],
                                                                       receiver: Receiver) -> None:
    """httpx.InvalidURL is no ValueError: it used to escape parse_secrets (and the executor's construction, and
    every caller's "malformed" handling) as itself. Now a ValueError naming the key, never the secret, and the
    call fails permanently with it, nothing sent."""
    raw = json.dumps({"https://ok.example": "whsec-fine-1", "http://[::1": "whsec-hidden-2"})
    with pytest.raises(ValueError, match=r"OPSQ_WEBHOOK_SECRETS: 'http://\[::1' is not a URL origin") as caught:
        parse_secrets(raw)
    assert "whsec" not in str(caught.value)
    ex = hook(allow_hosts="127.0.0.1/32", secrets=raw)
    with pytest.raises(PermanentError, match=r"'http://\[::1' is not a URL origin") as failed:
        ex.execute("post", {"url": f"{receiver.url}/x"})
    assert "whsec" not in str(failed.value)
    assert receiver.log == []


# -- The SSRF guard, for real --------------------------------------------------------------------------


def refused_urls(port: int) -> list[tuple[str, str]]:
    return [
        (f"http://127.0.0.1:{port}/hook/SECRETPATH", r"127\.0\.0\.1 is a loopback address"),
        ("http://10.0.0.1/hook", r"10\.0\.0\.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/iam", r"169\.254\.169\.254 is a link-local address"),
        (f"http://localhost:{port}/hook", r"localhost \((127\.0\.0\.1|::1)\) is a loopback address"),
        (f"http://[::ffff:127.0.0.1]:{port}/hook", r"is a loopback address"),
        (f"http://0.0.0.0:{port}/hook", r"0\.0\.0\.0 is an unspecified address"),
    ]


def test_refused_destinations_send_nothing(hook: Callable[..., WebhookExecutor], receiver: Receiver) -> None:
    ex = hook(secret=SECRET)  # no allow-list: the default
    for url, message in refused_urls(receiver.port):
        with pytest.raises(DestinationRefused, match=message) as caught:
            ex.execute("post", {"url": url, "json": {"x": 1}}, Effect("act-refused"))
        error = caught.value
        assert isinstance(error, PermanentError) and not isinstance(error, RetryableError)
        assert error.to_dict()["kind"] == "permanent"
        assert "OPSQ_WEBHOOK_ALLOW_HOSTS" in error.message and "SECRETPATH" not in error.message
    assert receiver.log == []


def test_the_allow_list_opens_what_it_names(hook: Callable[..., WebhookExecutor], receiver: Receiver) -> None:
    hook(allow_hosts="127.0.0.1/32").execute("post", {"url": f"{receiver.url}/by-cidr"})
    hook(allow_hosts="localhost").execute("post", {"url": f"http://localhost:{receiver.port}/by-name"})
    assert [r.path for r in receiver.log] == ["/by-cidr", "/by-name"]
    with pytest.raises(DestinationRefused):  # another loopback address is not in 127.0.0.1/32
        hook(allow_hosts="127.0.0.1/32").execute("post", {"url": f"http://127.0.0.2:{receiver.port}/x"})
    assert len(receiver.log) == 2


def test_the_connect_goes_to_the_checked_address(hook: Callable[..., WebhookExecutor], receiver: Receiver,
                                                 fake_dns: dict[str, list[str]]) -> None:
    """No second lookup after the check (DNS rebinding): the socket is opened to the address the guard
    resolved (rebind.test exists only in the guard's lookup), with the URL's own name as the Host header."""
    fake_dns["rebind.test"] = ["127.0.0.1"]
    hook(allow_hosts="127.0.0.1/32").execute("post", {"url": f"http://rebind.test:{receiver.port}/pinned"})
    (got,) = receiver.log
    assert got.headers["host"] == f"rebind.test:{receiver.port}"


def test_redirects_are_not_followed_by_default(hook: Callable[..., WebhookExecutor], receiver: Receiver) -> None:
    target = f"{receiver.url}/landed"
    result = hook(allow_hosts="127.0.0.1/32").execute("post", {"url": f"{receiver.url}/redirect?to={target}"})
    assert result["status"] == 302
    assert [r.path for r in receiver.log] == [f"/redirect?to={target}"]


def test_each_redirect_hop_is_checked(hook: Callable[..., WebhookExecutor], receiver: Receiver,
                                     fake_dns: dict[str, list[str]]) -> None:
    """The first hop is allow-listed (by name); it redirects to a loopback URL that is not: refused, and the
    redirect's target receives nothing."""
    fake_dns["hook.test"] = ["127.0.0.1"]
    first = f"http://hook.test:{receiver.port}/redirect?to={receiver.url}/landed"
    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1 is a loopback address"):
        hook(allow_hosts="hook.test", max_redirects="3").execute("post", {"url": first})
    assert [r.path for r in receiver.log] == [f"/redirect?to={receiver.url}/landed"]
    # Allowed, the same redirect is followed (and its target signed alike).
    hook(allow_hosts="hook.test,127.0.0.1/32", max_redirects="3").execute("post", {"url": first})
    assert [r.path for r in receiver.log][-1] == "/landed"
    with pytest.raises(PermanentError, match="more than 1 redirects"):
        hook(allow_hosts="hook.test", max_redirects="1").execute(
            "post", {"url": f"http://hook.test:{receiver.port}/redirect?to=http://hook.test:{receiver.port}"
                            f"/redirect%3Fto%3D{receiver.url}/landed"})


# -- Settings ------------------------------------------------------------------------------------------


def test_settings_reach_the_executor_and_each_secret_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSQ_WEBHOOK_ALLOW_HOSTS", "127.0.0.1/32,hooks.internal")
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRET", "whsec-default-0001")
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRETS", json.dumps({"https://hooks.example.com": "whsec-origin-0002"}))
    monkeypatch.setenv("OPSQ_WEBHOOK_MAX_REDIRECTS", "2")
    try:
        settings = reload_settings()
        extra = settings.executor_config("webhook").extra
        assert extra["allow_hosts"] == "127.0.0.1/32,hooks.internal" and extra["max_redirects"] == "2"
        assert extra["secret"] == "whsec-default-0001"
        assert "whsec" not in repr(settings)
        # Each secret inside OPSQ_WEBHOOK_SECRETS is scrubbed alone, not only the whole JSON.
        assert redaction.scrub_text("sig by whsec-origin-0002 and whsec-default-0001") == \
            f"sig by {redaction.REDACTED} and {redaction.REDACTED}"
    finally:
        monkeypatch.undo()
        reload_settings()
