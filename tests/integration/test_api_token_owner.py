"""`opsq api token owner NAME PERSON`: a token made before owners existed (migration 0011) is given its owner, so
the self-approval rule (person_of) sees through it; the change is in the audit trail with who made it. On SQLite
and PostgreSQL, through the CLI as an operator runs it."""

from __future__ import annotations

import pytest

from tests.integration.opsq_cli import opsq
from workers.store import api_tokens, audit

pytestmark = pytest.mark.integration


def _owner_entries() -> list[dict]:
    audit.seal()
    return audit.entries(action="api_token_owner", limit=100)


def test_an_existing_token_is_given_its_owner_and_the_change_is_audited(opsq_env):
    env = opsq_env()
    api_tokens.create("legacy-bot", "admin", actor="test")  # as before 0011: no owner
    assert api_tokens.person_of("api:legacy-bot") == "api:legacy-bot"

    given = opsq(env, "api", "token", "owner", "legacy-bot", "dana", "--actor", "ops-lead")
    assert given.returncode == 0, given.stderr
    assert given.stdout.splitlines() == ["API token legacy-bot now acts for dana"]
    assert api_tokens.person_of("api:legacy-bot") == "dana"
    listed = opsq(env, "api", "token", "list")
    assert next(line for line in listed.stdout.splitlines() if line.startswith("legacy-bot")).split()[2] == "dana"

    changed = opsq(env, "api", "token", "owner", "legacy-bot", "lee", "--actor", "ops-lead")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == ["API token legacy-bot now acts for lee (was dana)"]
    same = opsq(env, "api", "token", "owner", "legacy-bot", "lee", "--actor", "ops-lead")
    assert same.returncode == 0 and same.stdout.splitlines() == ["API token legacy-bot is owned by lee already"]
    assert api_tokens.person_of("api:legacy-bot") == "lee"

    entries = _owner_entries()  # the unchanged one recorded nothing
    assert [(e["actor"], e["target"], e["detail"]) for e in entries] == [
        ("ops-lead", "api_token:legacy-bot", {"owner": "dana", "previous_owner": None}),
        ("ops-lead", "api_token:legacy-bot", {"owner": "lee", "previous_owner": "dana"}),
    ]


def test_a_revoked_token_may_be_given_its_owner(opsq_env):
    """Who submitted through a revoked token stays who submitted: its pending workflows still need the rule."""
    env = opsq_env()
    api_tokens.create("old-bot", "submit", actor="test")
    api_tokens.revoke("old-bot", actor="test")
    given = opsq(env, "api", "token", "owner", "old-bot", "dana")
    assert given.returncode == 0, given.stderr
    assert api_tokens.person_of("api:old-bot") == "dana"


def test_an_unknown_token_or_a_bad_owner_is_one_clear_line(opsq_env):
    env = opsq_env()
    api_tokens.create("some-bot", "submit", actor="test")
    unknown = opsq(env, "api", "token", "owner", "no-such-bot", "dana")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines() == [
        "error: no API token named 'no-such-bot' (`opsq api token list` shows them)"]
    for bad in ("api:other-bot", " dana", "x" * 101):
        refused = opsq(env, "api", "token", "owner", "some-bot", bad)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith("error: a token's owner is the person it acts for"), refused.stderr
    assert api_tokens.person_of("api:some-bot") == "api:some-bot"
    assert _owner_entries() == []
