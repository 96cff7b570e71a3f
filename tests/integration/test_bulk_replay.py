"""Bulk replay of dead letters on real workers, Redis, the store and the sandbox: `opsq dlq replay` with filters
lists exactly the matching dead letters in a dry run and changes nothing; with --yes it replays each once, as a
new action linked to the dead one; run again, it replays nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tests.integration.opsq_cli import opsq
from workers.client import ActionHandle, submit_action
from workers.store import actions as store
from workers.store import audit
from workers.store.db import get_engine
from workers.store.models import DeadLetter

pytestmark = pytest.mark.integration

LIST_ID = "5f1e0a9c3b2d4e6f7a8b9c0d"


def _dead(platform: str, action: str, params: dict, **kw) -> tuple[int, str]:
    view = submit_action(platform, action, params, **kw).wait(30)
    assert view.status == "failed", view
    (dead,) = [d for d in store.dead_letters(limit=None) if d.action_id == view.id]
    return dead.id, view.id


def _task(title: str) -> dict:
    return {"database_id": "replays", "title": title}


def test_bulk_replay_dry_run_lists_the_matches_then_replays_each_once(opsq_env, workers_started, sandbox_client):
    env = opsq_env()
    workers_started(env)
    # Not matching: another error kind of the same platform (a refusal, then out of attempts)...
    sandbox_client.fault("notion", "error", status=503, times=1)
    retryable, _ = _dead("notion", "create_task", _task("retryable"), max_attempts=1)
    # ...another platform with the same kind...
    sandbox_client.fault("trello", "auth")
    trello, _ = _dead("trello", "create_card", {"list_id": LIST_ID, "name": "other platform"})
    # ...and one of the kind and platform, dead-lettered before the window.
    sandbox_client.fault("notion", "auth")
    old, _ = _dead("notion", "create_task", _task("too old"))
    with get_engine().begin() as conn:
        conn.execute(update(DeadLetter).where(DeadLetter.id == old)
                     .values(created_at=datetime.now(UTC) - timedelta(hours=3)))
    matching = [_dead("notion", "create_task", _task(f"match {n}")) for n in range(3)]
    wanted = [dl for dl, _ in matching]
    filters = ["--platform", "notion", "--error-kind", "auth", "--since", "2h"]
    letters_before = store.dead_letters(limit=None)
    requests_before = len(sandbox_client.requests())

    dry = opsq(env, "dlq", "replay", *filters, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)["dead_letters"]
    assert [d["id"] for d in listed] == wanted  # exactly the matches, oldest first
    assert all(d["idempotent"] is False and d["error_kind"] == "auth" and d["blocked"] is None for d in listed)
    text = opsq(env, "dlq", "replay", *filters, "--dry-run")
    assert text.returncode == 0, text.stderr
    rows = [line.split()[0] for line in text.stdout.splitlines()[1:] if " dead letter(s) " not in line
            and " not idempotent" not in line]
    assert rows == [str(dl) for dl in wanted]
    assert "3 dead letter(s) would be replayed" in text.stdout and "3 not idempotent" in text.stdout
    refused = opsq(env, "dlq", "replay", *filters)  # neither --dry-run nor --yes
    assert refused.returncode == 2 and "this replays 3 dead letter(s)" in refused.stderr
    assert store.dead_letters(limit=None) == letters_before  # nothing changed
    assert len(sandbox_client.requests()) == requests_before
    assert not [a for a in store.list_recent(limit=100) if a.replay_of]

    sandbox_client.clear_faults()
    sandbox_client.clear_requests()
    run = opsq(env, "dlq", "replay", *filters, "--yes", "--actor", "dana")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "replayed 3, skipped 0"
    replays = {dl: store.dead_letter(dl).replayed_as for dl in wanted}
    assert all(replays.values())
    for (_dl, dead_action), new in zip(matching, replays.values(), strict=True):
        done = ActionHandle(new).wait(30)
        assert done.status == "succeeded" and done.replay_of == dead_action, done
    posts = [r for r in sandbox_client.requests(platform="notion") if r["method"] == "POST"]
    # One call per replayed dead letter, each carrying its new action's effect key; nothing for the others.
    assert sorted(r["body"]["properties"]["opsq_effect"]["rich_text"][0]["text"]["content"] for r in posts) == \
        sorted(replays.values())
    assert [r for r in sandbox_client.requests() if r["platform"] != "notion"] == []
    for untouched in (retryable, trello, old):
        assert store.dead_letter(untouched).replayed_at is None
    entries = [e for e in audit.entries(action="dlq_replay") if e["actor"] == "dana"]
    assert sorted(e["target"] for e in entries) == sorted(f"dead_letter:{dl}" for dl in wanted)
    assert all(e["detail"]["bulk"]["platform"] == "notion" for e in entries)

    again = opsq(env, "dlq", "replay", *filters, "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"replayed": [], "skipped": [], "stopped": None, "left": 0}
    assert len(sandbox_client.requests()) == len(posts)

