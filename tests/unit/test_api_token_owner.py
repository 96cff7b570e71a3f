"""workers.store.api_tokens: a token's owner, and the person behind an actor (person_of), which approval policies'
self-approval rule compares (workflows.client.check_decider). On a real SQLite store."""

from __future__ import annotations

import pytest

from workers.errors import SubmitError
from workers.settings import reload_settings
from workers.store import api_tokens, audit, db


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 'tokens.db'}")
    reload_settings()
    db.reset_engine()


def test_the_person_behind_an_actor():
    api_tokens.create("dana-bot", "admin", owner="dana", actor="test")
    api_tokens.create("ci", "submit", actor="test")  # no owner: its own person
    api_tokens.create("old-dana", "approve", owner="dana", actor="test")
    api_tokens.revoke("old-dana", actor="test")

    assert api_tokens.person_of("api:dana-bot") == "dana"
    assert api_tokens.person_of("api:old-dana") == "dana"  # revoked: what it submitted was still dana's
    assert api_tokens.person_of("api:ci") == "api:ci"
    assert api_tokens.person_of("api:nobody") == "api:nobody"  # no such token: the name as it is
    assert api_tokens.person_of("dana") == "dana"  # a Slack approver's or CLI user's name is the person
    assert api_tokens.person_of("dana-bot") == "dana-bot"  # only `api:` names a token


def test_the_owner_is_listed_and_audited_and_checked():
    api_tokens.create("dana-bot", "admin", owner="dana", actor="test")
    api_tokens.create("ci", "submit", actor="test")
    listed = {t.name: t.to_dict()["owner"] for t in api_tokens.tokens()}
    assert listed == {"dana-bot": "dana", "ci": None}
    created = [e for e in audit.entries() if e["action"] == "api_token_create"]
    assert [e["detail"]["owner"] for e in created] == ["dana", None]

    for bad in ("api:ci", "", " dana", "x" * 101):
        with pytest.raises(SubmitError, match="a token's owner is the person it acts for"):
            api_tokens.create("other", "admin", owner=bad, actor="test")
    assert [t.name for t in api_tokens.tokens()] == ["dana-bot", "ci"]
