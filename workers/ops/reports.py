"""Reading the store for operators: errors, failure analysis, metrics. Everything here is read-only."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from workers.guards import breaker
from workers.status import FINAL_ACTION_STATUSES, ActionStatus
from workers.store import actions as store
from workers.store.db import get_engine
from workers.store.models import ActionRun, as_utc

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(value: str) -> datetime:
    """'90s', '15m', '24h', '7d' -> that long ago (UTC)."""
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"--since takes a duration like 15m, 24h or 7d, not {value!r}")
    seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return datetime.now(UTC) - timedelta(seconds=seconds)


def action_errors(limit: int = 50) -> list[dict[str, Any]]:
    """The newest actions that failed for good (workflow steps included)."""
    with get_engine().connect() as conn:
        acts = conn.execute(select(ActionRun.id, ActionRun.platform, ActionRun.action, ActionRun.error_kind,
                                   ActionRun.error, ActionRun.finished_at, ActionRun.attempts)
                            .where(ActionRun.status == ActionStatus.FAILED)
                            .order_by(ActionRun.finished_at.desc()).limit(limit)).all()
    return [{"at": as_utc(a.finished_at), "what": "action", "id": a.id, "platform": a.platform, "action": a.action,
             "kind": a.error_kind, "attempts": a.attempts, "error": a.error} for a in acts]


def newest(limit: int, *sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures from several sources (actions here, compensations from workflows.reports), newest first."""
    out = [row for rows in sources for row in rows]
    out.sort(key=lambda e: e["at"] or datetime.min.replace(tzinfo=UTC), reverse=True)
    return out[:limit]


def platform_log(platform: str, limit: int = 50) -> list[dict[str, Any]]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(ActionRun).where(ActionRun.platform == platform)
                            .order_by(ActionRun.created_at.desc()).limit(limit)).all()
    return [{k: as_utc(v) for k, v in r._mapping.items() if k != "params"} for r in rows]


def failures(since: datetime, top: int = 3) -> list[dict[str, Any]]:
    """Failures grouped by platform, action and error class, with the most common messages."""
    with get_engine().connect() as conn:
        rows = conn.execute(select(ActionRun.platform, ActionRun.action, ActionRun.error_kind, ActionRun.error)
                            .where(ActionRun.status == ActionStatus.FAILED, ActionRun.finished_at >= since)).all()
    groups: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for r in rows:
        groups[(r.platform, r.action, r.error_kind or "unknown")][_normalise(r.error)] += 1
    ranked = sorted(groups.items(), key=lambda group: sum(group[1].values()), reverse=True)
    return [{"platform": p, "action": a, "error_kind": k, "count": sum(c.values()),
             "top_messages": [{"message": m, "count": n} for m, n in c.most_common(top)]}
            for (p, a, k), c in ranked]


# Where an error happened stays readable: these tell two failures apart (the sandbox on the wrong port, one webhook
# host down), so they are kept as they are and only the text around them has its ids and numbers folded. Only
# what is surely a network location is kept: a URL's scheme and authority (`https://user@host:8443`), an IPv4
# address (and port), an IPv6 address (bare `2001:db8::7`, or bracketed with a port `[::1]:8080`), a `host:port`
# whose host has a dot in it or is `localhost`, the host after an `@`. A bare dotted word is not one
# (`invoice-A-1002.pdf`, `report.2026.csv` are file names), nor a dotless `word:number` (`approval:17`,
# `row:42 col:7`): their numbers are folded like any other, or identical errors would not group.
_HOST = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_H16 = r"[0-9a-f]{1,4}"
# Eight groups, or fewer around one `::` (the tail may be an IPv4: `::ffff:10.0.0.1`). With a digit in it: `a::b`
# is no address, and a clock time (`12:30:45`) has neither eight groups nor a `::`.
_IPV6 = (rf"(?=[0-9a-f:.]*\d)(?:(?:{_H16}:){{7}}{_H16}"
         rf"|(?:{_H16}(?::{_H16})*)?::(?:(?:{_H16}:)*{_IPV4}|{_H16}(?::{_H16})*)?)")
