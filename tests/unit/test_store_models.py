"""workers.store.models: the one UTC helper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from workers.store.models import as_utc


def test_as_utc():
    naive = datetime(2024, 5, 1, 12, 0)
    assert as_utc(naive) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC) and as_utc(naive).tzinfo is UTC
    new_york = datetime(2024, 5, 1, 8, 0, tzinfo=timezone(timedelta(hours=-4)))
    assert as_utc(new_york).isoformat() == "2024-05-01T12:00:00+00:00"
    assert as_utc(None) is None and as_utc("x") == "x"
