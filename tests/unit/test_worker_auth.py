"""The comparison behind `opsq test-auth --workers` (workers.ops.worker_auth) and what a worker's answer holds
(workers.credential_fingerprints): fingerprints only, never a credential. The real worker is in
tests/integration/test_worker_credentials.py."""

from __future__ import annotations

import hashlib
import json

import pytest

from workers.credential_fingerprints import fingerprint, held
from workers.ops.worker_auth import _compare
from workers.settings import reload_settings


def side(token: str | None, base_url: str = "http://sandbox/slack", **more: str | None) -> dict:
    secrets = {"token": token, **more}
    return {"base_url": base_url, "credentials": {k: None if v is None else fingerprint(v) for k, v in secrets.items()}}


def test_a_fingerprint_is_8_hex_digits_of_the_sha256_and_not_the_token():
    token = "xoxb-1234567890-abcdefghij"
    assert fingerprint(token) == hashlib.sha256(token.encode()).hexdigest()[:8]
    assert fingerprint(token) != fingerprint(token + "x") and len(fingerprint(token)) == 8


def test_a_workers_answer_holds_fingerprints_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPSQ_SLACK_TOKEN", "xoxb-secret-slack-1234567")
    monkeypatch.setenv("OPSQ_TRELLO_API_KEY", "trello-key-secret-89")
    monkeypatch.setenv("OPSQ_SLACK_BASE_URL", "https://user:proxy-password@proxy.example.com/slack")
    monkeypatch.delenv("OPSQ_NOTION_TOKEN", raising=False)
    settings = reload_settings()
    answer = held(settings)
    text = json.dumps(answer)
    for secret in ("xoxb-secret-slack-1234567", "trello-key-secret-89", "proxy-password"):
        assert secret not in text
    assert answer["slack"] == {"base_url": "https://proxy.example.com/slack",
                               "credentials": {"token": fingerprint("xoxb-secret-slack-1234567")}}
    assert answer["trello"]["credentials"]["api_key"] == fingerprint("trello-key-secret-89")
    assert answer["notion"]["credentials"]["token"] is None
    assert "noop" not in answer  # calls no service, holds nothing


@pytest.mark.parametrize(("mine", "theirs", "status", "words"), [
    (side("t1"), side("t1"), "ok", ["the same as this shell's", fingerprint("t1")]),
    (side("t1"), side(None), "fail", ["no token, this shell has one", "stale worker", "restart"]),
    (side("t1"), side("t0"), "fail", [f"token {fingerprint('t0')} differs from this shell's ({fingerprint('t1')})"]),
    (side(None), side("t1"), "warn", ["this shell has none to compare"]),
    (side(None), side(None), "warn", ["no token here nor in the worker"]),
    (side("t1"), side("t1", base_url="https://slack.com/api"), "warn", ["calls https://slack.com/api"]),
    (side("t1", api_key="k1"), side("t1", api_key=None), "fail", ["no api_key, this shell has one"]),
])
def test_each_case_of_a_platform(mine, theirs, status, words):
    check = _compare("slack", mine, theirs)
    assert check is not None and check.status == status, check
    assert all(w in check.detail for w in words), check.detail


def test_a_platform_that_needs_no_token_and_has_none_says_nothing():
    assert _compare("webhook", side(None), side(None)) is None
