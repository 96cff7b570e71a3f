"""Notion API emulation: pages (create, retrieve, update, archive), database query, users/me."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from executors.sandbox.common import Call, Emulator, Reply, format_seconds

_UUID_HEX = re.compile(r"^[0-9a-f]{32}$")
BOT_ID = "9a3b6f2e-0c1d-4e5f-8a9b-0c1d2e3f4a5b"
_PLAIN_ANNOTATIONS = {"bold": False, "italic": False, "strikethrough": False, "underline": False,
                      "code": False, "color": "default"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _short_id(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:4]


class NotionEmulator(Emulator):
    platform = "notion"

    def reset(self) -> None:
        self.pages: dict[str, dict[str, Any]] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"pages": [p for p in self.pages.values() if not p["archived"]]}

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"object": "error", "status": status, "code": code, "message": message})

    def unauthorized(self, code: str) -> Reply:
        return self.error(401, "unauthorized", "API token is invalid.")

    def rate_limited(self, retry_after: float) -> Reply:
        reply = self.error(429, "rate_limited", "You have been rate limited. Please try again later.")
        reply.headers["Retry-After"] = format_seconds(retry_after)
        return reply

    def failure(self, status: int) -> Reply:
        code = "service_unavailable" if status == 503 else "internal_server_error"
        return self.error(status, code, f"injected fault: HTTP {status}")

    def handle(self, call: Call) -> Reply:
        if not call.headers.get("Notion-Version"):
            return self.error(400, "missing_version", "Notion-Version header failed validation: "
                                                      "Notion-Version header should be defined.")
        match call.method, call.segments:
            case "POST", ["v1", "pages"]:
                return Reply(200, self._create(call.body))
            case "GET", ["v1", "pages", page_id]:
                return Reply(200, self._page(page_id))
            case "PATCH", ["v1", "pages", page_id]:
                return Reply(200, self._update(page_id, call.body))
            case "POST", ["v1", "databases", database_id, "query"]:
                found = [p for p in self.pages.values()
                         if not p["archived"] and p["parent"].get("database_id") == database_id]
                return Reply(200, {"object": "list", "results": found, "next_cursor": None,
                                   "has_more": False})
            case "GET", ["v1", "users", "me"]:
                return Reply(200, {"object": "user", "id": BOT_ID, "name": "opsq sandbox", "type": "bot",
                                   "bot": {"owner": {"type": "workspace", "workspace": True},
                                           "workspace_name": "opsq sandbox"}})
        return self.not_found(call)

    def _invalid(self, message: str) -> Exception:
        return self.fail(400, "validation_error", message)

    def _page(self, page_id: str) -> dict[str, Any]:
        key = page_id.replace("-", "").lower()
        if not _UUID_HEX.match(key):
            raise self._invalid(f"path failed validation: path.page_id should be a valid uuid, instead was "
                                f"`\"{page_id}\"`.")
        page = self.pages.get(key)
        if page is None:
            raise self.fail(404, "object_not_found", f"Could not find page with ID: {page_id}. Make sure the "
                                                     "relevant pages and databases are shared with your "
                                                     "integration.")
        return page

    def _create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise self._invalid("body failed validation: body should be an object.")
        parent = body.get("parent")
        if not isinstance(parent, dict) or not (parent.get("database_id") or parent.get("page_id")):
            raise self._invalid("body failed validation: body.parent.database_id should be defined.")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise self._invalid("body failed validation: body.properties should be an object.")
        page_uuid = uuid.uuid4()
        now = _now()
        kind = "database_id" if parent.get("database_id") else "page_id"
        page = {
            "object": "page", "id": str(page_uuid), "created_time": now, "last_edited_time": now,
            "parent": {"type": kind, kind: parent[kind]}, "archived": False, "in_trash": False,
            "properties": {name: self._stored_property(name, value) for name, value in props.items()},
            "url": f"https://www.notion.so/{page_uuid.hex}", "public_url": None,
        }
        self.pages[page_uuid.hex] = page
        return page

    def _update(self, page_id: str, body: Any) -> dict[str, Any]:
        page = self._page(page_id)
        if not isinstance(body, dict):
            raise self._invalid("body failed validation: body should be an object.")
        props = body.get("properties")
        if props is not None and not isinstance(props, dict):
            raise self._invalid("body failed validation: body.properties should be an object.")
        archive = body.get("archived", body.get("in_trash"))
        if props and page["archived"] and archive is not False:
            raise self._invalid("Can't edit block that is archived. You must unarchive the block before "
                                "editing.")
        for name, value in (props or {}).items():
            page["properties"][name] = self._stored_property(name, value)
        if archive is not None:
            page["archived"] = page["in_trash"] = bool(archive)
        page["last_edited_time"] = _now()
        return page

    def _stored_property(self, name: str, value: Any) -> dict[str, Any]:
        """Writes give only the value; reads return Notion's full shape (id, type, rich text objects)."""
        if not isinstance(value, dict):
            raise self._invalid(f"body failed validation: body.properties.{name} should be an object.")
        kinds = [k for k in value if k not in ("id", "type")]
        if len(kinds) != 1:
            raise self._invalid(f"body failed validation: body.properties.{name} should define exactly one "
                                "property type.")
        kind = kinds[0]
        raw = value[kind]
        stored: Any = raw
        if kind in ("title", "rich_text"):
            if raw is not None and not isinstance(raw, list):
                raise self._invalid(f"body failed validation: body.properties.{name}.{kind} should be an "
                                    "array.")
            stored = [self._rich_text(item, name) for item in raw or []]
        elif kind in ("status", "select"):
            stored = None if raw is None else self._option(raw, name)
        elif kind == "multi_select":
            stored = [self._option(item, name) for item in raw or []]
        return {"id": "title" if kind == "title" else _short_id(name), "type": kind, kind: stored}

    def _rich_text(self, item: Any, name: str) -> dict[str, Any]:
        text = item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, dict) or not isinstance(text.get("content"), str):
            raise self._invalid(f"body failed validation: body.properties.{name} rich text needs "
                                "text.content.")
        content = text["content"]
        link = text.get("link")
        return {"type": "text", "text": {"content": content, "link": link},
                "annotations": {**_PLAIN_ANNOTATIONS, **(item.get("annotations") or {})},
                "plain_text": content, "href": link.get("url") if isinstance(link, dict) else None}

    def _option(self, raw: Any, name: str) -> dict[str, Any]:
        if not isinstance(raw, dict) or not (raw.get("name") or raw.get("id")):
            raise self._invalid(f"body failed validation: body.properties.{name} option needs a name or id.")
        label = str(raw.get("name") or raw["id"])
        return {"id": str(raw.get("id") or _short_id(label)), "name": label,
                "color": raw.get("color", "default")}
