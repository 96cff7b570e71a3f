"""Google Sheets v4 emulation: metadata, values get/update/append, batchUpdate (rows, columns, tabs, cells:
addSheet, deleteDimension, insertDimension, appendCells, updateCells; atomic, as Sheets' is).

Spreadsheets spring into existence on first use (so the configured default id always works); a tab is
created by the first append that names it. Cells keep the raw values written with valueInputOption=RAW.
"""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from executors.sandbox.common import Call, GoogleEmulator, Reply, field_mask

DEFAULT_ROWS = 1000
DEFAULT_COLUMNS = 26
_CELL = re.compile(r"^([A-Za-z]*)(\d*)$")
_BARE_TITLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_A1_LIKE = re.compile(r"^[A-Za-z]{1,3}\d*(:[A-Za-z]{0,3}\d*)?$")


@dataclass
class Tab:
    sheet_id: int
    title: str
    rows: list[list[Any]] = field(default_factory=list)
    row_count: int = DEFAULT_ROWS
    column_count: int = DEFAULT_COLUMNS
    hidden: bool = False

    def properties(self, index: int) -> dict[str, Any]:
        props = {"sheetId": self.sheet_id, "title": self.title, "index": index, "sheetType": "GRID",
                 "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count}}
        if self.hidden:
            props["hidden"] = True
        return props

    def last_used_row(self) -> int:
        """1-based number of the last row holding any value (0 when the tab is empty)."""
        for i in range(len(self.rows) - 1, -1, -1):
            if any(cell not in (None, "") for cell in self.rows[i]):
                return i + 1
        return 0


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    tabs: list[Tab]

    def tab(self, title: str) -> Tab | None:
        return next((t for t in self.tabs if t.title == title), None)

    def tab_by_id(self, sheet_id: Any) -> Tab | None:
        return next((t for t in self.tabs if t.sheet_id == sheet_id), None)

    def add_tab(self, title: str, sheet_id: int | None = None) -> Tab:
        # Real sheetIds are arbitrary ints (only the first tab is 0); random ones catch callers assuming 0.
        taken = {t.sheet_id for t in self.tabs}
        if sheet_id is None:
            sheet_id = 0 if not taken else secrets.randbelow(2**31 - 2) + 1
            while sheet_id in taken:
                sheet_id = secrets.randbelow(2**31 - 2) + 1
        tab = Tab(sheet_id, title)
        self.tabs.append(tab)
        return tab


def column_letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def column_index(letters: str) -> int:
    value = 0
    for ch in letters.upper():
        value = value * 26 + ord(ch) - 64
    return value - 1


def quote_title(title: str) -> str:
    if _BARE_TITLE.match(title) and not _A1_LIKE.match(title):
        return title
    return "'" + title.replace("'", "''") + "'"


@dataclass
class Area:
    tab: Tab
    row0: int  # 0-based first row
    col0: int  # 0-based first column
    row1: int | None  # 0-based last row inclusive; None = unbounded
    col1: int | None


def _render(value: Any, formatted: bool) -> Any:
    if value is None:
        return ""
    if not formatted:
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _trim(cells: list[Any]) -> list[Any]:
    end = len(cells)
    while end and cells[end - 1] in (None, ""):
        end -= 1
    return cells[:end]


class GSheetsEmulator(GoogleEmulator):
    platform = "gsheets"

    def reset(self) -> None:
        self.spreadsheets: dict[str, Spreadsheet] = {}

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sid, book in self.spreadsheets.items():
            sheets = {}
            for index, tab in enumerate(book.tabs):
                rows = tab.rows[:tab.last_used_row()]
                sheets[tab.title] = {"sheetId": tab.sheet_id, "index": index,
                                     "rows": [_trim(r) for r in rows]}
                if tab.hidden:
                    sheets[tab.title]["hidden"] = True
            out[sid] = {"spreadsheetId": sid, "sheets": sheets}
        return {"spreadsheets": out}

    def handle(self, call: Call) -> Reply:
        match call.method, call.segments:
            case "GET", ["v4", "spreadsheets", sid]:
                return Reply(200, field_mask(self._metadata(self._book(sid)), call.query.get("fields")))
            case "POST", ["v4", "spreadsheets", target] if target.endswith(":batchUpdate"):
                return Reply(200, self._batch_update(self._book(target.rsplit(":", 1)[0]), call.body))
            case "POST", ["v4", "spreadsheets", sid, "values", target] if target.endswith(":append"):
                return Reply(200, self._append(self._book(sid), target.rsplit(":", 1)[0], call))
            case "GET", ["v4", "spreadsheets", sid, "values", rng]:
                return Reply(200, self._get_values(self._book(sid), rng, call.query))
            case "PUT", ["v4", "spreadsheets", sid, "values", rng]:
                return Reply(200, self._update_values(self._book(sid), rng, call))
        return self.not_found(call)

    def _book(self, sid: str) -> Spreadsheet:
        if not sid:
            raise self.fail(404, "notFound", "Requested entity was not found.")
        book = self.spreadsheets.get(sid)
        if book is None:
            book = self.spreadsheets[sid] = Spreadsheet(sid, [])
            book.add_tab("Sheet1")
        return book

    def _metadata(self, book: Spreadsheet) -> dict[str, Any]:
        return {"spreadsheetId": book.spreadsheet_id,
                "properties": {"title": book.spreadsheet_id, "locale": "en_US", "timeZone": "Etc/UTC"},
                "sheets": [{"properties": t.properties(i)} for i, t in enumerate(book.tabs)],
                "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{book.spreadsheet_id}/edit"}

    def _bad_range(self, rng: str) -> Exception:
        return self.fail(400, "badRequest", f"Unable to parse range: {rng}")

    def _area(self, book: Spreadsheet, rng: str, *, create: bool = False) -> Area:
        if "!" in rng:
            title_part, _, a1 = rng.rpartition("!")
        else:
            title_part, a1 = rng, ""
        title = title_part
        if len(title) >= 2 and title.startswith("'") and title.endswith("'"):
            title = title[1:-1].replace("''", "'")
        tab = book.tab(title) if title else None
        if tab is None and "!" not in rng and _A1_LIKE.match(rng) and book.tabs:
            tab, a1 = book.tabs[0], rng  # a bare A1 range means the first tab
        if tab is None:
            if not create or not title:
                raise self._bad_range(rng)
            tab = book.add_tab(title)
        if not a1:
            return Area(tab, 0, 0, None, None)
        start, _, end = a1.partition(":")
        first, last = _CELL.match(start), _CELL.match(end or start)
        if first is None or last is None:
            raise self._bad_range(rng)
        col0 = column_index(first.group(1)) if first.group(1) else 0
        row0 = int(first.group(2)) - 1 if first.group(2) else 0
        col1 = column_index(last.group(1)) if last.group(1) else None
        row1 = int(last.group(2)) - 1 if last.group(2) else None
        if row0 < 0 or (row1 is not None and row1 < row0) or (col1 is not None and col1 < col0):
            raise self._bad_range(rng)
        return Area(tab, row0, col0, row1, col1)

    def _a1(self, tab: Tab, row0: int, col0: int, rows: int, cols: int) -> str:
        start = f"{column_letters(col0)}{row0 + 1}"
        end = f"{column_letters(col0 + max(cols, 1) - 1)}{row0 + max(rows, 1)}"
        return f"{quote_title(tab.title)}!{start}:{end}"

    def _input_rows(self, call: Call) -> list[list[Any]]:
        if not call.query.get("valueInputOption"):
            raise self.fail(400, "badRequest", "'valueInputOption' is required but not specified")
        body = call.body if isinstance(call.body, dict) else {}
        rows = body.get("values")
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise self.fail(400, "badRequest", "Invalid JSON payload: 'values' must be a list of lists.")
        for i, row in enumerate(rows):
            for j, cell in enumerate(row):
                if isinstance(cell, dict | list):
                    raise self.fail(400, "badRequest", f"Invalid values[{i}][{j}]: struct_value")
        return rows

    def _write(self, tab: Tab, row0: int, col0: int, rows: list[list[Any]]) -> None:
        while len(tab.rows) < row0 + len(rows):
            tab.rows.append([])
        for offset, values in enumerate(rows):
            row = tab.rows[row0 + offset]
            while len(row) < col0 + len(values):
                row.append(None)
            for j, value in enumerate(values):
                row[col0 + j] = value
        tab.row_count = max(tab.row_count, len(tab.rows))

    def _append(self, book: Spreadsheet, rng: str, call: Call) -> dict[str, Any]:
        area = self._area(book, rng, create=True)
        rows = self._input_rows(call)
        tab = area.tab
        # The "table" is the tab's used rows; new rows go right below it (INSERT_ROWS shifts the rest down).
        used = tab.last_used_row()
        if call.query.get("insertDataOption", "OVERWRITE") == "INSERT_ROWS" and used < len(tab.rows):
            tab.rows[used:used] = [[] for _ in rows]
        self._write(tab, used, area.col0, rows)
        width = max((len(r) for r in rows), default=0)
        updates = {"spreadsheetId": book.spreadsheet_id,
                   "updatedRange": self._a1(tab, used, area.col0, len(rows), width),
                   "updatedRows": len(rows), "updatedColumns": width,
                   "updatedCells": sum(len(r) for r in rows)}
        answer: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id, "updates": updates}
        if used:
            table_width = max(len(_trim(r)) for r in tab.rows[:used])
            answer["tableRange"] = self._a1(tab, 0, 0, used, table_width)
        return answer

    def _get_values(self, book: Spreadsheet, rng: str, query: dict[str, str]) -> dict[str, Any]:
        area = self._area(book, rng)
        formatted = query.get("valueRenderOption", "FORMATTED_VALUE") == "FORMATTED_VALUE"
        stop = len(area.tab.rows) if area.row1 is None else min(area.row1 + 1, len(area.tab.rows))
        values = []
        for row in area.tab.rows[area.row0:stop]:
            cells = row[area.col0:] if area.col1 is None else row[area.col0:area.col1 + 1]
            values.append([_render(c, formatted) for c in _trim(cells)])
        while values and not values[-1]:
            values.pop()
        rows = (area.row1 - area.row0 + 1) if area.row1 is not None else max(len(values), 1)
        widest = max((len(v) for v in values), default=1)
        cols = (area.col1 - area.col0 + 1) if area.col1 is not None else widest
        dimension = query.get("majorDimension", "ROWS")
        if dimension not in ("ROWS", "COLUMNS"):
            raise self.fail(400, "badRequest", f"Invalid value at 'major_dimension' ({dimension})")
        if dimension == "COLUMNS":
            # One list per column, each without its trailing empty cells, as Sheets answers.
            values = [_trim([row[j] if j < len(row) else "" for row in values]) for j in range(widest)]
            while values and not values[-1]:
                values.pop()
        answer: dict[str, Any] = {"range": self._a1(area.tab, area.row0, area.col0, rows, cols),
                                  "majorDimension": dimension}
        if values:
            answer["values"] = values
        return answer

    def _update_values(self, book: Spreadsheet, rng: str, call: Call) -> dict[str, Any]:
        area = self._area(book, rng)
        rows = self._input_rows(call)
        self._write(area.tab, area.row0, area.col0, rows)
        width = max((len(r) for r in rows), default=0)
        return {"spreadsheetId": book.spreadsheet_id,
                "updatedRange": self._a1(area.tab, area.row0, area.col0, len(rows), width),
                "updatedRows": len(rows), "updatedColumns": width,
                "updatedCells": sum(len(r) for r in rows)}

    def _batch_update(self, book: Spreadsheet, body: Any) -> dict[str, Any]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise self.fail(400, "badRequest", "Must specify at least one request.")
        # batchUpdate is atomic: apply to a copy, keep it only if every request succeeds.
        work = copy.deepcopy(book)
        replies = [self._apply(work, i, req) for i, req in enumerate(requests)]
        self.spreadsheets[book.spreadsheet_id] = work
        return {"spreadsheetId": book.spreadsheet_id, "replies": replies}

    def _cells(self, book: Spreadsheet, where: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        """appendCells (after the tab's last row with data) and updateCells (from `start`), with
        `fields: userEnteredValue`: the only part of a cell the sandbox keeps."""
        if spec.get("fields") not in ("userEnteredValue", "*"):
            raise self.fail(400, "badRequest", f"{where}: fields must be userEnteredValue (the sandbox keeps "
                                               "nothing else).")
        if kind == "appendCells":
            tab = book.tab_by_id(spec.get("sheetId"))
            row0, col0 = (tab.last_used_row() if tab else 0), 0
        else:
            start = spec.get("start") or {}
            tab = book.tab_by_id(start.get("sheetId"))
            row0, col0 = start.get("rowIndex", 0), start.get("columnIndex", 0)
            if isinstance(row0, bool) or not isinstance(row0, int) or isinstance(col0, bool) \
                    or not isinstance(col0, int) or row0 < 0 or col0 < 0:
                raise self.fail(400, "badRequest", f"{where}: start must hold non-negative indexes.")
        if tab is None:
            raise self.fail(400, "badRequest", f"{where}: No grid with id: "
                                               f"{spec.get('sheetId', (spec.get('start') or {}).get('sheetId'))}")
        rows = spec.get("rows")
        if not isinstance(rows, list):
            raise self.fail(400, "badRequest", f"{where}: rows must be a list.")
        values = [[self._cell_value(where, cell) for cell in (row or {}).get("values") or []] for row in rows]
        self._write(tab, row0, col0, values)
        return {}

    def _cell_value(self, where: str, cell: Any) -> Any:
        entered = (cell or {}).get("userEnteredValue") if isinstance(cell, dict) else None
        if entered is None:
            return None
        if not isinstance(entered, dict) or len(entered) != 1:
            raise self.fail(400, "badRequest", f"{where}: a userEnteredValue holds exactly one value.")
        ((kind, value),) = entered.items()
        if kind in ("stringValue", "numberValue", "boolValue"):
            return value
        raise self.fail(400, "badRequest", f"{where}: the sandbox does not model {kind}.")

    def _apply(self, book: Spreadsheet, i: int, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or len(request) != 1:
            raise self.fail(400, "badRequest", f"Invalid requests[{i}]: one kind of request expected.")
        ((kind, spec),) = request.items()
        where = f"Invalid requests[{i}].{kind}"
        if kind == "addSheet":
            props = (spec or {}).get("properties") or {}
            title = props.get("title")
            if not isinstance(title, str) or not title:
                raise self.fail(400, "badRequest", f"{where}: a sheet title is missing.")
            if book.tab(title):
                raise self.fail(400, "badRequest", f'{where}: A sheet with the name "{title}" already exists. '
                                                   "Please enter another name.")
            wanted = props.get("sheetId")
            if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0):
                raise self.fail(400, "badRequest", f"{where}: sheetId must be a non-negative integer.")
            if wanted is not None and book.tab_by_id(wanted):
                raise self.fail(400, "badRequest", f"{where}: A sheet with the id {wanted} already exists.")
            tab = book.add_tab(title, wanted)
            tab.hidden = bool(props.get("hidden"))
            return {"addSheet": {"properties": tab.properties(len(book.tabs) - 1)}}
        if kind in ("appendCells", "updateCells"):
            return self._cells(book, where, kind, spec or {})
        if kind not in ("deleteDimension", "insertDimension"):
            raise self.fail(400, "badRequest", f"{where}: not supported by the sandbox.")
        dim = (spec or {}).get("range") or {}
        found = book.tab_by_id(dim.get("sheetId"))
        if found is None:
            raise self.fail(400, "badRequest", f"{where}: No grid with id: {dim.get('sheetId')}")
        tab = found
        start, end = dim.get("startIndex"), dim.get("endIndex")
        if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end:
            raise self.fail(400, "badRequest", f"{where}: startIndex must be less than endIndex.")
        rows_dim = dim.get("dimension") == "ROWS"
        if not rows_dim and dim.get("dimension") != "COLUMNS":
            raise self.fail(400, "badRequest", f"{where}: dimension must be ROWS or COLUMNS.")
        count = end - start
        if kind == "deleteDimension":
            limit = tab.row_count if rows_dim else tab.column_count
            if end > limit:
                raise self.fail(400, "badRequest", f"{where}: Cannot delete beyond the grid limits.")
            if rows_dim:
                del tab.rows[start:end]
                tab.row_count -= count
            else:
                for row in tab.rows:
                    del row[start:end]
                tab.column_count -= count
        elif rows_dim:
            if start < len(tab.rows):
                tab.rows[start:start] = [[] for _ in range(count)]
            tab.row_count += count
        else:
            for row in tab.rows:
                if start < len(row):
                    row[start:start] = [None] * count
            tab.column_count += count
        return {}
