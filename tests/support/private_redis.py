"""A redis-server a test starts for itself on a free port (never the machine's shared Redis): for the
faults that must not touch anyone else's data (a full Redis, a password, a server that is stopped)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support.redis_server import free_port


class PrivateRedis:
    """`extra` are redis-server arguments (`--maxmemory 2mb`, `--requirepass x`). No persistence: what it holds
    dies with it."""

    def __init__(self, directory: Path, *extra: str, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: this test needs the real binary")
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.extra = list(extra) + (["--requirepass", password] if password else [])
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, password: str | None = None, db: int = 0) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5,
                           socket_connect_timeout=2)

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log"), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.dir / "redis.log"
                raise RuntimeError(f"redis-server on {self.port} did not start: "
                                   f"{log.read_text(errors='replace')[-2000:] if log.exists() else ''}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
