"""Google Sheets: append rows to a tab and delete rows (keeping their values so undo can put them back).

Effect keys (issue 11). Sheets has no idempotency key and no conditional write, so the key must land in the
spreadsheet in the same request as the effect, or a lost answer leaves nothing to find:
- append_row: the key goes into a marker column of the appended row itself (OPSQ_GSHEETS_EFFECT_COLUMN, off
  by default: it is a visible cell in the user's data). One values.append call holds the row and the key, so
  the row exists exactly when the key does; the lookup reads that one column. Developer metadata on the row
  would be invisible, but it can only be attached by a second call once the row number is known (it is in
  the append's answer): when that answer is the one lost, the row exists without metadata, the lookup finds
  nothing and the row is appended twice, the very case this is for.
- delete_row: nothing is left of a deleted row to carry a key, and a repeat deletes the row that moved up
  into its place. So the delete is one batchUpdate (atomic) that also appends a line to a hidden log tab
  (OPSQ_GSHEETS_EFFECT_SHEET, `opsq_effects` by default): the key, the tab, the row and the values deleted,
  so a reconciled delete has the values its undo needs. The undo (insert + values) is one batchUpdate too,
  logged the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, StringConstraints

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
from executors.errors import InvalidParams, PermanentError

SpreadsheetId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
Cell = bool | int | Annotated[float, Field(allow_inf_nan=False)] | str | None
# Widest row read before a delete: column ZZ is the 702nd.
LAST_COLUMN = "ZZ"
_BARE_TITLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CELL_LIKE = re.compile(r"^[A-Za-z]{1,3}\d*$")
_ROW_IN_RANGE = re.compile(r"^\$?[A-Za-z]{1,3}\$?(\d+)(?::|$)")
_COLUMN = re.compile(r"^[A-Z]{1,2}$")
#: The hidden tab that logs keyed deletes (OPSQ_GSHEETS_EFFECT_SHEET).
EFFECT_SHEET = "opsq_effects"
#: Its sheetId, chosen by us so the batchUpdate that creates it can also append to it ("opsq" in ASCII).
EFFECT_SHEET_ID = 0x6F707371
#: Columns of a log line: key, when (UTC), tab, its sheetId, row, the deleted values as JSON.
_LOG_WIDTH = 6
#: A cell holds at most 50,000 characters: a wider row's values are not kept in the log.
_CELL_LIMIT = 50_000


class AppendRowParams(ActionParams):
    """Append a row of values to a tab (of spreadsheet_id, else of OPSQ_GSHEETS_SPREADSHEET_ID)."""

    model_config = example({"sheet": "Orders", "values": ["A-42", 129.5, True], "spreadsheet_id": "sheet1"})

    sheet: str = Field(min_length=1, max_length=100)
    values: list[Cell] = Field(min_length=1)
    spreadsheet_id: SpreadsheetId | None = None


class DeleteRowParams(ActionParams):
    """Delete one row of a tab by its number, keeping its values so undo can put them back."""

    model_config = example({"sheet": "Orders", "row": 5, "spreadsheet_id": "sheet1"})

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


def column_index(letters: str) -> int:
    """A -> 0, Z -> 25, AA -> 26."""
    value = 0
    for ch in letters:
        value = value * 26 + ord(ch) - 64
    return value - 1


def _cell(value: Any) -> dict[str, Any]:
    """A value as batchUpdate's CellData wants it (RAW: as given, nothing parsed)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"userEnteredValue": {"boolValue": value}}
    if isinstance(value, int | float):
        return {"userEnteredValue": {"numberValue": value}}
    return {"userEnteredValue": {"stringValue": str(value)}}


def _normalised(values: list[Any]) -> list[Any]:
    cells = ["" if v is None else v for v in values]
    while cells and cells[-1] == "":
        cells.pop()
    return cells


