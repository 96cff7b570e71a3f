"""`opsq api` as a real process on a free port, called over real HTTP (httpx)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support.served import Served


class ApiServer(Served):
    def __init__(self, env: dict[str, str], log_dir: Path, *args: str) -> None:
        super().__init__("api", "/v1/health", env, log_dir, *args)

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, path, headers=headers, **kw)
