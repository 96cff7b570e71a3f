"""Prometheus metrics: what `opsq exporter` serves (issue 13), read at each scrape from where the figures live.

Why counters in Redis, not prometheus-client's multiprocess mode in each worker: the settle script already
makes one round trip to Redis per attempt, and it counts the attempt's outcome and durations in that same
round trip (KEYS[8] of workers.guards.scripts.SETTLE), so the hot path pays nothing more; the counts are the
fleet's (every worker on every host adds to one hash), survive a worker's restart (a counter that resets at
each `worker_max_tasks_per_child` would make `rate()` guess), and need no shared directory per host or port
per worker to scrape. Multiprocess mode would add a file write per observation in every pool process and a
scrape target per worker.

The rest is read at the scrape: the breakers, the rate-limit buckets, the guards' verdict counters and the
queues from Redis; the records and dead letters from the store (the same figures `opsq action list` and
`opsq dlq list` show). A source that cannot be read says so in `opsq_exporter_source_up` and its metrics are
left out of that scrape, rather than failing the scrape. Labels are low-cardinality: platform, action,
queue, priority, outcome, error kind, status; never an id.

docs/OBSERVABILITY.md lists every metric.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.guards import breaker, keys, ratelimit
from workers.guards.base import BreakerState
from workers.guards.connection import as_text, guard_redis
from workers.observability.durations import BUCKETS
from workers.ops import quarantine, queue_ops
from workers.ops.health import FAIL, OK, WARN, redis_memory
from workers.queues import PLATFORM_QUEUES
from workers.store import actions as store

log = logging.getLogger("opsq.exporter")

#: The guards' verdict counters (the stats hash each platform has; workers.guards.scripts) by verdict label.
VERDICTS = {"breaker_waits": "open", "rate_waits": "rate_limited", "busy_waits": "busy",
            "duplicates_done": "done", "duplicates_failed": "failed", "concurrency_waits": "concurrency_limited",
            "cancelled": "cancelled", "expired": "expired"}
#: The limits' reasons to wait (the admit script's `keywaits|<kind>|<reason>` counters).
WAIT_REASONS = ("rate", "pause", "concurrency")
BREAKER_STATES = (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)
HEALTH_LEVELS = {OK: 0, WARN: 1, FAIL: 2}
UNACKED_KEY = "unacked"  # kombu's Redis transport: the messages delivered and not yet acknowledged


def _series(field: str) -> tuple[str, list[str]]:
    kind, _, rest = field.partition("|")
    return kind, rest.split("|")


class WorkerCounters:
    """The settle script's counters (keys.metrics), as metric families."""

    def __init__(self, raw: dict[bytes, bytes]) -> None:
        self.attempts: dict[tuple[str, ...], float] = {}
        self.buckets: dict[tuple[str, str, str, str], dict[int, float]] = defaultdict(dict)
        self.sums: dict[tuple[str, str, str, str], float] = {}
        self.reconciled: dict[tuple[str, str, str], float] = {}
        for k, v in raw.items():
            kind, parts = _series(as_text(k))
            value = float(v)
            if kind == "attempts" and len(parts) == 5:
                self.attempts[tuple(parts)] = value  # platform, action, role, outcome, error kind
            elif kind in ("call", "attempt") and len(parts) == 4:
                self.buckets[(kind, parts[0], parts[1], parts[2])][int(parts[3])] = value
            elif kind in ("call_sum", "attempt_sum") and len(parts) == 3:
                self.sums[(kind[:-4], parts[0], parts[1], parts[2])] = value
            elif kind == "reconciled" and len(parts) == 3:
                self.reconciled[(parts[0], parts[1], parts[2])] = value

    def families(self) -> Iterator[Metric]:
        labels = ["platform", "action", "outcome", "error_kind"]
        attempts = CounterMetricFamily("opsq_action_attempts", "Attempts of actions that reached their platform's "
                                       "guards and settled, by outcome (succeeded, retried, failed)", labels=labels)
        retries = CounterMetricFamily("opsq_action_retries", "Attempts that failed and were retried, by error kind",
                                      labels=["platform", "action", "error_kind"])
        compensations = CounterMetricFamily("opsq_compensation_attempts", "Attempts of workflow compensations "
                                            "(undo of a completed step), by outcome", labels=labels)
        for (platform, action, role, outcome, kind), n in sorted(self.attempts.items()):
            if role == "compensation":
                compensations.add_metric([platform, action, outcome, kind], n)
                continue
            attempts.add_metric([platform, action, outcome, kind], n)
            if outcome == "retried":
                retries.add_metric([platform, action, kind], n)
        yield from (attempts, retries, compensations)
        for kind, name, doc in (
                ("call", "opsq_platform_call_duration_seconds",
                 "The platform call alone (a lookup of an earlier attempt's effect included), per attempt"),
                ("attempt", "opsq_action_attempt_duration_seconds",
                 "A whole attempt, from its admission by the guards to its settle")):
            hist = HistogramMetricFamily(name, doc, labels=["platform", "action", "role"])
            for (k, platform, action, role), counts in sorted(self.buckets.items()):
                if k != kind:
                    continue
                cumulative, buckets = 0.0, []
                for i, bound in enumerate(BUCKETS):
                    cumulative += counts.get(i, 0.0)
                    buckets.append((_le(bound), cumulative))
                cumulative += counts.get(len(BUCKETS), 0.0)
                buckets.append(("+Inf", cumulative))
                hist.add_metric([platform, action, role], buckets, sum_value=self.sums.get((kind, platform, action,
                                                                                            role), 0.0))
            yield hist
        reconciled = CounterMetricFamily("opsq_actions_reconciled", "Attempts that found an earlier attempt's effect "
                                         "on the platform (its answer was lost) instead of calling again",
                                         labels=["platform", "action", "role"])
        for (platform, action, role), n in sorted(self.reconciled.items()):
            reconciled.add_metric([platform, action, role], n)
        yield reconciled


