"""Every executor against the sandbox over real HTTP: the requests it sends, what it leaves behind,
how compensate undoes it, and how platform failures become typed errors."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from executors.base import Executor, ExecutorConfig
from executors.errors import (
    AuthError,
    ExecutorError,
    InvalidParams,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from executors.gdrive import GDriveExecutor
from executors.gsheets import GSheetsExecutor, a1_sheet, row_of
from executors.http import HttpClient
from executors.notion import NotionExecutor, writable
from executors.sandbox import SandboxClient, SandboxServer
from executors.slack import AUTH_ERRORS, RETRYABLE_ERRORS, SlackExecutor, slack_error
from executors.trello import TrelloExecutor
from executors.webhook import WebhookExecutor

TOKEN = "xoxb-s3cr3t-T0K3N-9f8e"
API_KEY = "trello-k3y-7d6c"
EXTRA: dict[str, dict[str, str]] = {
    "notion": {"version": "2022-06-28"},
    "trello": {"api_key": API_KEY},
    "gsheets": {"spreadsheet_id": "book1"},
    # The sandbox listens on loopback, which the SSRF guard refuses unless allowed.
    "webhook": {"allow_hosts": "127.0.0.1/32"},
}
Make = Callable[..., Executor]


# Every test talks to the sandbox: empty it before each (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("sbx")


@pytest.fixture
def make(server: SandboxServer, http: HttpClient) -> Make:
    def build(cls: type[Executor], *, token: str | None = TOKEN, client: HttpClient | None = None,
              base_url: str | None = None, extra: dict[str, str] | None = None) -> Executor:
        config = ExecutorConfig(base_url=base_url or f"{server.url}/{cls.platform}", token=token,
                                extra=EXTRA.get(cls.platform, {}) if extra is None else extra)
        return cls(config, client or http)

    return build


def calls(sbx: SandboxClient, platform: str) -> list[tuple[str, str]]:
    return [(e["method"], e["path"]) for e in sbx.requests(platform)]


def assert_no_secret(*things: Any) -> None:
    for thing in things:
        text = str(thing) if isinstance(thing, BaseException) else json.dumps(thing)
        assert TOKEN not in text and API_KEY not in text, text
        if isinstance(thing, ExecutorError):
            assert TOKEN not in json.dumps(thing.to_dict())


# -- Slack ---------------------------------------------------------------------------------------------


class TestSlack:
    def test_send_message_and_undo(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        params = {"channel": "#ops", "text": "deploy done"}
        result = slack.execute("send_message", params)
        assert set(result) == {"channel", "ts", "message_ts", "thread_ts"}
        assert result["channel"].startswith("C") and result["ts"] == result["message_ts"]
        (entry,) = sbx.requests("slack")
        assert (entry["method"], entry["path"]) == ("POST", "/slack/chat.postMessage")
        assert entry["body"] == params and entry["auth"] == "Bearer"
        (message,) = sbx.state("slack")["messages"]
        assert (message["channel"], message["ts"], message["text"]) == (result["channel"], result["ts"],
                                                                        "deploy done")
        undo = slack.compensate("send_message", params, result)
        assert undo is not None and undo["already_undone"] is False
        assert sbx.requests("slack")[-1]["body"] == {"channel": result["channel"], "ts": result["ts"]}
        assert sbx.state("slack") == {"messages": []}
        # Compensation may run twice (a lost ack): message_not_found means it is done already.
        again = slack.compensate("send_message", params, result)
        assert again is not None and again["already_undone"] is True
        assert_no_secret(result, undo, again)

    def test_thread_and_blocks_are_sent(self, make: Make, sbx: SandboxClient) -> None:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
        make(SlackExecutor).execute("send_message", {"channel": "C0123456", "text": "hi", "blocks": blocks,
                                                     "thread_ts": "1700000000.000100"})
        body = sbx.requests("slack")[0]["body"]
        assert body == {"channel": "C0123456", "text": "hi", "blocks": blocks,
                        "thread_ts": "1700000000.000100"}
        assert sbx.state("slack")["messages"][0]["thread_ts"] == "1700000000.000100"

    def test_request_approval_posts_buttons_and_undo_deletes(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        params = {"channel": "#approvals", "text": "Deploy v2?", "approval_id": "appr-42",
                  "approvers": ["U012ABC", "ops-lead"]}
        result = slack.execute("request_approval", params)
        assert set(result) == {"channel", "ts", "approval_id"} and result["approval_id"] == "appr-42"
        body = sbx.requests("slack")[0]["body"]
        assert body["channel"] == "#approvals" and body["text"] == "Deploy v2?"
        buttons = [el for block in body["blocks"] if block["type"] == "actions" for el in block["elements"]]
        assert [(b["action_id"], b["value"]) for b in buttons] == [("opsq_approve", "appr-42"),
                                                                   ("opsq_deny", "appr-42")]
        assert "<@U012ABC>, ops-lead" in json.dumps(body["blocks"])
        assert len(sbx.state("slack")["messages"]) == 1
        slack.compensate("request_approval", params, result)
        assert sbx.state("slack") == {"messages": []}
        assert calls(sbx, "slack")[-1] == ("POST", "/slack/chat.delete")

    def test_check_auth(self, make: Make) -> None:
        assert make(SlackExecutor).check_auth() == {"ok": True, "team": "opsq sandbox", "user": "opsq",
                                                    "team_id": "T0SANDBOX", "user_id": "U0SANDBOX"}

    def test_ok_false_answers_become_typed_errors(self, make: Make) -> None:
        with pytest.raises(AuthError, match="invalid_auth") as invalid:
            make(SlackExecutor, token="invalid").execute("send_message", {"channel": "#a", "text": "x"})
        with pytest.raises(AuthError, match="not_authed"):
            make(SlackExecutor, token=None).check_auth()
        with pytest.raises(PermanentError, match="msg_too_long") as too_long:
            make(SlackExecutor).execute("send_message", {"channel": "#a", "text": "x" * 40_001})
        assert type(too_long.value) is PermanentError and too_long.value.status == 200
        assert "invalid" not in invalid.value.message.replace("invalid_auth", "")

    @pytest.mark.parametrize("code", sorted(AUTH_ERRORS))
    def test_auth_codes(self, code: str) -> None:
        assert type(slack_error("chat.postMessage", {"ok": False, "error": code})) is AuthError

    @pytest.mark.parametrize("code", sorted(RETRYABLE_ERRORS))
    def test_retryable_codes(self, code: str) -> None:
        err = slack_error("chat.postMessage", {"ok": False, "error": code})
        assert type(err) is RetryableError and err.health_failure

    def test_ratelimited_and_other_codes(self) -> None:
        limited = slack_error("chat.postMessage", {"ok": False, "error": "ratelimited"}, retry_after=3)
        assert type(limited) is RateLimitedError and limited.retry_after == 3
        for code in ("channel_not_found", "msg_too_long", "message_not_found", "is_archived", ""):
            assert type(slack_error("chat.delete", {"ok": False, "error": code})) is PermanentError
        scope = slack_error("chat.postMessage",
                            {"ok": False, "error": "missing_scope", "needed": "chat:write"})
        assert str(scope) == "slack chat.postMessage: missing_scope (needed: chat:write)"

    def test_invalid_params(self, make: Make) -> None:
        slack = make(SlackExecutor)
        with pytest.raises(InvalidParams, match="channel"):
            slack.execute("send_message", {"channel": "", "text": "x"})
        with pytest.raises(InvalidParams, match="text"):
            slack.execute("send_message", {"channel": "#a"})
        with pytest.raises(InvalidParams, match="text must not be empty"):
            slack.execute("send_message", {"channel": "#a", "text": " "})
        with pytest.raises(InvalidParams, match="colour"):
            slack.execute("send_message", {"channel": "#a", "text": "x", "colour": "red"})
        with pytest.raises(InvalidParams, match="approval_id"):
            slack.execute("request_approval", {"channel": "#a", "text": "x"})
        with pytest.raises(InvalidParams, match=r"unknown action slack\.shout"):
            slack.execute("shout", {})


# -- Notion --------------------------------------------------------------------------------------------


def _plain_title(page: dict[str, Any]) -> str:
    return "".join(t["plain_text"] for t in page["properties"]["Name"]["title"])


class TestNotion:
    def test_create_task_and_undo_archives(self, make: Make, sbx: SandboxClient) -> None:
        notion = make(NotionExecutor)
        params = {"database_id": "db1", "title": "Follow up", "status": "Todo",
                  "properties": {"Priority": {"select": {"name": "High"}}}}
        result = notion.execute("create_task", params)
        assert set(result) == {"page_id", "url"} and result["url"].startswith("https://www.notion.so/")
        (entry,) = sbx.requests("notion")
        assert (entry["method"], entry["path"]) == ("POST", "/notion/v1/pages")
        assert entry["body"] == {"parent": {"database_id": "db1"}, "properties": {
            "Name": {"title": [{"text": {"content": "Follow up"}}]}, "Status": {"status": {"name": "Todo"}},
            "Priority": {"select": {"name": "High"}}}}
        (page,) = sbx.state("notion")["pages"]
        assert page["id"] == result["page_id"] and _plain_title(page) == "Follow up"
        undo = notion.compensate("create_task", params, result)
        assert undo == {"page_id": result["page_id"], "archived": True, "already_undone": False}
        last = sbx.requests("notion")[-1]
        assert (last["method"], last["path"], last["body"]) == (
            "PATCH", f"/notion/v1/pages/{result['page_id']}", {"archived": True})
        assert sbx.state("notion") == {"pages": []}

    def test_undo_of_a_missing_page_is_already_undone(self, make: Make) -> None:
        notion = make(NotionExecutor)
        params = {"database_id": "db1", "title": "x"}
        undo = notion.compensate("create_task", params, {"page_id": "0" * 32, "url": None})
        assert undo is not None and undo["already_undone"] is True

    def test_update_task_captures_previous_values_and_undo_restores_them(self, make: Make,
                                                                         sbx: SandboxClient) -> None:
        notion = make(NotionExecutor)
        page_id = notion.execute("create_task", {"database_id": "db1", "title": "Old", "status": "Todo",
                                                 "properties": {"Notes": {"rich_text": [
                                                     {"text": {"content": "keep me"}}]}}})["page_id"]
        before = sbx.state("notion")["pages"][0]["properties"]
        sbx.clear_requests()
        params = {"page_id": page_id, "title": "New", "status": "Done",
                  "properties": {"Priority": {"select": {"name": "High"}}}}
        result = notion.execute("update_task", params)
        assert calls(sbx, "notion") == [("GET", f"/notion/v1/pages/{page_id}"),
                                        ("PATCH", f"/notion/v1/pages/{page_id}")]
        assert result == {"page_id": page_id, "previous": {
            "Name": {"title": [{"text": {"content": "Old"}, "annotations": before["Name"]["title"][0][
                "annotations"]}]},
            "Status": {"status": {"name": "Todo"}},
            "Priority": None,
        }}
        after = sbx.state("notion")["pages"][0]["properties"]
        assert _plain_title({"properties": after}) == "New" and after["Status"]["status"]["name"] == "Done"
        assert after["Priority"]["select"]["name"] == "High"
        undo = notion.compensate("update_task", params, result)
        assert undo == {"page_id": page_id, "restored": ["Name", "Priority", "Status"]}
        restored = sbx.state("notion")["pages"][0]["properties"]
        assert restored["Name"] == before["Name"] and restored["Status"] == before["Status"]
        assert restored["Notes"] == before["Notes"]  # untouched by update and by undo
        assert restored["Priority"]["select"] is None  # it did not exist before: cleared
        assert_no_secret(result, undo)

    def test_writable_reshapes_read_properties(self) -> None:
        assert writable({"id": "x", "type": "multi_select", "multi_select": [{"id": "1", "name": "a",
                                                                              "color": "red"}]}) == {
            "multi_select": [{"name": "a"}]}
        assert writable({"id": "x", "type": "formula", "formula": {"number": 1}}) is None
        assert writable({"id": "x", "type": "number", "number": 3}) == {"number": 3}
        assert writable({"id": "x", "type": "select", "select": None}) == {"select": None}

    def test_bad_ids_are_permanent(self, make: Make) -> None:
        notion = make(NotionExecutor)
        with pytest.raises(PermanentError) as missing:
            notion.execute("update_task", {"page_id": "0" * 32, "title": "x"})
        assert missing.value.status == 404 and "Could not find page" in str(missing.value)
        with pytest.raises(PermanentError) as malformed:
            notion.execute("update_task", {"page_id": "not-a-uuid", "title": "x"})
        assert malformed.value.status == 400

    def test_invalid_params(self, make: Make) -> None:
        notion = make(NotionExecutor)
        with pytest.raises(InvalidParams, match="give at least one of title, status or properties"):
            notion.execute("update_task", {"page_id": "abc"})
        with pytest.raises(InvalidParams, match="database_id"):
            notion.execute("create_task", {"title": "x"})
        with pytest.raises(InvalidParams, match="page_id"):
            notion.execute("update_task", {"page_id": "../users/me", "title": "x"})

    def test_check_auth(self, make: Make) -> None:
        me = make(NotionExecutor).check_auth()
        assert me["ok"] is True and me["type"] == "bot"


# -- Trello --------------------------------------------------------------------------------------------


class TestTrello:
    def test_create_card_and_undo_deletes(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        params = {"list_id": "list1", "name": "Card", "desc": "d", "label_ids": ["lbl1"]}
        result = trello.execute("create_card", params)
        assert set(result) == {"card_id", "url"} and result["url"].startswith("https://trello.com/c/")
        (entry,) = sbx.requests("trello")
        assert (entry["method"], entry["path"]) == ("POST", "/trello/1/cards")
        assert entry["body"] == {"idList": "list1", "name": "Card", "desc": "d", "idLabels": ["lbl1"]}
        assert entry["auth"] == "OAuth" and entry["query"] == {}
        (card,) = sbx.state("trello")["cards"]
        assert (card["id"], card["idLabels"]) == (result["card_id"], ["lbl1"])
        undo = trello.compensate("create_card", params, result)
        assert undo == {"card_id": result["card_id"], "deleted": True, "already_undone": False}
        assert calls(sbx, "trello")[-1] == ("DELETE", f"/trello/1/cards/{result['card_id']}")
        assert sbx.state("trello") == {"cards": []}
        again = trello.compensate("create_card", params, result)
        assert again is not None and again["already_undone"] is True

    def test_add_label_and_undo(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        card_id = trello.execute("create_card", {"list_id": "l", "name": "c"})["card_id"]
        sbx.clear_requests()
        params = {"card_id": card_id, "label_id": "red"}
        result = trello.execute("add_label", params)
        assert result == {"card_id": card_id, "label_id": "red", "added": True}
        assert calls(sbx, "trello") == [("GET", f"/trello/1/cards/{card_id}"),
                                        ("POST", f"/trello/1/cards/{card_id}/idLabels")]
        assert sbx.requests("trello")[-1]["body"] == {"value": "red"}
        assert sbx.state("trello")["cards"][0]["idLabels"] == ["red"]
        trello.compensate("add_label", params, result)
        assert calls(sbx, "trello")[-1] == ("DELETE", f"/trello/1/cards/{card_id}/idLabels/red")
        assert sbx.state("trello")["cards"][0]["idLabels"] == []

    def test_label_already_on_the_card_is_not_removed_by_undo(self, make: Make, sbx: SandboxClient) -> None:
        trello = make(TrelloExecutor)
        created = trello.execute("create_card", {"list_id": "l", "name": "c", "label_ids": ["red"]})
        card_id = created["card_id"]
        params = {"card_id": card_id, "label_id": "red"}
        result = trello.execute("add_label", params)
        assert result["added"] is False
        trello.compensate("add_label", params, result)
        assert sbx.state("trello")["cards"][0]["idLabels"] == ["red"]

    def test_bad_ids_are_permanent(self, make: Make) -> None:
        trello = make(TrelloExecutor)
        with pytest.raises(PermanentError) as missing:
            trello.execute("add_label", {"card_id": "0" * 24, "label_id": "red"})
        assert missing.value.status == 404
        with pytest.raises(PermanentError) as malformed:
            trello.execute("add_label", {"card_id": "zz", "label_id": "red"})
        assert malformed.value.status == 400

    def test_invalid_params(self, make: Make) -> None:
        with pytest.raises(InvalidParams, match="list_id"):
            make(TrelloExecutor).execute("create_card", {"name": "x"})
        with pytest.raises(InvalidParams, match="card_id"):
            make(TrelloExecutor).execute("add_label", {"card_id": "a/b", "label_id": "x"})

    def test_check_auth(self, make: Make) -> None:
        assert make(TrelloExecutor).check_auth()["username"] == "opsqsandbox"


# -- Google Drive --------------------------------------------------------------------------------------


class TestGDrive:
    def test_create_file_and_undo_deletes(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        params = {"name": "invoice.pdf", "mime_type": "application/pdf", "parents": ["folder1"],
                  "description": "March"}
        result = drive.execute("create_file", params)
        assert result == {"file_id": result["file_id"], "name": "invoice.pdf", "mime_type": "application/pdf"}
        (entry,) = sbx.requests("gdrive")
        assert (entry["method"], entry["path"]) == ("POST", "/gdrive/drive/v3/files")
        assert entry["body"] == {"name": "invoice.pdf", "mimeType": "application/pdf", "parents": ["folder1"],
                                 "description": "March"}
        (record,) = sbx.state("gdrive")["files"]
        assert (record["id"], record["trashed"]) == (result["file_id"], False)
        undo = drive.compensate("create_file", params, result)
        assert undo is not None and undo["deleted"] is True
        assert calls(sbx, "gdrive")[-1] == ("DELETE", f"/gdrive/drive/v3/files/{result['file_id']}")
        assert sbx.state("gdrive") == {"files": []}
        again = drive.compensate("create_file", params, result)
        assert again is not None and again["already_undone"] is True

    def test_defaults_send_only_name_and_mime_type(self, make: Make, sbx: SandboxClient) -> None:
        make(GDriveExecutor).execute("create_file", {"name": "a"})
        assert sbx.requests("gdrive")[0]["body"] == {"name": "a", "mimeType": "application/octet-stream"}

    def test_trash_and_undo_untrashes(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        file_id = drive.execute("create_file", {"name": "a"})["file_id"]
        params = {"file_id": file_id}
        result = drive.execute("delete_file", params)
        assert result == {"file_id": file_id, "permanent": False, "trashed": True, "deleted": False}
        last = sbx.requests("gdrive")[-1]
        assert (last["method"], last["path"], last["body"]) == ("PATCH", f"/gdrive/drive/v3/files/{file_id}",
                                                                {"trashed": True})
        assert sbx.state("gdrive")["files"][0]["trashed"] is True
        assert drive.compensate("delete_file", params, result) == {"file_id": file_id, "restored": True}
        assert sbx.requests("gdrive")[-1]["body"] == {"trashed": False}
        assert sbx.state("gdrive")["files"][0]["trashed"] is False

    def test_permanent_delete_is_irreversible(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        assert "delete_file" in GDriveExecutor.irreversible
        file_id = drive.execute("create_file", {"name": "a"})["file_id"]
        params = {"file_id": file_id, "permanent": True}
        result = drive.execute("delete_file", params)
        assert result["deleted"] is True
        assert calls(sbx, "gdrive")[-1] == ("DELETE", f"/gdrive/drive/v3/files/{file_id}")
        assert sbx.state("gdrive") == {"files": []}
        seen = len(sbx.requests("gdrive"))
        undo = drive.compensate("delete_file", params, result)
        assert undo is not None and undo["restored"] is False
        assert len(sbx.requests("gdrive")) == seen  # nothing sent

    def test_bad_id_is_permanent(self, make: Make) -> None:
        with pytest.raises(PermanentError) as info:
            make(GDriveExecutor).execute("delete_file", {"file_id": "nope"})
        assert info.value.status == 404 and "File not found" in str(info.value)

    def test_check_auth(self, make: Make, sbx: SandboxClient) -> None:
        assert make(GDriveExecutor).check_auth()["ok"] is True
        assert sbx.requests("gdrive")[0]["query"] == {"fields": "user"}


# -- Google Sheets -------------------------------------------------------------------------------------


def rows(sbx: SandboxClient, tab: str, book: str = "book1") -> list[list[Any]]:
    return list(sbx.state("gsheets")["spreadsheets"][book]["sheets"][tab]["rows"])


class TestGSheets:
    def test_append_row_and_undo(self, make: Make, sbx: SandboxClient) -> None:
        sheets = make(GSheetsExecutor)
        first = {"sheet": "Tasks", "values": ["A-1", 10, 2.5, True, None]}
        second = {"sheet": "Tasks", "values": ["A-2", 20]}
        r1 = sheets.execute("append_row", first)
        assert r1 == {"spreadsheet_id": "book1", "sheet": "Tasks", "row": 1, "updated_range": "Tasks!A1:E1"}
        (entry,) = sbx.requests("gsheets")
        assert (entry["method"], entry["path"]) == (
            "POST", "/gsheets/v4/spreadsheets/book1/values/Tasks!A1:append")
        assert entry["query"] == {"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"}
        assert entry["body"] == {"values": [["A-1", 10, 2.5, True, None]]}
        r2 = sheets.execute("append_row", second)
        assert r2["row"] == 2
        assert rows(sbx, "Tasks") == [["A-1", 10, 2.5, True], ["A-2", 20]]
        # Rollback undoes in reverse order.
        assert sheets.compensate("append_row", second, r2)["deleted"] is True  # type: ignore[index]
        assert sheets.compensate("append_row", first, r1)["deleted"] is True  # type: ignore[index]
        assert rows(sbx, "Tasks") == []
        again = sheets.compensate("append_row", first, r1)
        assert again is not None and again["already_undone"] is True

    def test_undo_refuses_to_delete_a_row_that_moved(self, make: Make, sbx: SandboxClient) -> None:
        sheets = make(GSheetsExecutor)
        first = {"sheet": "Tasks", "values": ["a"]}
        r1 = sheets.execute("append_row", first)
        sheets.execute("delete_row", {"sheet": "Tasks", "row": 1})
        sheets.execute("append_row", {"sheet": "Tasks", "values": ["someone else's"]})
        with pytest.raises(PermanentError, match="no longer holds the appended values"):
            sheets.compensate("append_row", first, r1)
        assert rows(sbx, "Tasks") == [["someone else's"]]

    def test_explicit_spreadsheet_and_quoted_tab(self, make: Make, sbx: SandboxClient) -> None:
        result = make(GSheetsExecutor).execute("append_row", {"sheet": "Q1 sales", "values": [1],
                                                              "spreadsheet_id": "other"})
        assert result["spreadsheet_id"] == "other" and result["updated_range"] == "'Q1 sales'!A1:A1"
        path = sbx.requests("gsheets")[0]["path"]
        assert path == "/gsheets/v4/spreadsheets/other/values/'Q1 sales'!A1:append"
        assert rows(sbx, "Q1 sales", book="other") == [[1]]

    def test_delete_row_keeps_values_and_undo_reinserts_them(self, make: Make, sbx: SandboxClient) -> None:
        sheets = make(GSheetsExecutor)
        for values in (["r1", 1], ["r2", 2.5, False], ["r3", 3]):
            sheets.execute("append_row", {"sheet": "Tasks", "values": values})
        before = rows(sbx, "Tasks")
        sbx.clear_requests()
        params = {"sheet": "Tasks", "row": 2}
        result = sheets.execute("delete_row", params)
        sheet_id = result["sheet_id"]
        assert sheet_id != 0  # "Tasks" is the book's second tab: its id had to be looked up
        assert result == {"spreadsheet_id": "book1", "sheet": "Tasks", "sheet_id": sheet_id, "row": 2,
                          "values": ["r2", 2.5, False]}
        log = sbx.requests("gsheets")
        assert [(e["method"], e["path"]) for e in log] == [
            ("GET", "/gsheets/v4/spreadsheets/book1"),
            ("GET", "/gsheets/v4/spreadsheets/book1/values/Tasks!A2:ZZ2"),
            ("POST", "/gsheets/v4/spreadsheets/book1:batchUpdate")]
        assert log[0]["query"] == {"fields": "sheets.properties"}
        assert log[2]["body"] == {"requests": [{"deleteDimension": {"range": {
            "sheetId": sheet_id, "dimension": "ROWS", "startIndex": 1, "endIndex": 2}}}]}
        assert rows(sbx, "Tasks") == [["r1", 1], ["r3", 3]]
        undo = sheets.compensate("delete_row", params, result)
        assert undo == {"spreadsheet_id": "book1", "sheet": "Tasks", "row": 2, "restored": True}
        assert rows(sbx, "Tasks") == before
        # One batchUpdate (atomic): the row comes back with its values, or not at all.
        batch = sbx.requests("gsheets")[-1]
        assert (batch["method"], batch["path"]) == ("POST", "/gsheets/v4/spreadsheets/book1:batchUpdate")
        assert batch["body"]["requests"][1] == {"updateCells": {
            "start": {"sheetId": sheet_id, "rowIndex": 1, "columnIndex": 0},
            "rows": [{"values": [{"userEnteredValue": {"stringValue": "r2"}},
                                 {"userEnteredValue": {"numberValue": 2.5}},
                                 {"userEnteredValue": {"boolValue": False}}]}],
            "fields": "userEnteredValue"}}

    def test_unknown_tab_is_permanent(self, make: Make) -> None:
        with pytest.raises(PermanentError, match="no tab named 'Nope'"):
            make(GSheetsExecutor).execute("delete_row", {"sheet": "Nope", "row": 1})

    def test_invalid_params(self, make: Make) -> None:
        sheets = make(GSheetsExecutor)
        with pytest.raises(InvalidParams, match="values"):
            sheets.execute("append_row", {"sheet": "s", "values": []})
        with pytest.raises(InvalidParams, match=r"values\.0"):
            sheets.execute("append_row", {"sheet": "s", "values": [{"nested": 1}]})
        with pytest.raises(InvalidParams, match="row"):
            sheets.execute("delete_row", {"sheet": "s", "row": 0})
        with pytest.raises(InvalidParams, match="no default spreadsheet"):
            make(GSheetsExecutor, extra={}).execute("append_row", {"sheet": "s", "values": [1]})

    def test_helpers(self) -> None:
        assert [a1_sheet(t) for t in ("Tasks", "Q1 sales", "AB12", "it's")] == [
            "Tasks", "'Q1 sales'", "'AB12'", "'it''s'"]
        assert row_of("'My tab'!A17:C17") == 17 and row_of("Sheet1!$B$4") == 4
        with pytest.raises(PermanentError):
            row_of("Sheet1")

    def test_check_auth(self, make: Make, sbx: SandboxClient) -> None:
        assert make(GSheetsExecutor).check_auth() == {"ok": True, "spreadsheet_id": "book1"}
        assert sbx.requests("gsheets")[0]["query"] == {"fields": "spreadsheetId"}


# -- Webhook -------------------------------------------------------------------------------------------


class TestWebhook:
    def test_post_sends_json_and_bearer(self, make: Make, server: SandboxServer, sbx: SandboxClient) -> None:
        hook = make(WebhookExecutor, base_url="")
        params = {"url": f"{server.url}/webhook/hooks/deploy", "json": {"deploy": 42}}
        result = hook.execute("post", params)
        assert result == {"status": 200, "body": {"ok": True, "received": {"deploy": 42}}}
        (entry,) = sbx.requests("webhook")
        assert (entry["method"], entry["path"], entry["body"]) == ("POST", "/webhook/hooks/deploy",
                                                                   {"deploy": 42})
        assert entry["auth"] == "Bearer"
        assert hook.compensate("post", params, result) == {"compensated": False}
        assert len(sbx.requests("webhook")) == 1

    def test_own_authorization_header_wins_and_method(self, make: Make, server: SandboxServer,
                                                      sbx: SandboxClient) -> None:
        make(WebhookExecutor).execute("post", {"url": f"{server.url}/webhook/x", "method": "PUT",
                                               "headers": {"authorization": "Basic dTpw"}})
        (entry,) = sbx.requests("webhook")
        assert (entry["method"], entry["auth"], entry["body"]) == ("PUT", "Basic", None)
        make(WebhookExecutor, token=None).execute("post", {"url": f"{server.url}/webhook/y"})
        assert sbx.requests("webhook")[-1]["auth"] is None

    def test_token_only_for_urls_under_the_webhook_base_url(self, make: Make, server: SandboxServer,
                                                            sbx: SandboxClient, http: HttpClient) -> None:
        hook = make(WebhookExecutor, base_url=f"{server.url}/webhook/trusted")
        hook.execute("post", {"url": f"{server.url}/webhook/trusted/deploy"})
        hook.execute("post", {"url": f"{server.url}/webhook/elsewhere"})
        hook.execute("post", {"url": f"{server.url}/webhook/trustedx"})  # not a segment boundary
        params = {"url": f"{server.url}/webhook/trusted/do", "compensation_url": f"{server.url}/webhook/other/undo"}
        hook.compensate("post", params, hook.execute("post", params))
        assert [(e["path"], e["auth"]) for e in sbx.requests("webhook")] == [
            ("/webhook/trusted/deploy", "Bearer"), ("/webhook/elsewhere", None), ("/webhook/trustedx", None),
            ("/webhook/trusted/do", "Bearer"), ("/webhook/other/undo", None)]
        # No webhook base URL configured (OPSQ_WEBHOOK_BASE_URL / OPSQ_PLATFORM_BASE_URL unset): never sent.
        WebhookExecutor(ExecutorConfig(base_url="", token=TOKEN, extra=EXTRA["webhook"]), http).execute(
            "post", {"url": f"{server.url}/webhook/trusted/deploy"})
        assert sbx.requests("webhook")[-1]["auth"] is None

    def test_compensation_url(self, make: Make, server: SandboxServer, sbx: SandboxClient) -> None:
        hook = make(WebhookExecutor)
        params = {"url": f"{server.url}/webhook/do", "json": {"n": 1},
                  "compensation_url": f"{server.url}/webhook/undo"}
        result = hook.execute("post", params)
        undo = hook.compensate("post", params, result)
        assert undo == {"compensated": True, "status": 200,
                        "body": {"ok": True, "received": {"undo": result}}}
        custom = {**params, "compensation_json": {"revert": 1}}
        hook.compensate("post", custom, result)
        assert [(e["path"], e["body"]) for e in sbx.requests("webhook")] == [
            ("/webhook/do", {"n": 1}), ("/webhook/undo", {"undo": result}), ("/webhook/undo", {"revert": 1})]

    def test_errors_hide_the_url_path(self, make: Make, server: SandboxServer, sbx: SandboxClient) -> None:
        sbx.fault("webhook", "error", status=502)
        with pytest.raises(RetryableError) as info:
            make(WebhookExecutor).execute("post", {"url": f"{server.url}/webhook/services/T0/B0/SECRETPART"})
        assert "SECRETPART" not in str(info.value) and "127.0.0.1" in str(info.value)

    def test_invalid_params(self, make: Make) -> None:
        hook = make(WebhookExecutor)
        with pytest.raises(InvalidParams, match="url: Value error, must be an absolute http"):
            hook.execute("post", {"url": "ftp://example.com/x"})
        with pytest.raises(InvalidParams, match="compensation_url"):
            hook.execute("post", {"url": "http://example.com", "compensation_url": "/relative"})
        with pytest.raises(InvalidParams, match="method"):
            hook.execute("post", {"url": "http://example.com", "method": "DELETE"})

    def test_check_auth(self, make: Make) -> None:
        assert make(WebhookExecutor).check_auth() == {"ok": True, "note": "webhooks authenticate per URL"}


# -- Failures, the same for every platform -------------------------------------------------------------

CASES: dict[str, tuple[type[Executor], str, Callable[[str], dict[str, Any]]]] = {
    "slack": (SlackExecutor, "send_message", lambda url: {"channel": "#ops", "text": "hi"}),
    "notion": (NotionExecutor, "create_task", lambda url: {"database_id": "db1", "title": "t"}),
    "trello": (TrelloExecutor, "create_card", lambda url: {"list_id": "l1", "name": "n"}),
    "gdrive": (GDriveExecutor, "create_file", lambda url: {"name": "f"}),
    "gsheets": (GSheetsExecutor, "append_row", lambda url: {"sheet": "s", "values": [1]}),
    "webhook": (WebhookExecutor, "post", lambda url: {"url": f"{url}/webhook/hook", "json": {"a": 1}}),
}
ALL = sorted(CASES)
WITH_TOKENS = [p for p in ALL if p != "webhook"]


def run(make: Make, server: SandboxServer, platform: str, **kw: Any) -> dict[str, Any]:
    cls, action, params = CASES[platform]
    return make(cls, **kw).execute(action, params(server.url))


def failure(make: Make, server: SandboxServer, platform: str, expected: type[ExecutorError],
            **kw: Any) -> ExecutorError:
    with pytest.raises(expected) as info:
        run(make, server, platform, **kw)
    assert_no_secret(info.value)
    return info.value


@pytest.mark.parametrize("platform", ALL)
class TestFailures:
    def test_503_is_retryable_health_failure(self, make: Make, server: SandboxServer, sbx: SandboxClient,
                                             platform: str) -> None:
        sbx.fault(platform, "error", status=503)
        err = failure(make, server, platform, RetryableError)
        assert type(err) is RetryableError and err.health_failure is True and err.status == 503

    def test_429_is_rate_limited_with_retry_after(self, make: Make, server: SandboxServer,
                                                  sbx: SandboxClient, platform: str) -> None:
        sbx.fault(platform, "rate_limit", retry_after=2)
        err = failure(make, server, platform, RateLimitedError)
        assert isinstance(err, RateLimitedError)
        assert err.retry_after == 2 and err.health_failure is False and err.status == 429

    def test_auth_fault_is_auth_error(self, make: Make, server: SandboxServer, sbx: SandboxClient,
                                      platform: str) -> None:
        sbx.fault(platform, "auth")
        failure(make, server, platform, AuthError)

    def test_400_fault_is_permanent(self, make: Make, server: SandboxServer, sbx: SandboxClient,
                                    platform: str) -> None:
        sbx.fault(platform, "error", status=400, times=1)
        err = failure(make, server, platform, PermanentError)
        assert err.status == 400 and not err.health_failure

    def test_timeout_is_retryable(self, make: Make, server: SandboxServer, sbx: SandboxClient,
                                  quick_http: HttpClient, platform: str) -> None:
        sbx.fault(platform, "timeout", times=1)
        err = failure(make, server, platform, RetryableError, client=quick_http)
        assert "timed out" in str(err)

    def test_connection_refused_is_retryable(self, make: Make, server: SandboxServer, platform: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
        if platform == "webhook":
            with pytest.raises(RetryableError) as info:
                make(WebhookExecutor).execute("post", {"url": f"{closed}/hook/SECRETPART"})
            assert "connection failed" in str(info.value) and "SECRETPART" not in str(info.value)
        else:
            err = failure(make, server, platform, RetryableError, base_url=f"{closed}/{platform}")
            assert "connection failed" in str(err)

    def test_times_two_hits_two_calls_then_succeeds(self, make: Make, server: SandboxServer,
                                                    sbx: SandboxClient, platform: str) -> None:
        sbx.fault(platform, "error", status=503, times=2)
        for _ in range(2):
            failure(make, server, platform, RetryableError)
        result = run(make, server, platform)
        assert_no_secret(result)
        assert [e["status"] for e in sbx.requests(platform)] == [503, 503, 200]
        assert sbx.faults() == []

    def test_rate_zero_hits_nothing(self, make: Make, server: SandboxServer, sbx: SandboxClient,
                                    platform: str) -> None:
        sbx.fault(platform, "error", rate=0.0)
        for _ in range(3):
            assert_no_secret(run(make, server, platform))
        assert {e["status"] for e in sbx.requests(platform)} == {200}


@pytest.mark.parametrize("platform", WITH_TOKENS)
def test_token_invalid_is_auth_error(make: Make, server: SandboxServer, sbx: SandboxClient,
                                     platform: str) -> None:
    err = failure(make, server, platform, AuthError, token="invalid")
    assert err.kind == "auth"
    assert sbx.requests(platform)[0]["status"] == (200 if platform == "slack" else 401)


@pytest.mark.parametrize("platform", WITH_TOKENS)
def test_missing_token_is_auth_error(make: Make, server: SandboxServer, platform: str) -> None:
    failure(make, server, platform, AuthError, token=None)


@pytest.mark.parametrize("platform", ALL)
def test_results_and_check_auth_never_hold_the_token(make: Make, server: SandboxServer,
                                                     platform: str) -> None:
    cls = CASES[platform][0]
    assert_no_secret(run(make, server, platform), make(cls).check_auth())
