"""Notion: create and update task pages in a database.

Effect keys (issue 11): Notion has no idempotency key. A created page carries the action's key in a rich_text
property of its database (OPSQ_NOTION_EFFECT_PROPERTY, `opsq_effect` by default; the database must have it),
found again with a database query filtered on it (`rich_text.equals`). Set the setting empty to create pages
without it: create_task is then at-least-once. An update sets values, so doing it twice leaves the same page;
what a lost answer takes with it is the values it replaced (undo's), see find_update_task.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Self
from urllib.parse import quote

from pydantic import Field, StringConstraints, model_validator

from executors.base import (
    AT_LEAST_ONCE,
    NO_EFFECT,
    ActionParams,
    Effect,
    Executor,
    RateLimit,
    Result,
    Setting,
    example,
)
from executors.errors import PermanentError

DEFAULT_VERSION = "2022-06-28"
#: The rich_text database property that carries a created page's effect key.
EFFECT_PROPERTY = "opsq_effect"
#: Notion rounds last_edited_time to the minute: an edit is only known to be older than a moment when its
#: rounded time is more than this before it.
EDIT_TIME_PRECISION_S = 60.0
TITLE_PROPERTY = "Name"
STATUS_PROPERTY = "Status"
# Notion IDs are UUIDs, with or without dashes; the pattern keeps them from reshaping the URL path.
NotionId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
# Property types Notion computes itself: they are never written back.
READ_ONLY_TYPES = frozenset({"formula", "rollup", "created_time", "created_by", "last_edited_time",
                             "last_edited_by", "unique_id", "verification", "button"})
LIST_TYPES = frozenset({"title", "rich_text", "multi_select", "people", "relation", "files"})


class CreateTaskParams(ActionParams):
    """Create a task page in a database: its title, status and any other properties."""

    model_config = example({"database_id": "db1", "title": "Invoice A-42", "status": "To do"})

    database_id: NotionId
    title: str = Field(min_length=1)
    status: str | None = Field(None, min_length=1)
    properties: dict[str, Any] = {}


class UpdateTaskParams(ActionParams):
    """Change a task page's title, status or other properties (at least one of them)."""

    model_config = example({"page_id": "page1", "status": "Done"})

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


