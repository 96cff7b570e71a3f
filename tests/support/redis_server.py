"""A redis-server the test owns (a free port, its own directory), never the machine's shared Redis: SIGKILL
it, restart it, with or without its AOF; fill it up, give it a password, stop it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kombu.pools
import redis

from workers.celery_app import app, celery_config
from workers.settings import get_settings, reload_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnedRedis:
    """`extra` are more redis-server arguments (`--maxmemory 2mb`, `--maxmemory-policy allkeys-lru`).
    `aof`: every write fsynced to an append-only file, so `restart()` brings back what it held (a broker
    restarted from its AOF); without it what it holds dies with it. `password`: the server requires it and
    `client()` gives it (`url()` only when asked, so a test can also present none or a wrong one)."""

    def __init__(self, directory: Path, *extra: str, aof: bool = False, port: int | None = None,
                 password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: this test needs the real binary")
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aof = aof
        self.password = password
        self.extra = [*extra, *(["--requirepass", password] if password else [])]
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, password: str | None = None, db: int = 0) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5,
                           socket_connect_timeout=2)

    def start(self, timeout: float = 10.0) -> OwnedRedis:
        log = self.dir / "redis.log"
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
               "--save", "", "--logfile", str(log)]
        cmd += ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        cmd += self.extra
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not start:\n"
                                   f"{log.read_text(errors='replace')[-2000:] if log.exists() else ''}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: nothing flushed beyond what the AOF already holds."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, *, empty: bool = False) -> OwnedRedis:
        """Back on the same port; `empty` throws its AOF away first (a Redis that lost everything)."""
        self.kill()
        if empty:
            for path in self.dir.iterdir():
                if path.name.startswith("appendonly") or path.name.endswith(".rdb"):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        return self.start()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it does not come: its port is closed afterwards."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def client_uses(url: str) -> Iterator[None]:
    """Points this process' client (settings, the Celery app's broker and result backend, the guards' client)
    at `url` for the duration, and back afterwards. The app is configured once per process; the worker
    processes a test starts read their own environment."""
    def point(to: str | None) -> None:
        if to is None:
            os.environ.pop("OPSQ_REDIS_URL", None)
        else:
            os.environ["OPSQ_REDIS_URL"] = to
        reload_settings()
        conf = celery_config(get_settings())
        app.conf.update({k: conf[k] for k in ("broker_url", "result_backend") if k in conf})
        kombu.pools.reset()  # kombu keeps its connection and producer pools per URL, process-wide
        app._pool = None
        app.amqp._producer_pool = None
        app._backend_cache = None
        app._local.__dict__.pop("backend", None)

    before = os.environ.get("OPSQ_REDIS_URL")
    point(url)
    try:
        yield
    finally:
        point(before)
