"""executors.webhook: the webhook token goes only to the configured webhook base URL."""

from __future__ import annotations

import pytest

from executors.webhook import token_allowed


@pytest.mark.parametrize(("url", "base", "allowed"), [
    ("https://hooks.example.com/in/abc", "https://hooks.example.com", True),
    ("https://hooks.example.com/in/abc", "https://hooks.example.com/in", True),
    ("https://hooks.example.com/in", "https://hooks.example.com/in/", True),
    ("https://HOOKS.example.com/in/x", "https://hooks.example.com/in", True),
    ("https://hooks.example.com/inside/x", "https://hooks.example.com/in", False),  # not a segment boundary
    ("https://hooks.example.com.evil.net/in/x", "https://hooks.example.com", False),
    ("https://evil.net/?https://hooks.example.com", "https://hooks.example.com", False),
    ("http://hooks.example.com/in/x", "https://hooks.example.com/in", False),  # another scheme
    ("https://hooks.example.com:8443/in/x", "https://hooks.example.com/in", False),  # another port
    ("https://hooks.example.com/in/../admin", "https://hooks.example.com/in", False),
    ("https://hooks.example.com/in/%2e%2e/admin", "https://hooks.example.com/in", False),
    ("https://u:p@hooks.example.com/in/x", "https://hooks.example.com/in", False),
    ("https://hooks.example.com/in/x", "", False),  # no webhook base URL configured: never
    ("https://hooks.example.com/in/x", None, False),
])
def test_token_allowed(url, base, allowed):
    assert token_allowed(url, base) is allowed
