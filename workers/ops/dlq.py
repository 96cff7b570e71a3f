"""Dead letters: actions whose retries ran out (or whose credentials were refused)."""

from __future__ import annotations

from typing import Any

import redis

from workers.client import ActionHandle, submit_action
from workers.errors import SubmitError
from workers.ops import quarantine
from workers.redaction import contains_redacted
from workers.store import actions as store


def replay(dl_id: int, params_override: dict[str, Any] | None = None, actor: str | None = None) -> ActionHandle:
    """Enqueue the dead action again as a new action (its own id, linked by `replay_of`).

    Stored params have secrets (and webhook URLs' paths) removed; such an action can only be replayed
    with those fields given again in `params_override`, never with the placeholder.

    A dead letter is replayed once, even when two operators replay it at the same moment: it is claimed
    first (a conditional UPDATE only one of them wins), then submitted; a failed submit gives the claim
    back."""
    dl = store.dead_letter(dl_id)
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
    # The replay's record and its audit entry in one transaction: the trail names exactly the replays recorded.
    store.mark_replayed(dl_id, handle.id, actor=actor, audit_entry=(
        "dlq_replay", f"dead_letter:{dl_id}", {"action_id": dl.action_id, "replayed_as": handle.id}))
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
