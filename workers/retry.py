"""Backoff for retryable failures: exponential, full jitter, capped; Retry-After honoured up to the cap."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`. Full jitter (AWS architecture blog, 'Exponential Backoff
    And Jitter') spreads the retries of many workers so they do not hit a recovering platform at once.

    A platform's Retry-After is honoured up to `cap_s` (OPSQ_RETRY_CAP_S): the delay is never sooner
    than min(retry_after, cap_s). A platform asking for more than the cap is asked again after the cap
    (and answers with a fresh Retry-After). The cap is what keeps a delayed message inside Redis'
    visibility timeout (OPSQ_VISIBILITY_TIMEOUT_S, which Settings requires to be longer): a countdown
    beyond it would have the message redelivered again and again while it waits."""
    uniform = rng.uniform if rng is not None else random.uniform
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    delay = uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap_s))
    return delay
