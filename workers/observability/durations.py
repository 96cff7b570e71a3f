"""The histogram buckets of the attempt and platform-call durations (seconds), shared by the settle script that
counts them in Redis (workers.guards.redis_guard) and the exporter that serves them
(workers.observability.metrics). Fixed, so every worker on every host counts into the same buckets."""

from __future__ import annotations

import bisect

#: Upper bounds, seconds; an observation above the last one counts in +Inf (index len(BUCKETS)).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def bucket_index(seconds: float) -> int:
    """The first bucket whose bound is >= `seconds` (Prometheus' `le`)."""
    return bisect.bisect_left(BUCKETS, seconds)