class GSheetsExecutor(Executor):
    platform = "gsheets"
    actions = {"append_row": AppendRowParams, "delete_row": DeleteRowParams}
    # Neither is idempotent: delete_row deletes by row number, and a repeat deletes the row that moved up into it.
    default_base_url = "https://sheets.googleapis.com"
    # Sheets' per-user quota: 60 write requests per minute.
    default_rate_limit = RateLimit(rate=1.0, burst=10)
    # OPSQ_GSHEETS_SPREADSHEET_ID: the spreadsheet of actions that name none. OPSQ_GSHEETS_EFFECT_COLUMN and
    # OPSQ_GSHEETS_EFFECT_SHEET: where effect keys go (the module's docstring says why there).
    extra_settings = {
        "spreadsheet_id": Setting(default="opsqueue", description="the default spreadsheet"),
        "effect_column": Setting(default="", description="the column (a letter, e.g. Z) of each appended row "
                                                         "that holds its effect key (empty: append_row is "
                                                         "at-least-once)"),
        "effect_sheet": Setting(default=EFFECT_SHEET, description="the hidden tab that logs keyed row deletes "
                                                                  "(empty: delete_row is at-least-once)"),
    }
    order = 50
    # `opsq ratelimit set gsheets --rate 60/min --per spreadsheet`: Sheets' quotas are per user and per spreadsheet.
    limit_keys = {"spreadsheet": "spreadsheet_id"}

    @classmethod
    def guarantee(cls, action: str, extra: Mapping[str, str] | None = None) -> str:
        """Given the platform's settings (`config.extra`; None: the defaults): append_row is exactly-once-effect
        with a marker column, delete_row with the log tab."""
        extra = extra or {}
        if action == "append_row" and not extra.get("effect_column", "").strip():
            return AT_LEAST_ONCE
        if action == "delete_row" and not extra.get("effect_sheet", EFFECT_SHEET).strip():
            return AT_LEAST_ONCE
        return super().guarantee(action)

    def _effect_column(self) -> str | None:
        column = self.config.extra.get("effect_column", "").strip().upper()
        if not column:
            return None
        if not _COLUMN.match(column):
            raise InvalidParams(f"gsheets: OPSQ_GSHEETS_EFFECT_COLUMN must be a column's letters (A to ZZ), "
                                f"not {column!r}")
        return column

    def _effect_sheet(self) -> str | None:
        return self.config.extra.get("effect_sheet", EFFECT_SHEET).strip() or None

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
        return self._sheet_ids(sid, sheet)[0]

    def _sheet_ids(self, sid: str, sheet: str) -> tuple[int, dict[str, int]]:
        """The tab's sheetId, and every tab's by title (the same read tells whether the log tab exists)."""
        # deleteDimension/insertDimension address a tab by its numeric sheetId, never by title.
        meta = self._call("GET", self._book_path(sid), params={"fields": "sheets.properties"})
        ids: dict[str, int] = {}
        for entry in meta.get("sheets") or []:
            props = entry.get("properties") or {}
            if isinstance(props.get("title"), str) and isinstance(props.get("sheetId"), int):
                ids[props["title"]] = int(props["sheetId"])
        if sheet not in ids:
            raise PermanentError(f"gsheets: spreadsheet {sid} has no tab named {sheet!r}", platform=self.platform)
        return ids[sheet], ids

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

    def _delete(self, sid: str, sheet: str, row: int, values: list[Any] | None = None,
                log_key: str | None = None) -> Result:
        """Deletes one row. With `log_key` (and the log tab on), the same atomic batchUpdate logs the delete."""
        sheet_id, ids = self._sheet_ids(sid, sheet)
        if values is None:
            values = self._read_row(sid, sheet, row)
        requests = [self._rows_request("deleteDimension", sheet_id, row)]
        self._batch_logged(sid, requests, ids, log_key, sheet, sheet_id, row, values)
        return {"spreadsheet_id": sid, "sheet": sheet, "sheet_id": sheet_id, "row": row, "values": values}

    def _batch_logged(self, sid: str, requests: list[dict[str, Any]], ids: Mapping[str, int], key: str | None,
                      sheet: str, sheet_id: int, row: int, values: list[Any]) -> None:
        """One batchUpdate: `requests`, and a line in the log tab when there is a key to log (the tab added
        first when missing). Sheets applies a batchUpdate whole or not at all, so the line exists exactly
        when the rows changed."""
        log = self._effect_sheet()
        if key is None or log is None:
            self._batch(sid, requests)
            return
        kept = json.dumps(values, separators=(",", ":"))
        line = [key, datetime.now(UTC).isoformat(timespec="seconds"), sheet, sheet_id, row,
                kept if len(kept) <= _CELL_LIMIT else ""]
        log_id = ids.get(log)
        head: list[dict[str, Any]] = []
        if log_id is None:
            log_id = EFFECT_SHEET_ID
            head = [{"addSheet": {"properties": {"sheetId": log_id, "title": log, "hidden": True}}}]
        append = {"appendCells": {"sheetId": log_id, "rows": [{"values": [_cell(v) for v in line]}],
                                  "fields": "userEnteredValue"}}
        try:
            self._batch(sid, [*head, *requests, append])
        except PermanentError as exc:
            # Another worker added the log tab since we looked (only then is a 400 about it ours to mend).
            if not head or exc.status != 400 or "already exists" not in exc.message:
                raise
            log_id = self._sheet_ids(sid, sheet)[1].get(log, EFFECT_SHEET_ID)
            append["appendCells"]["sheetId"] = log_id
            self._batch(sid, [*requests, append])

    def _logged(self, sid: str, key: str) -> list[Any] | None:
        """The log line of a key, or None (no such line, or no log tab yet)."""
        log = self._effect_sheet()
        if log is None:
            raise NotImplementedError("gsheets: OPSQ_GSHEETS_EFFECT_SHEET is empty")
        try:
            data = self._call("GET", self._values_path(sid, f"{a1_sheet(log)}!A:F"),
                              params={"valueRenderOption": "UNFORMATTED_VALUE", "majorDimension": "ROWS"})
        except PermanentError as exc:
            if exc.status == 400 and "Unable to parse range" in exc.message:
                return None  # the tab does not exist: nothing was ever logged
            raise
        for line in data.get("values") or []:
            if line and line[0] == key:
                return list(line) + [""] * (_LOG_WIDTH - len(line))
        return None

    def _marked_row(self, sid: str, sheet: str, column: str, key: str) -> int | None:
        """The number of the row whose marker cell holds the key (rows move; the key does not)."""
        data = self._call("GET", self._values_path(sid, f"{a1_sheet(sheet)}!{column}:{column}"),
                          params={"valueRenderOption": "UNFORMATTED_VALUE", "majorDimension": "COLUMNS"})
        cells = (data.get("values") or [[]])[0]
        for index, cell in enumerate(cells):
            if cell == key:
                return index + 1
        return None

    def _marked_values(self, p: AppendRowParams, result: Result) -> list[Any]:
        """The appended row as it stands in the sheet: the values, then the key in its column."""
        values = list(p.values)
        key, column = result.get("effect_key"), result.get("effect_column")
        if isinstance(key, str) and isinstance(column, str):
            values += [None] * (column_index(column) - len(values)) + [key]
        return values

    def do_append_row(self, p: AppendRowParams, effect: Effect = NO_EFFECT) -> Result:
        sid = self._spreadsheet_id(p.spreadsheet_id)
        column = self._effect_column()
        row_values: list[Any] = list(p.values)
        if column is not None and effect.key is not None:
            width = column_index(column)
            if len(row_values) > width:
                raise InvalidParams(f"gsheets: {len(row_values)} values reach the effect key's column {column} "
                                    "(OPSQ_GSHEETS_EFFECT_COLUMN): give fewer, or move the column right")
            row_values += [None] * (width - len(row_values)) + [effect.key]
        data = self._call("POST", f"{self._values_path(sid, f'{a1_sheet(p.sheet)}!A1')}:append",
                          {"values": [row_values]},
                          params={"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"})
        updated = (data.get("updates") or {}).get("updatedRange")
        if not isinstance(updated, str):
            raise PermanentError("gsheets append: answer lacks updates.updatedRange", platform=self.platform)
        result: Result = {"spreadsheet_id": sid, "sheet": p.sheet, "row": row_of(updated), "updated_range": updated}
        if len(row_values) > len(p.values):
            result.update(effect_key=effect.key, effect_column=column)
        return result

    def find_append_row(self, p: AppendRowParams, effect: Effect) -> Result | None:
        """The row an earlier attempt appended, by its key in the marker column."""
        column = self._effect_column()
        if column is None or effect.key is None:
            raise NotImplementedError("gsheets.append_row: OPSQ_GSHEETS_EFFECT_COLUMN is empty")
        sid = self._spreadsheet_id(p.spreadsheet_id)
        try:
            row = self._marked_row(sid, p.sheet, column, effect.key)
        except PermanentError as exc:
            if exc.status == 400 and "Unable to parse range" in exc.message:
                return None  # the tab does not exist: the append (which creates it) never happened
            raise
        if row is None:
            return None
        return {"spreadsheet_id": sid, "sheet": p.sheet, "row": row,
                "updated_range": f"{a1_sheet(p.sheet)}!A{row}:{column}{row}",
                "effect_key": effect.key, "effect_column": column}

    def find_undone_append_row(self, p: AppendRowParams, result: Result) -> Result | None:
        """A delete of the appended row whose answer was lost: done when no row holds its key any more.
        A row appended without a key cannot be told from an equal one: NotImplementedError."""
        key, column = result.get("effect_key"), result.get("effect_column")
        if not isinstance(key, str) or not isinstance(column, str):
            raise NotImplementedError("gsheets.append_row: a row appended without its key cannot be looked up")
        sid, sheet = result["spreadsheet_id"], result["sheet"]
        if self._marked_row(sid, sheet, column, key) is not None:
            return None
        return {"spreadsheet_id": sid, "sheet": sheet, "row": int(result["row"]), "deleted": False,
                "already_undone": True}

    def undo_append_row(self, p: AppendRowParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        sid, sheet, row = result["spreadsheet_id"], result["sheet"], int(result["row"])
        key, column = result.get("effect_key"), result.get("effect_column")
        if isinstance(key, str) and isinstance(column, str):
            # The key says where the row is now, whatever was inserted or deleted above it since.
            found = self._marked_row(sid, sheet, column, key)
            if found is None:
                return {"spreadsheet_id": sid, "sheet": sheet, "row": row, "deleted": False,
                        "already_undone": True}
            row = found
        current = self._read_row(sid, sheet, row)
        if not _normalised(current):
            return {"spreadsheet_id": sid, "sheet": sheet, "row": row, "deleted": False,
                    "already_undone": True}
        # Rows shift when others are inserted or deleted above: deleting blindly could destroy other data.
        if _normalised(current) != _normalised(self._marked_values(p, result)):
            raise PermanentError(f"gsheets: row {row} of {sheet!r} no longer holds the appended values; "
                                 "not deleting it", platform=self.platform)
        self._delete(sid, sheet, row, current)
        return {"spreadsheet_id": sid, "sheet": sheet, "row": row, "deleted": True, "already_undone": False}

    def do_delete_row(self, p: DeleteRowParams, effect: Effect = NO_EFFECT) -> Result:
        result = self._delete(self._spreadsheet_id(p.spreadsheet_id), p.sheet, p.row, log_key=effect.key)
        if effect.key is not None and self._effect_sheet() is not None:
            result["effect_key"] = effect.key
        return result

    def find_delete_row(self, p: DeleteRowParams, effect: Effect) -> Result | None:
        """A delete whose answer was lost: its line in the log tab (written in the same batchUpdate) says it
        happened, and holds the values it deleted (for undo)."""
        assert effect.key is not None
        sid = self._spreadsheet_id(p.spreadsheet_id)
        line = self._logged(sid, effect.key)
        if line is None:
            return None
        _, _, sheet, sheet_id, row, kept = line[:_LOG_WIDTH]
        values = json.loads(kept) if isinstance(kept, str) and kept else None
        return {"spreadsheet_id": sid, "sheet": str(sheet), "sheet_id": int(sheet_id), "row": int(row),
                "values": values, "effect_key": effect.key}

    def undo_delete_row(self, p: DeleteRowParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        sid, sheet, row = result["spreadsheet_id"], result["sheet"], int(result["row"])
        sheet_id = int(result["sheet_id"])
        if result.get("values") is None:
            raise PermanentError(f"gsheets: the values of row {row} of {sheet!r} were too wide to keep: "
                                 "cannot put them back", platform=self.platform)
        values = list(result["values"])
        # One batchUpdate: the row is back with its values, or nothing changed (never an empty row).
        requests = [self._rows_request("insertDimension", sheet_id, row)]
        if values:
            requests.append({"updateCells": {"start": {"sheetId": sheet_id, "rowIndex": row - 1, "columnIndex": 0},
                                             "rows": [{"values": [_cell(v) for v in values]}],
                                             "fields": "userEnteredValue"}})
        key = result.get("effect_key")
        if isinstance(key, str) and self._effect_sheet() is not None:
            ids = self._sheet_ids(sid, sheet)[1]
            self._batch_logged(sid, requests, ids, undo_key(key), sheet, sheet_id, row, values)
        else:
            self._batch(sid, requests)
        return {"spreadsheet_id": sid, "sheet": sheet, "row": row, "restored": True}

    def find_undone_delete_row(self, p: DeleteRowParams, result: Result) -> Result | None:
        """A restore whose answer was lost: its own line in the log (the delete's key, prefixed) says it
        happened. A delete made without a key: NotImplementedError (a row's values cannot tell it apart
        from an equal neighbour)."""
        key = result.get("effect_key")
        if not isinstance(key, str):
            raise NotImplementedError("gsheets.delete_row: a delete made without its key cannot be looked up")
        if self._logged(result["spreadsheet_id"], undo_key(key)) is None:
            return None
        return {"spreadsheet_id": result["spreadsheet_id"], "sheet": result["sheet"], "row": int(result["row"]),
                "restored": True}

    def check_auth(self) -> Result:
        sid = self._spreadsheet_id(None)
        data = self._call("GET", self._book_path(sid), params={"fields": "spreadsheetId"})
        return {"ok": True, "spreadsheet_id": data.get("spreadsheetId", sid)}


def undo_key(key: str) -> str:
    """The log line of a delete's undo (its restore) is keyed by the delete's own key, so it can be found
    from the delete's result alone."""
    return f"undo:{key}"