def _le(bound: float) -> str:
    return repr(float(bound))


def _redis_families() -> Iterator[Metric]:
    r = guard_redis()
    raw = r.hgetall(keys.metrics())
    yield from WorkerCounters(raw).families()  # type: ignore[arg-type]

    verdicts = CounterMetricFamily("opsq_guard_verdicts", "Attempts the guards did not let call the platform, by "
                                   "verdict: open (breaker), rate_limited, concurrency_limited, busy (running "
                                   "elsewhere), done and failed (a duplicate delivery of a finished action, answered "
                                   "from its record), cancelled and expired (refused: cancelled, or past its "
                                   "deadline)", labels=["platform", "verdict"])
    # The limits per key (issue 14): labelled by the kind of key (`channel`, `token`; `platform` for the platform's
    # own bucket), never by a key's value: a label per channel would grow without bound.
    key_waits = CounterMetricFamily("opsq_rate_limit_waits", "Admissions refused by a limit, by the kind of key "
                                    "whose limit refused (platform: the platform's own bucket) and why: rate (no "
                                    "token), pause (paused after a 429), concurrency (as many running as allowed)",
                                    labels=["platform", "per", "reason"])
    pauses = CounterMetricFamily("opsq_rate_limit_pauses", "429s (or Google's rateLimitExceeded) that paused a key's "
                                 "bucket for the whole fleet, by the kind of key", labels=["platform", "per"])
    keys_waiting = GaugeMetricFamily("opsq_rate_limit_keys_waiting", "Keys waiting now, by kind and state: paused "
                                     "(after a 429), waiting (no token), concurrency (at its limit); the platform's "
                                     "own bucket counts as per=platform", labels=["platform", "per", "state"])
    state = GaugeMetricFamily("opsq_breaker_state", "1 for the state each platform's circuit breaker is in",
                              labels=["platform", "state"])
    failures = GaugeMetricFamily("opsq_breaker_failures_in_window", "Health failures counted in the breaker's "
                                 "window (closed breakers)", labels=["platform"])
    tokens = GaugeMetricFamily("opsq_rate_limit_tokens", "Tokens in each rate-limited platform's bucket",
                               labels=["platform"])
    pipe = r.pipeline(transaction=False)
    for platform in PLATFORM_QUEUES:
        pipe.hgetall(keys.stats(platform))
    stats = pipe.execute()
    for platform, counters in zip(PLATFORM_QUEUES, stats, strict=True):
        fields = {as_text(k): float(v) for k, v in counters.items()}
        for field, verdict in VERDICTS.items():
            verdicts.add_metric([platform, verdict], fields.get(field, 0.0))
        for field, n in sorted(fields.items()):
            kind, _, rest = field.partition("|")
            if kind == "keywaits" and rest.count("|") == 1:
                per, reason = rest.split("|")
                key_waits.add_metric([platform, per, reason], n)
            elif kind == "pauses" and rest:
                pauses.add_metric([platform, rest], n)
        b = breaker.status(platform, client=r)
        for s in BREAKER_STATES:
            state.add_metric([platform, s], 1.0 if b.state == s else 0.0)
        failures.add_metric([platform], float(b.failures_in_window))
        limit = ratelimit.status(platform, client=r)
        if limit["tokens_available"] is not None:
            tokens.add_metric([platform], float(limit["tokens_available"]))
        counted: dict[tuple[str, str], int] = defaultdict(int)
        if limit["paused_for_s"]:
            counted[("platform", "paused")] += 1
        for entry in limit["waiting"]:
            counted[(entry["per"], entry["state"])] += 1
        for (per, waiting_state), n in sorted(counted.items()):
            keys_waiting.add_metric([platform, per, waiting_state], float(n))
    yield from (verdicts, key_waits, pauses, keys_waiting, state, failures, tokens)


