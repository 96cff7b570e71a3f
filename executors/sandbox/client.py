"""A small client for the sandbox's /_sandbox control endpoints, for tests and the demo."""

from __future__ import annotations

from typing import Any, Self

import httpx


class SandboxClient:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}/_sandbox", timeout=timeout)

    def _call(self, method: str, path: str, *, platform: str | None = None, json: Any = None) -> Any:
        params = {"platform": platform} if platform else None
        response = self._http.request(method, path, params=params, json=json)
        if response.status_code >= 400:
            raise RuntimeError(f"sandbox {method} /_sandbox{path} -> HTTP {response.status_code}: "
                               f"{response.text}")
        return response.json()

    def health(self) -> bool:
        try:
            return bool(self._call("GET", "/health").get("ok"))
        except (httpx.HTTPError, RuntimeError):
            return False

    def requests(self, platform: str | None = None) -> list[dict[str, Any]]:
        """Every request the platforms received, oldest first; in-flight ones have status None."""
        result: list[dict[str, Any]] = self._call("GET", "/requests", platform=platform)["requests"]
        return result

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def state(self, platform: str | None = None) -> dict[str, Any]:
        """All platforms' live objects keyed by platform, or just the one platform's when named."""
        state: dict[str, Any] = self._call("GET", "/state", platform=platform)["state"]
        return state[platform] if platform else state

    def reset(self) -> None:
        """Forgets every object and fault (the request log is kept; see clear_requests)."""
        self._call("DELETE", "/state")

    def fault(self, platform: str, mode: str = "error", **options: Any) -> dict[str, Any]:
        """Installs a fault: options are status, rate, latency_ms, retry_after, times, match (a substring of the
        path), body_match (fields the request body must have: {"channel": "C1"}).

        mode is ok (latency only), error, timeout, rate_limit, auth, or one that applies the request and then
        loses its answer (issue 11): applied_timeout (held latency_ms, default 30 s, past the client's read
        timeout), applied_reset (the connection closed without a response), applied_502."""
        fault: dict[str, Any] = self._call("POST", "/faults", json={"platform": platform, "mode": mode,
                                                                    **options})["fault"]
        return fault

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return result

    def clear_faults(self, platform: str | None = None) -> None:
        self._call("DELETE", "/faults", platform=platform)

    def click(self, url: str, *, channel: str, ts: str, user_id: str, action_id: str = "opsq_approve",
              signing_secret: str = "", bad_signature: bool = False, timestamp: int | None = None) -> dict[str, Any]:
        """A person clicking a button of a posted message: the sandbox posts Slack's signed interaction to `url`.
        Returns {"status", "body"} of the app's answer and "sent" (the request's headers and body)."""
        result: dict[str, Any] = self._call("POST", "/slack/click", json={
            "url": url, "channel": channel, "ts": ts, "user_id": user_id, "action_id": action_id,
            "signing_secret": signing_secret, "bad_signature": bad_signature, "timestamp": timestamp})
        return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
