"""Google Drive: create files (metadata only) and trash or delete them."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, StringConstraints

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result
from executors.errors import PermanentError

DriveId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
# Shared drives answer 404 to callers that do not declare they support them.
SHARED_DRIVES = {"supportsAllDrives": "true"}


class CreateFileParams(ActionParams):
    name: str = Field(min_length=1)
    mime_type: str = Field("application/octet-stream", min_length=1)
    parents: list[DriveId] = []
    description: str | None = None


class DeleteFileParams(ActionParams):
    file_id: DriveId
    permanent: bool = False


class GDriveExecutor(Executor):
    platform = "gdrive"
    actions = {"create_file": CreateFileParams, "delete_file": DeleteFileParams}
    default_base_url = "https://www.googleapis.com"
    # Drive's per-user quota.
    default_rate_limit = RateLimit(rate=10.0, burst=20)
    order = 40
    # With permanent=True the file skips the trash: nothing can bring it back.
    irreversible = frozenset({"delete_file"})

    def _files(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return self._call(method, path, body, params=SHARED_DRIVES)

    def _file_path(self, file_id: str) -> str:
        return f"/drive/v3/files/{quote(file_id, safe='')}"

    def do_create_file(self, p: CreateFileParams, effect: Effect = NO_EFFECT) -> Result:
        meta: dict[str, Any] = {"name": p.name, "mimeType": p.mime_type}
        if p.parents:
            meta["parents"] = p.parents
        if p.description is not None:
            meta["description"] = p.description
        created = self._files("POST", "/drive/v3/files", meta)
        if not created.get("id"):
            raise PermanentError("gdrive POST /drive/v3/files: answer lacks the file id",
                                 platform=self.platform)
        return {"file_id": created["id"], "name": created.get("name", p.name),
                "mime_type": created.get("mimeType", p.mime_type)}

    def undo_create_file(self, p: CreateFileParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        try:
            self._files("DELETE", self._file_path(result["file_id"]))
        except PermanentError as exc:
            if exc.status != 404:
                raise
            return {"file_id": result["file_id"], "deleted": False, "already_undone": True}
        return {"file_id": result["file_id"], "deleted": True, "already_undone": False}

    def do_delete_file(self, p: DeleteFileParams, effect: Effect = NO_EFFECT) -> Result:
        if p.permanent:
            self._files("DELETE", self._file_path(p.file_id))
            return {"file_id": p.file_id, "permanent": True, "trashed": False, "deleted": True}
        self._files("PATCH", self._file_path(p.file_id), {"trashed": True})
        return {"file_id": p.file_id, "permanent": False, "trashed": True, "deleted": False}

    def undo_delete_file(self, p: DeleteFileParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        if p.permanent:
            return {"file_id": p.file_id, "restored": False,
                    "reason": "permanently deleted files cannot be restored"}
        # A 404 stays an error: the file was deleted for good meanwhile and cannot come back.
        self._files("PATCH", self._file_path(p.file_id), {"trashed": False})
        return {"file_id": p.file_id, "restored": True}

    def check_auth(self) -> Result:
        about = self._call("GET", "/drive/v3/about", params={"fields": "user"})
        user = about.get("user") or {}
        return {"ok": True, "user": user.get("displayName"), "email": user.get("emailAddress")}
