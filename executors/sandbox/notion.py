"""Notion API emulation: pages (create, retrieve, update, archive), databases (create, retrieve, query with
filters), users/me.

A database created with POST /v1/databases has a schema, and Notion's checks: a page property it lacks or of
another type is refused (400 validation_error), and so is a query filter on a property it lacks. A database
id nobody created is taken as an existing database whose schema is not modelled: anything goes (the tests
that predate the schemas, and quick demos, use such ids). `last_edited_time` is rounded down to the minute,
as Notion's is (its changelog: "last edited time is now rounded to the nearest minute")."""

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


def _same_id(a: Any, b: str) -> bool:
    """Notion ids compare with or without their dashes."""
    return isinstance(a, str) and a.replace("-", "").lower() == b.replace("-", "").lower()


def _now_minute() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")


#: The query filter conditions the sandbox knows, per property type (Notion has more).
_TEXT_TYPES = frozenset({"title", "rich_text", "url", "email", "phone_number"})


def _short_id(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()[:4]


class NotionEmulator(Emulator):
    platform = "notion"

    def reset(self) -> None:
        self.pages: dict[str, dict[str, Any]] = {}
        self.databases: dict[str, dict[str, Any]] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"pages": [p for p in self.pages.values() if not p["archived"]]}

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"object": "error", "status": status, "code": code, "message": message})

    def unauthorized(self, code: str) -> Reply:
        return self.error(401, "unauthorized", "API token is invalid.")

    def rate_limited(self, retry_after: float, status: int = 429) -> Reply:
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
            case "POST", ["v1", "databases"]:
                return Reply(200, self._create_database(call.body))
            case "GET", ["v1", "databases", database_id]:
                database = self._schema(database_id)
                if database is None:
                    raise self._no_database(database_id)
                return Reply(200, database)
            case "POST", ["v1", "databases", database_id, "query"]:
                return Reply(200, self._query(database_id, call.body))
            case "GET", ["v1", "users", "me"]:
                return Reply(200, {"object": "user", "id": BOT_ID, "name": "opsq sandbox", "type": "bot",
                                   "bot": {"owner": {"type": "workspace", "workspace": True},
                                           "workspace_name": "opsq sandbox"}})
        return self.not_found(call)

    def _no_database(self, database_id: str) -> Exception:
        return self.fail(404, "object_not_found", f"Could not find database with ID: {database_id}. Make sure "
                                                  "the relevant pages and databases are shared with your "
                                                  "integration.")

    def _schema(self, database_id: str) -> dict[str, Any] | None:
        """The database created with that id (dashes or not), None for one whose schema is not modelled."""
        return self.databases.get(database_id.replace("-", "").lower())

    def _create_database(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("parent"), dict):
            raise self._invalid("body failed validation: body.parent should be defined.")
        props = body.get("properties")
        if not isinstance(props, dict) or not props:
            raise self._invalid("body failed validation: body.properties should be defined.")
        schema: dict[str, Any] = {}
        for name, spec in props.items():
            kinds = [k for k in spec if k not in ("id", "name", "type")] if isinstance(spec, dict) else []
            if len(kinds) != 1:
                raise self._invalid(f"body failed validation: body.properties.{name} should define exactly one "
                                    "property type.")
            kind = kinds[0]
            schema[name] = {"id": "title" if kind == "title" else _short_id(name), "name": name, "type": kind,
                            kind: spec[kind] or {}}
        if [p["type"] for p in schema.values()].count("title") != 1:
            raise self._invalid("Title is not provided")
        db_uuid = uuid.uuid4()
        now = _now()
        database = {"object": "database", "id": str(db_uuid), "created_time": now, "last_edited_time": now,
                    "title": body.get("title") or [], "parent": body["parent"], "properties": schema,
                    "archived": False, "url": f"https://www.notion.so/{db_uuid.hex}"}
        self.databases[db_uuid.hex] = database
        return database

    def _check_schema(self, database_id: str, props: dict[str, Any]) -> None:
        """What Notion says when a page's properties do not fit its database."""
        database = self._schema(database_id)
        if database is None:
            return
        schema = database["properties"]
        for name, value in props.items():
            if name not in schema:
                raise self._invalid(f"{name} is not a property that exists.")
            kinds = [k for k in value if k not in ("id", "type")] if isinstance(value, dict) else []
            if kinds and kinds[0] != schema[name]["type"]:
                raise self._invalid(f"{name} is expected to be {schema[name]['type']}.")

    def _query(self, database_id: str, body: Any) -> dict[str, Any]:
        """POST /v1/databases/{id}/query: the database's pages that are not archived, oldest first, with
        `filter` (a property condition, or `and` / `or` of them), `page_size` (at most 100) and `start_cursor`."""
        body = body if isinstance(body, dict) else {}
        size = body.get("page_size", 100)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 100:
            raise self._invalid("body failed validation: body.page_size should be between 1 and 100.")
        condition = body.get("filter")
        pages = [p for p in self.pages.values()
                 if not p["archived"] and _same_id(p["parent"].get("database_id"), database_id)
                 and (condition is None or self._matches(database_id, p, condition))]
        start = 0
        if body.get("start_cursor"):
            ids = [p["id"] for p in pages]
            if body["start_cursor"] not in ids:
                raise self._invalid("body failed validation: body.start_cursor should be a valid cursor.")
            start = ids.index(body["start_cursor"])
        chunk = pages[start:start + size]
        more = start + size < len(pages)
        return {"object": "list", "results": chunk, "next_cursor": pages[start + size]["id"] if more else None,
                "has_more": more, "type": "page_or_database", "page_or_database": {}}

    def _matches(self, database_id: str, page: dict[str, Any], condition: Any) -> bool:
        if not isinstance(condition, dict):
            raise self._invalid("body failed validation: body.filter should be an object.")
        if "and" in condition or "or" in condition:
            group = condition.get("and", condition.get("or"))
            if not isinstance(group, list):
                raise self._invalid("body failed validation: body.filter.and should be an array.")
            results = [self._matches(database_id, page, c) for c in group]
            return all(results) if "and" in condition else any(results)
        name = condition.get("property")
        database = self._schema(database_id)
        if not isinstance(name, str) or (database is not None and name not in database["properties"]):
            raise self._invalid(f"Could not find property with name or id: {name}")
        kinds = [k for k in condition if k != "property"]
        if len(kinds) != 1 or not isinstance(condition[kinds[0]], dict) or len(condition[kinds[0]]) != 1:
            raise self._invalid("body failed validation: body.filter should define one property condition.")
        kind = kinds[0]
        ((operator, operand),) = condition[kind].items()
        if database is not None and database["properties"][name]["type"] != kind:
            raise self._invalid(f"database property {database['properties'][name]['type']} does not match "
                                f"filter {kind}")
        prop = page["properties"].get(name)
        if kind in _TEXT_TYPES:
            raw = prop.get(prop["type"]) if prop else None
            text = "".join(x.get("plain_text", "") for x in raw) if isinstance(raw, list) else str(raw or "")
            match operator:
                case "equals":
                    return bool(text == operand)
                case "does_not_equal":
                    return bool(text != operand)
                case "contains":
                    return str(operand) in text
                case "is_empty":
                    return not text
                case "is_not_empty":
                    return bool(text)
        if kind in ("status", "select"):
            option = prop.get(prop["type"]) if prop else None
            value = option.get("name") if isinstance(option, dict) else None
            match operator:
                case "equals":
                    return bool(value == operand)
                case "does_not_equal":
                    return bool(value != operand)
                case "is_empty":
                    return value is None
                case "is_not_empty":
                    return value is not None
        raise self._invalid(f"the sandbox does not model the filter {kind}.{operator}")

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
        if parent.get("database_id"):
            self._check_schema(str(parent["database_id"]), props)
        page_uuid = uuid.uuid4()
        now = _now()
        kind = "database_id" if parent.get("database_id") else "page_id"
        page = {
            "object": "page", "id": str(page_uuid), "created_time": now, "last_edited_time": _now_minute(),
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
        if props and page["parent"].get("database_id"):
            self._check_schema(str(page["parent"]["database_id"]), props)
        for name, value in (props or {}).items():
            page["properties"][name] = self._stored_property(name, value)
        if archive is not None:
            page["archived"] = page["in_trash"] = bool(archive)
        page["last_edited_time"] = _now_minute()
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
