"""Dead letters: actions whose retries ran out (or whose credentials were refused); replayed one by one or
in bulk by filter (`opsq dlq replay`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from executors.registry import EXECUTORS
from workers.client import ActionHandle, redis_cause, submit_action
from workers.errors import SubmitError
from workers.ops import quarantine
from workers.ops.reports import parse_since
from workers.redaction import contains_redacted
from workers.status import DEAD_LETTER_KINDS, ErrorKind
from workers.store import actions as store
from workers.store.actions import DeadLetterView

SECRET_PARAMS = "secret params not stored: replay it alone, giving them (opsq dlq replay ID --params-json)"


class BadFilter(ValueError):
    """A bulk replay's filter that cannot be right (an unknown platform, kind or action, a bad --since), or none
    at all: `option` names what to correct."""

    def __init__(self, option: str | None, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters a bulk replay takes: those not replayed yet that match every filter given, oldest
    first, at most `limit`. `every` is the operator's explicit "no filter" (--all)."""

    platform: str | None = None
    error_kind: str | None = None
    action: str | None = None
    since: datetime | None = None
    limit: int | None = None
    every: bool = False

    def describe(self) -> dict[str, Any]:
        """The filters given, for the audit trail and --json."""
        out: dict[str, Any] = {k: v for k, v in (("platform", self.platform), ("error_kind", self.error_kind),
                                                 ("action", self.action), ("limit", self.limit)) if v is not None}
        if self.since is not None:
            out["since"] = self.since.isoformat()
        if self.every:
            out["all"] = True
        return out


def replay_filter(*, platform: str | None = None, error_kind: str | None = None, action: str | None = None,
                  since: str | None = None, limit: int | None = None, every: bool = False) -> ReplayFilter:
    """The filter from the command's options, checked: a typo must not quietly match nothing (or, worse, be
    dropped and match everything). At least one filter, or `every`: a bare bulk replay never takes every dead
    letter by accident. Raises BadFilter."""
    if platform is not None and platform not in EXECUTORS:
        raise BadFilter("--platform", f"unknown platform {platform!r} (known: {', '.join(EXECUTORS)})")
    if error_kind is not None and error_kind not in {k.value for k in ErrorKind}:
        raise BadFilter("--error-kind", f"unknown error kind {error_kind!r} (dead letters have: "
                                        f"{', '.join(sorted(DEAD_LETTER_KINDS))})")
    if action is not None:
        where = [platform] if platform is not None else list(EXECUTORS)
        if not any(action in EXECUTORS[p].actions for p in where):
            known = sorted({a for p in where for a in EXECUTORS[p].actions})
            raise BadFilter("--action", f"unknown action {action!r}" + (f" of {platform}" if platform else "")
                            + f" (known: {', '.join(known)})")
    if limit is not None and limit < 1:
        raise BadFilter("--limit", "must be at least 1")
    try:
        cutoff = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise BadFilter("--since", str(exc).removeprefix("--since ")) from None
    if not every and platform is None and error_kind is None and action is None and cutoff is None:
        raise BadFilter(None, "give DL_ID, or filters (--platform, --error-kind, --action, --since), or --all "
                              "to replay every dead letter")
    return ReplayFilter(platform=platform, error_kind=error_kind, action=action, since=cutoff, limit=limit,
                        every=every)


def idempotent(platform: str, action: str) -> bool | None:
    """Whether running this action again makes no second effect if its first run did act (the executor's
    declaration, executors.base.Executor.idempotent); None for a platform or action this installation does
    not know. A replay is a new action with a new effect key: the platform cannot tell it from a new request."""
    cls = EXECUTORS.get(platform)
    if cls is None or action not in cls.actions:
        return None
    return action in cls.idempotent


