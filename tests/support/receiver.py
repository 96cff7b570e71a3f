"""A small webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread, logging every request it
gets (so a test can say "nothing was sent") and answering /redirect?to=URL with a 302."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md"


def doc_recipe() -> Callable[..., bool]:
    """The receiver's verification snippet, taken from the docs and run as written."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("### Webhooks: signature and SSRF guard"):]
    (code,) = re.findall(r"```python\n(.*?)```", section[:section.index("**SSRF guard**")], re.S)
    scope: dict[str, Any] = {}
    exec(code, scope)  # our own documentation's snippet, run as a receiver would
    verify: Callable[..., bool] = scope["verify_opsq_signature"]
    return verify


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    log: list[Received] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_receiver() -> Receiver:
    log: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            log.append(Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            parts = urlsplit(self.path)
            if parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", parse_qs(parts.query)["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            answer = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_POST = do_PUT = do_PATCH = do_GET = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="webhook-receiver").start()
    return Receiver(server, log)
