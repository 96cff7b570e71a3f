"""Backoff for retryable failures: exponential, full jitter, capped, never sooner than Retry-After."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Delay before attempt `attempt + 1`. Full jitter (AWS architecture blog, 'Exponential Backoff
    And Jitter') spreads the retries of many workers so they do not hit a recovering platform at once."""
    rng = rng or random
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    delay = rng.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
