"""A replicated Redis behind Redis Sentinel that a test owns: a master, a replica and three Sentinels, each
a real redis-server process on a free port with its own directory. The master can be SIGKILLed and the
Sentinels fail over to the replica, as in production; the machine's shared Redis is never touched."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.support.redis_server import free_port

MASTER_NAME = "opsq-ha"


class Server:
    def __init__(self, name: str, directory: Path, args: list[str], password: str | None) -> None:
        self.name = name
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = args
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5,
                           socket_connect_timeout=2, **kw)

    def start(self, binary: str, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen([binary, *self.args], cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} on {self.port} did not start:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets and answers nothing (a replica that falls behind)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class SentinelCluster:
    """`password` is the master's and the replica's (requirepass and masterauth); `sentinel_password` the
    Sentinels' own (their requirepass)."""

    def __init__(self, directory: Path, *, password: str | None = None, sentinel_password: str | None = None,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 5000, replicas: int = 1) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: the Sentinel tests need the real binary")
        self.binary = binary
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        # No delay before a diskless full sync: a replica re-pointed after a failover is in sync in moments.
        data = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--logfile", "server.log",
                "--repl-diskless-sync-delay", "0", *auth]
        self.master = Server("master", directory / "master", [], password)
        self.master.args = ["--port", str(self.master.port), *data]
        self.replicas: list[Server] = []
        for i in range(replicas):
            r = Server(f"replica{i}", directory / f"replica{i}", [], password)
            r.args = ["--port", str(r.port), *data, "--replicaof", "127.0.0.1", str(self.master.port)]
            self.replicas.append(r)
        self.replica = self.replicas[0]
        self.sentinels: list[Server] = []
        for i in range(3):
            s = Server(f"sentinel{i}", directory / f"sentinel{i}", [], sentinel_password)
            conf = s.dir / "sentinel.conf"  # Sentinel rewrites it: its own file, writable
            lines = [f"port {s.port}", "bind 127.0.0.1", f"dir {s.dir}", "logfile server.log",
                     f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
                     f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
                     f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
                     f"sentinel parallel-syncs {MASTER_NAME} 1"]
            if password:
                lines.append(f"sentinel auth-pass {MASTER_NAME} {password}")
            if sentinel_password:
                lines.append(f"requirepass {sentinel_password}")
            conf.write_text("\n".join(lines) + "\n")
            s.args = [str(conf), "--sentinel"]
            self.sentinels.append(s)

    @property
    def url(self) -> str:
        """The sentinel:// URL (no password in it: the tests pass it as OPSQ_REDIS_PASSWORD)."""
        return ";".join(f"sentinel://127.0.0.1:{s.port}/0" for s in self.sentinels)

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        for server in (self.master, *self.replicas, *self.sentinels):
            server.start(self.binary)
        # Ready when every Sentinel knows the replica and the two other Sentinels: only then can they agree
        # on a failover (quorum 2).
        deadline = time.monotonic() + timeout
        while True:
            views = [self.sentinel_view(s) for s in self.sentinels]
            if (all(v and int(v["num-slaves"]) >= len(self.replicas) and int(v["num-other-sentinels"]) >= 2
                    for v in views)
                    and all(r.client().info("replication").get("master_link_status") == "up" for r in self.replicas)):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinels did not see the replica and each other: {views}")
            time.sleep(0.1)

    def sentinel_view(self, sentinel: Server) -> dict[str, Any] | None:
        try:
            view = sentinel.client().sentinel_master(MASTER_NAME)
        except redis.RedisError:
            return None
        return view if isinstance(view, dict) else None

    def master_address(self) -> tuple[str, int] | None:
        """The master as a majority of the Sentinels name it now (None while they disagree or cannot say)."""
        named = []
        for s in self.sentinels:
            try:
                addr = s.client().sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if addr:
                host = addr[0].decode() if isinstance(addr[0], bytes) else str(addr[0])
                named.append((host, int(addr[1])))
        for addr in set(named):
            if named.count(addr) >= 2:
                return addr
        return None

    def promoted(self) -> Server | None:
        """The replica a majority of the Sentinels now name master, if any."""
        addr = self.master_address()
        return next((r for r in self.replicas if addr == ("127.0.0.1", r.port)), None)

    def stop(self) -> None:
        for server in (*self.sentinels, *self.replicas, self.master):
            server.kill()
