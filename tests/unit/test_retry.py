"""workers.retry: exponential backoff with full jitter, capped; Retry-After honoured up to the cap."""

from __future__ import annotations

import random

from workers.retry import backoff_delay


def test_backoff_is_full_jitter_exponential_and_capped():
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base_s=0.5, cap_s=30.0, rng=rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the whole range, not a fixed step
        assert min(delays) < ceiling * 0.2


def test_backoff_honours_retry_after_up_to_the_cap():
    rng = random.Random(1)
    assert all(backoff_delay(1, base_s=0.1, cap_s=5, retry_after=2, rng=rng) >= 2 for _ in range(100))
    # Above the cap: asked again after the cap, not after a day (the message would outlive the
    # visibility timeout and be redelivered while it waits).
    assert backoff_delay(1, base_s=0.1, cap_s=1, retry_after=600, rng=rng) == 1
    assert backoff_delay(1, base_s=0.1, cap_s=300, retry_after=86400, rng=rng) == 300
    assert all(backoff_delay(9, base_s=1, cap_s=300, retry_after=86400, rng=rng) == 300 for _ in range(50))
