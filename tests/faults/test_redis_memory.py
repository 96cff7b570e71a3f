"""Redis memory and health (issue 10, item 6), against redis-servers the tests start themselves: one filled
to its maxmemory (noeviction), one with an evicting policy, one with a password, one stopped. `opsq health`
names the real problem (not the workers), the redis_memory alert fires, and a submit says why it failed in
one line: out of memory, credentials refused, connection refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from tests.integration.opsq_cli import opsq
from tests.support.redis_server import OwnedRedis
from tests.support.wait import wait_for
from tests.support.worker import ROOT

pytestmark = pytest.mark.integration


def _fill(client: redis.Redis, up_to: float | None = None) -> int:
    """SET values until Redis refuses even a small one: full, as a broker with a backlog gets (or, with `up_to`,
    until it uses that share of its maxmemory). Large values first, then small ones for the last of the room:
    a Redis that refused one large SET still takes smaller writes, and once the filler's buffers are freed it
    reads below the line at which opsq calls it full (at a 2 MiB maxmemory a refused 1 KiB SET left it at 97 %,
    taking writes again: whether beat saw it full depended on when it looked)."""
    limit = int(client.config_get("maxmemory")["maxmemory"])
    assert limit > 0, "Redis never fills up: is maxmemory set?"
    n = 0
    for size in (65536, 1024, 32):
        try:
            while up_to is None or int(client.info("memory")["used_memory"]) < up_to * limit:
                client.set(f"fill:{n}", b"x" * size)
                n += 1
        except redis.exceptions.OutOfMemoryError:
            continue
        return n
    return n


def _checks(env: dict[str, str]) -> tuple[int, dict[str, dict[str, str]]]:
    out = opsq(env, "health", "--json")
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, {c["name"]: c for c in json.loads(out.stdout)}


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def full_redis(tmp_path):
    # Large enough that one client's buffers (tens of KiB, allocated and freed as clients come and go) stay
    # well inside the 2 % below maxmemory that opsq still counts as full.
    server = OwnedRedis(tmp_path / "full", "--maxmemory", "16mb", "--maxmemory-policy", "noeviction").start()
    yield server
    server.stop()


def test_a_full_redis_is_named_by_health_the_alert_and_the_submit(opsq_env_sqlite, full_redis, tmp_path):
    env = {**opsq_env_sqlite(), "OPSQ_REDIS_URL": full_redis.url()}
    assert opsq(env, "db", "upgrade").returncode == 0
    assert _fill(full_redis.client()) > 0

    code, checks = _checks(env)
    assert code != 0
    memory = checks["redis memory"]
    assert memory["status"] == "fail" and memory["detail"].startswith("Redis is out of memory")
    assert "maxmemory 16.0 MiB" in memory["detail"] and "noeviction" in memory["detail"]
    assert checks["redis"]["status"] == "ok"  # it answers: it is full, not down
    assert checks["workers"]["status"] != "fail" and "out of memory" in checks["workers"]["detail"]
    text = opsq(env, "health")
    assert text.returncode != 0 and "Redis is out of memory" in text.stdout

    job = opsq(env, "maintenance", "run", "evaluate_alerts")
    assert job.returncode == 0, job.stderr
    alerts = json.loads(opsq(env, "alerts", "list", "--json").stdout)
    (alert,) = [a for a in alerts if a["kind"] == "redis_memory"]
    assert alert["state"] == "firing" and alert["severity"] == "critical"
    assert "Redis is out of memory" in alert["message"]

    refused = opsq(env, "submit", "noop", "noop", "-p", "echo=1")
    assert refused.returncode != 0
    line = _one_line(refused.stderr)
    assert "Redis is out of memory (maxmemory 16.00M" in line and "nothing was queued" in line
    assert "is Redis up" not in line
    assert json.loads(opsq(env, "action", "list", "--json").stdout) == []
    assert json.loads(opsq(env, "audit", "list", "--action", "submit", "--json").stdout) == []
    # Every command that writes to Redis says the same, in one line (not "cannot reach Redis").
    for write in (("queue", "pause", "noop"), ("circuit", "open", "noop", "--reason", "drill")):
        out = opsq(env, *write)
        assert out.returncode != 0 and "Redis is out of memory" in _one_line(out.stderr), (write, out.stderr)
    assert json.loads(opsq(env, "audit", "list", "--json").stdout) == []  # refused: nothing recorded
    spec = tmp_path / "wf.yaml"
    spec.write_text("name: full\nsteps:\n  - id: a\n    platform: noop\n    action: noop\n")
    wf = opsq(env, "workflow", "run", str(spec))
    assert wf.returncode != 0
    line = _one_line(wf.stderr)
    assert "could not enqueue the workflow: Redis is out of memory" in line and "nothing was queued" in line
    assert json.loads(opsq(env, "workflow", "list", "--json").stdout) == []
    trail = [e["action"] for e in json.loads(opsq(env, "audit", "list", "--json").stdout)]
    assert trail == ["workflow_submit", "workflow_submit_withdrawn"]  # recorded with its record, then withdrawn

    # Room again: health says so and the alert clears.
    full_redis.client().flushdb()
    code, checks = _checks(env)
    assert checks["redis memory"]["status"] == "ok"
    assert opsq(env, "maintenance", "run", "evaluate_alerts").returncode == 0
    assert not [a for a in json.loads(opsq(env, "alerts", "list", "--json").stdout) if a["kind"] == "redis_memory"]
    alerts = json.loads(opsq(env, "alerts", "list", "--all", "--json").stdout)
    assert [a["state"] for a in alerts if a["kind"] == "redis_memory"] == ["cleared"]


def test_an_evicting_policy_is_flagged_before_anything_is_lost(opsq_env_sqlite, tmp_path):
    server = OwnedRedis(tmp_path / "lru", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru").start()
    try:
        env = {**opsq_env_sqlite(), "OPSQ_REDIS_URL": server.url()}
        code, checks = _checks(env)
        assert code != 0
        memory = checks["redis memory"]
        assert memory["status"] == "fail"
        assert "allkeys-lru" in memory["detail"] and "noeviction" in memory["detail"]
    finally:
        server.stop()


def test_a_password_refused_is_named(opsq_env_sqlite, tmp_path):
    server = OwnedRedis(tmp_path / "auth", password="right-password").start()
    try:
        base = opsq_env_sqlite()
        for url in (server.url(), server.url("wrong-password")):
            env = {**base, "OPSQ_REDIS_URL": url}
            refused = opsq(env, "submit", "noop", "noop")
            assert refused.returncode != 0
            line = _one_line(refused.stderr)
            assert "Redis refused the credentials" in line and "OPSQ_REDIS_URL" in line
            assert "right-password" not in line
            code, checks = _checks(env)
            assert code != 0 and "refused the credentials" in checks["redis"]["detail"]
        ok = {**base, "OPSQ_REDIS_URL": server.url("right-password")}
        _, checks = _checks(ok)
        assert checks["redis"]["status"] == "ok" and checks["redis memory"]["status"] == "ok"
    finally:
        server.stop()


def test_a_stopped_redis_is_named_as_refusing_the_connection(opsq_env_sqlite, tmp_path):
    server = OwnedRedis(tmp_path / "gone").start()
    server.stop()
    env = {**opsq_env_sqlite(), "OPSQ_REDIS_URL": server.url()}
    refused = opsq(env, "submit", "noop", "noop")
    assert refused.returncode != 0
    assert "Redis refused the connection" in _one_line(refused.stderr)
    code, checks = _checks(env)
    assert code != 0 and "refused the connection" in checks["redis"]["detail"]


def test_beat_raises_the_memory_alert_itself_when_redis_is_full(opsq_env_sqlite, full_redis, tmp_path):
    """Full, Redis refuses beat's lock and every task it would send, evaluate_alerts included: beat raises the
    redis_memory alert straight into the database, and stays up. Filling up, the alert is high first and then
    the same alert turns critical (it stayed high when beat remembered only which alerts held)."""
    env = {**opsq_env_sqlite(), "OPSQ_REDIS_URL": full_redis.url(), "OPSQ_BEAT_MEMORY_CHECK_S": "2"}
    assert opsq(env, "db", "upgrade").returncode == 0
    log_path = tmp_path / "beat.log"

    def redis_memory_alerts(*flags: str) -> list[dict[str, str]]:
        return [a for a in json.loads(opsq(env, "alerts", "list", *flags, "--json").stdout)
                if a["kind"] == "redis_memory"]

    with open(log_path, "wb") as log:
        beat = subprocess.Popen([sys.executable, "-m", "workers.cli.main", "beat", "-l", "INFO"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: b"now the leader" in log_path.read_bytes(), timeout=20, what="beat leading")
            assert _fill(full_redis.client(), up_to=0.9) > 0
            # Beat looks every OPSQ_BEAT_MEMORY_CHECK_S (2 s here, 15 by default).
            wait_for(lambda: b"alert redis_memory raised (high)" in log_path.read_bytes(), timeout=45,
                     what="beat raising the alert as high")
            (alert,) = redis_memory_alerts()
            assert alert["severity"] == "high" and "above OPSQ_REDIS_MEMORY_WARN_RATIO" in alert["message"]

            assert _fill(full_redis.client()) > 0
            wait_for(lambda: b"alert redis_memory raised (critical): Redis is out of memory" in log_path.read_bytes(),
                     timeout=45, what="beat raising the alert to critical")
            (alert,) = redis_memory_alerts()
            assert alert["state"] == "firing" and alert["severity"] == "critical"
            assert alert["message"].startswith("Redis is out of memory")
            assert len(redis_memory_alerts("--all")) == 1  # the same alert, updated: not a second one
            assert b"[ESCALATED to critical] Redis is out of memory" in log_path.read_bytes()  # notified again
            assert beat.poll() is None
        finally:
            beat.terminate()
            beat.wait(15)