def age(since: datetime, now: datetime | None = None) -> str:
    """'45s', '12m', '3h05m', '2d04h': how long ago, to the unit that matters."""
    seconds = max(0, int(((now or datetime.now(UTC)) - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class Candidate:
    """A dead letter a bulk replay would take, with what the operator must know before it runs again."""

    dead_letter: DeadLetterView
    idempotent: bool | None
    #: why the replay will leave it (its secrets must be given again, one at a time), or None
    blocked: str | None

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        d = self.dead_letter
        return {**d.to_dict(), "age_s": round(((now or datetime.now(UTC)) - d.created_at).total_seconds(), 1),
                "idempotent": self.idempotent, "blocked": self.blocked}


def matching(flt: ReplayFilter) -> list[Candidate]:
    """The dead letters `flt` takes, oldest first: exactly what replay_many replays (or skips, saying why)."""
    letters = store.dead_letters(limit=flt.limit, platform=flt.platform, error_kind=flt.error_kind,
                                 action=flt.action, since=flt.since, oldest_first=True)
    return [Candidate(d, idempotent(d.platform, d.action), SECRET_PARAMS if contains_redacted(d.params) else None)
            for d in letters]


@dataclass
class BulkReplay:
    """What a bulk replay did: (dead letter, its action, the new action) replayed; (dead letter, why) skipped;
    `stopped`: why it stopped before the end (the broker or the store failing), the rest left as they were."""

    replayed: list[tuple[int, str, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    stopped: str | None = None
    left: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"replayed": [{"dead_letter": dl, "action_id": old, "replayed_as": new}
                             for dl, old, new in self.replayed],
                "skipped": [{"dead_letter": dl, "reason": why} for dl, why in self.skipped],
                "stopped": self.stopped, "left": self.left}


def replay_many(flt: ReplayFilter, actor: str | None = None) -> BulkReplay:
    """Replay every dead letter `flt` takes, oldest first, each exactly as `replay` does one: claimed first (of
    two operators replaying the same letters at once, each letter goes to one of them; the other skips it),
    submitted as a new action linked by `replay_of`, recorded with its `dlq_replay` audit entry (which names
    the filter). A letter whose secrets were not stored is skipped. A submit the broker refuses stops the run
    (the next would fail the same way): what was replayed stays replayed, the rest is left, and running the
    same command again picks it up."""
    result = BulkReplay()
    candidates = matching(flt)
    bulk = flt.describe()
    for n, c in enumerate(candidates):
        if c.blocked:
            result.skipped.append((c.dead_letter.id, c.blocked))
            continue
        try:
            handle = _replay(c.dead_letter, None, actor, bulk=bulk)
        except SubmitError as exc:
            result.skipped.append((c.dead_letter.id, str(exc)))
        except Exception as exc:  # the broker or the store: say what was done before it, then stop
            why = redis_cause(exc) if isinstance(exc, redis.RedisError) else " ".join(str(exc).split())[:300]
            result.stopped, result.left = why or type(exc).__name__, len(candidates) - n
            break
        else:
            result.replayed.append((c.dead_letter.id, c.dead_letter.action_id, handle.id))
    return result


def replay(dl_id: int, params_override: dict[str, Any] | None = None, actor: str | None = None) -> ActionHandle:
    """Enqueue the dead action again as a new action (its own id, linked by `replay_of`).

    Stored params have secrets (and webhook URLs' paths) removed; such an action can only be replayed
    with those fields given again in `params_override`, never with the placeholder.

    A dead letter is replayed once, even when two operators replay it at the same moment: it is claimed
    first (a conditional UPDATE only one of them wins), then submitted; a failed submit gives the claim
    back."""
    return _replay(store.dead_letter(dl_id), params_override, actor)


def _replay(dl: DeadLetterView, params_override: dict[str, Any] | None, actor: str | None,
            bulk: dict[str, Any] | None = None) -> ActionHandle:
    """`dl` may be stale (read by a bulk replay's listing): the claim, not the view, decides."""
    dl_id = dl.id
    if dl.replayed_at is not None:
        raise SubmitError(_already(dl_id, dl.replayed_as))
    params = {**dl.params, **(params_override or {})}
    if contains_redacted(params):
        raise SubmitError(f"dead letter {dl_id} has secret params that were not stored; "
                          "give them again with --params-json")
    if not store.claim_dead_letter(dl_id):
        raise SubmitError(_already(dl_id, store.dead_letter(dl_id).replayed_as))
    try:
        handle = submit_action(dl.platform, dl.action, params, priority=dl.priority, _replay_of=dl.action_id,
                               actor=actor)
    except BaseException:
        store.unclaim_dead_letter(dl_id)
        raise
    detail: dict[str, Any] = {"action_id": dl.action_id, "replayed_as": handle.id}
    if bulk is not None:
        detail["bulk"] = bulk  # which filter took it: the trail tells a bulk replay's letters from single ones
    # The replay's record and its audit entry in one transaction: the trail names exactly the replays recorded.
    store.mark_replayed(dl_id, handle.id, actor=actor, audit_entry=("dlq_replay", f"dead_letter:{dl_id}", detail))
    return handle


def quarantined_note() -> str | None:
    """The line `opsq dlq list` adds when queue items are quarantined (messages that never became an action's
    attempt, so they have no dead letter); None when there are none, or when Redis cannot say (the dead
    letters, in the database, are listed all the same)."""
    try:
        kept = quarantine.counts()["kept"]
    except (redis.RedisError, OSError) as exc:
        return f"quarantined queue items: unknown (Redis: {type(exc).__name__}); opsq queue quarantine list"
    return f"{kept} quarantined queue items: opsq queue quarantine list" if kept else None


def _already(dl_id: int, replayed_as: str | None) -> str:
    if replayed_as:
        return f"dead letter {dl_id} was already replayed as action {replayed_as}"
    return f"dead letter {dl_id} was already replayed (its replay is being submitted now)"
