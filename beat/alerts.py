"""Alert rules. An alert fires once when its condition starts and clears once when it ends: no repeat
every minute. Each is recorded (table `alerts`), logged, sent to Sentry when configured, and posted to
Slack through the Slack executor when OPSQ_ALERT_SLACK_CHANNEL is set.

These are the rules of deploy/observability/rules.yml, for installations without Prometheus, and they read
the same figures the exporter serves, from the same functions (issue 13: one source for each number): the
finished actions (workers.store.actions.finished_since / `opsq_actions_finished`), the queues
(workers.ops.queue_ops.status / `opsq_queue_messages`, `opsq_queue_oldest_message_age_seconds`), the breakers
(`opsq_breaker_state`), the dead letters waiting (`opsq_dead_letters`), the quarantine
(`opsq_quarantine_messages`) and Redis' memory (`opsq_redis_memory_status`). The thresholds are the settings'
defaults in both (tests/unit/test_observability_files.py checks they agree)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import insert, select, update

from beat.models import Alert, AlertState
from workers.client import submit_action
from workers.guards import breaker
from workers.guards.base import BreakerState
from workers.guards.connection import guard_redis, server_time
from workers.observability.sentry import sentry_on
from workers.ops import quarantine, queue_ops
from workers.ops.health import FAIL, OK, redis_memory
from workers.queues import PLATFORM_QUEUES
from workers.settings import get_settings
from workers.status import ActionStatus
from workers.store import actions as store
from workers.store.db import get_engine
from workers.store.models import table_of, utcnow

log = logging.getLogger("opsq.alerts")
_A = table_of(Alert)


@dataclass(frozen=True)
class Condition:
    key: str
    kind: str
    severity: str
    message: str


def success_rate_conditions() -> list[Condition]:
    s = get_settings()
    out = []
    for platform, c in store.finished_since(utcnow() - timedelta(seconds=s.alert_success_window_s)).items():
        total = c[ActionStatus.SUCCEEDED] + c[ActionStatus.FAILED]
        rate = c[ActionStatus.SUCCEEDED] / total if total else 1.0
        if total >= s.alert_min_sample and rate < s.alert_success_rate:
            out.append(Condition(f"success_rate:{platform}", "success_rate", "high",
                                 f"{platform}: success rate {rate:.0%} over the last "
                                 f"{s.alert_success_window_s / 60:g} min ({total} actions, threshold "
                                 f"{s.alert_success_rate:.0%})"))
    return out


def _held(r: redis.Redis, key: str, now: float, true: bool) -> float | None:
    """How long (s) a condition has held at every evaluation, by the first evaluation that saw it (kept in Redis,
    so another beat leader continues the count); None when it does not hold. Prometheus' `for:`."""
    since_key = f"opsq:alert:since:{key}"
    if not true:
        r.delete(since_key)
        return None
    r.set(since_key, now, nx=True, ex=7 * 86400)
    return now - float(r.get(since_key) or now)


def queue_conditions() -> list[Condition]:
    """Too many messages waiting in a queue, or its oldest waiting too long, for long enough."""
    s = get_settings()
    r = guard_redis()
    now = server_time(r)
    out = []
    for q in queue_ops.status(None, client=r, with_consumers=False):
        name, depth, age = q["queue"], q["depth"], q["oldest_age_s"]
        held = _held(r, f"depth:{name}", now, depth > s.alert_queue_depth)
        if held is not None and held >= s.alert_queue_depth_for_s:
            out.append(Condition(f"queue_depth:{name}", "queue_depth", "high",
                                 f"queue {name}: {depth} waiting, above {s.alert_queue_depth} for "
                                 f"{held / 60:.0f} min"))
        held = _held(r, f"oldest:{name}", now, age > s.alert_oldest_message_age_s)
        if held is not None and held >= s.alert_oldest_message_for_s:
            out.append(Condition(f"oldest_message:{name}", "oldest_message", "high",
                                 f"queue {name}: the oldest message has waited {age / 60:.0f} min (threshold "
                                 f"{s.alert_oldest_message_age_s / 60:g} min)"))
    return out


def breaker_conditions() -> list[Condition]:
    s = get_settings()
    r = guard_redis()
    now = server_time(r)
    out = []
    for platform in PLATFORM_QUEUES:
        st = breaker.status(platform, r)
        if st.state == BreakerState.CLOSED or st.opened_at is None:
            continue
        # half_open counts too: a breaker that never manages to close is an outage as well.
        if now - st.opened_at >= s.alert_breaker_open_for_s:
            forced = " (forced open by an operator)" if st.forced_open else ""
            out.append(Condition(f"breaker_open:{platform}", "breaker_open", "high",
                                 f"circuit breaker for {platform} {st.state} for {(now - st.opened_at) / 60:.0f} "
                                 f"min{forced}"))
    return out


def dead_letter_conditions() -> list[Condition]:
    """More dead letters waiting than at the start of the window (new ones, not offset by replays)."""
    s = get_settings()
    window = s.alert_success_window_s
    now = store.dead_letters_waiting()
    then = store.dead_letters_waiting(utcnow() - timedelta(seconds=window))
    if now > then:
        return [Condition("dead_letters", "dead_letters", "medium",
                          f"{now - then} more dead letter(s) waiting than {window / 60:g} min ago ({now} in all; "
                          "opsq dlq list)")]
    return []


def quarantine_conditions() -> list[Condition]:
    n = quarantine.counts()["kept"]
    if n:
        return [Condition("quarantine", "quarantine", "medium",
                          f"{n} queue item(s) a worker could not deliver are in the quarantine "
                          "(opsq queue quarantine list)")]
    return []