def comparable(value: Any) -> tuple[str, Any] | None:
    """A property value reduced to what it means, the same for a write payload and for what GET returns
    ({"select": {"name": "x"}} and {"id": .., "type": "select", "select": {"id": .., "name": "x", ..}}):
    the plain text of rich text, an option's name, the ids of people. None for a type not compared."""
    kind = _kind(value)
    if kind is None or kind in READ_ONLY_TYPES:
        return None
    raw = value.get(kind)
    if kind in ("title", "rich_text"):
        items = raw or []
        return kind, "".join(str((x.get("text") or {}).get("content", x.get("plain_text", "")))
                             for x in items if isinstance(x, dict))
    if kind in ("status", "select"):
        return kind, (raw or {}).get("name") or (raw or {}).get("id")
    if kind == "multi_select":
        return kind, sorted(str(o.get("name") or o.get("id")) for o in raw or [] if isinstance(o, dict))
    if kind in ("people", "relation"):
        return kind, sorted(str(o.get("id")) for o in raw or [] if isinstance(o, dict))
    if kind in ("number", "checkbox", "url", "email", "phone_number", "date"):
        return kind, raw
    return None


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
    idempotent = frozenset({"update_task"})  # it sets values: twice leaves the same page
    default_base_url = "https://api.notion.com"
    # An average of 3 requests per second per integration.
    default_rate_limit = RateLimit(rate=3.0, burst=3)
    # OPSQ_NOTION_VERSION, OPSQ_NOTION_EFFECT_PROPERTY
    extra_settings = {
        "version": Setting(default=DEFAULT_VERSION, description="the Notion-Version header"),
        "effect_property": Setting(default=EFFECT_PROPERTY,
                                   description="the rich_text database property that carries a created page's "
                                               "effect key (empty: create_task is at-least-once)"),
    }
    order = 20
    limit_keys = {"database": "database_id", "page": "page_id"}

    @classmethod
    def guarantee(cls, action: str, extra: Mapping[str, str] | None = None) -> str:
        """create_task is exactly-once-effect only while its pages carry the key: given the platform's
        settings (`config.extra`), an empty OPSQ_NOTION_EFFECT_PROPERTY makes it at-least-once."""
        if action == "create_task" and extra is not None and not extra.get("effect_property", EFFECT_PROPERTY):
            return AT_LEAST_ONCE
        return super().guarantee(action)

    def _effect_property(self) -> str:
        return self.config.extra.get("effect_property", EFFECT_PROPERTY).strip()

    def _headers(self) -> dict[str, str]:
        return {"Notion-Version": self.config.extra.get("version") or DEFAULT_VERSION, **super()._headers()}

    def _page_path(self, page_id: str) -> str:
        return f"/v1/pages/{quote(page_id, safe='')}"

    def do_create_task(self, p: CreateTaskParams, effect: Effect = NO_EFFECT) -> Result:
        properties: dict[str, Any] = {TITLE_PROPERTY: _title(p.title)}
        if p.status:
            properties[STATUS_PROPERTY] = _status(p.status)
        properties.update(p.properties)
        prop = self._effect_property()
        if effect.key is not None and prop:
            properties[prop] = {"rich_text": [{"text": {"content": effect.key}}]}
        try:
            page = self._call("POST", "/v1/pages", {"parent": {"database_id": p.database_id},
                                                    "properties": properties})
        except PermanentError as exc:
            if prop and f"{prop} is not a property that exists" in exc.message:
                raise PermanentError(f"{exc.message} (opsqueue writes each created page's effect key into the "
                                     f"rich_text property {prop!r}: add it to the database, or set "
                                     "OPSQ_NOTION_EFFECT_PROPERTY to another such property, or to nothing to "
                                     "go without: then a page whose answer was lost can be created twice)",
                                     status=exc.status, platform=self.platform) from None
            raise
        if not page.get("id"):
            raise PermanentError("notion POST /v1/pages: answer lacks the page id", platform=self.platform)
        return {"page_id": page["id"], "url": page.get("url")}

    def find_create_task(self, p: CreateTaskParams, effect: Effect) -> Result | None:
        """The page an earlier attempt created, by its key property (a database query: archived pages are not
        returned, so a page archived meanwhile is not found and is made again)."""
        prop = self._effect_property()
        if not prop or effect.key is None:
            raise NotImplementedError("notion.create_task: OPSQ_NOTION_EFFECT_PROPERTY is empty")
        found = self._call("POST", f"/v1/databases/{quote(p.database_id, safe='')}/query",
                           {"filter": {"property": prop, "rich_text": {"equals": effect.key}}, "page_size": 1})
        for page in found.get("results") or []:
            if isinstance(page, dict) and page.get("id"):
                return {"page_id": page["id"], "url": page.get("url")}
        return None

    def find_undone_create_task(self, p: CreateTaskParams, result: Result) -> Result | None:
        """An archive whose answer was lost: the page archived (or gone) is the undo done."""
        page = self._page_or_none(result["page_id"])
        if page is not None and not page.get("archived") and not page.get("in_trash"):
            return None
        return {"page_id": result["page_id"], "archived": False, "already_undone": True}

    def _page_or_none(self, page_id: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._page_path(page_id))
        except PermanentError as exc:
            if exc.status != 404:
                raise
            return None

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

    def find_update_task(self, p: UpdateTaskParams, effect: Effect) -> Result | None:
        """An update whose answer was lost. The page not holding the new values: it did not apply, call (doing
        it again is safe: it sets values). Holding them: applied, not called again. What it replaced (undo's
        `previous`) was read by the lost attempt; it is known again only when the page was last edited before
        that attempt began (then nothing changed it, and the current values are the previous ones); otherwise
        the result says `previous_lost` and undo refuses to guess."""
        changes = _changes(p.title, p.status, p.properties)
        page = self._call("GET", self._page_path(p.page_id))
        current = page.get("properties") or {}
        for name, change in changes.items():
            want = comparable(change)
            if want is None or name not in current or comparable(current[name]) != want:
                return None
        page_id = page.get("id") or p.page_id
        edited = _timestamp(page.get("last_edited_time"))
        if edited is not None and effect.since is not None and edited + EDIT_TIME_PRECISION_S <= effect.since:
            return {"page_id": page_id, "previous": {name: writable(current[name]) for name in changes}}
        return {"page_id": page_id, "previous": None, "previous_lost": True}

    def undo_update_task(self, p: UpdateTaskParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        changes = _changes(p.title, p.status, p.properties)
        if result.get("previous_lost"):
            raise PermanentError(f"notion: cannot undo the update of page {result['page_id']}: its answer was lost, "
                                 "and with it the values it replaced (restore them by hand: the page's history "
                                 "in Notion shows them)", platform=self.platform)
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

    def find_undone_update_task(self, p: UpdateTaskParams, result: Result) -> Result | None:
        """A restore whose answer was lost: done when the page holds the values undo would have put back."""
        if result.get("previous_lost"):
            return None  # undo refuses: let it say so
        changes = _changes(p.title, p.status, p.properties)
        previous: dict[str, Any] = result.get("previous") or {}
        page = self._call("GET", self._page_path(result["page_id"]))
        current = page.get("properties") or {}
        restore = {name: previous.get(name) or cleared(change) for name, change in changes.items()}
        for name, value in restore.items():
            if value is None:
                continue
            have = comparable(current[name]) if name in current else comparable(cleared(value))
            if comparable(value) is None or have != comparable(value):
                return None
        return {"page_id": result["page_id"], "restored": sorted(n for n, v in restore.items() if v is not None)}

    def check_auth(self) -> Result:
        me = self._call("GET", "/v1/users/me")
        return {"ok": True, "id": me.get("id"), "name": me.get("name"), "type": me.get("type")}


def _timestamp(text: Any) -> float | None:
    """An ISO 8601 time as Notion writes it (2026-12-01T09:05:00.000Z), in Unix seconds."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
