"""Actions submitted for later (countdown / eta), and deadlines (expires_in).

Why not Celery's ETA messages: on Redis, a message with an ETA is delivered at once to a worker that holds it
in memory until its time, unacknowledged, and Redis redelivers it to another worker after the visibility
timeout (celery#2599, #4766): run twice, or held by a worker that dies. Here a scheduled action is a row in the
store (`scheduled`, `scheduled_for`), with no message at all until it is due; the beat leader looks every
second (`release_due`, called from beat.scheduler) and sends each due one exactly once: the row moves
`scheduled` -> `queued` in a conditional UPDATE, and only the caller whose UPDATE matched sends. Two beats (or
an operator's run at the same moment) cannot both send it; a sender that dies between the UPDATE and the send
leaves a `queued` action with no message: the next beat leader notices that the last one died leading and runs
recover_lost at once (beat.scheduler, LED_BY_KEY), which sends it; detect_stuck would too, later (its usual job).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

from workers import waiting
from workers.enqueue import send_action
from workers.errors import ConfigError, SubmitError
from workers.redaction import contains_redacted
from workers.status import ActionStatus, ErrorKind
from workers.store import actions as store
from workers.store.models import as_utc, utcnow

log = logging.getLogger("opsq.scheduling")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
#: The furthest ahead an action can be scheduled, and the longest deadline: a year. Further is a typo.
MAX_AHEAD_S = 366 * 86400


def parse_duration(value: str, what: str) -> float:
    """'90s', '10m', '2h', '7d' -> seconds (what `--in` and `--expires-in` take)."""
    m = _DURATION.match(value.strip())
    if not m:
        raise SubmitError(f"{what} takes a duration like 90s, 10m, 2h or 7d, not {value!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_time(value: str, what: str) -> datetime:
    """An ISO 8601 time with its zone ('2026-12-24T08:00Z', '2026-12-24T09:00+01:00')."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise SubmitError(f"{what} takes an ISO 8601 time with its zone, like 2026-12-24T08:00Z, not {value!r}") \
            from None
    if parsed.tzinfo is None:
        raise SubmitError(f"{what} needs a time zone ({value!r} has none): add Z for UTC, or an offset like +01:00")
    return parsed.astimezone(UTC)


def when(*, countdown: float | None, eta: datetime | None,
         expires_in: float | None) -> tuple[datetime | None, datetime | None]:
    """(when to send it, None for now; its deadline, None for none), checked: one of countdown and eta, a time
    zone on eta, nothing more than a year ahead, and a deadline after the time it is due."""
    if countdown is not None and eta is not None:
        raise SubmitError("give countdown or eta, not both")
    now = utcnow()
    due: datetime | None = None
    if countdown is not None:
        if not 0 <= countdown <= MAX_AHEAD_S:
            raise SubmitError(f"countdown must be between 0 and {MAX_AHEAD_S} seconds (a year), not {countdown}")
        due = now + timedelta(seconds=countdown) if countdown > 0 else None
    elif eta is not None:
        if eta.tzinfo is None:
            raise SubmitError("eta needs a time zone (an aware datetime): a naive one is ambiguous across hosts")
        if (eta - now).total_seconds() > MAX_AHEAD_S:
            raise SubmitError(f"eta {eta.isoformat()} is more than a year ahead")
        due = eta.astimezone(UTC) if eta > now else None  # a time already past: now
    deadline: datetime | None = None
    if expires_in is not None:
        if not 0 < expires_in <= MAX_AHEAD_S:
            raise SubmitError(f"expires_in must be more than 0 and at most {MAX_AHEAD_S} seconds, not {expires_in}")
        deadline = (due or now) + timedelta(seconds=expires_in)
    return due, deadline


def release_due(limit: int = 500) -> list[str]:
    """Send every scheduled action whose time has come (exactly once each; see the module's doc). One past its
    deadline ends `expired` instead. Returns the ids sent."""
    sent: list[str] = []
    now = utcnow()
    for view in store.due_scheduled(now, limit):
        deadline = as_utc(view.expires_at)
        if deadline is not None and deadline <= now:
            if store.end_unstarted(view.id, ActionStatus.EXPIRED, "its deadline passed before it was due"):
                log.info("scheduled action %s expired before it was due", view.id, extra={"action_id": view.id})
                waiting.notify(view.id)
            continue
        if not store.claim_scheduled(view.id):
            continue  # another scheduler sent it, or it was cancelled meanwhile
        if contains_redacted(view.params):
            # Refused at submit (workers.client); a record written otherwise must not send "[redacted]" for real.
            _fail(view.id, "its stored params hold secrets, which are not kept: replay it with "
                           "`opsq dlq replay ID --params-json` giving them")
            continue
        try:
            send_action(action_id=view.id, platform=view.platform, action=view.action, params=view.params,
                        queue=view.queue, priority=view.priority, max_attempts=view.max_attempts,
                        idempotency_key=view.idempotency_key, fail_fast=view.fail_fast,
                        expires_at=None if deadline is None else deadline.timestamp())
        except ConfigError as exc:
            _fail(view.id, f"it could not be sent: {exc}")  # sending it again a second later would fail the same way
            continue
        except Exception as exc:
            store.unclaim_scheduled(view.id)
            log.warning("could not send scheduled action %s (%s); trying again at the next tick", view.id, exc,
                        extra={"action_id": view.id})
            continue
        sent.append(view.id)
    if sent:
        log.info("sent %d scheduled action(s)", len(sent))
    return sent


def _fail(action_id: str, why: str) -> None:
    """A due action that cannot be sent as it is: failed for good (dead-lettered, to be replayed once fixed)."""
    log.error("scheduled action %s: %s", action_id, why, extra={"action_id": action_id})
    store.mark_failed(action_id, 0, why, ErrorKind.INTERNAL)
    waiting.notify(action_id)
