"""OPSQ_PLATFORMS: the platforms an installation calls. test-auth tries only those (one line for each other one),
and an action on another platform is refused at submit, with one line naming the setting, before anything is
queued. The real CLI against the sandbox, and submit_action on the real Redis and store."""

from __future__ import annotations

import json

import pytest

from tests.integration.opsq_cli import opsq
from workers import client
from workers.errors import SubmitError
from workers.settings import reload_settings

pytestmark = pytest.mark.integration


def test_test_auth_tries_only_the_platforms_in_use(opsq_env_sqlite):
    env = opsq_env_sqlite(OPSQ_PLATFORMS="slack,trello", OPSQ_NOTION_TOKEN="invalid")  # would FAIL if tried
    out = opsq(env, "test-auth")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {ln.split()[1]: ln for ln in out.stdout.splitlines()}
    assert lines["slack"].startswith("OK") and "authenticated at" in lines["slack"]
    assert lines["trello"].startswith("OK") and "authenticated at" in lines["trello"]
    for platform in ("notion", "gdrive", "gsheets"):
        assert lines[platform].split(None, 2)[2] == "not used (not in OPSQ_PLATFORMS): not tested", out.stdout
    out = opsq({**env, "OPSQ_PLATFORMS": "slack,notion"}, "test-auth")  # in use: tried, and the bad token shows
    assert out.returncode == 1 and "FAIL  notion" in out.stdout, out.stdout


def test_an_action_on_a_platform_not_in_use_is_refused_at_submit(opsq_env_sqlite, redis_client, monkeypatch):
    env = opsq_env_sqlite(OPSQ_PLATFORMS="slack")
    out = opsq(env, "submit", "notion", "create_page", "-p", "parent_id=p1", "-p", "title=T")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("error: platform 'notion' is not used by this installation: OPSQ_PLATFORMS is "
                                  "slack; add it there (and its settings) to submit its actions"), out.stderr
    # In-process, the same one place: nothing queued; a used platform and noop are accepted.
    monkeypatch.setenv("OPSQ_PLATFORMS", "slack")
    reload_settings()
    keys = set(redis_client.keys("*"))
    with pytest.raises(SubmitError, match="OPSQ_PLATFORMS"):
        client.submit_action("notion", "create_page", {"parent_id": "p1", "title": "T"})
    assert set(redis_client.keys("*")) == keys
    assert client.current_status(client.submit_action("noop", "noop", {}).id).status
    handle = client.submit_action("slack", "send_message", {"channel": "#c", "text": "hi"})
    assert client.current_status(handle.id).status == "queued"
    # An unknown platform is still the unknown-platform error, not this one.
    with pytest.raises(SubmitError, match="unknown platform 'nosuch'"):
        client.submit_action("nosuch", "x", {})


def test_health_wants_no_consumer_for_a_platform_not_in_use(opsq_env_sqlite, workers_started):
    env = opsq_env_sqlite(OPSQ_PLATFORMS="slack")
    workers_started(env, queues="slack,noop,control,maintenance")
    out = opsq(env, "health", "--json")
    names = {c["name"]: c for c in json.loads(out.stdout)}
    assert not [n for n in names if n.startswith("queue ")], out.stdout  # notion, trello...: not used, not wanted
    out = opsq({**env, "OPSQ_PLATFORMS": "slack,notion"}, "health", "--json")
    names = {c["name"]: c for c in json.loads(out.stdout)}
    assert names["queue notion"]["status"] == "warn" and "queue trello" not in names, out.stdout
