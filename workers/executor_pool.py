"""Per-process resources for the hot path: one HTTP client, one executor per platform."""

from __future__ import annotations

import os
import threading

from executors.base import Executor
from executors.http import HttpClient
from executors.registry import executor_class
from workers.settings import get_settings

_lock = threading.Lock()
_pid: int | None = None
_http: HttpClient | None = None
_executors: dict[str, Executor] = {}


def executor(platform: str) -> Executor:
    global _pid, _http
    ex = _executors.get(platform)
    if ex is not None and _pid == os.getpid():
        return ex
    with _lock:
        if _pid != os.getpid():
            _executors.clear()
            _http, _pid = None, os.getpid()
        settings = get_settings()
        if _http is None:
            _http = HttpClient(settings.http_connect_timeout_s, settings.http_read_timeout_s)
        ex = _executors.get(platform)
        if ex is None:
            ex = executor_class(platform)(settings.executor_config(platform), _http)
            _executors[platform] = ex
        return ex


def reset() -> None:
    global _http, _pid
    with _lock:
        _executors.clear()
        _http, _pid = None, None
