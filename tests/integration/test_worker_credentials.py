"""`opsq test-auth --workers` (issue 16, item 3): the running workers say which credentials they hold, as
fingerprints, and a worker started without the token this shell has (or with another one) shows as stale.
Real worker subprocesses, the real CLI, Celery's remote control over the real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from executors.registry import PLATFORMS
from tests.integration.opsq_cli import opsq
from tests.support.worker import WorkerProcess
from workers.credential_fingerprints import fingerprint
from workers.ops.worker_auth import ask_workers

pytestmark = pytest.mark.integration

QUEUES = "slack,notion,trello,control"


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
    # `STATUS  NAME  DETAIL`, NAME the worker's node name, or the node name and a platform.
    lines = {" ".join(ln.split()[1:3] if ln.split()[2] in PLATFORMS else ln.split()[1:2]): ln
             for ln in out.stdout.splitlines()}
    assert lines[node].startswith("OK") and "consumes slack, notion, trello" in lines[node], out.stdout
    slack = lines[f"{node} slack"]
    assert slack.startswith("FAIL") and "no token, this shell has one" in slack and "stale worker" in slack
    assert fingerprint("xoxb-shell-token-0123456789") in slack
    notion = lines[f"{node} notion"]
    assert notion.startswith("FAIL") and "differs from this shell's" in notion
    assert fingerprint("secret_old_notion_17") in notion and fingerprint("secret_new_notion_42") in notion
    trello = lines[f"{node} trello"]  # token and API key, both as in this shell
    assert trello.startswith("OK") and trello.count("the same as this shell's") == 2, trello
    assert not [k for k in lines if k.endswith((" gdrive", " gsheets"))]  # queues it does not consume: no line

    shown = json.loads(opsq(env, "test-auth", "--workers", "slack", "--json").stdout)
    assert [(c["name"], c["status"]) for c in shown] == [(node, "ok"), (f"{node} slack", "fail")]

    # The token is in no reply, no output, no log line of the worker's.
    replies = json.dumps(ask_workers(timeout=2.0))
    for secret in ("xoxb-shell-token-0123456789", "secret_old_notion_17", "secret_new_notion_42",
                   env["OPSQ_TRELLO_TOKEN"], env["OPSQ_TRELLO_API_KEY"]):
        assert secret not in replies and secret not in out.stdout + out.stderr
        assert secret not in worker.log_path.read_text(errors="replace")
    assert "opsq_credentials" in worker.log_path.read_text(errors="replace")  # it did log the requests it answered


def test_a_worker_with_the_shells_tokens_is_ok(opsq_env_sqlite, workers_started):
    env = opsq_env_sqlite()
    worker = workers_started(env, queues=QUEUES)
    out = opsq(env, "test-auth", "--workers")
    assert out.returncode == 0, out.stdout + out.stderr
    assert [ln.split()[0] for ln in out.stdout.splitlines()] == ["OK"] * 4, out.stdout  # the worker, 3 platforms
    assert f"{worker.name} slack" in out.stdout and fingerprint(env["OPSQ_SLACK_TOKEN"]) in out.stdout


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
