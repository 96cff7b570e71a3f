"""Google Drive v3 emulation: file metadata (create, get, list, update/trash, delete) and about."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from executors.sandbox.common import Call, GoogleEmulator, Reply, field_mask

# What Drive returns when the caller names no `fields` (plus trashed, which the sandbox adds for clarity).
DEFAULT_FIELDS = "kind,id,name,mimeType,trashed"
WRITABLE = ("name", "description", "mimeType", "trashed", "starred")


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
                files = [field_mask(f, DEFAULT_FIELDS) for f in self.files.values()]
                return Reply(200, {"kind": "drive#fileList", "incompleteSearch": False, "files": files})
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
                  "webViewLink": f"https://drive.google.com/file/d/{file_id}/view"}
        self.files[file_id] = record
        return record

    def _update(self, file_id: str, body: Any) -> dict[str, Any]:
        record = self._file(file_id)
        if not isinstance(body, dict):
            raise self.fail(400, "parseError", "Parse Error")
        for key in WRITABLE:
            if key in body:
                record[key] = bool(body[key]) if key in ("trashed", "starred") else body[key]
        record["modifiedTime"] = _now()
        return record
