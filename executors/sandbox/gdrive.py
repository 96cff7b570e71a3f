"""Google Drive v3 emulation: file metadata (create, get, list, update/trash, delete) and about.

files.list understands Drive's query language (`q`) for what opsqueue and its tests search by: name,
mimeType, trashed, starred, createdTime, modifiedTime (comparisons, `contains` for name), `'id' in parents`,
`properties`/`appProperties has { key='k' and value='v' }`, combined with and/or/not and parentheses. A
query it does not understand is a 400, as on Drive, never a silent match-all: the effect-key lookup
(issue 11) must not find a file that does not carry the key."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from executors.sandbox.common import Call, GoogleEmulator, Reply, field_mask

# What Drive returns when the caller names no `fields` (plus trashed, which the sandbox adds for clarity).
DEFAULT_FIELDS = "kind,id,name,mimeType,trashed"
WRITABLE = ("name", "description", "mimeType", "trashed", "starred")
LIST_FIELDS = "kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)"
#: Drive's limit on one custom property: key and value together, in UTF-8 bytes.
MAX_PROPERTY_BYTES = 124
MAX_PAGE_SIZE = 1000


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class GDriveEmulator(GoogleEmulator):
    platform = "gdrive"

    def reset(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"files": list(self.files.values())}

    def handle(self, call: Call) -> Reply:
        fields = call.query.get("fields")
        match call.method, call.segments:
            case "POST", ["drive", "v3", "files"]:
                return Reply(200, field_mask(self._create(call.body), fields or DEFAULT_FIELDS))
            case "GET", ["drive", "v3", "files"]:
                return Reply(200, field_mask(self._list(call.query), fields or LIST_FIELDS))
            case "GET", ["drive", "v3", "files", file_id]:
                return Reply(200, field_mask(self._file(file_id), fields or DEFAULT_FIELDS))
            case "PATCH", ["drive", "v3", "files", file_id]:
                return Reply(200, field_mask(self._update(file_id, call.body), fields or DEFAULT_FIELDS))
            case "DELETE", ["drive", "v3", "files", file_id]:
                self._file(file_id)
                del self.files[file_id]
                return Reply(204)
            case "GET", ["drive", "v3", "about"]:
                if not fields:
                    raise self.fail(400, "required", "The 'fields' parameter is required for this operation.")
                about = {"kind": "drive#about",
                         "user": {"kind": "drive#user", "displayName": "opsq sandbox",
                                  "emailAddress": "sandbox@opsqueue.invalid", "me": True}}
                return Reply(200, field_mask(about, fields))
        return self.not_found(call)

    def _file(self, file_id: str) -> dict[str, Any]:
        found = self.files.get(file_id)
        if found is None:
            raise self.fail(404, "notFound", f"File not found: {file_id}.")
        return found

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        """files.list: the files `q` selects, oldest first, `pageSize` at a time (pageToken: the offset)."""
        try:
            match = parse_query(query.get("q") or "")
        except ValueError as exc:
            raise self.fail(400, "invalid", f"Invalid Value: {exc}") from None
        try:
            size = int(query.get("pageSize") or 100)
            offset = int(query.get("pageToken") or 0)
        except ValueError:
            raise self.fail(400, "invalid", "Invalid Value") from None
        if not 1 <= size <= MAX_PAGE_SIZE or offset < 0:
            raise self.fail(400, "invalid", "Invalid Value")
        found = [f for f in self.files.values() if match(f)]  # in creation order
        body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False,
                                "files": found[offset:offset + size]}
        if offset + size < len(found):
            body["nextPageToken"] = str(offset + size)
        return body

    def _properties(self, value: Any, name: str, current: dict[str, str] | None = None) -> dict[str, str]:
        """properties/appProperties: string values, key + value at most 124 bytes; null removes a key."""
        merged = dict(current or {})
        if value is None:
            return merged
        if not isinstance(value, dict):
            raise self.fail(400, "invalid", f"Invalid value for {name}.")
        for key, val in value.items():
            if val is None:
                merged.pop(key, None)
                continue
            text = val if isinstance(val, str) else str(val).lower() if isinstance(val, bool) else str(val)
            if not key or len(key.encode()) + len(text.encode()) > MAX_PROPERTY_BYTES:
                raise self.fail(400, "invalidProperty", f"The property {key!r} is too large: key and value "
                                                        f"together must fit in {MAX_PROPERTY_BYTES} bytes.")
            merged[str(key)] = text
        return merged

    def _create(self, body: Any) -> dict[str, Any]:
        meta = body if isinstance(body, dict) else {}
        parents = meta.get("parents") or ["root"]
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise self.fail(400, "invalid", "Invalid value for parents.")
        now = _now()
        file_id = "1" + secrets.token_urlsafe(24)
        record = {"kind": "drive#file", "id": file_id, "name": str(meta.get("name") or "Untitled"),
                  "mimeType": str(meta.get("mimeType") or "application/octet-stream"),
                  "description": meta.get("description"), "parents": parents, "trashed": False,
                  "starred": bool(meta.get("starred", False)), "createdTime": now, "modifiedTime": now,
                  "webViewLink": f"https://drive.google.com/file/d/{file_id}/view",
                  "properties": self._properties(meta.get("properties"), "properties"),
                  "appProperties": self._properties(meta.get("appProperties"), "appProperties")}
        self.files[file_id] = record
        return record

    def _update(self, file_id: str, body: Any) -> dict[str, Any]:
        record = self._file(file_id)
        if not isinstance(body, dict):
            raise self.fail(400, "parseError", "Parse Error")
        for key in WRITABLE:
            if key in body:
                record[key] = bool(body[key]) if key in ("trashed", "starred") else body[key]
        for key in ("properties", "appProperties"):
            if key in body:
                record[key] = self._properties(body[key], key, record.get(key))
        record["modifiedTime"] = _now()
        return record


# -- Drive's query language (the part files.list supports here) ----------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|[=<>(){}])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")
_TIMES = ("createdTime", "modifiedTime")
_COMPARABLE = {"name": ("=", "!=", "contains"), "mimeType": ("=", "!=", "contains"),
               "trashed": ("=", "!="), "starred": ("=", "!="),
               **{t: ("=", "!=", "<", "<=", ">", ">=") for t in _TIMES}}
Match = Callable[[dict[str, Any]], bool]


def _tokens(q: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    at = 0
    while at < len(q):
        if q[at:].strip() == "":
            break
        m = _TOKEN.match(q, at)
        if m is None:
            raise ValueError(f"unexpected {q[at:].strip()[:20]!r} in q")
        kind = m.lastgroup or ""
        text = m.group(kind)
        if kind == "str":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])  # \' and \\ are the escapes Drive knows
        out.append((kind, text))
        at = m.end()
    return out


def parse_query(q: str) -> Match:
    """A predicate on a file record for a files.list `q`; ValueError for what it does not understand."""
    if not q.strip():
        return lambda f: True
    parser = _Parser(_tokens(q))
    match = parser.expr()
    if parser.at != len(parser.tokens):
        raise ValueError(f"unexpected {parser.tokens[parser.at][1]!r} in q")
    return match


class _Parser:
    """or < and < not < (parentheses) | term, as Drive reads them."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.at = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self, kind: str | None = None, text: str | None = None) -> str:
        token = self._peek()
        if token is None or (kind and token[0] != kind) or (text and token[1] != text):
            want = text or kind or "more"
            raise ValueError(f"expected {want!r} in q, found {token[1] if token else 'the end'!r}")
        self.at += 1
        return token[1]

    def _is(self, word: str) -> bool:
        token = self._peek()
        return token is not None and token[0] in ("word", "op") and token[1] == word

    def expr(self) -> Match:
        parts = [self._and()]
        while self._is("or"):
            self.at += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda f: any(p(f) for p in parts))

    def _and(self) -> Match:
        parts = [self._not()]
        while self._is("and"):
            self.at += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda f: all(p(f) for p in parts))

    def _not(self) -> Match:
        if self._is("not"):
            self.at += 1
            inner = self._not()
            return lambda f: not inner(f)
        if self._is("("):
            self.at += 1
            inner = self.expr()
            self._take("op", ")")
            return inner
        return self._term()

    def _term(self) -> Match:
        token = self._peek()
        if token is not None and token[0] == "str":  # 'folder-id' in parents
            value = self._take("str")
            self._take("word", "in")
            field = self._take("word")
            if field != "parents":
                raise ValueError(f"'in {field}' is not supported in q")
            return lambda f: value in (f.get("parents") or [])
        field = self._take("word")
        if field in ("properties", "appProperties"):
            self._take("word", "has")
            self._take("op", "{")
            self._take("word", "key")
            self._take("op", "=")
            key = self._take("str")
            self._take("word", "and")
            self._take("word", "value")
            self._take("op", "=")
            value = self._take("str")
            self._take("op", "}")
            return lambda f: (f.get(field) or {}).get(key) == value
        ops = _COMPARABLE.get(field)
        if ops is None:
            raise ValueError(f"the field {field!r} is not supported in q")
        op = self._take()
        if op not in ops:
            raise ValueError(f"{field} does not support {op!r}")
        if field in ("trashed", "starred"):
            literal = self._take("word")
            if literal not in ("true", "false"):
                raise ValueError(f"{field} compares with true or false")
            want = literal == "true"
            return lambda f: (bool(f.get(field)) == want) == (op == "=")
        value = self._take("str")
        if op == "contains":
            return lambda f: value in str(f.get(field) or "")
        compare: dict[str, Callable[[str, str], bool]] = {
            "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
        test = compare[op]
        if field in _TIMES:  # RFC 3339, UTC: compare as instants
            value = _instant(value)
            return lambda f: test(_instant(str(f.get(field) or "")), value)
        return lambda f: test(str(f.get(field) or ""), value)


def _instant(value: str) -> str:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).isoformat()
    except ValueError:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time") from None
