"""`opsq api` as a real process on a free port, called over real HTTP (httpx)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import free_port
from tests.support.wait import wait_for
from tests.support.worker import ROOT


class ApiServer:
    def __init__(self, env: dict[str, str], log_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log_dir / f"api-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.cli.main", "api", "--port", str(self.port),
                                      *args], env=env, cwd=ROOT, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        wait_for(self._answers, timeout=30, what="the API answering")

    def _answers(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        try:
            self.http.get("/v1/health", timeout=2)
        except httpx.HTTPError:
            return False
        return True

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, path, headers=headers, **kw)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(10)
