"""Google Sheets: append rows to a tab and delete rows (keeping their values so undo can put them back)."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, StringConstraints

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result, Setting
from executors.errors import InvalidParams, PermanentError

SpreadsheetId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
Cell = bool | int | Annotated[float, Field(allow_inf_nan=False)] | str | None
# Widest row read before a delete: column ZZ is the 702nd.
LAST_COLUMN = "ZZ"
_BARE_TITLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CELL_LIKE = re.compile(r"^[A-Za-z]{1,3}\d*$")
_ROW_IN_RANGE = re.compile(r"^\$?[A-Za-z]{1,3}\$?(\d+)(?::|$)")


class AppendRowParams(ActionParams):
    sheet: str = Field(min_length=1, max_length=100)
    values: list[Cell] = Field(min_length=1)
    spreadsheet_id: SpreadsheetId | None = None


class DeleteRowParams(ActionParams):
    sheet: str = Field(min_length=1, max_length=100)
    row: int = Field(ge=1)
    spreadsheet_id: SpreadsheetId | None = None


def a1_sheet(title: str) -> str:
    """A tab title as A1 notation wants it: quoted unless plain (and not mistakable for a cell)."""
    if _BARE_TITLE.match(title) and not _CELL_LIKE.match(title):
        return title
    return "'" + title.replace("'", "''") + "'"


def row_of(updated_range: str) -> int:
    """The first row number of a range such as "Sheet!A5:C5" or "'My tab'!A5:C5"."""
    match = _ROW_IN_RANGE.match(updated_range.rpartition("!")[2]) if "!" in updated_range else None
    if match is None:
        raise PermanentError(f"gsheets append: cannot read the row from updatedRange {updated_range!r}",
                             platform="gsheets")
    return int(match.group(1))


def _normalised(values: list[Any]) -> list[Any]:
    cells = ["" if v is None else v for v in values]
    while cells and cells[-1] == "":
        cells.pop()
    return cells


class GSheetsExecutor(Executor):
    platform = "gsheets"
    actions = {"append_row": AppendRowParams, "delete_row": DeleteRowParams}
    default_base_url = "https://sheets.googleapis.com"
    # Sheets' per-user quota: 60 write requests per minute.
    default_rate_limit = RateLimit(rate=1.0, burst=10)
    # OPSQ_GSHEETS_SPREADSHEET_ID: the spreadsheet of actions that name none.
    extra_settings = {"spreadsheet_id": Setting(default="opsqueue", description="the default spreadsheet")}
    order = 50

    def _spreadsheet_id(self, given: str | None) -> str:
        sid = given or self.config.extra.get("spreadsheet_id")
        if not sid:
            raise InvalidParams("gsheets: no spreadsheet_id given and no default spreadsheet configured")
        return sid

    def _book_path(self, sid: str) -> str:
        return f"/v4/spreadsheets/{quote(sid, safe='')}"

    def _values_path(self, sid: str, rng: str) -> str:
        return f"{self._book_path(sid)}/values/{quote(rng, safe='')}"

    def _sheet_id(self, sid: str, sheet: str) -> int:
        # deleteDimension/insertDimension address a tab by its numeric sheetId, never by title.
        meta = self._call("GET", self._book_path(sid), params={"fields": "sheets.properties"})
        for entry in meta.get("sheets") or []:
            props = entry.get("properties") or {}
            if props.get("title") == sheet and isinstance(props.get("sheetId"), int):
                return int(props["sheetId"])
        raise PermanentError(f"gsheets: spreadsheet {sid} has no tab named {sheet!r}", platform=self.platform)

    def _read_row(self, sid: str, sheet: str, row: int) -> list[Any]:
        rng = f"{a1_sheet(sheet)}!A{row}:{LAST_COLUMN}{row}"
        data = self._call("GET", self._values_path(sid, rng),
                          params={"valueRenderOption": "UNFORMATTED_VALUE", "majorDimension": "ROWS"})
        rows = data.get("values") or [[]]
        return list(rows[0])

    def _rows_request(self, kind: str, sheet_id: int, row: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"range": {"sheetId": sheet_id, "dimension": "ROWS", "startIndex": row - 1,
                                          "endIndex": row}}
        if kind == "insertDimension":
            spec["inheritFromBefore"] = row > 1
        return {kind: spec}

    def _batch(self, sid: str, requests: list[dict[str, Any]]) -> None:
        self._call("POST", f"{self._book_path(sid)}:batchUpdate", {"requests": requests})

    def _delete(self, sid: str, sheet: str, row: int, values: list[Any] | None = None) -> Result:
        sheet_id = self._sheet_id(sid, sheet)
        if values is None:
            values = self._read_row(sid, sheet, row)
        self._batch(sid, [self._rows_request("deleteDimension", sheet_id, row)])
        return {"spreadsheet_id": sid, "sheet": sheet, "sheet_id": sheet_id, "row": row, "values": values}

    def do_append_row(self, p: AppendRowParams, effect: Effect = NO_EFFECT) -> Result:
        sid = self._spreadsheet_id(p.spreadsheet_id)
        data = self._call("POST", f"{self._values_path(sid, f'{a1_sheet(p.sheet)}!A1')}:append",
                          {"values": [p.values]},
                          params={"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"})
        updated = (data.get("updates") or {}).get("updatedRange")
        if not isinstance(updated, str):
            raise PermanentError("gsheets append: answer lacks updates.updatedRange", platform=self.platform)
        return {"spreadsheet_id": sid, "sheet": p.sheet, "row": row_of(updated), "updated_range": updated}

    def undo_append_row(self, p: AppendRowParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        sid, sheet, row = result["spreadsheet_id"], result["sheet"], int(result["row"])
        current = self._read_row(sid, sheet, row)
        if not _normalised(current):
            return {"spreadsheet_id": sid, "sheet": sheet, "row": row, "deleted": False,
                    "already_undone": True}
        # Rows shift when others are inserted or deleted above: deleting blindly could destroy other data.
        if _normalised(current) != _normalised(list(p.values)):
            raise PermanentError(f"gsheets: row {row} of {sheet!r} no longer holds the appended values; "
                                 "not deleting it", platform=self.platform)
        self._delete(sid, sheet, row, current)
        return {"spreadsheet_id": sid, "sheet": sheet, "row": row, "deleted": True, "already_undone": False}

    def do_delete_row(self, p: DeleteRowParams, effect: Effect = NO_EFFECT) -> Result:
        return self._delete(self._spreadsheet_id(p.spreadsheet_id), p.sheet, p.row)

    def undo_delete_row(self, p: DeleteRowParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        sid, sheet, row = result["spreadsheet_id"], result["sheet"], int(result["row"])
        self._batch(sid, [self._rows_request("insertDimension", int(result["sheet_id"]), row)])
        values = list(result.get("values") or [])
        if values:
            self._call("PUT", self._values_path(sid, f"{a1_sheet(sheet)}!A{row}"),
                       {"majorDimension": "ROWS", "values": [values]}, params={"valueInputOption": "RAW"})
        return {"spreadsheet_id": sid, "sheet": sheet, "row": row, "restored": True}

    def check_auth(self) -> Result:
        sid = self._spreadsheet_id(None)
        data = self._call("GET", self._book_path(sid), params={"fields": "spreadsheetId"})
        return {"ok": True, "spreadsheet_id": data.get("spreadsheetId", sid)}
