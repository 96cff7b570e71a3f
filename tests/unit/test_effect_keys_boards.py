"""Effect keys (issue 11) for Trello, Notion and Google Sheets, against the sandbox over real HTTP: the key
travels with the call in the platform's own way, `find` finds the effect an earlier call left (and nothing
when there is none), and `find_undone` tells an undo that took effect from one that did not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from executors.base import AT_LEAST_ONCE, EXACTLY_ONCE_EFFECT, Effect, Executor, ExecutorConfig
from executors.errors import InvalidParams, PermanentError
from executors.gsheets import EFFECT_SHEET, GSheetsExecutor
from executors.http import HttpClient
from executors.notion import NotionExecutor
from executors.sandbox import SandboxClient, SandboxServer
from executors.trello import MARKER_PREFIX, TrelloExecutor, marker

TOKEN = "tok-effect-keys"
EXTRA: dict[str, dict[str, str]] = {
    "trello": {"api_key": "k3y"},
    "notion": {"version": "2022-06-28"},
    "gsheets": {"spreadsheet_id": "book1"},
}
Make = Callable[..., Executor]


# Every test talks to the sandbox: empty it before each (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("sbx")


@pytest.fixture
def make(server: SandboxServer, http: HttpClient) -> Make:
    def build(cls: type[Executor], *, extra: dict[str, str] | None = None) -> Executor:
        config = ExecutorConfig(base_url=f"{server.url}/{cls.platform}", token=TOKEN,
                                extra={**EXTRA.get(cls.platform, {}), **(extra or {})})
        return cls(config, http)

    return build


def calls(sbx: SandboxClient, platform: str) -> list[tuple[str, str]]:
    return [(e["method"], e["path"]) for e in sbx.requests(platform)]


def effect(key: str) -> Effect:
    return Effect(key=key, since=time.time())


# -- Trello --------------------------------------------------------------------------------------------


class TestTrello:
    params = {"list_id": "list1", "name": "Deploy", "desc": "ship it"}

    def test_the_card_carries_the_key_and_is_found_by_it(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        assert TrelloExecutor.guarantee("create_card") == EXACTLY_ONCE_EFFECT
        result = trello.execute("create_card", self.params, effect("act-1"))
        (card,) = sbx.state("trello")["cards"]
        assert card["desc"] == f"ship it\n\n{MARKER_PREFIX}act-1"
        sbx.clear_requests()
        assert trello.find("create_card", self.params, effect("act-1")) == result
        assert calls(sbx, "trello") == [("GET", "/trello/1/lists/list1/cards")]
        assert sbx.requests("trello")[0]["query"] == {"fields": "name,desc,url,shortUrl"}

    def test_not_found_when_no_card_has_the_key(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        trello.execute("create_card", self.params, effect("act-1"))
        # Another action's card, a card with the key in its text but not as the marker line, another list.
        trello.execute("create_card", {**self.params, "desc": f"see {MARKER_PREFIX}act-2"}, effect("act-3"))
        trello.execute("create_card", {**self.params, "list_id": "list2"}, effect("act-2"))
        assert trello.find("create_card", self.params, effect("act-2")) is None
        assert trello.find("create_card", self.params, effect("act-1")) is not None

    def test_no_key_no_marker(self, make: Make, sbx: SandboxClient) -> None:
        make(TrelloExecutor).execute("create_card", {"list_id": "l", "name": "n"})
        assert sbx.state("trello")["cards"][0]["desc"] == ""

    def test_a_key_that_would_break_the_line_travels_hashed(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        key = "order 7\nline two"
        result = trello.execute("create_card", {"list_id": "l", "name": "n"}, effect(key))
        desc = sbx.state("trello")["cards"][0]["desc"]
        assert desc == marker(key) and "\n" not in desc and "sha256:" in desc
        assert trello.find("create_card", {"list_id": "l", "name": "n"}, effect(key)) == result

    def test_a_description_too_long_for_the_marker_is_refused(self, make: Make) -> None:
        with pytest.raises(InvalidParams):
            make(TrelloExecutor).execute("create_card", {"list_id": "l", "name": "n", "desc": "x" * 16300})

    def test_undo_of_create_card_is_checked_by_the_card_being_gone(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        result = trello.execute("create_card", self.params, effect("act-1"))
        assert trello.find_undone("create_card", self.params, result) is None  # still there
        trello.compensate("create_card", self.params, result)
        sbx.clear_requests()
        done = trello.find_undone("create_card", self.params, result)
        assert done == {"card_id": result["card_id"], "deleted": False, "already_undone": True}
        assert calls(sbx, "trello") == [("GET", f"/trello/1/cards/{result['card_id']}")]
        assert sbx.requests("trello")[0]["status"] == 404

    def test_add_label_found_and_ours(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        card_id = trello.execute("create_card", self.params)["card_id"]
        params = {"card_id": card_id, "label_id": "red"}
        eff = effect("act-9")
        assert trello.find("add_label", params, eff) is None  # not on the card: call
        trello.execute("add_label", params, eff)
        found = trello.find("add_label", params, eff)
        assert found == {"card_id": card_id, "label_id": "red", "added": True}
        # Undo removes what this action added; then find_undone sees it gone.
        assert trello.find_undone("add_label", params, found) is None
        trello.compensate("add_label", params, found)
        assert sbx.state("trello")["cards"][0]["idLabels"] == []
        assert trello.find_undone("add_label", params, found) == {
            "card_id": card_id, "label_id": "red", "removed": False, "already_undone": True}

    def test_add_label_found_but_there_before_the_action(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        card_id = trello.execute("create_card", self.params)["card_id"]
        params = {"card_id": card_id, "label_id": "red"}
        trello.execute("add_label", params)  # somebody's, before this action began
        # The action's first attempt began after that (beyond the second the lookup allows for clock skew).
        found = trello.find("add_label", params, Effect(key="act-9", since=time.time() + 2))
        assert found == {"card_id": card_id, "label_id": "red", "added": False}
        # The label was not this action's: its undo leaves it on the card.
        trello.compensate("add_label", params, found)
        assert sbx.state("trello")["cards"][0]["idLabels"] == ["red"]

    def test_find_undone_of_add_label_on_a_deleted_card(self, make: Make) -> None:
        trello = make(TrelloExecutor)
        result = trello.execute("create_card", self.params)
        params = {"card_id": result["card_id"], "label_id": "red"}
        added = trello.execute("add_label", params)
        trello.compensate("create_card", self.params, result)
        assert trello.find_undone("add_label", params, added)["already_undone"] is True


# -- Notion --------------------------------------------------------------------------------------------


def notion_database(make: Make, *, with_effect_property: bool = True) -> str:
    """A database with a schema (the sandbox then checks properties as Notion does)."""
    properties: dict[str, Any] = {"Name": {"title": {}}, "Status": {"status": {}}, "Points": {"number": {}}}
    if with_effect_property:
        properties["opsq_effect"] = {"rich_text": {}}
    created = make(NotionExecutor)._call("POST", "/v1/databases", {
        "parent": {"type": "page_id", "page_id": "5e0c0f4a-98a5-4f0c-8d8e-3b1f3f0e5a11"},
        "title": [{"text": {"content": "Tasks"}}], "properties": properties})
    return str(created["id"])


class TestNotion:
    def test_the_page_carries_the_key_and_is_found_by_it(self, make: Make, sbx: SandboxClient) -> None:
        notion = make(NotionExecutor)
        db = notion_database(make)
        params = {"database_id": db, "title": "Deploy", "status": "Todo"}
        result = notion.execute("create_task", params, effect("act-1"))
        notion.execute("create_task", {**params, "title": "Other"}, effect("act-2"))
        (page, _) = sbx.state("notion")["pages"]
        assert page["properties"]["opsq_effect"]["rich_text"][0]["plain_text"] == "act-1"
        sbx.clear_requests()
        assert notion.find("create_task", params, effect("act-1")) == result
        (query,) = sbx.requests("notion")
        assert (query["method"], query["path"]) == ("POST", f"/notion/v1/databases/{db}/query")
        assert query["body"] == {"filter": {"property": "opsq_effect", "rich_text": {"equals": "act-1"}},
                                 "page_size": 1}
        assert notion.find("create_task", params, effect("act-3")) is None

    def test_a_database_without_the_property_is_refused_with_the_way_out(self, make: Make,
                                                                          sbx: SandboxClient) -> None:
        db = notion_database(make, with_effect_property=False)
        params = {"database_id": db, "title": "Deploy"}
        with pytest.raises(PermanentError) as refused:
            make(NotionExecutor).execute("create_task", params, effect("act-1"))
        assert refused.value.status == 400 and "OPSQ_NOTION_EFFECT_PROPERTY" in refused.value.message
        assert sbx.state("notion")["pages"] == []
        # The setting empty: pages go without the key, and the action says it is at-least-once.
        bare = make(NotionExecutor, extra={"effect_property": ""})
        bare.execute("create_task", params, effect("act-1"))
        assert set(sbx.state("notion")["pages"][0]["properties"]) == {"Name"}
        with pytest.raises(NotImplementedError):
            bare.find("create_task", params, effect("act-1"))
        assert NotionExecutor.guarantee("create_task", {"effect_property": ""}) == AT_LEAST_ONCE
        assert NotionExecutor.guarantee("create_task", {}) == EXACTLY_ONCE_EFFECT
        assert NotionExecutor.guarantee("update_task", {"effect_property": ""}) == EXACTLY_ONCE_EFFECT

    def test_another_property_name(self, make: Make, sbx: SandboxClient) -> None:
        notion = make(NotionExecutor, extra={"effect_property": "Key"})
        params = {"database_id": "db-any", "title": "Deploy"}
        result = notion.execute("create_task", params, effect("act-1"))
        assert "Key" in sbx.state("notion")["pages"][0]["properties"]
        assert notion.find("create_task", params, effect("act-1")) == result

    def test_an_archived_page_is_the_undo_done(self, make: Make) -> None:
        notion = make(NotionExecutor)
        params = {"database_id": notion_database(make), "title": "Deploy"}
        result = notion.execute("create_task", params, effect("act-1"))
        assert notion.find_undone("create_task", params, result) is None
        notion.compensate("create_task", params, result)
        assert notion.find_undone("create_task", params, result) == {
            "page_id": result["page_id"], "archived": False, "already_undone": True}
        assert notion.find_undone("create_task", params, {"page_id": "0" * 32})["already_undone"] is True
        # Archived pages are not query results: the create's lookup no longer finds it.
        assert notion.find("create_task", params, effect("act-1")) is None

    def test_update_found_when_the_page_holds_the_values(self, make: Make) -> None:
        notion = make(NotionExecutor)
        db = notion_database(make)
        page_id = notion.execute("create_task", {"database_id": db, "title": "Old", "status": "Todo"})["page_id"]
        params = {"page_id": page_id, "status": "Done", "properties": {"Points": {"number": 3}}}
        eff = effect("act-7")
        assert notion.find("update_task", params, eff) is None  # not applied: call
        notion.execute("update_task", params, eff)
        found = notion.find("update_task", params, eff)
        # Applied by the lost attempt (edited after it began): the values it replaced went with the answer.
        assert found == {"page_id": page_id, "previous": None, "previous_lost": True}
        with pytest.raises(PermanentError, match="cannot undo"):
            notion.compensate("update_task", params, found)

    def test_update_found_with_its_previous_values_when_the_page_was_untouched(self, make: Make,
                                                                                sbx: SandboxClient) -> None:
        notion = make(NotionExecutor)
        db = notion_database(make)
        page_id = notion.execute("create_task", {"database_id": db, "title": "Old", "status": "Done"})["page_id"]
        params = {"page_id": page_id, "status": "Done"}
        # The first attempt began more than a minute (Notion's rounding) after the page's last edit.
        found = notion.find("update_task", params, Effect(key="act-7", since=time.time() + 120))
        assert found is not None and found["previous"] == {"Status": {"status": {"name": "Done"}}}
        undo = notion.compensate("update_task", params, found)
        assert undo == {"page_id": page_id, "restored": ["Status"]}
        assert sbx.state("notion")["pages"][0]["properties"]["Status"]["status"]["name"] == "Done"

    def test_update_undo_checked_by_the_values_back(self, make: Make) -> None:
        notion = make(NotionExecutor)
        db = notion_database(make)
        page_id = notion.execute("create_task", {"database_id": db, "title": "Old", "status": "Todo"})["page_id"]
        params = {"page_id": page_id, "title": "New", "status": "Done"}
        result = notion.execute("update_task", params, effect("act-7"))
        assert notion.find_undone("update_task", params, result) is None  # still the new values
        notion.compensate("update_task", params, result)
        assert notion.find_undone("update_task", params, result) == {"page_id": page_id,
                                                                     "restored": ["Name", "Status"]}


# -- Google Sheets -------------------------------------------------------------------------------------


def rows(sbx: SandboxClient, tab: str, book: str = "book1") -> list[list[Any]]:
    return list(sbx.state("gsheets")["spreadsheets"][book]["sheets"][tab]["rows"])


MARKED = {"effect_column": "E"}


class TestGSheetsAppend:
    def test_the_row_carries_the_key_and_is_found_by_it(self, make: Make, sbx: SandboxClient) -> None:
        sheets = make(GSheetsExecutor, extra=MARKED)
        params = {"sheet": "Tasks", "values": ["A-1", 10]}
        sheets.execute("append_row", {"sheet": "Tasks", "values": ["other"]}, effect("act-0"))
        result = sheets.execute("append_row", params, effect("act-1"))
        assert result["row"] == 2 and result["effect_key"] == "act-1" and result["effect_column"] == "E"
        (_, append) = sbx.requests("gsheets")
        assert append["body"] == {"values": [["A-1", 10, None, None, "act-1"]]}  # one call: row and key
        assert rows(sbx, "Tasks")[1] == ["A-1", 10, None, None, "act-1"]
        sbx.clear_requests()
        found = sheets.find("append_row", params, effect("act-1"))
        assert found == {**result, "updated_range": "Tasks!A2:E2"}
        (lookup,) = sbx.requests("gsheets")
        assert (lookup["method"], lookup["path"]) == ("GET", "/gsheets/v4/spreadsheets/book1/values/Tasks!E:E")
        assert sheets.find("append_row", params, effect("act-2")) is None
        assert sheets.find("append_row", {**params, "sheet": "Nowhere"}, effect("act-1")) is None

    def test_the_key_finds_the_row_where_it_moved_and_undo_deletes_that_one(self, make: Make,
                                                                           sbx: SandboxClient) -> None:
        sheets = make(GSheetsExecutor, extra=MARKED)
        params = {"sheet": "Tasks", "values": ["mine"]}
        sheets.execute("append_row", {"sheet": "Tasks", "values": ["first"]})
        result = sheets.execute("append_row", params, effect("act-1"))
        assert result["row"] == 2
        sheets.execute("delete_row", {"sheet": "Tasks", "row": 1})  # someone's, above ours: ours moves up
        assert sheets.find("append_row", params, effect("act-1"))["row"] == 1  # type: ignore[index]
        assert sheets.find_undone("append_row", params, result) is None
        undo = sheets.compensate("append_row", params, result)
        assert undo is not None and undo["deleted"] is True and rows(sbx, "Tasks") == []
        assert sheets.find_undone("append_row", params, result)["already_undone"] is True  # type: ignore[index]

    def test_off_by_default_and_then_at_least_once(self, make: Make, sbx: SandboxClient) -> None:
        sheets = make(GSheetsExecutor)
        params = {"sheet": "Tasks", "values": ["A-1"]}
        result = sheets.execute("append_row", params, effect("act-1"))
        assert "effect_key" not in result and rows(sbx, "Tasks") == [["A-1"]]
        with pytest.raises(NotImplementedError):
            sheets.find("append_row", params, effect("act-1"))
        with pytest.raises(NotImplementedError):
            sheets.find_undone("append_row", params, result)
        assert GSheetsExecutor.guarantee("append_row") == AT_LEAST_ONCE
        assert GSheetsExecutor.guarantee("append_row", MARKED) == EXACTLY_ONCE_EFFECT

    def test_values_that_reach_the_marker_column_are_refused(self, make: Make) -> None:
        with pytest.raises(InvalidParams, match="OPSQ_GSHEETS_EFFECT_COLUMN"):
            make(GSheetsExecutor, extra=MARKED).execute("append_row", {"sheet": "T", "values": [1, 2, 3, 4, 5]},
                                                        effect("act-1"))
        with pytest.raises(InvalidParams, match="letters"):
            make(GSheetsExecutor, extra={"effect_column": "5"}).execute("append_row", {"sheet": "T", "values": [1]},
                                                                        effect("act-1"))


class TestGSheetsDelete:
    def fill(self, make: Make) -> GSheetsExecutor:
        sheets = make(GSheetsExecutor)
        for values in (["r1", 1], ["r2", 2.5, False], ["r3", 3]):
            sheets.execute("append_row", {"sheet": "Tasks", "values": values})
        assert isinstance(sheets, GSheetsExecutor)
        return sheets

    def test_the_delete_is_logged_in_the_same_batch_and_found_by_it(self, make: Make, sbx: SandboxClient) -> None:
        sheets = self.fill(make)
        params = {"sheet": "Tasks", "row": 2}
        assert sheets.find("delete_row", params, effect("act-1")) is None  # no log tab yet: not done
        sbx.clear_requests()
        result = sheets.execute("delete_row", params, effect("act-1"))
        assert result["values"] == ["r2", 2.5, False] and result["effect_key"] == "act-1"
        batch = sbx.requests("gsheets")[-1]
        kinds = [next(iter(r)) for r in batch["body"]["requests"]]
        assert kinds == ["addSheet", "deleteDimension", "appendCells"]  # one atomic request
        assert rows(sbx, "Tasks") == [["r1", 1], ["r3", 3]]
        log = sbx.state("gsheets")["spreadsheets"]["book1"]["sheets"][EFFECT_SHEET]
        assert log["hidden"] is True and [line[0] for line in log["rows"]] == ["act-1"]
        sbx.clear_requests()
        found = sheets.find("delete_row", params, effect("act-1"))
        assert found == result
        assert calls(sbx, "gsheets") == [("GET", f"/gsheets/v4/spreadsheets/book1/values/{EFFECT_SHEET}!A:F")]
        assert sheets.find("delete_row", params, effect("act-2")) is None
        # A second delete appends to the existing tab: no addSheet.
        sheets.execute("delete_row", {"sheet": "Tasks", "row": 1}, effect("act-2"))
        assert [next(iter(r)) for r in sbx.requests("gsheets")[-1]["body"]["requests"]] == [
            "deleteDimension", "appendCells"]
        assert sheets.find("delete_row", params, effect("act-2")) is not None

    def test_undo_restores_in_one_batch_and_is_found_by_its_own_log_line(self, make: Make,
                                                                         sbx: SandboxClient) -> None:
        sheets = self.fill(make)
        before = rows(sbx, "Tasks")
        params = {"sheet": "Tasks", "row": 2}
        sheets.execute("delete_row", params, effect("act-1"))
        result = sheets.find("delete_row", params, effect("act-1"))  # as a reconciled attempt has it
        assert result is not None
        assert sheets.find_undone("delete_row", params, result) is None
        assert sheets.compensate("delete_row", params, result)["restored"] is True  # type: ignore[index]
        assert rows(sbx, "Tasks") == before
        assert sheets.find_undone("delete_row", params, result) == {
            "spreadsheet_id": "book1", "sheet": "Tasks", "row": 2, "restored": True}

    def test_the_log_tab_off_is_at_least_once(self, make: Make, sbx: SandboxClient) -> None:
        sheets = make(GSheetsExecutor, extra={"effect_sheet": ""})
        sheets.execute("append_row", {"sheet": "Tasks", "values": ["r1"]})
        sheets.execute("delete_row", {"sheet": "Tasks", "row": 1}, effect("act-1"))
        assert EFFECT_SHEET not in sbx.state("gsheets")["spreadsheets"]["book1"]["sheets"]
        with pytest.raises(NotImplementedError):
            sheets.find("delete_row", {"sheet": "Tasks", "row": 1}, effect("act-1"))
        assert GSheetsExecutor.guarantee("delete_row", {"effect_sheet": ""}) == AT_LEAST_ONCE
        assert GSheetsExecutor.guarantee("delete_row") == EXACTLY_ONCE_EFFECT

    def test_a_log_tab_added_meanwhile_by_another_worker_is_used(self, make: Make, sbx: SandboxClient) -> None:
        sheets = self.fill(make)
        sheets.execute("delete_row", {"sheet": "Tasks", "row": 1}, effect("act-1"))  # creates the log tab
        # This worker read the tabs before that (no log tab then): its addSheet is refused, and it appends
        # to the tab that is there, deleting its row once.
        sheet_id = sheets._sheet_id("book1", "Tasks")
        sheets._batch_logged("book1", [sheets._rows_request("deleteDimension", sheet_id, 1)], {"Tasks": sheet_id},
                             "act-2", "Tasks", sheet_id, 1, ["r2", 2.5, False])
        assert rows(sbx, "Tasks") == [["r3", 3]]
        log = sbx.state("gsheets")["spreadsheets"]["book1"]["sheets"][EFFECT_SHEET]["rows"]
        assert [line[0] for line in log] == ["act-1", "act-2"]
        assert sheets.find("delete_row", {"sheet": "Tasks", "row": 1}, effect("act-2")) is not None
