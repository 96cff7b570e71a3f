"""The HTTP API (issue 15 items 1-2): a real `opsq api` process, real workers, the sandbox, called over HTTP.

The main path runs on SQLite and PostgreSQL: submit -> 202 -> the action runs -> GET says it succeeded; a workflow
with an approval gate approved over the API; each role refused what it may not do (403); a missing, unknown or
revoked token refused (401); the audit trail names the token for every change made through the API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.opsq_cli import opsq
from tests.support.api_server import ApiServer
from tests.support.wait import wait_for
from workers.store import actions as store
from workers.store import api_tokens, audit
from workflows import state
from workflows.client import submit_workflow

pytestmark = pytest.mark.integration

GATED = """
name: gated-over-http
steps:
  - id: first
    platform: noop
    action: noop
    params: {echo: 1}
  - id: gated
    platform: noop
    action: noop
    params: {echo: 2}
    depends_on: [first]
    requires_approval: true
"""


def _tokens() -> dict[str, str]:
    return {role: api_tokens.create(f"{role}-bot", role, actor="test") for role in
            ("submit", "operate", "approve", "admin")}


def _until(server: ApiServer, path: str, token: str, want: Callable[[dict[str, Any]], bool],
           timeout: float = 30) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        r = server.call("GET", path, token)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body if want(body) else None

    return wait_for(look, timeout=timeout, what=f"GET {path}")


def _actors(target: str) -> dict[str, str]:
    audit.seal()
    return {e["action"]: e["actor"] for e in audit.entries(limit=1000) if e["target"] == target}


def test_actions_workflows_and_approvals_over_http(opsq_env, workers_started, sandbox, api_started):
    env = opsq_env()
    workers_started(env, queues="noop,control")
    created = opsq(env, "api", "token", "create", "cli-made", "--role", "submit")
    assert created.returncode == 0, created.stderr
    cli_secret = created.stdout.strip()
    tok = _tokens()
    api = api_started(env)

    health = api.call("GET", "/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert health.json()["redis"] == health.json()["database"] == "ok"
    assert "opsq_" not in health.text  # says nothing secret
    assert api.call("GET", "/openapi.json").status_code == 200

    # Submit -> 202 -> the action runs -> GET shows it succeeded.
    r = api.call("POST", "/v1/actions", tok["submit"], json={"platform": "noop", "action": "noop",
                                                             "params": {"echo": "hi"}},
                 headers={"Idempotency-Key": "order-1"})
    assert r.status_code == 202, r.text
    action_id = r.json()["id"]
    done = _until(api, f"/v1/actions/{action_id}", tok["submit"], lambda b: b["status"] == "succeeded")
    assert done["result"] is not None
    # A retried POST with the same key: the first action, nothing enqueued again.
    again = api.call("POST", "/v1/actions", tok["submit"], json={"platform": "noop", "action": "noop",
                                                                 "params": {"echo": "hi"}},
                     headers={"Idempotency-Key": "order-1"})
    assert again.status_code == 202 and again.json() == {"id": action_id, "deduplicated": True,
                                                          "status": "succeeded"}
    # Bad input: 4xx naming the field, with the CLI's message; nothing stored.
    bad = api.call("POST", "/v1/actions", tok["submit"], json={"platform": "noop", "action": "noop",
                                                               "priority": "urgent"})
    assert bad.status_code == 422 and bad.json()["field"] == "priority"
    assert bad.json()["error"].startswith("unknown priority 'urgent'")
    cli_bad = opsq(env, "submit", "noop", "noop", "--params-json", '{"echo": 1}', "--max-attempts", "1",
                   "--idempotency-key", "x" * 201)
    api_bad = api.call("POST", "/v1/actions", tok["submit"], json={"platform": "noop", "action": "noop",
                                                                   "idempotency_key": "x" * 201})
    assert api_bad.status_code == 422 and api_bad.json()["field"] == "idempotency_key"
    assert cli_bad.stderr.strip().endswith(api_bad.json()["error"])
    missing = api.call("POST", "/v1/actions", tok["submit"], json={"action": "noop"})
    assert missing.status_code == 422 and missing.json()["field"] == "platform"

    # Paged list: a submit token sees only its own; an operate token sees all.
    mine = api.call("POST", "/v1/actions", cli_secret, json={"platform": "noop", "action": "noop"}).json()["id"]
    assert api.call("GET", f"/v1/actions/{mine}", tok["submit"]).status_code == 404
    own = api.call("GET", "/v1/actions", tok["submit"]).json()
    assert [a["id"] for a in own["items"]] == [action_id]
    page1 = api.call("GET", "/v1/actions", tok["operate"], params={"limit": 1}).json()
    assert [a["id"] for a in page1["items"]] == [mine] and page1["next_cursor"]
    page2 = api.call("GET", "/v1/actions", tok["operate"], params={"limit": 1, "cursor": page1["next_cursor"]}).json()
    assert [a["id"] for a in page2["items"]] == [action_id]
    filtered = api.call("GET", "/v1/actions", tok["operate"], params={"status": "succeeded", "platform": "noop",
                                                                     "since": "2020-01-01T00:00:00Z"}).json()
    assert action_id in [a["id"] for a in filtered["items"]]

    # An invalid workflow: every error, nothing stored.
    runs_before = len(state.list_runs(limit=100))
    invalid = api.call("POST", "/v1/workflows", tok["submit"], json={"spec": {"name": "x", "steps": [
        {"id": "a", "platform": "noop", "action": "nope"}, {"id": "b", "platform": "noop", "action": "noop",
                                                            "depends_on": ["zzz"]}]}})
    assert invalid.status_code == 422 and invalid.json()["field"] == "spec"
    assert len(invalid.json()["errors"]) >= 2
    assert len(state.list_runs(limit=100)) == runs_before

    # A workflow with an approval gate, approved over the API.
    r = api.call("POST", "/v1/workflows", tok["submit"], json={"spec": GATED})
    assert r.status_code == 202, r.text
    wid = r.json()["id"]
    _until(api, f"/v1/workflows/{wid}", tok["submit"], lambda b: b["status"] == "awaiting_approval")
    pending = api.call("GET", "/v1/approvals", tok["approve"]).json()
    approval_id = next(a["id"] for a in pending if a["workflow_id"] == wid)

    # Each role refused what it may not do (403); no token, an unknown one, a revoked one: 401.
    refused = {
        "submit approves": api.call("POST", f"/v1/approvals/{approval_id}/approve", tok["submit"]),
        "submit cancels": api.call("POST", f"/v1/actions/{action_id}/cancel", tok["submit"]),
        "submit rolls back": api.call("POST", f"/v1/workflows/{wid}/rollback", tok["submit"]),
        "submit lists approvals": api.call("GET", "/v1/approvals", tok["submit"]),
        "operate approves": api.call("POST", f"/v1/approvals/{approval_id}/approve", tok["operate"]),
        "approve submits": api.call("POST", "/v1/actions", tok["approve"], json={"platform": "noop",
                                                                                  "action": "noop"}),
        "approve cancels": api.call("POST", f"/v1/workflows/{wid}/cancel", tok["approve"]),
    }
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 403)
    assert api.call("GET", "/v1/approvals").status_code == 401
    assert api.call("GET", "/v1/approvals", "opsq_not-a-token").status_code == 401
    revoked = opsq(env, "api", "token", "revoke", "cli-made")
    assert revoked.returncode == 0, revoked.stderr
    assert api.call("GET", f"/v1/actions/{mine}", cli_secret).status_code == 401
    assert state.run_status(wid) == "awaiting_approval"  # nothing refused changed anything

    ok = api.call("POST", f"/v1/approvals/{approval_id}/approve", tok["approve"], json={"comment": "looks right"})
    assert ok.status_code == 200, ok.text
    whole = _until(api, f"/v1/workflows/{wid}", tok["submit"], lambda b: b["status"] == "succeeded")
    assert {s["step_id"]: s["status"] for s in whole["steps"]} == {"first": "succeeded", "gated": "succeeded"}
    twice = api.call("POST", f"/v1/approvals/{approval_id}/approve", tok["approve"])
    assert twice.status_code == 409 and "already approved" in twice.json()["error"]

    # The audit trail names the token for every change made through the API.
    assert _actors(f"action:{action_id}")["submit"] == "api:submit-bot"
    assert _actors(f"workflow:{wid}")["workflow_submit"] == "api:submit-bot"
    assert _actors(f"approval:{approval_id}")["approve"] == "api:approve-bot"
    listed = opsq(env, "api", "token", "list", "--json")
    assert listed.returncode == 0 and "opsq_" not in listed.stdout
    assert {t["name"]: bool(t["revoked_at"]) for t in json.loads(listed.stdout)}["cli-made"]


def test_operating_over_http_and_what_is_refused(opsq_env, workers_started, sandbox, sandbox_client,
                                                  api_started):
    """SQLite only (the rules are the library's, the same on both): cancel, rollback, resume, deny, replay; the
    bind refused without a token; failed authentications rate-limited."""
    env = opsq_env(OPSQ_API_AUTH_FAILURES_PER_MIN="5")
    # No token yet: a non-loopback address is refused, in one line, before anything listens.
    refused = opsq(env, "api", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode == 1 and refused.stderr.startswith("error: the API serves 0.0.0.0 only once a token")
    assert "Traceback" not in refused.stderr
    tok = _tokens()
    workers_started(env, queues="noop,notion,control")
    api = api_started(env)

    # A dead letter replayed over the API (operate) runs again as a new action.
    sandbox_client.fault("notion", "auth", times=1)
    dead = api.call("POST", "/v1/actions", tok["submit"], json={"platform": "notion", "action": "create_task",
                                                                "params": {"database_id": "d", "title": "t"}})
    _until(api, f"/v1/actions/{dead.json()['id']}", tok["operate"], lambda b: b["status"] == "failed")
    letter = wait_for(lambda: store.dead_letters(), what="the dead letter")[0]
    assert api.call("POST", f"/v1/dead-letters/{letter.id}/replay", tok["submit"]).status_code == 403
    replay = api.call("POST", f"/v1/dead-letters/{letter.id}/replay", tok["operate"])
    assert replay.status_code == 202, replay.text
    again = _until(api, f"/v1/actions/{replay.json()['id']}", tok["operate"], lambda b: b["status"] == "succeeded")
    assert again["replay_of"] == dead.json()["id"]

    # Cancel a scheduled action (operate); the trail names the token.
    later = api.call("POST", "/v1/actions", tok["submit"], json={"platform": "noop", "action": "noop",
                                                                 "countdown": 3600})
    assert later.status_code == 202 and later.json()["status"] == "scheduled"
    aid = later.json()["id"]
    cancelled = api.call("POST", f"/v1/actions/{aid}/cancel", tok["operate"], json={"why": "not needed"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert _actors(f"action:{aid}")["action_cancel"] == "api:operate-bot"

    # Deny needs a reason; denied, the workflow rolls back what it did.
    wid = api.call("POST", "/v1/workflows", tok["submit"], json={"spec": GATED}).json()["id"]
    _until(api, f"/v1/workflows/{wid}", tok["operate"], lambda b: b["status"] == "awaiting_approval")
    approval_id = state.approvals(workflow_id=wid)[0]["id"]
    no_reason = api.call("POST", f"/v1/approvals/{approval_id}/deny", tok["approve"])
    assert no_reason.status_code == 422 and no_reason.json()["field"] == "comment"
    denied = api.call("POST", f"/v1/approvals/{approval_id}/deny", tok["approve"], json={"comment": "wrong order"})
    assert denied.status_code == 200, denied.text
    _until(api, f"/v1/workflows/{wid}", tok["operate"], lambda b: b["status"] == "rolled_back")
    assert _actors(f"approval:{approval_id}")["deny"] == "api:approve-bot"
    # What the state does not allow is a 409 with the library's message; an unknown id a 404.
    resume = api.call("POST", f"/v1/workflows/{wid}/resume", tok["operate"])
    assert resume.status_code == 409 and "only a running workflow can be resumed" in resume.json()["error"]
    assert api.call("POST", "/v1/workflows/nope/rollback", tok["operate"]).status_code == 404

    # Cancel a gated workflow with rollback (operate), then roll back one awaiting approval (admin).
    w2 = api.call("POST", "/v1/workflows", tok["admin"], json={"spec": GATED}).json()["id"]
    _until(api, f"/v1/workflows/{w2}", tok["admin"], lambda b: b["status"] == "awaiting_approval")
    c = api.call("POST", f"/v1/workflows/{w2}/cancel", tok["operate"], json={"why": "changed plans"})
    assert c.status_code == 200 and c.json()["result"].startswith("cancelling"), c.text
    _until(api, f"/v1/workflows/{w2}", tok["admin"], lambda b: b["status"] == "cancelled")
    assert _actors(f"workflow:{w2}")["workflow_cancel"] == "api:operate-bot"
    w3 = api.call("POST", "/v1/workflows", tok["admin"], json={"spec": GATED}).json()["id"]
    _until(api, f"/v1/workflows/{w3}", tok["admin"], lambda b: b["status"] == "awaiting_approval")
    rb = api.call("POST", f"/v1/workflows/{w3}/rollback", tok["admin"])
    assert rb.status_code == 200 and rb.json()["result"] == "rollback started", rb.text
    assert _actors(f"workflow:{w3}")["workflow_rollback"] == "api:admin-bot"

    # A lone surrogate (valid JSON, not Unicode) is refused at the door, not by the store later.
    odd = api.call("POST", "/v1/actions", tok["submit"], content=b'{"platform": "noop", "action": "noop", '
                   b'"params": {"text": "\\ud800"}}', headers={"Content-Type": "application/json"})
    assert odd.status_code == 422 and odd.json()["error"].startswith("params.text: "), odd.text

    # Failed authentications: past the limit, that address is refused (429) even with a good token.
    for _ in range(5):
        assert api.call("GET", "/v1/approvals", "opsq_guess").status_code == 401
    limited = api.call("GET", "/v1/approvals", tok["admin"])
    assert limited.status_code == 429 and "too many failed authentications" in limited.json()["error"]
    assert api.call("GET", "/v1/health").status_code == 200


POLICY = {"name": "two-of-three", "steps": [
    {"id": "pay", "platform": "noop", "action": "noop", "params": {"echo": "pay"}, "requires_approval": True,
     "approval": {"approvers": ["api:admin-bot", "api:approve-bot", "group:finance"], "required": 2}}]}


def test_an_approval_policy_over_http(opsq_env_sqlite, workers_started, sandbox, api_started):
    """A 2-of-3 gate needs two distinct approvers; the submitter's own approval and an outsider's are refused
    (403) and change nothing; the same approver twice counts once. A gate without a policy refuses its
    submitter's approval too, unless its spec says `allow_self_approval: true`."""
    env = opsq_env_sqlite(OPSQ_APPROVER_GROUPS='{"finance": ["api:lee"]}')
    tok = _tokens()
    lee = api_tokens.create("lee", "approve", actor="test")
    outsider = api_tokens.create("outsider", "approve", actor="test")
    workers_started(env, queues="noop,control")
    api = api_started(env)

    bad = api.call("POST", "/v1/workflows", tok["admin"], json={"spec": {**POLICY, "steps": [
        {**POLICY["steps"][0], "approval": {"approvers": ["api:a"], "required": 2}}]}})
    assert bad.status_code == 422 and "required is 2 but only 1 approver(s) are named" in bad.json()["error"]
    wid = api.call("POST", "/v1/workflows", tok["admin"], json={"spec": POLICY}).json()["id"]
    _until(api, f"/v1/workflows/{wid}", tok["admin"], lambda b: b["status"] == "awaiting_approval")
    approval_id = state.approvals(workflow_id=wid)[0]["id"]
    path = f"/v1/approvals/{approval_id}/approve"

    own = api.call("POST", path, tok["admin"])
    assert own.status_code == 403 and "may not approve it (allow_self_approval: false)" in own.json()["error"]
    stranger = api.call("POST", path, outsider)
    assert stranger.status_code == 403 and "is not an approver" in stranger.json()["error"]
    assert state.approvals(workflow_id=wid)[0]["approved_by"] == []

    first = api.call("POST", path, tok["approve"], json={"comment": "ok by me"})
    assert first.status_code == 200 and "1 of 2" in first.json()["result"], first.text
    again = api.call("POST", path, tok["approve"])
    assert again.status_code == 409 and "already" in again.json()["error"]
    assert state.run_status(wid) == "awaiting_approval"
    second = api.call("POST", path, lee)  # admitted through group:finance
    assert second.status_code == 200 and second.json()["result"].endswith("resumes"), second.text
    _until(api, f"/v1/workflows/{wid}", tok["admin"], lambda b: b["status"] == "succeeded")
    decided = state.approvals(status=None, workflow_id=wid)[0]
    assert decided["approved_by"] == ["api:approve-bot", "api:lee"] and decided["decided_by"] == "api:lee"
    actors = {e["actor"] for e in (audit.seal(), audit.entries(limit=1000))[1]
              if e["target"] == f"approval:{approval_id}"}
    assert actors == {"api:approve-bot", "api:lee"}

    # A gate without a policy: its submitter (admin-bot, which may approve) is refused (403), another approves.
    plain = api.call("POST", "/v1/workflows", tok["admin"], json={"spec": GATED}).json()["id"]
    _until(api, f"/v1/workflows/{plain}", tok["admin"], lambda b: b["status"] == "awaiting_approval")
    gate = state.approvals(workflow_id=plain)[0]["id"]
    self_approved = api.call("POST", f"/v1/approvals/{gate}/approve", tok["admin"])
    assert self_approved.status_code == 403, self_approved.text
    assert self_approved.json()["error"].startswith(f"api:admin-bot submitted workflow {plain} and may not approve")
    assert state.run_status(plain) == "awaiting_approval" and state.approvals(workflow_id=plain)[0]["status"] == \
        "pending"
    assert api.call("POST", f"/v1/approvals/{gate}/approve", tok["approve"]).status_code == 200
    _until(api, f"/v1/workflows/{plain}", tok["admin"], lambda b: b["status"] == "succeeded")
    # ... unless the spec allows it.
    allowing = GATED + "    approval: {allow_self_approval: true}\n"
    mine = api.call("POST", "/v1/workflows", tok["admin"], json={"spec": allowing}).json()["id"]
    _until(api, f"/v1/workflows/{mine}", tok["admin"], lambda b: b["status"] == "awaiting_approval")
    ok = api.call("POST", f"/v1/approvals/{state.approvals(workflow_id=mine)[0]['id']}/approve", tok["admin"])
    assert ok.status_code == 200, ok.text
    _until(api, f"/v1/workflows/{mine}", tok["admin"], lambda b: b["status"] == "succeeded")


SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_GATE = {"name": "slack-gate", "steps": [
    {"id": "pay", "platform": "noop", "action": "noop", "params": {"echo": "pay"}, "requires_approval": True,
     "approval": {"approvers": ["dana", "lee", "sam"], "required": 2}}]}


def _slack_post(approval_id: Any) -> Any:
    """The request_approval action the workflow's pause submitted for this approval, once it succeeded."""
    found: list[Any] = []

    def posted() -> bool:
        found[:] = [v for v in store.list_recent(limit=50, platform="slack")
                    if v.action == "request_approval" and v.params.get("approval_id") == str(approval_id)]
        return bool(found) and found[0].status == "succeeded"

    wait_for(posted, 30, f"the Slack post of approval {approval_id}")
    assert len(found) == 1  # one post, however the pause was delivered
    return found[0]


def test_approvals_from_slack(opsq_env_sqlite, workers_started, sandbox, sandbox_client, api_started):
    """The sandbox 'clicks' the buttons of a request_approval message: a signed click approves (2 of 3 distinct
    approvers), and a bad signature, a stale timestamp, a replayed request, an unknown Slack user and the
    submitter's own click are each refused and change nothing. The message ends showing who decided."""
    env = opsq_env_sqlite(OPSQ_SLACK_SIGNING_SECRET=SECRET, OPSQ_APPROVAL_SLACK_CHANNEL="#approvals",
                          OPSQ_SLACK_APPROVERS=json.dumps({"U0DANA": "dana", "U0LEE": "lee", "U0SAM": "sam"}))
    workers_started(env, queues="noop,slack,control")
    api = api_started(env)
    wid = submit_workflow(SLACK_GATE, created_by="dana").id
    _until(api, f"/v1/workflows/{wid}", api_tokens.create("reader", "operate", actor="test"),
           lambda b: b["status"] == "awaiting_approval")
    approval_id = state.approvals(workflow_id=wid)[0]["id"]
    # The pause posted the approval to OPSQ_APPROVAL_SLACK_CHANNEL itself (one post, keyed on the approval).
    posted = _slack_post(approval_id)
    assert posted.status == "succeeded" and posted.params["channel"] == "#approvals", posted
    url = f"{api.url}/slack/interactions"

    def click(user: str, **kw: Any) -> dict[str, Any]:
        return sandbox_client.click(url, channel=posted.result["channel"], ts=posted.result["ts"], user_id=user,
                                    signing_secret=SECRET, **kw)

    def votes() -> list[str]:
        return state.approvals(status=None, workflow_id=wid)[0]["approved_by"]

    bad = click("U0LEE", bad_signature=True)
    assert bad["status"] == 401 and "signature does not match" in bad["body"]
    stale = click("U0LEE", timestamp=int(time.time()) - 600)
    assert stale["status"] == 401 and "old" in stale["body"]
    stranger = click("U0NOBODY")
    assert stranger["status"] == 403 and "not an approver" in stranger["body"]
    own = click("U0DANA")  # dana submitted the workflow
    assert own["status"] == 403 and "may not approve it" in own["body"]
    assert votes() == [] and state.run_status(wid) == "awaiting_approval"

    first = click("U0LEE")
    assert first["status"] == 200 and "1 of 2" in first["body"], first
    replayed = httpx.post(url, content=first["sent"]["body"].encode(), headers=first["sent"]["headers"])
    assert replayed.status_code == 409 and "replayed" in replayed.text
    twice = click("U0LEE")  # a fresh click by the same person: one approver counts once
    assert twice["status"] == 409 and "already" in twice["body"]
    assert votes() == ["lee"] and state.run_status(wid) == "awaiting_approval"

    second = click("U0SAM")
    assert second["status"] == 200 and "resumes" in second["body"], second
    _until(api, f"/v1/workflows/{wid}", api_tokens.create("reader2", "operate", actor="test"),
           lambda b: b["status"] == "succeeded")
    message = next(m for m in sandbox_client.state("slack")["messages"] if m["ts"] == posted.result["ts"])
    assert message["text"].startswith("Approved by <@U0SAM> (sam)") and "blocks" not in message
    assert _actors(f"approval:{approval_id}")["approve"] == "sam"

    # Deny from Slack: the workflow rolls back, the message says who denied.
    w2 = submit_workflow(GATED, created_by="dana").id
    _until(api, f"/v1/workflows/{w2}", api_tokens.create("reader3", "operate", actor="test"),
           lambda b: b["status"] == "awaiting_approval")
    a2 = state.approvals(workflow_id=w2)[0]["id"]
    p2 = _slack_post(a2)
    no = sandbox_client.click(url, channel=p2.result["channel"], ts=p2.result["ts"], user_id="U0LEE",
                              action_id="opsq_deny", signing_secret=SECRET)
    assert no["status"] == 200 and "Denied by <@U0LEE> (lee)" in no["body"], no
    assert state.approvals(status=None, workflow_id=w2)[0]["status"] == "denied"
    message = next(m for m in sandbox_client.state("slack")["messages"] if m["ts"] == p2.result["ts"])
    assert message["text"].startswith("Denied by <@U0LEE> (lee)")


def test_self_approval_is_refused_across_channels_by_the_tokens_owner(opsq_env_sqlite, workers_started, sandbox,
                                                                      sandbox_client, api_started):
    """A token acts for its owner: what dana submits through her token she may not approve in Slack, on the CLI or
    through another token of hers, and what she submits on the CLI her token may not approve; another person's
    token may. Under `required: 2`, dana's Slack approval and her token's count as one person. The audit trail
    still names the token."""
    env = opsq_env_sqlite(OPSQ_SLACK_SIGNING_SECRET=SECRET, OPSQ_APPROVAL_SLACK_CHANNEL="#approvals",
                          OPSQ_SLACK_APPROVERS=json.dumps({"U0DANA": "dana", "U0LEE": "lee"}))
    created = opsq(env, "api", "token", "create", "dana-bot", "--role", "admin", "--owner", "dana")
    assert created.returncode == 0, created.stderr
    dana_bot = created.stdout.strip()
    dana_other = api_tokens.create("dana-approver", "approve", owner="dana", actor="test")
    lee_bot = api_tokens.create("lee-bot", "approve", owner="lee", actor="test")
    listed = opsq(env, "api", "token", "list")
    assert listed.returncode == 0 and "OWNER" in listed.stdout.splitlines()[0]
    assert next(line for line in listed.stdout.splitlines() if line.startswith("dana-bot")).split()[2] == "dana"
    workers_started(env, queues="noop,slack,control")
    api = api_started(env)
    url = f"{api.url}/slack/interactions"

    def gate_of(wid: str) -> tuple[str, Any]:
        _until(api, f"/v1/workflows/{wid}", lee_bot, lambda b: b["status"] == "awaiting_approval")
        approval_id = state.approvals(workflow_id=wid)[0]["id"]
        return approval_id, _slack_post(approval_id)

    def click(posted: Any, user: str) -> dict[str, Any]:
        return sandbox_client.click(url, channel=posted.result["channel"], ts=posted.result["ts"], user_id=user,
                                    signing_secret=SECRET)

    # Submitted over the API by dana's token.
    wid = api.call("POST", "/v1/workflows", dana_bot, json={"spec": GATED}).json()["id"]
    assert state.get_run_row(wid)["created_by"] == "api:dana-bot"
    approval_id, posted = gate_of(wid)
    in_slack = click(posted, "U0DANA")
    assert in_slack["status"] == 403, in_slack
    assert f"dana submitted workflow {wid} (as api:dana-bot) and may not approve it" in in_slack["body"]
    on_cli = opsq(env, "approvals", "approve", approval_id, "--actor", "dana")
    assert on_cli.returncode == 1 and "Traceback" not in on_cli.stderr
    assert on_cli.stderr.startswith(f"error: dana submitted workflow {wid} (as api:dana-bot) and may not approve")
    other_token = api.call("POST", f"/v1/approvals/{approval_id}/approve", dana_other)
    assert other_token.status_code == 403, other_token.text
    assert other_token.json()["error"].startswith(f"api:dana-approver acts for dana, who submitted workflow {wid} "
                                                  "(as api:dana-bot), and may not approve it")
    assert state.approvals(workflow_id=wid)[0]["status"] == "pending" and state.run_status(wid) == \
        "awaiting_approval"
    ok = api.call("POST", f"/v1/approvals/{approval_id}/approve", lee_bot)  # another person's token
    assert ok.status_code == 200, ok.text
    _until(api, f"/v1/workflows/{wid}", lee_bot, lambda b: b["status"] == "succeeded")
    assert _actors(f"approval:{approval_id}")["approve"] == "api:lee-bot"

    # Submitted on the CLI by dana: her token may not approve it, lee in Slack may.
    w2 = submit_workflow(GATED, created_by="dana").id
    a2, p2 = gate_of(w2)
    mine = api.call("POST", f"/v1/approvals/{a2}/approve", dana_bot)
    assert mine.status_code == 403, mine.text
    assert mine.json()["error"].startswith(f"api:dana-bot acts for dana, who submitted workflow {w2}, and may not")
    lee = click(p2, "U0LEE")
    assert lee["status"] == 200 and "resumes" in lee["body"], lee
    _until(api, f"/v1/workflows/{w2}", lee_bot, lambda b: b["status"] == "succeeded")

    # Two approvals needed: dana in Slack, then her token, is one person.
    two = {"name": "two-people", "steps": [{**SLACK_GATE["steps"][0], "approval": {
        "approvers": ["dana", "lee", "api:dana-bot", "api:lee-bot"], "required": 2}}]}
    w3 = submit_workflow(two, created_by="ops").id
    a3, p3 = gate_of(w3)
    first = click(p3, "U0DANA")
    assert first["status"] == 200 and "1 of 2" in first["body"], first
    again = api.call("POST", f"/v1/approvals/{a3}/approve", dana_bot)
    assert again.status_code == 409, again.text
    assert again.json()["error"].startswith(f"dana has approved approval {a3} already (as dana)")
    assert state.approvals(workflow_id=w3)[0]["approved_by"] == ["dana"] and state.run_status(w3) == \
        "awaiting_approval"
    second = api.call("POST", f"/v1/approvals/{a3}/approve", lee_bot)
    assert second.status_code == 200 and second.json()["result"].endswith("resumes"), second.text
