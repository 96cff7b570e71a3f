"""A catch-all webhook receiver: any method, any path under /webhook, no credentials needed."""

from __future__ import annotations

from typing import Any

from executors.sandbox.common import Call, Emulator, Reply

MAX_KEPT = 1000


class WebhookEmulator(Emulator):
    platform = "webhook"
    requires_auth = False

    def reset(self) -> None:
        self.received: list[dict[str, Any]] = []

    def snapshot(self) -> dict[str, Any]:
        return {"received": list(self.received)}

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"ok": False, "error": code, "message": message})

    def handle(self, call: Call) -> Reply:
        self.received.append({"method": call.method, "path": call.path, "body": call.body})
        del self.received[:-MAX_KEPT]
        return Reply(200, {"ok": True, "received": call.body})
