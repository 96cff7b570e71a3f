"""`opsq dev` on a fresh machine: no setting at all, so the embedded Redis and SQLite; the sandbox's default
port taken, so a free one, said so; what it prints is enough for a second shell to get an action through;
SIGTERM (a supervisor, `kill`) stops it and every process it started, the embedded Redis included."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Background, descendants
from workers.dev import stack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def default_port_taken() -> Iterator[None]:
    """The sandbox's default port held by someone else (this test, or whoever holds it already)."""
    with socket.socket() as s:
        with contextlib.suppress(OSError):  # taken already: just as good
            s.bind(("127.0.0.1", stack.SANDBOX_PORT))
            s.listen()
        yield


def test_dev_on_embedded_defaults_moves_off_a_taken_port_and_stops_everything_on_sigterm(tmp_path,
                                                                                         default_port_taken):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    dev = Background(subprocess.Popen([sys.executable, "-m", "workers.cli.main", "dev"], env=env, cwd=ROOT,
                                      text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    processes: dict[int, str] = {}
    try:
        out = "".join(dev.until("Ctrl-C stops"))
        assert re.search(rf"^note: port {stack.SANDBOX_PORT} is taken: the sandbox listens on \d+ instead$", out,
                         re.MULTILINE), out
        exports = dict(re.findall(r"^ +export (OPSQ_\w+)=(\S+)$", out, re.MULTILINE))
        assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", exports["OPSQ_REDIS_URL"]), out  # the embedded one
        assert exports["OPSQ_DATABASE_URL"] == f"sqlite:///{tmp_path / '.opsqueue' / 'opsqueue.db'}"
        assert "embedded Redis" in out
        processes = descendants(dev.process.pid)
        assert any("redis-server" in Path(f"/proc/{pid}/cmdline").read_text() for pid in processes), processes

        # A second shell with those settings only (a home of its own: nothing found by chance).
        other = {k: v for k, v in env.items() if k != "HOME"} | {"HOME": str(tmp_path / "other")} | exports
        sent = subprocess.run([sys.executable, "-m", "workers.cli.main", "submit", "trello", "create_card",
                               "-p", "list_id=5f1e0a9c3b2d4e6f7a8b9c0d", "-p", "name=hello", "--wait"],
                              env=other, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0 and re.search(r"^status\s+succeeded", sent.stdout, re.MULTILINE), \
            sent.stdout + sent.stderr
    finally:
        dev.stop_leaving_nothing(signal.SIGTERM, processes)
