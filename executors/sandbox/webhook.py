"""A catch-all webhook receiver: any method, any path under /webhook, no credentials needed.

It honours `Idempotency-Key` as Stripe does (and the IETF httpapi idempotency-key draft describes): the
first request with a key is delivered and its answer kept; a repeat with the same key is answered with
that answer (`Idempotent-Replayed: true`) and not delivered again; the same key with another method, path
or body is refused (422). The state holds one delivery per key, and the count of replays."""

from __future__ import annotations

from typing import Any

from executors.sandbox.common import Call, Emulator, Reply

MAX_KEPT = 1000
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def idempotency_key(call: Call) -> str | None:
    """The header's value; the draft makes it a structured-field string ("..."), Stripe a bare token."""
    value = (call.headers.get(IDEMPOTENCY_HEADER) or "").strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value or None


class WebhookEmulator(Emulator):
    platform = "webhook"
    requires_auth = False

    def reset(self) -> None:
        self.received: list[dict[str, Any]] = []
        # key -> (the request that first used it, the answer it got); kept like Stripe's 24 h window,
        # here for the sandbox's life (or until reset).
        self.keys: dict[str, tuple[dict[str, Any], Reply]] = {}
        self.replays: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"received": list(self.received), "replays": dict(self.replays)}

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"ok": False, "error": code, "message": message})

    def handle(self, call: Call) -> Reply:
        key = idempotency_key(call)
        request = {"method": call.method, "path": call.path, "body": call.body}
        if key is not None and key in self.keys:
            first, answer = self.keys[key]
            if first != request:
                return self.error(422, "idempotency_key_reused",
                                  "Keys for idempotent requests can only be used with the same request")
            self.replays[key] = self.replays.get(key, 0) + 1
            return Reply(answer.status, answer.body, {**answer.headers, REPLAYED_HEADER: "true"})
        self.received.append({**request, "idempotency_key": key} if key is not None else request)
        del self.received[:-MAX_KEPT]
        reply = Reply(200, {"ok": True, "received": call.body})
        if key is not None:
            self.keys[key] = (request, reply)
        return reply