_PORT = r"(?::\d{1,5})?"
_WHERE = re.compile(
    r"(?<![\w+.-])[a-z][a-z0-9+.-]*://[\w.:@%+\[\]-]*[\w\]]"  # scheme://[user@]host[:port]
    rf"|\[{_IPV6}\]{_PORT}(?![\w:]|\.\d)"  # [::1]:8080
    rf"|(?<![\w:.]){_IPV6}(?![\w:]|\.\d)"  # 2001:db8::7, ::1
    rf"|(?<![\w.]){_IPV4}{_PORT}(?!\w|\.\d)"  # 10.0.0.7, 127.0.0.1:6379
    rf"|(?<![\w.@/-])(?:localhost|[a-z][a-z0-9-]*\.{_HOST}):\d{{1,5}}(?![\w:]|\.\d)"  # db-3.internal:5432
    rf"|(?<=@){_HOST}{_PORT}(?![\w-])",  # postgres@db-3.internal
    re.IGNORECASE)


def _normalise(message: str | None) -> str:
    """Ids and numbers vary between otherwise identical errors; group them as one (addresses kept: _WHERE)."""
    text = message or ""
    out, start = [], 0
    for m in _WHERE.finditer(text):
        out.extend([_fold(text[start:m.start()]), m.group(0)])
        start = m.end()
    out.append(_fold(text[start:]))
    return "".join(out)[:200]


def _fold(text: str) -> str:
    text = re.sub(r"\b[0-9a-f]{16,}\b", "<id>", text)
    # 3, 2.5 (of 2.5s), 1.2.3: one number each; in a name too (invoice_1002.pdf, report.2026.csv), but not one
    # that is part of a word (v2, utf8) or of a version after one (python3.11).
    return re.sub(r"(?:(?<![A-Za-z\d.])|(?<=[A-Za-z_-]\.))\d+(?:\.\d+)*", "<n>", text)


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def metrics(since: datetime) -> dict[str, Any]:
    """Per platform, over the window: actions submitted (records created since), finished (succeeded, failed:
    the same count beat's success-rate alert reads and the exporter serves as `opsq_actions_finished`:
    workers.store.actions.finished_since), their success rate and throughput, retries and durations (of the
    actions submitted in the window), and the breaker's state now (`opsq_breaker_state`)."""
    with get_engine().connect() as conn:
        rows = conn.execute(select(ActionRun.platform, ActionRun.priority, ActionRun.status, ActionRun.attempts,
                                   ActionRun.started_at, ActionRun.finished_at)
                            .where(ActionRun.created_at >= since)).all()
    finished = store.finished_since(since)
    window_min = max((datetime.now(UTC) - since).total_seconds() / 60, 1e-9)
    by_platform: dict[str, dict[str, Any]] = {}
    by_priority: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)

    def entry(platform: str) -> dict[str, Any]:
        return by_platform.setdefault(platform, {"submitted": 0, "succeeded": 0, "failed": 0, "in_flight": 0,
                                                 "retries": 0})

    for r in rows:
        if r.status == ActionStatus.SKIPPED:
            continue
        m = entry(r.platform)
        m["submitted"] += 1
        by_priority[r.priority] += 1
        if r.status not in FINAL_ACTION_STATUSES:
            m["in_flight"] += 1
        m["retries"] += max(0, (r.attempts or 0) - 1)
        if r.started_at and r.finished_at:
            durations[r.platform].append((as_utc(r.finished_at) - as_utc(r.started_at)).total_seconds())
    for platform, c in finished.items():
        entry(platform).update(c)  # succeeded, failed, cancelled, expired
    for platform, m in by_platform.items():
        done = m["succeeded"] + m["failed"]
        d = sorted(durations[platform])
        m["success_rate"] = round(m["succeeded"] / done, 4) if done else None
        m["throughput_per_min"] = round(done / window_min, 3)
        m["p50_s"] = _percentile(d, 0.5)
        m["p95_s"] = _percentile(d, 0.95)
        try:
            m["breaker"] = breaker.status(platform).state
        except Exception:  # Redis down: the numbers from the store are still worth showing
            m["breaker"] = "unknown"
    return {"since": since.isoformat(), "platforms": dict(sorted(by_platform.items())),
            "by_priority": dict(by_priority)}
