"""An `opsq` command that serves HTTP (`opsq api`, `opsq exporter`) as a real process on a free port: started,
waited for until it answers, its output kept in a log the failing assertion shows, stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.redis_server import free_port
from tests.support.wait import wait_for
from tests.support.worker import ROOT


class Served:
    def __init__(self, command: str, probe_path: str, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log_dir / f"{command}-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.cli.main", command, "--port", str(self.port),
                                      *args], env=env, cwd=ROOT, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self._probe_path = probe_path
        wait_for(self._answers, timeout=30, what=f"opsq {command} answering")

    def _answers(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        try:
            self.http.get(self._probe_path, timeout=2)  # any answer: it serves (a 503 health is still an answer)
        except httpx.HTTPError:
            return False
        return True

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(10)
