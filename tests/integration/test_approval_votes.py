"""One person, one vote on a gate that needs several approvals, whatever names they vote under (a token they own,
their Slack or CLI name), even when the votes arrive at once: the check is made in the vote's own transaction
(workflows.state.add_vote). SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from workers.errors import OpsqError
from workers.settings import reload_settings
from workers.store import api_tokens, db
from workflows import state
from workflows.spec import load, validate

pytestmark = pytest.mark.integration

GATE = {"name": "votes", "steps": [{"id": "pay", "platform": "noop", "action": "noop", "params": {},
                                    "requires_approval": True, "approval": {"required": 2}}]}


@pytest.fixture
def approval_id(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPSQ_DATABASE_URL", database_url)
    reload_settings()
    db.reset_engine()
    spec = validate(load(GATE))
    wid = state.create_run(spec, {}, "normal", workflow_id="wf-votes", idempotency_key=None, created_by="sam")
    api_tokens.create("dana-bot", "approve", owner="dana", actor="test")
    return state.create_approval(wid, 0, ["pay"], {}, 3600, "sam")


def _vote(approval_id: str, actor: str) -> int | None:
    return state.add_vote(approval_id, actor, None, ("approve_vote", f"approval:{approval_id}", {}, actor))


def test_a_second_name_of_the_same_person_is_refused_and_records_nothing(approval_id):
    assert _vote(approval_id, "api:dana-bot") == 1
    with pytest.raises(OpsqError, match=r"dana has approved approval .* already \(as api:dana-bot\)"):
        _vote(approval_id, "dana")
    assert [v["actor"] for v in state.votes(approval_id)] == ["api:dana-bot"]
    assert _vote(approval_id, "api:dana-bot") is None  # the same name again: counted once
    assert _vote(approval_id, "lee") == 2  # another person


def test_two_names_of_one_person_voting_at_once_count_once(approval_id):
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def vote(actor: str) -> None:
        start.wait()
        try:
            outcomes[actor] = _vote(approval_id, actor)
        except Exception as exc:  # the refusal, or SQLite's "database is locked" for a stale snapshot
            outcomes[actor] = exc

    threads = [threading.Thread(target=vote, args=(a,)) for a in ("dana", "api:dana-bot")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 2, outcomes
    assert len(state.votes(approval_id)) == 1, (outcomes, state.votes(approval_id))
    assert sorted(type(o).__name__ for o in outcomes.values()).count("int") == 1, outcomes
