"""The comparison behind `opsq test-auth --workers` (workers.ops.worker_auth) and what a worker's answer holds
(workers.credential_fingerprints): fingerprints keyed by the request's nonce, never a credential, the secrets a
person chooses (webhook signing keys, the proxy's password) included, with what may be shown of them beside. The
real worker is in tests/integration/test_worker_credentials.py."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from workers.credential_fingerprints import fingerprint, held, new_nonce
from workers.ops.worker_auth import _compare
from workers.settings import reload_settings

NONCE = new_nonce()


def side(token: str | None, base_url: str = "http://sandbox/slack", shown: dict | None = None,
         **more: str | None) -> dict:
    secrets = {"token": token, **more}
    return {"base_url": base_url, "shown": shown or {},
            "credentials": {k: None if v is None else fingerprint(NONCE, v) for k, v in secrets.items()}}


def test_a_fingerprint_is_keyed_by_the_nonce_so_a_pasted_one_cannot_be_checked_offline():
    token = "xoxb-1234567890-abcdefghij"
    assert fingerprint(NONCE, token) == hmac.new(NONCE.encode(), token.encode(), hashlib.sha256).hexdigest()[:8]
    # Not the plain hash (anyone could hash a guess and compare), and another nonce gives another fingerprint...
    assert fingerprint(NONCE, token) != hashlib.sha256(token.encode()).hexdigest()[:8]
    other = new_nonce()
    assert other != NONCE and len(NONCE) == 32
    assert fingerprint(other, token) != fingerprint(NONCE, token)
    # ...while under one nonce the same token agrees and another one does not.
    assert fingerprint(NONCE, token) == fingerprint(NONCE, token) and len(fingerprint(NONCE, token)) == 8
    assert fingerprint(NONCE, token) != fingerprint(NONCE, token + "x")


def test_a_workers_answer_holds_keyed_fingerprints_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPSQ_SLACK_TOKEN", "xoxb-secret-slack-1234567")
    monkeypatch.setenv("OPSQ_TRELLO_API_KEY", "trello-key-secret-89")
    monkeypatch.setenv("OPSQ_SLACK_BASE_URL", "https://user:proxy-password@proxy.example.com/slack")
    monkeypatch.delenv("OPSQ_NOTION_TOKEN", raising=False)
    settings = reload_settings()
    answer = held(settings, NONCE)
    text = json.dumps(answer)
    for secret in ("xoxb-secret-slack-1234567", "trello-key-secret-89", "proxy-password"):
        assert secret not in text
    assert answer["slack"] == {"base_url": "https://proxy.example.com/slack", "shown": {},
                               "credentials": {"token": fingerprint(NONCE, "xoxb-secret-slack-1234567")}}
    assert answer["trello"]["credentials"]["api_key"] == fingerprint(NONCE, "trello-key-secret-89")
    assert answer["notion"]["credentials"]["token"] is None
    assert "noop" not in answer  # calls no service, holds nothing
    # Two questions, two nonces: the same token, different fingerprints (a pasted output matches no later one).
    again = held(settings, new_nonce())
    assert again["slack"]["credentials"]["token"] != answer["slack"]["credentials"]["token"]
    with pytest.raises(ValueError, match="nonce"):
        held(settings, "")


def test_secrets_a_person_chooses_are_fingerprinted_under_the_nonce_and_shown(monkeypatch: pytest.MonkeyPatch):
    """The proxy's URL (with its password) and the webhook signing keys: fingerprinted under the nonce like a token
    (a rotated key must tell), with what may be shown of them beside; never the value nor a plain hash of it."""
    monkeypatch.setenv("OPSQ_WEBHOOK_PROXY", "http://ops:hunter2@proxy.corp:3128")
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRETS", '{"https://a.example": "letmein", "https://b.example": "s3cret"}')
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRET", "password1")
    webhook = held(reload_settings(), NONCE)["webhook"]
    assert webhook["shown"] == {"secret": "set", "secrets": "set for 2 destinations",
                                "proxy": "proxy.corp:3128, password set"}
    assert webhook["credentials"]["secret"] == fingerprint(NONCE, "password1")
    assert webhook["credentials"]["proxy"] == fingerprint(NONCE, "http://ops:hunter2@proxy.corp:3128")
    text = json.dumps(webhook)
    for secret in ("hunter2", "letmein", "s3cret", "password1"):
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest()[:8] not in text
    # Another nonce, other fingerprints: a pasted one tests no guess of a weak key.
    assert held(reload_settings(), new_nonce())["webhook"]["credentials"]["secret"] != fingerprint(NONCE, "password1")
    # One mapping however it is spelt (spacing, order, the port a scheme implies)...
    same = held(reload_settings(), NONCE)["webhook"]["credentials"]["secrets"]
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRETS", '{ "https://b.example:443":"s3cret","https://A.example":"letmein"}')
    assert held(reload_settings(), NONCE)["webhook"]["credentials"]["secrets"] == same
    # ...but a rotated key is another fingerprint, though "set for 2 destinations" alike.
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRETS", '{"https://a.example": "letmein2", "https://b.example": "s3cret"}')
    rotated = held(reload_settings(), NONCE)["webhook"]
    assert rotated["credentials"]["secrets"] != same and rotated["shown"]["secrets"] == "set for 2 destinations"
    monkeypatch.setenv("OPSQ_WEBHOOK_PROXY", "https://proxy.corp:3128")  # the executor refuses it: said so
    shown = held(reload_settings(), NONCE)["webhook"]["shown"]["proxy"]
    assert shown.startswith("malformed (OPSQ_WEBHOOK_PROXY must be an http:// URL"), shown


def test_a_malformed_origin_is_said_for_its_setting_not_the_whole_answer(monkeypatch: pytest.MonkeyPatch):
    """httpx.InvalidURL is no ValueError: one bad origin in OPSQ_WEBHOOK_SECRETS used to fail the worker's whole
    answer, every platform with it."""
    monkeypatch.setenv("OPSQ_SLACK_TOKEN", "xoxb-still-answered-1")
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRETS", '{"http://[::1": "k-not-shown-77"}')
    answer = held(reload_settings(), NONCE)
    assert answer["slack"]["credentials"]["token"] == fingerprint(NONCE, "xoxb-still-answered-1")
    shown = answer["webhook"]["shown"]["secrets"]
    assert shown.startswith("malformed (OPSQ_WEBHOOK_SECRETS: 'http://[::1' is not a URL origin"), shown
    assert answer["webhook"]["credentials"]["secrets"] == fingerprint(NONCE, '{"http://[::1": "k-not-shown-77"}')
    assert "k-not-shown-77" not in json.dumps(answer)


@pytest.mark.parametrize(("mine", "theirs", "status", "words"), [
    (side("t1"), side("t1"), "ok", ["the same as this shell's", fingerprint(NONCE, "t1")]),
    (side("t1"), side(None), "fail", ["no token, this shell has one", "stale worker", "restart"]),
    (side("t1"), side("t0"), "fail",
     [f"token {fingerprint(NONCE, 't0')} differs from this shell's ({fingerprint(NONCE, 't1')})"]),
    (side(None), side("t1"), "warn", ["this shell has none to compare"]),
    (side(None), side(None), "warn", ["no token here nor in the worker"]),
    (side("t1"), side("t1", base_url="https://slack.com/api"), "warn", ["calls https://slack.com/api"]),
    (side("t1", api_key="k1"), side("t1", api_key=None), "fail", ["no api_key, this shell has one"]),
    (side("t1", shown={"proxy": "p:3128, password set"}, proxy="http://u:pw@p:3128"),
     side("t1", shown={"proxy": "p:3128, password set"}, proxy="http://u:pw@p:3128"), "ok",
     [f"proxy {fingerprint(NONCE, 'http://u:pw@p:3128')} (p:3128, password set), the same as this shell's"]),
    (side("t1", shown={"proxy": "p:3128, password set"}, proxy="http://u:pw@p:3128"),
     side("t1", shown={"proxy": None}, proxy=None), "fail",
     [f"no proxy, this shell has one ({fingerprint(NONCE, 'http://u:pw@p:3128')} (p:3128, password set))",
      "restart"]),
    # The proxy's password changed: the same host:port, another fingerprint.
    (side("t1", shown={"proxy": "p:3128, password set"}, proxy="http://u:pw2@p:3128"),
     side("t1", shown={"proxy": "p:3128, password set"}, proxy="http://u:pw1@p:3128"), "fail",
     [f"proxy {fingerprint(NONCE, 'http://u:pw1@p:3128')} (p:3128, password set) differs from this shell's",
      "stale worker"]),
    # A rotated signing key: "set" on both sides, yet stale.
    (side("t1", shown={"secret": "set"}, secret="new-key"), side("t1", shown={"secret": "set"}, secret="old-key"),
     "fail", [f"secret {fingerprint(NONCE, 'old-key')} (set) differs from this shell's "
              f"({fingerprint(NONCE, 'new-key')} (set))", "restart"]),
    (side("t1", shown={"secrets": "set for 2 destinations"}, secrets="a"),
     side("t1", shown={"secrets": "set for 1 destination"}, secrets="b"), "fail",
     ["(set for 1 destination) differs from this shell's", "(set for 2 destinations))"]),
    # A worker of the version before: it shows the key but sends no fingerprint of it.
    (side("t1", shown={"secret": "set"}, secret="k"), {**side("t1"), "shown": {"secret": "set"}}, "fail",
     ["secret cannot be compared", "older opsqueue"]),
])
def test_each_case_of_a_platform(mine, theirs, status, words):
    check = _compare("slack", mine, theirs)
    assert check is not None and check.status == status, check
    assert all(w in check.detail for w in words), check.detail


def test_a_platform_that_needs_no_token_and_has_none_says_nothing():
    assert _compare("webhook", side(None, shown={"proxy": None}), side(None, shown={"proxy": None})) is None
