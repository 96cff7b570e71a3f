"""A Redis spoken to over TLS (`rediss://`): the broker (opsqueue's transport, so the quarantine holds), the
result backend and the guards' client all use the URL's TLS options, and the server's certificate is
checked unless the URL says otherwise. A redis-server with TLS and a throwaway CA, both the test's own."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import make_env
from tests.integration.opsq_cli import opsq
from tests.support.sentinel_cluster import free_port
from tests.support.wait import wait_for
from workers.broker_transport import QUARANTINED_COUNT_KEY

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None or shutil.which("redis-server") is None:
        pytest.skip("needs openssl and redis-server")
    d = tmp_path / "tls"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=opsq-test-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=d)
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
                             "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", "",
                             "--appendonly", "no", "--dir", str(d), "--logfile", "redis.log"],
                            cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(d / "ca.crt"), socket_timeout=5)
    try:
        wait_for(lambda: _pings(client), timeout=10, what="the TLS redis-server")
        yield port, d / "ca.crt"
    finally:
        proc.kill()
        proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        time.sleep(0.05)
        return False


def test_broker_backend_and_guards_over_tls(tls_redis, sandbox, sandbox_client, sqlite_url, workers_started):
    port, ca = tls_redis
    env = make_env(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", sqlite_url, sandbox.url)
    worker = workers_started(env, queues="noop", concurrency=1)
    assert worker.proc is not None

    done = opsq(env, "submit", "noop", "noop", "-p", "echo=over-tls", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    health = {c["name"]: c for c in json.loads(opsq(env, "health", "--json").stdout)}
    assert health["redis"]["status"] == "ok", health["redis"]

    # opsqueue's transport, not kombu's: an item that is not a message is quarantined and the worker goes on.
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca))
    client.lpush("noop", b"not a message, over TLS")
    wait_for(lambda: client.get(QUARANTINED_COUNT_KEY) == b"1", timeout=30, what="the item quarantined")
    assert worker.proc.poll() is None, worker.log()
    assert "Unrecoverable error" not in worker.log()

    # The certificate is checked: without the test's CA it is refused, by every client.
    untrusted = {**env, "OPSQ_REDIS_URL": f"rediss://127.0.0.1:{port}/0"}
    health = {c["name"]: c for c in json.loads(opsq(untrusted, "health", "--json").stdout)}
    assert health["redis"]["status"] == "fail" and "certificate verify failed" in health["redis"]["detail"]
    refused = opsq(untrusted, "submit", "noop", "noop")
    assert refused.returncode != 0 and "certificate verify failed" in refused.stderr, refused.stderr
