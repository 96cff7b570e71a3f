"""The HTTP API with its Redis or its PostgreSQL stopped (servers the test owns): every answer is JSON, a 503 naming
what is down when the request needs it (never a 500, never a hang), what needs only the other one still works, a
refused approval changes nothing, and everything works again once the server is back, in the same API process."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.owned_postgres import OwnedPostgres
from tests.support.redis_server import OwnedRedis
from tests.support.wait import wait_for
from workers.settings import reload_settings
from workers.store import api_tokens, db
from workflows import state

pytestmark = pytest.mark.integration

GATED = {"name": "gated-outage", "steps": [
    {"id": "first", "platform": "noop", "action": "noop", "params": {"echo": 1}},
    {"id": "gated", "platform": "noop", "action": "noop", "params": {"echo": 2}, "depends_on": ["first"],
     "requires_approval": True}]}
SIGNING_SECRET = "outage-signing-secret"


@pytest.fixture
def owned_pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnedPostgres]:
    # Not under pytest's tmp_path: that is private to root, and the server runs as `postgres`.
    home = Path(tempfile.mkdtemp(prefix="opsq-pg-"))
    server = OwnedPostgres(home).create()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def owned_redis(tmp_path: Path) -> Iterator[OwnedRedis]:
    server = OwnedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _signed_click(approval_id: str) -> tuple[bytes, dict[str, str]]:
    payload = {"type": "block_actions", "user": {"id": "U0LEE"}, "actions": [
        {"action_id": "opsq_approve", "value": approval_id}]}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    at = str(int(time.time()))
    signature = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{at}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": at, "X-Slack-Signature": signature,
                  "Content-Type": "application/x-www-form-urlencoded"}


def _outage_answer(response: httpx.Response, names: str) -> None:
    assert response.status_code == 503, response.text
    assert names in response.json()["error"], response.text


def test_the_api_with_its_redis_or_its_database_stopped(owned_pg, owned_redis, opsq_env_sqlite, workers_started,
                                                        api_started, monkeypatch):
    env = opsq_env_sqlite(OPSQ_DATABASE_URL=owned_pg.url, OPSQ_REDIS_URL=owned_redis.url(),
                          OPSQ_SLACK_SIGNING_SECRET=SIGNING_SECRET, OPSQ_SLACK_APPROVERS='{"U0LEE": "lee"}')
    monkeypatch.setenv("OPSQ_DATABASE_URL", owned_pg.url)
    reload_settings()
    db.reset_engine()
    admin = api_tokens.create("ops", "admin", actor="test")
    approver = api_tokens.create("lee", "approve", actor="test")  # not the submitter (allow_self_approval)
    workers_started(env, queues="noop,control")
    api = api_started(env)
    action_id = api.call("POST", "/v1/actions", admin, json={"platform": "noop", "action": "noop"}).json()["id"]
    wid = api.call("POST", "/v1/workflows", admin, json={"spec": GATED}).json()["id"]
    wait_for(lambda: state.run_status(wid) == "awaiting_approval", 60, "the workflow at its gate")
    wait_for(lambda: api.call("GET", f"/v1/actions/{action_id}", admin).json()["status"] == "succeeded", 60,
             "the action done")
    approval_id = state.approvals(workflow_id=wid)[0]["id"]

    # Redis stopped: what needs it is a 503 naming Redis; what needs only the database answers.
    owned_redis.stop()
    _outage_answer(api.call("POST", "/v1/actions", admin, json={"platform": "noop", "action": "noop"}), "Redis")
    _outage_answer(api.call("POST", "/v1/workflows", admin, json={"spec": GATED}), "Redis")
    _outage_answer(api.call("POST", f"/v1/approvals/{approval_id}/approve", approver), "Redis")
    click, headers = _signed_click(approval_id)
    _outage_answer(httpx.post(f"{api.url}/slack/interactions", content=click, headers=headers, timeout=30), "Redis")
    assert state.run_status(wid) == "awaiting_approval"  # the refused approvals changed nothing
    assert state.approvals(workflow_id=wid)[0]["status"] == "pending"
    assert api.call("GET", "/v1/approvals", admin).status_code == 200
    assert api.call("GET", f"/v1/workflows/{wid}", admin).json()["status"] == "awaiting_approval"
    listed = api.call("GET", "/v1/actions", admin)
    assert listed.status_code == 200 and action_id in [a["id"] for a in listed.json()["items"]]
    one = api.call("GET", f"/v1/actions/{action_id}", admin)
    assert one.status_code == 200 and one.json()["status"] == "succeeded", one.text  # the record in the database
    health = api.call("GET", "/v1/health")  # degraded, not down: the reads above answer
    assert health.status_code == 200 and health.json() | {"version": ""} == {
        "status": "degraded", "redis": "down", "database": "ok", "version": ""}, health.text

    # Back: the same API process submits and approves again.
    owned_redis.start()
    again = api.call("POST", "/v1/actions", admin, json={"platform": "noop", "action": "noop"})
    assert again.status_code == 202, again.text
    assert api.call("GET", f"/v1/actions/{action_id}", admin).status_code == 200

    # PostgreSQL stopped: every authenticated request is a 503 naming the database (the token is read from it).
    owned_pg.stop()
    for method, path, body in (("GET", "/v1/approvals", None), ("GET", f"/v1/workflows/{wid}", None),
                               ("GET", f"/v1/actions/{action_id}", None),
                               ("POST", "/v1/actions", {"platform": "noop", "action": "noop"}),
                               ("POST", f"/v1/approvals/{approval_id}/approve", None)):
        _outage_answer(api.call(method, path, approver if "approve" in path else admin, json=body),
                       "database error")
    click, headers = _signed_click(approval_id)
    _outage_answer(httpx.post(f"{api.url}/slack/interactions", content=click, headers=headers, timeout=30),
                   "database error")
    assert api.call("GET", "/v1/approvals", "opsq_not-a-token").status_code == 503  # not counted as a failed login
    health = api.call("GET", "/v1/health")  # a readiness probe takes this process out while the database is down
    assert health.status_code == 503 and health.json()["status"] == "down" and health.json()["database"] == "down"
    assert owned_pg.url.split("@")[-1] not in health.text  # no address to an anonymous caller

    owned_pg.start()
    approved = api.call("POST", f"/v1/approvals/{approval_id}/approve", approver)
    assert approved.status_code == 200, approved.text
    wait_for(lambda: api.call("GET", f"/v1/workflows/{wid}", admin).json()["status"] == "succeeded", 60,
             "the approved workflow done")
    assert api.call("GET", "/v1/health").json()["status"] == "ok"
