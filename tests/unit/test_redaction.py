"""workers.redaction: secrets removed at any depth, URLs whose path is a secret, the logged kwargs.
(Free-text scrubbing is in test_observability.py.)"""

from __future__ import annotations

from workers.redaction import REDACTED, contains_redacted, kwargs_repr, redact, redact_url

SLACK_HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


def test_redaction_removes_secrets_at_any_depth_and_keeps_the_rest():
    params = {"url": "https://x", "headers": {"Authorization": "Bearer abc", "X-Trace": "1"},
              "nested": [{"api_key": "k", "password": "p", "name": "n"}], "token": "t"}
    out = redact(params)
    assert out["headers"] == {"Authorization": REDACTED, "X-Trace": "1"}
    assert out["nested"] == [{"api_key": REDACTED, "password": REDACTED, "name": "n"}]
    assert out["token"] == REDACTED and out["url"] == "https://x"
    assert "abc" not in str(out) and contains_redacted(out) and not contains_redacted(params)


# -- URLs that carry secrets in their path -------------------------------------------------------------


def test_webhook_urls_keep_only_scheme_host_and_port_when_stored():
    params = {"url": SLACK_HOOK, "json": {"text": "hi", "url": "http://example.com/a?b=c"},
              "compensation_url": "http://user:pw@127.0.0.1:8080/undo?sig=abc#frag",
              "webhook_url": "https://[::1]:9000/x", "link": "https://keep.example/path",
              "headers": {"Authorization": "Bearer t"}}
    out = redact(params, urls=True)
    assert out["url"] == "https://hooks.slack.com/[redacted]"
    assert out["json"]["url"] == "http://example.com/[redacted]"  # any depth
    assert out["compensation_url"] == "http://127.0.0.1:8080/[redacted]"  # no user:password either
    assert out["webhook_url"] == "https://[::1]:9000/[redacted]"
    assert out["link"] == "https://keep.example/path"  # only the URL keys
    assert out["headers"] == {"Authorization": REDACTED}
    assert "SECRET" not in str(out) and "sig=abc" not in str(out) and "pw" not in str(out)
    assert contains_redacted(out) and not contains_redacted(params)


def test_url_redaction_leaves_what_has_no_secret_and_is_opt_in():
    assert redact_url("https://example.com") == "https://example.com"
    assert redact_url("https://example.com/") == "https://example.com/"
    assert redact_url("ftp://example.com/secret") == "ftp://example.com/secret"
    assert redact_url("not a url") == "not a url"
    assert redact_url("http://h:notaport/x") == "http://h/[redacted]"
    assert redact_url("http://[::1/x") == "http://[::1/x"  # not parseable: no host to keep, nothing to call
    assert redact({"url": 3, "compensation_url": None}, urls=True) == {"url": 3, "compensation_url": None}
    # Results and workflow outputs keep their URLs: a later step's template may use them.
    assert redact({"card_id": "c1", "url": "https://trello.com/c/abc/1-card"}) == {
        "card_id": "c1", "url": "https://trello.com/c/abc/1-card"}


def test_contains_redacted_sees_the_url_form_only_on_http_urls():
    assert contains_redacted({"a": [{"url": "https://h.example/[redacted]"}]})
    assert contains_redacted(("x", REDACTED))
    assert not contains_redacted({"text": "see /[redacted]"})
    assert not contains_redacted({"url": "https://h.example/redacted"})


def test_logged_kwargs_hide_the_webhook_path():
    shown = kwargs_repr({"action_id": "a1", "params": {"url": SLACK_HOOK, "json": {"n": 1}}})
    assert "XXXXSECRETXXXX" not in shown and "https://hooks.slack.com/[redacted]" in shown
