"""`opsq test-auth --workers` (issue 16, item 3): the running workers say which credentials they hold, as
fingerprints keyed by a nonce sent with each question, and a worker started without the token this shell has (or
with another one) shows as stale. Real worker subprocesses, the real CLI, Celery's remote control over the real
Redis."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator

import pytest

from executors.registry import PLATFORMS
from tests.integration.opsq_cli import opsq
from tests.support.worker import WorkerProcess
from workers.credential_fingerprints import fingerprint, new_nonce
from workers.ops.worker_auth import ask_workers

pytestmark = pytest.mark.integration

QUEUES = "slack,notion,trello,control"
DIFFERS = re.compile(r"token ([0-9a-f]{8}) differs from this shell's \(([0-9a-f]{8})\)")


def _by_name(stdout: str) -> dict[str, str]:
    """`STATUS  NAME  DETAIL` lines by NAME: a worker's node name, or the node name and a platform."""
    return {" ".join(ln.split()[1:3] if ln.split()[2] in PLATFORMS else ln.split()[1:2]): ln
            for ln in stdout.splitlines()}


@pytest.fixture
def debug_worker(tmp_path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    """A worker logging at DEBUG (Celery's remote-control traffic included): nothing it logs may hold a token."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess(env, QUEUES, log_dir=tmp_path)
        worker.cmd[worker.cmd.index("-l") + 1] = "DEBUG"
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.kill()


def test_a_worker_started_without_the_token_is_flagged_stale(opsq_env_sqlite, debug_worker):
    env = opsq_env_sqlite(OPSQ_SLACK_TOKEN="xoxb-shell-token-0123456789", OPSQ_NOTION_TOKEN="secret_new_notion_42")
    stale_env = {k: v for k, v in env.items() if k != "OPSQ_SLACK_TOKEN"}
    stale_env["OPSQ_NOTION_TOKEN"] = "secret_old_notion_17"  # rotated since the worker started
    worker = debug_worker(stale_env)

    out = opsq(env, "test-auth", "--workers")
    assert out.returncode == 1, out.stdout + out.stderr
    node = worker.name
    lines = _by_name(out.stdout)
    assert lines[node].startswith("OK") and "consumes slack, notion, trello" in lines[node], out.stdout
    slack = lines[f"{node} slack"]
    assert slack.startswith("FAIL") and "no token, this shell has one (" in slack and "stale worker" in slack
    notion = lines[f"{node} notion"]
    assert notion.startswith("FAIL") and "differs from this shell's" in notion
    match = DIFFERS.search(notion)
    assert match is not None and match[1] != match[2], notion
    # Keyed by this run's nonce: no plain SHA-256 of a token in the output, and the next run shows other
    # fingerprints for the same tokens (a pasted output cannot be checked against guesses).
    for token in ("xoxb-shell-token-0123456789", "secret_old_notion_17", "secret_new_notion_42"):
        assert hashlib.sha256(token.encode()).hexdigest()[:8] not in out.stdout
    again = _by_name(opsq(env, "test-auth", "--workers").stdout)
    second = DIFFERS.search(again[f"{node} notion"])
    assert second is not None and second.groups() != match.groups(), again
    trello = lines[f"{node} trello"]  # token and API key, both as in this shell
    assert trello.startswith("OK") and trello.count("the same as this shell's") == 2, trello
    assert not [k for k in lines if k.endswith((" gdrive", " gsheets"))]  # queues it does not consume: no line

    shown = json.loads(opsq(env, "test-auth", "--workers", "slack", "--json").stdout)
    assert [(c["name"], c["status"]) for c in shown] == [(node, "ok"), (f"{node} slack", "fail")]

    # The token is in no reply, no output, no log line of the worker's.
    nonce = new_nonce()
    replies = json.dumps(ask_workers(nonce, timeout=2.0))
    for secret in ("xoxb-shell-token-0123456789", "secret_old_notion_17", "secret_new_notion_42",
                   env["OPSQ_TRELLO_TOKEN"], env["OPSQ_TRELLO_API_KEY"]):
        assert secret not in replies and secret not in out.stdout + out.stderr
        assert secret not in worker.log_path.read_text(errors="replace")
    log = worker.log_path.read_text(errors="replace")
    assert "opsq_credentials" in log  # it did log the requests it answered...
    # ...but not the nonce: with it a pasted fingerprint could be tested against guesses. kombu logs each request
    # with its arguments at DEBUG: the nonce's is there, scrubbed.
    assert nonce not in log and nonce not in replies
    assert "secret_nonce='[redacted]'" in log, log[-3000:]


def test_a_worker_with_the_shells_tokens_is_ok(opsq_env_sqlite, workers_started):
    env = opsq_env_sqlite()
    worker = workers_started(env, queues=QUEUES)
    out = opsq(env, "test-auth", "--workers")
    assert out.returncode == 0, out.stdout + out.stderr
    assert [ln.split()[0] for ln in out.stdout.splitlines()] == ["OK"] * 4, out.stdout  # the worker, 3 platforms
    assert f"{worker.name} slack" in out.stdout and "the same as this shell's" in out.stdout
    assert fingerprint("0" * 32, env["OPSQ_SLACK_TOKEN"]) not in out.stdout  # keyed by a nonce of its own


def test_no_worker_answering_is_one_line_and_fails(opsq_env_sqlite):
    env = opsq_env_sqlite()
    out = opsq(env, "test-auth", "--workers", "--timeout", "0.5")
    assert out.returncode == 1
    assert out.stdout.strip().count("\n") == 0 and "no worker answered within 0.5 s" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr


def test_an_unknown_platform_is_one_error_line(opsq_env_sqlite):
    out = opsq(opsq_env_sqlite(), "test-auth", "--workers", "nosuch")
    assert out.returncode == 1 and out.stderr.startswith("error: unknown platform 'nosuch'"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_human_chosen_secrets_are_fingerprinted_and_unused_platforms_skipped(opsq_env_sqlite, workers_started):
    """The proxy (its URL holds a password) and the webhook signing keys: fingerprinted under the nonce like a token,
    what may be shown of them beside; a worker holding the signing key from before a rotation is stale. A platform
    not in OPSQ_PLATFORMS is one line, not compared."""
    env = opsq_env_sqlite(OPSQ_PLATFORMS="slack,webhook", OPSQ_WEBHOOK_PROXY="http://ops:hunter2pw@proxy.corp:3128",
                          OPSQ_WEBHOOK_SECRETS='{"https://a.example": "letmein-a", "https://b.example": "letmein-b"}',
                          OPSQ_WEBHOOK_SECRET="whsec-old-key-1")
    worker = workers_started(env, queues="slack,notion,webhook,control")
    out = opsq(env, "test-auth", "--workers")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = _by_name(out.stdout)
    for platform in ("notion", "trello", "gdrive", "gsheets"):
        assert lines[platform].startswith("OK") and "not used (not in OPSQ_PLATFORMS)" in lines[platform], out.stdout
    assert "consumes slack, webhook" in lines[worker.name] and f"{worker.name} notion" not in lines
    webhook = lines[f"{worker.name} webhook"]
    assert webhook.startswith("OK"), webhook
    assert re.search(r"proxy [0-9a-f]{8} \(proxy.corp:3128, password set\), the same as this shell's", webhook)
    assert re.search(r"secrets [0-9a-f]{8} \(set for 2 destinations\), the same as this shell's", webhook)
    assert re.search(r"secret [0-9a-f]{8} \(set\), the same as this shell's", webhook), webhook

    # The signing key rotated in this shell, not in the worker: "set" on both sides, yet the worker is stale.
    rotated = opsq({**env, "OPSQ_WEBHOOK_SECRET": "whsec-new-key-2"}, "test-auth", "--workers")
    assert rotated.returncode == 1, rotated.stdout
    webhook = _by_name(rotated.stdout)[f"{worker.name} webhook"]
    assert webhook.startswith("FAIL") and "stale worker" in webhook, webhook
    assert re.search(r"secret [0-9a-f]{8} \(set\) differs from this shell's \([0-9a-f]{8} \(set\)\)", webhook)
    # The proxy's password changed (same host:port): stale too.
    moved = opsq({**env, "OPSQ_WEBHOOK_PROXY": "http://ops:hunter3pw@proxy.corp:3128"}, "test-auth", "--workers")
    assert moved.returncode == 1, moved.stdout
    webhook = _by_name(moved.stdout)[f"{worker.name} webhook"]
    assert webhook.startswith("FAIL"), webhook
    assert re.search(r"proxy [0-9a-f]{8} \(proxy.corp:3128, password set\) differs from this shell's", webhook)

    nonce = new_nonce()
    reply = ask_workers(nonce, timeout=2.0)[worker.name]
    assert reply["platforms"]["webhook"]["credentials"]["secret"] == fingerprint(nonce, "whsec-old-key-1")
    text = json.dumps(reply)
    for secret in ("hunter2pw", "letmein-a", "letmein-b", "whsec-old-key-1"):
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest()[:8] not in text
        assert secret not in out.stdout + rotated.stdout + moved.stdout
