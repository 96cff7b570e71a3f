"""Bad input gets one clear error and changes nothing: no message in Redis, no row in the store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from workers.client import submit_action
from workers.errors import SubmitError
from workers.store.db import get_engine, session
from workers.store.models import ActionRun

pytestmark = pytest.mark.integration

BAD = [
    ("unknown platform", ("jira", "create_issue", {}), {}, "unknown platform 'jira'"),
    ("unknown action", ("slack", "send_fax", {}), {}, "unknown action slack.send_fax"),
    ("missing param", ("slack", "send_message", {"channel": "#a"}), {}, "text"),
    ("wrong type", ("trello", "create_card", {"list_id": "l", "name": ["x"]}), {}, "name"),
    ("unknown param", ("gdrive", "create_file", {"name": "n", "colour": "red"}), {}, "colour"),
    ("bad priority", ("slack", "send_message", {"channel": "#a", "text": "t"}), {"priority": "urgent"},
     "unknown priority 'urgent'"),
    ("params not an object", ("noop", "noop", ["x"]), {}, "params must be a JSON object"),
    ("bad webhook url", ("webhook", "post", {"url": "not a url"}), {}, "url"),
]


def _snapshot(redis_client) -> tuple[dict[bytes, int], int]:
    lengths = {key: redis_client.llen(key) for key in redis_client.keys("*")
               if redis_client.type(key) == b"list"}
    with session() as s:
        rows = s.scalar(select(func.count()).select_from(ActionRun))
    return lengths, rows or 0


@pytest.mark.parametrize(("label", "args", "kwargs", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_submit_is_refused_and_changes_nothing(opsq_env, redis_client, label, args, kwargs, message):
    submit_action("noop", "noop", {"echo": "baseline"})  # something real is queued already
    before = _snapshot(redis_client)
    with pytest.raises(SubmitError) as info:
        submit_action(*args, **kwargs)
    assert message in str(info.value)
    assert _snapshot(redis_client) == before


def _opsq(env, *args):
    return subprocess.run([sys.executable, "-m", "workers.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["submit", "jira", "x"], "unknown platform 'jira'"),
    (["submit", "slack", "send_message", "-p", "channel=#a"], "text"),
    (["submit", "slack", "send_message", "--params-json", "{nope"], "not valid JSON"),
    (["submit", "slack", "send_message", "-p", "novalue"], "is not key=value"),
    (["submit", "slack", "send_message", "--priority", "urgent"], "urgent"),
    (["action", "status", "doesnotexist"], "no action with id doesnotexist"),
    (["dlq", "replay", "999"], "no dead letter with id 999"),
])
def test_cli_bad_input_is_one_clear_line(opsq_env_sqlite, redis_client, args, message):
    env = opsq_env_sqlite()
    get_engine()  # the store made, as once anything has run: a read command does not make it
    result = _opsq(env, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3, result.stderr  # click's usage errors add a usage line and a hint
    assert redis_client.dbsize() == 0 or not any(
        redis_client.type(k) == b"list" for k in redis_client.keys("*"))


def test_cli_without_any_broker_says_how_to_get_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    env["OPSQ_HOME"] = str(tmp_path)
    result = _opsq(env, "submit", "noop", "noop")
    assert result.returncode != 0
    assert "no Redis: set OPSQ_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr
