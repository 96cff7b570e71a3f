"""Google Drive: create files (metadata only) and trash or delete them."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, StringConstraints

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result, example
from executors.errors import PermanentError, RetryableError

DriveId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
# Shared drives answer 404 to callers that do not declare they support them.
SHARED_DRIVES = {"supportsAllDrives": "true"}

#: The appProperties key that carries the effect key (issue 11). appProperties are private to the OAuth
#: client that set them: invisible to people and to other apps, searchable by this one.
EFFECT_PROPERTY = "opsq_effect"
#: Drive caps one property's key and value together at 124 bytes (UTF-8).
MAX_PROPERTY_BYTES = 124


def effect_value(key: str) -> str:
    """The property's value for an effect key: the key itself when it fits Drive's limit, else a digest of
    it (a long idempotency key), the same on every attempt so the lookup finds what the create set."""
    if len(EFFECT_PROPERTY.encode()) + len(key.encode()) <= MAX_PROPERTY_BYTES:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def query_literal(value: str) -> str:
    """A string literal in Drive's query language: quoted, with \\ and \' escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class CreateFileParams(ActionParams):
    """Create a file (its metadata: name, type, folders, description; no content)."""

    model_config = example({"name": "report.txt", "mime_type": "text/plain"})

    name: str = Field(min_length=1)
    mime_type: str = Field("application/octet-stream", min_length=1)
    parents: list[DriveId] = []
    description: str | None = None


class DeleteFileParams(ActionParams):
    """Move a file to the trash, or delete it for good with permanent=true (that cannot be undone)."""

    model_config = example({"file_id": "file1"})

    file_id: DriveId
    permanent: bool = False


class GDriveExecutor(Executor):
    platform = "gdrive"
    actions = {"create_file": CreateFileParams, "delete_file": DeleteFileParams}
    default_base_url = "https://www.googleapis.com"
    # Drive's per-user quota.
    default_rate_limit = RateLimit(rate=10.0, burst=20)
    order = 40
    limit_keys = {"file": "file_id"}
    # With permanent=True the file skips the trash: nothing can bring it back.
    irreversible = frozenset({"delete_file"})
    # Trashing a trashed file changes nothing; a second permanent delete is refused (404), never a second effect.
    idempotent = frozenset({"delete_file"})

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
        if effect.key is not None:
            meta["appProperties"] = {EFFECT_PROPERTY: effect_value(effect.key)}
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

    def find_create_file(self, p: CreateFileParams, effect: Effect) -> Result | None:
        """The file an earlier attempt created, by its appProperties: files.list with Drive's
        `appProperties has {...}` query, untrashed only (a trashed one was undone, or thrown away)."""
        if effect.key is None:
            return None
        q = (f"appProperties has {{ key={query_literal(EFFECT_PROPERTY)} and "
             f"value={query_literal(effect_value(effect.key))} }} and trashed = false")
        params = {**SHARED_DRIVES, "q": q, "fields": "incompleteSearch,files(id,name,mimeType,createdTime)",
                  "pageSize": "10", "includeItemsFromAllDrives": "true",
                  # A file created in a folder may be in a shared drive, which only allDrives searches.
                  "corpora": "allDrives" if p.parents else "user"}
        listed = self._call("GET", "/drive/v3/files", params=params)
        files = [f for f in listed.get("files") or [] if f.get("id")]
        if not files:
            if listed.get("incompleteSearch"):
                # Drive says some drives were not searched: absence is not proven, and calling again could
                # make a second file. Retry the lookup later instead.
                raise RetryableError("gdrive files.list: incomplete search; the effect lookup is retried",
                                     platform=self.platform)
            return None
        first = min(files, key=lambda f: str(f.get("createdTime") or ""))
        return {"file_id": first["id"], "name": first.get("name", p.name),
                "mime_type": first.get("mimeType", p.mime_type)}

    def find_undone_create_file(self, p: CreateFileParams, result: Result) -> Result | None:
        """The undo deletes the file: a 404 (or a trashed file, thrown away by hand) means it is done."""
        state = self._state(result["file_id"])
        if state is None or state.get("trashed"):
            return {"file_id": result["file_id"], "deleted": False, "already_undone": True}
        return None

    def _state(self, file_id: str) -> dict[str, Any] | None:
        """files.get's id and trashed flag, or None when the file does not exist (404)."""
        try:
            return self._call("GET", self._file_path(file_id), params={**SHARED_DRIVES, "fields": "id,trashed"})
        except PermanentError as exc:
            if exc.status != 404:
                raise
            return None

    def do_delete_file(self, p: DeleteFileParams, effect: Effect = NO_EFFECT) -> Result:
        if p.permanent:
            self._files("DELETE", self._file_path(p.file_id))
            return {"file_id": p.file_id, "permanent": True, "trashed": False, "deleted": True}
        self._files("PATCH", self._file_path(p.file_id), {"trashed": True})
        return {"file_id": p.file_id, "permanent": False, "trashed": True, "deleted": False}

    def find_delete_file(self, p: DeleteFileParams, effect: Effect) -> Result | None:
        """A delete's effect is the file's absence, seen on the file itself (no key needed): gone (404) when
        deleting for good, trashed or gone when trashing. Still there: None, the call is made."""
        state = self._state(p.file_id)
        if state is None:
            return {"file_id": p.file_id, "permanent": p.permanent, "trashed": False, "deleted": True}
        if not p.permanent and state.get("trashed"):
            return {"file_id": p.file_id, "permanent": False, "trashed": True, "deleted": False}
        return None

    def find_undone_delete_file(self, p: DeleteFileParams, result: Result) -> Result | None:
        """The undo takes the file out of the trash: done when it is there and untrashed. A permanent delete
        has nothing to undo (the undo calls nothing), so it is always "done"."""
        if p.permanent:
            return {"file_id": p.file_id, "restored": False,
                    "reason": "permanently deleted files cannot be restored"}
        state = self._state(p.file_id)
        if state is not None and not state.get("trashed"):
            return {"file_id": p.file_id, "restored": True}
        return None  # still trashed (the undo runs), or gone for good (the undo's 404 says so)

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
