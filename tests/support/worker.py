"""Real Celery worker processes for the integration tests, in their own process group (SIGKILL-able)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(self, env: dict[str, str], queues: str, concurrency: int = 2, log_dir: Path | None = None,
                 name: str | None = None, pool: str = "prefork", app: str = "workers.celery_app") -> None:
        self.name = name or f"w{uuid.uuid4().hex[:6]}@testhost"
        self.log_path = (log_dir or Path("/tmp")) / f"worker-{self.name.split('@')[0]}.log"
        self.env = env
        self.cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues,
                    "-c", str(concurrency), "-P", pool, "-n", self.name, "-l", "INFO",
                    "--without-gossip", "--without-mingle"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if b" ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once: no chance to ack or requeue anything."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._close()

    def _close(self) -> None:
        log = getattr(self, "_log", None)
        if log and not log.closed:
            log.close()


def start_beat(env: dict[str, str], log_path: Path, app: str | None = None) -> subprocess.Popen[bytes]:
    """`opsq beat` as a process in its own group (SIGKILL-able with os.killpg), its output in `log_path`. With
    `app` (tests.support.fault_app), the same scheduler on that Celery app."""
    cmd = ([sys.executable, "-m", "celery", "-A", app, "beat", "-S", "beat.scheduler:LeaderScheduler"] if app
           else [sys.executable, "-m", "workers.cli.main", "beat"])
    log = open(log_path, "wb")  # noqa: SIM115 - the process owns it until the test ends
    return subprocess.Popen([*cmd, "-l", "INFO"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_beat(beat: subprocess.Popen[bytes]) -> None:
    if beat.poll() is None:
        beat.terminate()
        try:
            beat.wait(15)
        except subprocess.TimeoutExpired:
            beat.kill()
            beat.wait(5)
