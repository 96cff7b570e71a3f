"""workers.scheduling's pure parts: the durations and times `--in`, `--at` and `--expires-in` take, what
`submit_action(countdown=, eta=, expires_in=)` accepts, and the refusal of a scheduled action whose params
hold a secret (its record, which keeps no secret, is what is sent when it is due)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from workers.client import submit_action
from workers.errors import SubmitError
from workers.scheduling import MAX_AHEAD_S, parse_duration, parse_time, when


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("7d", 604800),
                                                ("1.5m", 90), (" 5s ", 5)])
def test_durations(text, seconds):
    assert parse_duration(text, "--in") == seconds


@pytest.mark.parametrize("text", ["10", "ten minutes", "5 m", "-5m", "1w", ""])
def test_a_bad_duration_names_the_option_and_the_form(text):
    with pytest.raises(SubmitError, match=r"--in takes a duration like 90s, 10m, 2h or 7d"):
        parse_duration(text, "--in")


def test_times_need_their_zone():
    assert parse_time("2026-12-24T08:00Z", "--at") == datetime(2026, 12, 24, 8, 0, tzinfo=UTC)
    assert parse_time("2026-12-24T09:00+01:00", "--at") == datetime(2026, 12, 24, 8, 0, tzinfo=UTC)
    with pytest.raises(SubmitError, match="needs a time zone"):
        parse_time("2026-12-24T08:00", "--at")
    with pytest.raises(SubmitError, match="ISO 8601 time with its zone"):
        parse_time("christmas", "--at")


def test_when_checks_what_it_is_given():
    now = datetime.now(UTC)
    due, deadline = when(countdown=60, eta=None, expires_in=30)
    assert due is not None and 59 < (due - now).total_seconds() < 61
    assert deadline is not None and abs((deadline - due).total_seconds() - 30) < 0.01  # from when it is due
    assert when(countdown=0, eta=None, expires_in=None) == (None, None)  # now
    past = when(countdown=None, eta=now - timedelta(hours=1), expires_in=None)
    assert past == (None, None)  # a time already past: now, not an error
    later = now + timedelta(hours=1)
    assert when(countdown=None, eta=later.astimezone(timezone(timedelta(hours=5))), expires_in=None)[0] == later
    for kwargs, message in [({"countdown": 5, "eta": later, "expires_in": None}, "not both"),
                            ({"countdown": -1, "eta": None, "expires_in": None}, "countdown must be between"),
                            ({"countdown": MAX_AHEAD_S + 1, "eta": None, "expires_in": None}, "a year"),
                            ({"countdown": None, "eta": later.replace(tzinfo=None), "expires_in": None}, "time zone"),
                            ({"countdown": None, "eta": None, "expires_in": 0}, "expires_in must be more than 0")]:
        with pytest.raises(SubmitError, match=message):
            when(**kwargs)


def test_a_scheduled_action_whose_params_hold_a_secret_is_refused_before_anything_is_stored():
    secret_url = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    with pytest.raises(SubmitError, match="secrets are never stored there"):
        submit_action("webhook", "post", {"url": secret_url, "json": {}}, countdown=60)
