"""The local stack a developer runs: the sandbox, a worker and beat, on one broker and one store.

Shared by `opsq dev` (runs until Ctrl-C), `opsq demo` (runs its scenarios, then stops) and `opsq sandbox`
(which says which settings point at it). The worker and beat are subprocesses in their own session, so a
Ctrl-C in the terminal reaches this process only, and it stops them in order (stop_process).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from executors.registry import PLATFORMS, TOKEN_PLATFORMS
from workers.errors import ConfigError

if TYPE_CHECKING:
    from executors.sandbox.server import SandboxServer

SANDBOX_PORT = 8765
#: The sandbox accepts any token but "invalid" (executors/sandbox/common.py); every platform needs one.
SANDBOX_TOKEN = "sandbox-token"
SANDBOX_TRELLO_KEY = "sandbox-key"
#: The sandbox listens on loopback, which the webhook SSRF guard refuses unless allowed.
LOOPBACK = "127.0.0.1/32"


def sandbox_settings(url: str) -> dict[str, str]:
    """The settings that point opsqueue at the sandbox at `url`: its base URL, a token for every platform
    that wants one, Trello's API key, and loopback let through the webhook guard. None is a secret (the
    sandbox's own made-up values), so they may be printed."""
    env = {"OPSQ_PLATFORM_BASE_URL": url}
    env.update({f"OPSQ_{platform.upper()}_TOKEN": SANDBOX_TOKEN for platform in TOKEN_PLATFORMS})
    env["OPSQ_TRELLO_API_KEY"] = SANDBOX_TRELLO_KEY
    env["OPSQ_WEBHOOK_ALLOW_HOSTS"] = LOOPBACK
    return env


def point_at_sandbox(url: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    """Put sandbox_settings(url) into `environ` (each platform's own base URL is taken out, so the one
    base URL applies to all; an allow-list already there is kept, with loopback added). Returns what was set."""
    wanted = sandbox_settings(url)
    for platform in PLATFORMS:
        environ.pop(f"OPSQ_{platform.upper()}_BASE_URL", None)
    allowed = [h for h in environ.get("OPSQ_WEBHOOK_ALLOW_HOSTS", "").split(",") if h.strip()]
    if LOOPBACK not in allowed:
        allowed.append(LOOPBACK)
    wanted["OPSQ_WEBHOOK_ALLOW_HOSTS"] = ",".join(allowed)
    environ.update(wanted)
    return wanted


def export_lines(settings: Mapping[str, str]) -> list[str]:
    """`export NAME=value` lines a POSIX shell takes as they are (values quoted where they need it)."""
    return [f"export {name}={shlex.quote(value)}" for name, value in settings.items()]


def bind_sandbox(host: str = "127.0.0.1", port: int = SANDBOX_PORT, *,
                 fallback: bool = True) -> tuple[SandboxServer, str | None]:
    """The sandbox bound to `port`, or, when that port is taken and `fallback`, to a free one; returns
    (server, a note saying the port moved, or None). Not serving yet: `.start()` or `.serve_forever()`."""
    # Imported here: the CLI registers every command in a worker too, which must not load the sandbox
    # (tests/unit/test_celery_app.py, a worker's memory).
    from executors.sandbox.server import SandboxServer  # noqa: PLC0415

    try:
        return SandboxServer(host, port), None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        if not fallback:
            raise ConfigError(f"port {port} on {host} is taken: give another with --port (0: any free one)"
                              ) from None
    server = SandboxServer(host, 0)
    return server, f"port {port} is taken: the sandbox listens on {server.port} instead"


def start_worker(name: str, queues: tuple[str, ...], concurrency: int, log: Path,
                 env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """A Celery worker node consuming `queues`, its output in `log`, in its own session (see the module)."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", ",".join(queues),
         "-c", str(concurrency), "-n", name, "-l", "INFO", "--without-gossip", "--without-mingle"],
        env=dict(env), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def start_beat(log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`opsq beat` (the maintenance schedule), its output in `log`, in its own session."""
    return subprocess.Popen([sys.executable, "-m", "workers.cli.main", "beat"], env=dict(env),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(process: subprocess.Popen[bytes], log: Path, what: str, marker: bytes = b" ready.",
               timeout: float = 60) -> None:
    """Until `marker` is in `log` (Celery's worker prints " ready." once it consumes); ConfigError naming
    the log if the process ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while marker not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise ConfigError(f"{what} did not start; its log: {log}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM (Celery's warm shutdown: what runs finishes), SIGKILL after `timeout`; then whatever is left
    of its process group (a pool process whose parent was killed) is killed too, so nothing is orphaned."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the group id is its pid
            process.wait()
    # A pool process still there once its parent has ended (the parent crashed or was killed): its group
    # is the parent's, which the kernel keeps while any member lives.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