def _queue_families() -> Iterator[Metric]:
    r = guard_redis()
    depth = GaugeMetricFamily("opsq_queue_messages", "Messages waiting in each queue, by priority",
                              labels=["queue", "priority"])
    oldest = GaugeMetricFamily("opsq_queue_oldest_message_age_seconds", "Age of the oldest message waiting in each "
                               "queue (from its action's record; 0 when none)", labels=["queue"])
    for q in queue_ops.status(None, client=r, with_consumers=False):
        for priority, n in q["by_priority"].items():
            depth.add_metric([q["queue"], priority], float(n))
        oldest.add_metric([q["queue"]], float(q["oldest_age_s"]))
    unacked = GaugeMetricFamily("opsq_unacked_messages", "Messages delivered to a worker and not yet acknowledged")
    unacked.add_metric([], float(r.hlen(UNACKED_KEY)))
    quarantined = CounterMetricFamily("opsq_quarantined_messages", "Items found on a queue that were not messages "
                                      "a worker could run, moved to the quarantine")
    held = quarantine.counts(client=r)
    quarantined.add_metric([], float(held["total"]))
    kept = GaugeMetricFamily("opsq_quarantine_messages", "Items kept in the quarantine, waiting for an operator "
                             "(opsq queue quarantine list)")
    kept.add_metric([], float(held["kept"]))
    memory = GaugeMetricFamily("opsq_redis_memory_status", "Redis memory as `opsq health` judges it: 0 ok, 1 warn "
                               "(above OPSQ_REDIS_MEMORY_WARN_RATIO of maxmemory, or an evicting policy without a "
                               "maxmemory), 2 fail (full, or a policy that evicts keys)")
    memory.add_metric([], float(HEALTH_LEVELS[redis_memory().status]))
    yield from (depth, oldest, unacked, quarantined, kept, memory)


def _store_families() -> Iterator[Metric]:
    records = GaugeMetricFamily("opsq_actions", "Action records in the store, by status",
                                labels=["platform", "action", "status"])
    rows, finished_counts = store.counts()
    by_status: dict[tuple[str, str, str], int] = defaultdict(int)
    for platform, action, status, _kind, n in rows:
        by_status[(platform, action, status)] += n
    for labels, n in sorted(by_status.items()):
        records.add_metric(list(labels), float(n))
    # A gauge, not a counter: it is the store's count (workers.store.actions.finished_counts), the same one beat's
    # alert and `opsq metrics` read, and a correction (failed -> succeeded) moves one action between outcomes,
    # which a counter would read as a reset. Rules use delta(), not increase().
    finished = GaugeMetricFamily("opsq_actions_finished", "Actions that finished, ever (the store's records plus "
                                 "those the retention clean-up deleted), by outcome and error kind",
                                 labels=["platform", "action", "outcome", "error_kind"])
    for labels4, n in sorted(finished_counts.items()):
        finished.add_metric(list(labels4), float(n))
    dead = GaugeMetricFamily("opsq_dead_letters", "Dead letters not replayed yet", labels=["platform", "action",
                                                                                           "error_kind"])
    for platform, action, kind, n in store.dead_letter_counts():
        dead.add_metric([platform, action, kind], float(n))
    yield from (records, finished, dead)


#: (source name, what it yields): each read at every scrape; a layer above adds its own (the CLI composes them).
Source = tuple[str, Callable[[], Iterable[Metric]]]
SOURCES: list[Source] = [("redis", _redis_families), ("queues", _queue_families), ("database", _store_families)]


class OpsqCollector(Collector):
    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("opsq_exporter_source_up", "1 when the source could be read at this scrape",
                               labels=["source"])
        took = GaugeMetricFamily("opsq_exporter_source_seconds", "How long reading the source took",
                                 labels=["source"])
        for name, read in self.sources:
            started = time.perf_counter()
            try:
                families = list(read())
            except Exception as exc:  # a source away must not fail the scrape: the others still tell
                log.warning("could not read %s for the metrics: %s", name, exc)
                up.add_metric([name], 0.0)
            else:
                up.add_metric([name], 1.0)
                yield from families
            took.add_metric([name], time.perf_counter() - started)
        yield up
        yield took


def registry(more: list[Source] | None = None) -> CollectorRegistry:
    """A registry with opsqueue's collector only (no process or platform metrics of the exporter itself)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(OpsqCollector([*SOURCES, *(more or [])]))
    return reg
