"""Notion: create and update task pages in a database."""

from __future__ import annotations

from typing import Annotated, Any, Self
from urllib.parse import quote

from pydantic import Field, StringConstraints, model_validator

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result, Setting
from executors.errors import PermanentError

DEFAULT_VERSION = "2022-06-28"
TITLE_PROPERTY = "Name"
STATUS_PROPERTY = "Status"
# Notion IDs are UUIDs, with or without dashes; the pattern keeps them from reshaping the URL path.
NotionId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
# Property types Notion computes itself: they are never written back.
READ_ONLY_TYPES = frozenset({"formula", "rollup", "created_time", "created_by", "last_edited_time",
                             "last_edited_by", "unique_id", "verification", "button"})
LIST_TYPES = frozenset({"title", "rich_text", "multi_select", "people", "relation", "files"})


class CreateTaskParams(ActionParams):
    database_id: NotionId
    title: str = Field(min_length=1)
    status: str | None = Field(None, min_length=1)
    properties: dict[str, Any] = {}


class UpdateTaskParams(ActionParams):
    page_id: NotionId
    title: str | None = Field(None, min_length=1)
    status: str | None = Field(None, min_length=1)
    properties: dict[str, Any] = {}

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if self.title is None and self.status is None and not self.properties:
            raise ValueError("give at least one of title, status or properties")
        return self


def _title(text: str) -> dict[str, Any]:
    return {"title": [{"text": {"content": text}}]}


def _status(name: str) -> dict[str, Any]:
    return {"status": {"name": name}}


def _changes(title: str | None, status: str | None, properties: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if title is not None:
        changes[TITLE_PROPERTY] = _title(title)
    if status is not None:
        changes[STATUS_PROPERTY] = _status(status)
    changes.update(properties)
    return changes


def _kind(value: Any) -> str | None:
    """The property type of a write payload ({"status": {...}}) or of a read one ({"type": "status", ...})."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("type"), str):
        return str(value["type"])
    kinds = [k for k in value if k not in ("id", "type")]
    return kinds[0] if len(kinds) == 1 else None


def _rich_text_item(item: dict[str, Any]) -> dict[str, Any]:
    # Mentions and equations have no "text": their plain_text keeps what the reader saw.
    text = item.get("text") or {"content": item.get("plain_text", "")}
    content: dict[str, Any] = {"content": text.get("content", "")}
    if text.get("link"):
        content["link"] = text["link"]
    out: dict[str, Any] = {"text": content}
    if item.get("annotations"):
        out["annotations"] = item["annotations"]
    return out


def writable(prop: Any) -> dict[str, Any] | None:
    """A property as GET returns it, reshaped into what PATCH accepts; None when it cannot be written."""
    kind = _kind(prop)
    if kind is None or kind in READ_ONLY_TYPES:
        return None
    value = prop.get(kind)
    if kind in ("title", "rich_text"):
        return {kind: [_rich_text_item(x) for x in value or [] if isinstance(x, dict)]}
    if kind in ("status", "select"):
        if not value:
            return {kind: None}
        return {kind: {"name": value["name"]} if value.get("name") else {"id": value["id"]}}
    if kind == "multi_select":
        return {kind: [{"name": o["name"]} if o.get("name") else {"id": o["id"]} for o in value or []]}
    if kind in ("people", "relation"):
        return {kind: [{"id": o["id"]} for o in value or [] if isinstance(o, dict) and "id" in o]}
    return {kind: value}


def cleared(change: Any) -> dict[str, Any] | None:
    """The empty value of the same type as `change`, to restore a property that was unset before."""
    kind = _kind(change)
    if kind is None or kind in READ_ONLY_TYPES:
        return None
    return {kind: [] if kind in LIST_TYPES else None}


class NotionExecutor(Executor):
    platform = "notion"
    actions = {"create_task": CreateTaskParams, "update_task": UpdateTaskParams}
    default_base_url = "https://api.notion.com"
    # An average of 3 requests per second per integration.
    default_rate_limit = RateLimit(rate=3.0, burst=3)
    # OPSQ_NOTION_VERSION
    extra_settings = {"version": Setting(default=DEFAULT_VERSION, description="the Notion-Version header")}
    order = 20

    def _headers(self) -> dict[str, str]:
        return {"Notion-Version": self.config.extra.get("version") or DEFAULT_VERSION, **super()._headers()}

    def _page_path(self, page_id: str) -> str:
        return f"/v1/pages/{quote(page_id, safe='')}"

    def do_create_task(self, p: CreateTaskParams, effect: Effect = NO_EFFECT) -> Result:
        properties: dict[str, Any] = {TITLE_PROPERTY: _title(p.title)}
        if p.status:
            properties[STATUS_PROPERTY] = _status(p.status)
        properties.update(p.properties)
        page = self._call("POST", "/v1/pages", {"parent": {"database_id": p.database_id},
                                                "properties": properties})
        if not page.get("id"):
            raise PermanentError("notion POST /v1/pages: answer lacks the page id", platform=self.platform)
        return {"page_id": page["id"], "url": page.get("url")}

    def undo_create_task(self, p: CreateTaskParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        try:
            self._call("PATCH", self._page_path(result["page_id"]), {"archived": True})
        except PermanentError as exc:
            if exc.status != 404:
                raise
            return {"page_id": result["page_id"], "archived": False, "already_undone": True}
        return {"page_id": result["page_id"], "archived": True, "already_undone": False}

    def do_update_task(self, p: UpdateTaskParams, effect: Effect = NO_EFFECT) -> Result:
        changes = _changes(p.title, p.status, p.properties)
        page = self._call("GET", self._page_path(p.page_id))
        current = page.get("properties") or {}
        # Only what this update overwrites is captured: undo must not clobber edits made to other fields.
        previous = {name: writable(current[name]) if name in current else None for name in changes}
        self._call("PATCH", self._page_path(p.page_id), {"properties": changes})
        return {"page_id": page.get("id") or p.page_id, "previous": previous}

    def undo_update_task(self, p: UpdateTaskParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        changes = _changes(p.title, p.status, p.properties)
        previous: dict[str, Any] = result.get("previous") or {}
        restore: dict[str, Any] = {}
        for name, change in changes.items():
            value = previous.get(name) or cleared(change)
            if value is not None:
                restore[name] = value
        if restore:
            # A 404 stays an error: the page is gone, so its old values cannot be put back.
            self._call("PATCH", self._page_path(result["page_id"]), {"properties": restore})
        return {"page_id": result["page_id"], "restored": sorted(restore)}

    def check_auth(self) -> Result:
        me = self._call("GET", "/v1/users/me")
        return {"ok": True, "id": me.get("id"), "name": me.get("name"), "type": me.get("type")}
