"""What the HTTP API's failed-authentication limit counts a client by (workers.api.failed_auths.client_key), and
which proxies' X-Forwarded-For `opsq api` believes (OPSQ_API_TRUSTED_PROXIES)."""

from __future__ import annotations

import pytest
from uvicorn.middleware.proxy_headers import _TrustedHosts

from workers.api.failed_auths import client_key
from workers.settings import Settings


@pytest.mark.parametrize(("host", "key"), [
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),  # the same /64: one budget
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # the next /64: another
    ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),  # however it is spelled
    ("::ffff:198.51.100.4", "198.51.100.4"),  # an IPv4 client on a dual-stack socket is its IPv4 address
    ("fe80::1%eth0", "fe80::/64"),
    ("testclient", "testclient"),  # not an address: as it is
])
def test_an_ipv6_client_is_counted_by_its_64(host, key):
    assert client_key(host) == key


def test_trusted_proxies_are_addresses_or_cidrs(monkeypatch):
    assert Settings().api_trusted_proxies == ""  # the default: X-Forwarded-For believed from nobody
    monkeypatch.setenv("OPSQ_API_TRUSTED_PROXIES", " 10.0.0.5, 10.1.0.0/16 ,fd00::/8,")
    assert Settings().api_trusted_proxies == "10.0.0.5,10.1.0.0/16,fd00::/8"
    for bad in ("*", "10.0.0.300", "proxy.internal"):
        monkeypatch.setenv("OPSQ_API_TRUSTED_PROXIES", bad)
        with pytest.raises(ValueError, match="is not an IP address or CIDR"):
            Settings()
    # A CIDR with host bits is kept by its network (uvicorn would keep it as a string matching nothing, silently),
    # and one that trusts everybody is refused as `*` is.
    monkeypatch.setenv("OPSQ_API_TRUSTED_PROXIES", "10.1.0.1/16,2001:db8::7/64")
    assert Settings().api_trusted_proxies == "10.1.0.0/16,2001:db8::/64"
    for everybody in ("0.0.0.0/0", "::/0", "10.0.0.1/0"):
        monkeypatch.setenv("OPSQ_API_TRUSTED_PROXIES", everybody)
        with pytest.raises(ValueError, match="trusts every address"):
            Settings()


def test_uvicorn_trusts_what_the_setting_lists(monkeypatch):
    """The setting as uvicorn reads it (its own parser): an address inside a listed CIDR is a trusted proxy."""
    monkeypatch.setenv("OPSQ_API_TRUSTED_PROXIES", "10.1.0.1/16,192.0.2.9")
    trusted = _TrustedHosts(Settings().api_trusted_proxies)
    assert "10.1.2.3" in trusted and "192.0.2.9" in trusted
    assert "10.2.0.1" not in trusted and "192.0.2.10" not in trusted


def test_a_slack_approver_is_named_as_a_person(monkeypatch):
    monkeypatch.setenv("OPSQ_SLACK_APPROVERS", '{"U01": "dana", "U02": "api:dana-bot"}')
    with pytest.raises(ValueError, match=r"Slack user\(s\) U02: an approver's name is a person's"):
        Settings()
    monkeypatch.setenv("OPSQ_SLACK_APPROVERS", '{"U01": "dana", "U02": "lee"}')
    assert Settings().slack_approvers == {"U01": "dana", "U02": "lee"}
