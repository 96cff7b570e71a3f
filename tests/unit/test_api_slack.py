"""workers.api.slack's checks of a Slack request, without a server: Slack's documented example signature, the
five-minute window either way, a missing header, a body that is not an interaction."""

from __future__ import annotations

import pytest

from executors.sandbox.slack import signed
from workers.api.slack import Refused, payload_of, verify

# api.slack.com/authentication/verifying-requests-from-slack: the worked example.
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
        b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
        b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
TS = 1531420618
EXPECTED = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_slacks_own_example_verifies():
    verify(BODY, str(TS), EXPECTED, SECRET, now=TS + 10)
    assert signed(BODY, SECRET, TS)["X-Slack-Signature"] == EXPECTED  # the sandbox signs as Slack does


@pytest.mark.parametrize(("ts", "signature", "now", "error"), [
    (str(TS), EXPECTED, TS + 301, "old"),
    (str(TS), EXPECTED, TS - 301, "old"),
    (str(TS), EXPECTED.replace("a", "b"), TS, "does not match"),
    (str(TS + 1), EXPECTED, TS, "does not match"),
    ("soon", EXPECTED, TS, "not a Unix time"),
    (None, EXPECTED, TS, "are required"),
    (str(TS), None, TS, "are required"),
])
def test_what_is_refused(ts, signature, now, error):
    with pytest.raises(Refused) as info:
        verify(BODY, ts, signature, SECRET, now=now)
    assert info.value.status == 401 and error in info.value.error


@pytest.mark.parametrize("raw", [b"", b"payload=not-json", b"other=1", b"payload=%5B1%5D", b"\xff"])
def test_a_body_that_is_not_an_interaction(raw):
    with pytest.raises(Refused) as info:
        payload_of(raw)
    assert info.value.status == 400
