"""Webhooks: send JSON to any http(s) URL, optionally with a compensating call for undo."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator

from executors.base import ActionParams, Executor, Result
from executors.errors import ExecutorError

MAX_TEXT_BODY = 2000


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


class PostParams(ActionParams):
    url: str = Field(min_length=1, max_length=4096)
    # Aliased: a field named `json` would shadow BaseModel.json().
    json_body: Any = Field(None, alias="json")
    headers: dict[str, str] = {}
    compensation_url: str | None = Field(None, max_length=4096)
    compensation_json: Any = None
    method: Literal["POST", "PUT", "PATCH"] = "POST"

    @field_validator("url", "compensation_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_url(value)


def _redact(exc: ExecutorError, url: str) -> ExecutorError:
    """Webhook URLs often carry their secret in the path (Slack, Discord): keep only the host in errors."""
    parts = httpx.URL(url)
    path = parts.path
    if path and path != "/":
        exc.message = exc.message.replace(path, f"{parts.host}/<redacted>")
        exc.args = (exc.message,)
    return exc


class WebhookExecutor(Executor):
    platform = "webhook"
    actions = {"post": PostParams}

    def _headers(self, given: dict[str, str]) -> dict[str, str]:
        headers = dict(given)
        if self.config.token and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    def _send(self, method: str, url: str, body: Any, headers: dict[str, str]) -> Result:
        try:
            response = self.http.request(method, url, platform=self.platform, json=body,
                                         headers=self._headers(headers))
        except ExecutorError as exc:
            raise _redact(exc, url) from None
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = response.text[:MAX_TEXT_BODY]
        return {"status": response.status_code, "body": parsed}

    def do_post(self, p: PostParams) -> Result:
        return self._send(p.method, p.url, p.json_body, p.headers)

    def undo_post(self, p: PostParams, result: Result) -> Result:
        if not p.compensation_url:
            return {"compensated": False}
        body = p.compensation_json if p.compensation_json is not None else {"undo": result}
        return {"compensated": True, **self._send("POST", p.compensation_url, body, p.headers)}

    def check_auth(self) -> Result:
        return {"ok": True, "note": "webhooks authenticate per URL"}