def redis_memory_conditions() -> list[Condition]:
    """Redis near or at its maxmemory, or with a policy that evicts keys (workers.ops.health decides: the same
    words as `opsq health`). Full, it refuses every write; evicting, it loses messages without a word."""
    check = redis_memory()
    if check.status == OK:
        return []
    return [Condition("redis_memory", "redis_memory", "critical" if check.status == FAIL else "high",
                      f"{check.detail} (opsq health)")]


#: rule name -> (the alert keys it owns, by prefix: only it fires and clears them; the rule)
RULES: dict[str, tuple[tuple[str, ...], Callable[[], list[Condition]]]] = {
    "success_rate": (("success_rate:",), success_rate_conditions),
    "queues": (("queue_depth:", "oldest_message:"), queue_conditions),
    "breaker_open": (("breaker_open:",), breaker_conditions),
    "dead_letters": (("dead_letters",), dead_letter_conditions),
    "quarantine": (("quarantine",), quarantine_conditions),
    "redis_memory": (("redis_memory",), redis_memory_conditions),
}


def evaluate() -> dict[str, list[str]]:
    """Run every rule; fire what started, clear what ended. Returns the keys fired and cleared (and the rules
    that could not be evaluated: their alerts stay as they were, neither fired nor cleared)."""
    conditions: list[Condition] = []
    owned: list[str] = []
    failed: list[str] = []
    for name, (prefixes, rule) in RULES.items():
        # One rule that cannot run (a full Redis refuses the queue rule's bookkeeping write) must not keep the
        # others, redis_memory above all, from firing.
        try:
            conditions.extend(rule())
            owned.extend(prefixes)
        except Exception as exc:
            log.warning("alert rule %s could not be evaluated: %s", name, " ".join(str(exc).split()))
            failed.append(name)
    result = sync(conditions, tuple(owned))
    if failed:
        result["not_evaluated"] = failed
    return result


# Higher is worse. A firing alert whose condition gets worse (a Redis near its maxmemory, then full) is
# notified again; one that eases is updated quietly.
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def sync(conditions: list[Condition], owned_prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    """Fire what started, clear what ended (among `owned_prefixes`), and bring a firing alert's severity and
    message up to date when its condition changed: one alert per episode, never a second row for the same
    key. Returns the keys fired, escalated (severity rose: notified) and cleared."""
    now = utcnow()
    current = {c.key: c for c in conditions}
    fired, escalated, cleared = [], [], []
    with get_engine().begin() as conn:
        open_rows = conn.execute(select(_A.c.id, _A.c.key, _A.c.severity, _A.c.message, _A.c.fired_at)
                                 .where(_A.c.state == AlertState.FIRING)).all()
        open_keys = {row.key: row for row in open_rows}
        for key, cond in current.items():
            row = open_keys.get(key)
            if row is None:
                conn.execute(insert(_A).values(key=key, kind=cond.kind, severity=cond.severity, state=AlertState.FIRING,
                                               message=cond.message, fired_at=now))
                fired.append(key)
            elif (row.severity, row.message) != (cond.severity, cond.message):
                conn.execute(update(_A).where(_A.c.id == row.id).values(severity=cond.severity, message=cond.message))
                if SEVERITY_RANK.get(cond.severity, 0) > SEVERITY_RANK.get(row.severity, 0):
                    escalated.append(key)
        for key, row in open_keys.items():
            if key not in current and key.startswith(owned_prefixes):
                conn.execute(update(_A).where(_A.c.id == row.id).values(state=AlertState.CLEARED, cleared_at=now))
                cleared.append(key)
    for key in fired:
        _notify("FIRING", current[key].severity, current[key].message, key, now.isoformat())
    for key in escalated:
        # Keyed on the episode (fired_at) and the level: a condition that flaps across a threshold posts each
        # level to Slack once per episode, not at every crossing.
        _notify("ESCALATED", current[key].severity, current[key].message, key,
                f"{current[key].severity}:{open_keys[key].fired_at.isoformat()}")
    for key in cleared:
        _notify("RESOLVED", "info", open_keys[key].message, key, now.isoformat())
    return {"fired": fired, "escalated": escalated, "cleared": cleared}


def _notify(state: str, severity: str, message: str, key: str = "", at: str = "") -> None:
    line = f"[{state}] {message}" if state != "ESCALATED" else f"[{state} to {severity}] {message}"
    firing = state != "RESOLVED"
    if firing:
        log.warning("alert %s", line)
    else:
        log.info("alert %s", line)
    try:
        # Asked, not imported: a worker without Sentry never loads sentry_sdk (workers.observability.sentry).
        sdk = sentry_on()
        if sdk is not None:
            sdk.capture_message(f"opsqueue alert {line}", level="warning" if firing else "info")
    except Exception:  # pragma: no cover - alerting must never break the evaluation
        log.exception("could not send the alert to Sentry")
    channel = get_settings().alert_slack_channel
    if channel:
        try:
            # One post per transition (not per text: the same text recurs across incidents).
            submit_action("slack", "send_message", {"channel": channel, "text": f"opsqueue alert {line}"},
                          priority="high", idempotency_key=f"alert:{key}:{state}:{at}", actor="opsqueue-alerts")
        except Exception:  # pragma: no cover
            log.exception("could not post the alert to Slack")


def alerts(*, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    q = select(_A).order_by(_A.c.id.desc()).limit(limit)
    if state:
        q = q.where(_A.c.state == state)
    with get_engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
