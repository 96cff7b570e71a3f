"""Pieces shared by the sandbox's platform emulators: the parsed call, the reply, the emulator base."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class Headers(Protocol):
    """A request's headers, read by name: http.server's (an email.message.Message: any case) or a dict."""

    def get(self, name: str, /) -> str | None: ...


@dataclass
class Call:
    """One request as an emulator sees it: the path is relative to the platform prefix."""

    method: str
    path: str
    segments: list[str]
    query: dict[str, str]
    body: Any
    headers: Headers
    token: str | None


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """Raised inside an emulator to answer with an error reply from any depth."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


_OAUTH_TOKEN = re.compile(r'oauth_token="([^"]*)"')


def token_from_header(value: str | None) -> str | None:
    """The credential in an Authorization header: `Bearer X`, or Trello's `OAuth ... oauth_token="X"`."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "oauth":
        match = _OAUTH_TOKEN.search(rest)
        if match is None:
            return None
        return match.group(1) or None
    return rest.strip() or None


class Emulator:
    """One platform's endpoints and state. Called with the sandbox lock held, so no locking here."""

    platform: ClassVar[str]
    requires_auth: ClassVar[bool] = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    def handle(self, call: Call) -> Reply:
        raise NotImplementedError

    # Error shapes: each platform overrides `error` so faults and 404s look like the real service.
    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"error": code, "message": message})

    def fail(self, status: int, code: str, message: str) -> ApiError:
        return ApiError(self.error(status, code, message))

    def unauthorized(self, code: str) -> Reply:
        """code is "not_authed" (no credential) or "invalid_auth" (a rejected one)."""
        return self.error(401, "unauthorized", "missing credentials" if code == "not_authed"
                          else "invalid credentials")

    def rate_limited(self, retry_after: float, status: int = 429) -> Reply:
        """The platform's "too many requests". `status` is the fault's: only Google answers anything but 429."""
        return Reply(429, self.error(429, "rate_limited", "rate limited").body,
                     {"Retry-After": format_seconds(retry_after)})

    def failure(self, status: int) -> Reply:
        return self.error(status, "sandbox_fault", f"injected fault: HTTP {status}")

    def not_found(self, call: Call) -> Reply:
        return self.error(404, "not_found", f"no such endpoint: {call.method} /{self.platform}{call.path}")


def format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class GoogleEmulator(Emulator):
    """Drive and Sheets share Google's error envelope."""

    def error(self, status: int, code: str, message: str) -> Reply:
        detail = {"message": message, "domain": "global", "reason": code}
        return Reply(status, {"error": {"code": status, "message": message,
                                        "status": GOOGLE_STATUS.get(status, "UNKNOWN"), "errors": [detail]}})

    def unauthorized(self, code: str) -> Reply:
        return self.error(401, "authError", "Request had invalid authentication credentials. Expected "
                                            "OAuth 2 access token, login cookie or other valid "
                                            "authentication credential.")

    def rate_limited(self, retry_after: float, status: int = 429) -> Reply:
        if status == 403:
            # Drive and Sheets also refuse a too-fast caller with a 403 `rateLimitExceeded`, with no Retry-After.
            return self.error(403, "rateLimitExceeded", "Rate Limit Exceeded")
        reply = self.error(429, "rateLimitExceeded", "Quota exceeded for quota metric 'Requests'.")
        reply.headers["Retry-After"] = format_seconds(retry_after)
        return reply


def field_mask(obj: Any, fields: str | None) -> Any:
    """Google's `fields` parameter: dotted paths (`sheets.properties,spreadsheetId`) and sub-selections
    (`nextPageToken,files(id,name,appProperties)`)."""
    if not fields or fields.strip() == "*":
        return obj
    tree, rest = _mask_tree(fields.replace(" ", ""), 0)
    if rest != len(fields.replace(" ", "")):
        raise ValueError(f"unbalanced parentheses in fields {fields!r}")
    return _apply_mask(obj, tree)


def _mask_tree(text: str, at: int) -> tuple[dict[str, Any], int]:
    """Parses `a.b,c(d,e)` from `at` up to an unmatched `)` or the end: (tree, where it stopped)."""
    tree: dict[str, Any] = {}
    node = tree
    name = ""
    while at < len(text):
        char = text[at]
        if char in ".,()":
            if name:
                node = node.setdefault(name, {})
                name = ""
            if char == "(":
                sub, at = _mask_tree(text, at + 1)
                if at >= len(text) or text[at] != ")":
                    raise ValueError(f"unbalanced parentheses in fields {text!r}")
                node.update(sub)
            elif char == ")":
                return tree, at
            elif char == ",":
                node = tree
        else:
            name += char
        at += 1
    if name:
        node.setdefault(name, {})
    return tree, at


def _apply_mask(obj: Any, tree: dict[str, Any]) -> Any:
    if not tree:
        return obj
    if isinstance(obj, list):
        return [_apply_mask(item, tree) for item in obj]
    if isinstance(obj, dict):
        return {key: _apply_mask(obj[key], sub) for key, sub in tree.items() if key in obj}
    return obj
