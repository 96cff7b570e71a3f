"""The sandbox server itself: auth, request log, state, faults, lifecycle. Real HTTP on a random port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from executors.sandbox import SandboxClient, SandboxServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sbx-s3cr3t-T0K3N"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NOTION = {**BEARER, "Notion-Version": "2022-06-28"}


@pytest.fixture(autouse=True)
def client(sbx: SandboxClient) -> SandboxClient:
    """This module's name for the emptied sandbox (tests/unit/conftest.py)."""
    return sbx


@pytest.fixture(scope="module")
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


def wait_until(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def post_message(http: httpx.Client, text: str = "hi",
                 headers: dict[str, str] | None = None) -> httpx.Response:
    return http.post("/slack/chat.postMessage", json={"channel": "#ops", "text": text},
                     headers=BEARER if headers is None else headers)


class TestLifecycle:
    def test_url_health_and_context_manager(self) -> None:
        with SandboxServer(port=0) as srv:
            assert srv.url == f"http://127.0.0.1:{srv.port}" and srv.port > 0
            assert httpx.get(f"{srv.url}/_sandbox/health").json() == {"ok": True}
            assert SandboxClient(srv.url).health()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{srv.url}/_sandbox/health")

    def test_stop_is_fast_even_with_a_request_held_by_a_timeout_fault(self) -> None:
        srv = SandboxServer().start()
        SandboxClient(srv.url).fault("trello", "timeout")
        holder = threading.Thread(target=lambda: httpx.post(f"{srv.url}/trello/1/cards", timeout=10,
                                                             headers=BEARER, json={"idList": "l"}))
        holder.start()
        wait_until(lambda: srv.sandbox.requests("trello"))
        started = time.monotonic()
        srv.stop()
        srv.stop()  # idempotent
        holder.join(5)
        assert time.monotonic() - started < 3

    def test_keep_alive_reuses_one_connection(self, http: httpx.Client) -> None:
        peers = set()
        for _ in range(5):
            resp = post_message(http)
            assert resp.status_code == 200
            peers.add(resp.extensions["network_stream"].get_extra_info("client_addr"))
        assert len(peers) == 1

    def test_serve_forever_prints_its_url_and_stops_on_ctrl_c(self) -> None:
        code = "from executors.sandbox.server import serve_forever; serve_forever('127.0.0.1', 0)"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("opsq sandbox listening on http://127.0.0.1:")
            url = line.rsplit(" ", 1)[1]
            assert httpx.get(f"{url}/_sandbox/health").json() == {"ok": True}
            proc.send_signal(signal.SIGINT)
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class TestAuth:
    @pytest.mark.parametrize(("method", "path"), [("POST", "/notion/v1/pages"), ("POST", "/trello/1/cards"),
                                                  ("POST", "/gdrive/drive/v3/files"),
                                                  ("GET", "/gsheets/v4/spreadsheets/ss")])
    def test_missing_or_invalid_token_is_401(self, http: httpx.Client, client: SandboxClient, method: str,
                                             path: str) -> None:
        for headers in ({}, {"Authorization": "Bearer invalid"}, {"Authorization": "Bearer"}):
            assert http.request(method, path, json={}, headers=headers).status_code == 401
        assert client.state(path.split("/")[1]) in ({"pages": []}, {"cards": []}, {"files": []},
                                                     {"spreadsheets": {}})

    def test_slack_answers_200_with_ok_false(self, http: httpx.Client) -> None:
        missing = post_message(http, headers={})
        assert (missing.status_code, missing.json()) == (200, {"ok": False, "error": "not_authed"})
        invalid = post_message(http, headers={"Authorization": "Bearer invalid"})
        assert (invalid.status_code, invalid.json()) == (200, {"ok": False, "error": "invalid_auth"})

    def test_trello_oauth_header(self, http: httpx.Client) -> None:
        good = 'OAuth oauth_consumer_key="k", oauth_token="t"'
        bad = 'OAuth oauth_consumer_key="k", oauth_token="invalid"'
        assert http.get("/trello/1/members/me", headers={"Authorization": good}).status_code == 200
        assert http.get("/trello/1/members/me", headers={"Authorization": bad}).status_code == 401
        assert http.get("/trello/1/members/me", headers={"Authorization": 'OAuth oauth_consumer_key="k"'}
                        ).status_code == 401

    def test_webhooks_need_no_credentials(self, http: httpx.Client) -> None:
        assert http.post("/webhook/x", json={"a": 1}).json() == {"ok": True, "received": {"a": 1}}


class TestRequestLog:
    def test_entries_in_order_with_every_field(self, http: httpx.Client, client: SandboxClient) -> None:
        post_message(http, "one")
        http.get("/gdrive/drive/v3/about", params={"fields": "user", "access_token": TOKEN, "key": "k"},
                 headers=BEARER)
        http.get("/_sandbox/state")  # control calls are not platform traffic: not logged
        log = client.requests()
        assert [(e["platform"], e["method"], e["path"]) for e in log] == [
            ("slack", "POST", "/slack/chat.postMessage"), ("gdrive", "GET", "/gdrive/drive/v3/about")]
        first, second = log
        assert second["seq"] == first["seq"] + 1
        assert first["body"] == {"channel": "#ops", "text": "one"}
        assert first["status"] == 200 and first["response"]["ok"] is True
        assert first["auth"] == "Bearer" and first["fault"] is None
        assert first["started"] <= first["finished"] <= second["started"]
        assert second["query"] == {"fields": "user"}
        assert second["body"] is None
        assert TOKEN not in json.dumps(log)
        assert client.requests(platform="gdrive") == [second]

    def test_clear(self, http: httpx.Client, client: SandboxClient) -> None:
        post_message(http)
        before = client.requests()[0]["seq"]
        client.clear_requests()
        assert client.requests() == []
        post_message(http)
        assert [e["seq"] for e in client.requests()] == [before + 1]  # seq keeps counting

    def test_in_flight_call_is_visible_before_its_answer(self, http: httpx.Client,
                                                         client: SandboxClient) -> None:
        client.fault("gdrive", "ok", latency_ms=400, times=1)
        result: dict[str, httpx.Response] = {}
        caller = threading.Thread(target=lambda: result.setdefault(
            "r", http.post("/gdrive/drive/v3/files", json={"name": "slow"}, headers=BEARER)))
        caller.start()
        entry = wait_until(lambda: client.requests("gdrive"))[0]
        assert entry["status"] is None and entry["finished"] is None and entry["fault"] == "ok"
        caller.join(5)
        assert result["r"].status_code == 200
        done = client.requests("gdrive")[0]
        assert done["status"] == 200
        assert done["finished"] - done["started"] >= 0.39

    def test_unknown_paths_are_json_404s_and_logged(self, http: httpx.Client, client: SandboxClient) -> None:
        for path in ("/nowhere/x", "/trello/1/boards", "/gdrive/drive/v3/files/nope"):
            resp = http.get(path, headers=BEARER)
            assert resp.status_code == 404, path
            assert resp.json()
        assert http.get("/_sandbox/nothing").status_code == 404
        assert [e["status"] for e in client.requests()] == [404, 404, 404]


class TestState:
    def test_slack_message_lives_until_chat_delete(self, http: httpx.Client, client: SandboxClient) -> None:
        posted = post_message(http).json()
        assert posted["channel"].startswith("C") and posted["message"]["text"] == "hi"
        (message,) = client.state("slack")["messages"]
        assert (message["channel"], message["ts"]) == (posted["channel"], posted["ts"])
        gone = http.post("/slack/chat.delete", json={"channel": posted["channel"], "ts": posted["ts"]},
                         headers=BEARER).json()
        assert gone["ok"] is True
        assert client.state("slack") == {"messages": []}
        again = http.post("/slack/chat.delete", json={"channel": posted["channel"], "ts": posted["ts"]},
                          headers=BEARER).json()
        assert again == {"ok": False, "error": "message_not_found"}

    def test_notion_archived_pages_are_not_live(self, http: httpx.Client, client: SandboxClient) -> None:
        page = http.post("/notion/v1/pages", headers=NOTION, json={
            "parent": {"database_id": "db"}, "properties": {"Name": {"title": [{"text": {"content": "T"}}]}},
        }).json()
        assert page["object"] == "page" and page["archived"] is False
        assert page["properties"]["Name"]["title"][0]["plain_text"] == "T"
        assert [p["id"] for p in client.state("notion")["pages"]] == [page["id"]]
        http.patch(f"/notion/v1/pages/{page['id']}", json={"archived": True}, headers=NOTION)
        assert client.state("notion") == {"pages": []}
        assert http.get(f"/notion/v1/pages/{page['id']}", headers=NOTION).json()["archived"] is True
        assert http.post("/notion/v1/pages", json={}, headers=BEARER).json()["code"] == "missing_version"

    def test_trello_card_and_labels(self, http: httpx.Client, client: SandboxClient) -> None:
        card = http.post("/trello/1/cards", json={"idList": "l1", "name": "Fix it", "idLabels": ["a"]},
                         headers=BEARER).json()
        assert set(card) >= {"id", "url", "name", "idList", "idLabels"}
        http.post(f"/trello/1/cards/{card['id']}/idLabels", json={"value": "b"}, headers=BEARER)
        assert client.state("trello")["cards"][0]["idLabels"] == ["a", "b"]
        dup = http.post(f"/trello/1/cards/{card['id']}/idLabels", json={"value": "b"}, headers=BEARER)
        assert dup.status_code == 400
        assert http.delete(f"/trello/1/cards/{card['id']}", headers=BEARER).status_code == 200
        assert client.state("trello") == {"cards": []}
        assert http.delete(f"/trello/1/cards/{card['id']}", headers=BEARER).status_code == 404
        assert http.delete("/trello/1/cards/not-an-id", headers=BEARER).status_code == 400

    def test_drive_file_trash_and_delete(self, http: httpx.Client, client: SandboxClient) -> None:
        created = http.post("/gdrive/drive/v3/files", json={"name": "a.txt"}, headers=BEARER).json()
        assert created == {"kind": "drive#file", "id": created["id"], "name": "a.txt",
                           "mimeType": "application/octet-stream", "trashed": False}
        http.patch(f"/gdrive/drive/v3/files/{created['id']}", json={"trashed": True}, headers=BEARER)
        assert client.state("gdrive")["files"][0]["trashed"] is True
        assert http.delete(f"/gdrive/drive/v3/files/{created['id']}", headers=BEARER).status_code == 204
        assert client.state("gdrive") == {"files": []}
        missing = http.delete(f"/gdrive/drive/v3/files/{created['id']}", headers=BEARER)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == 404

    def test_reset_forgets_objects_and_faults(self, http: httpx.Client, client: SandboxClient) -> None:
        post_message(http)
        client.fault("trello", "error")
        client.reset()
        assert client.faults() == []
        assert client.state()["slack"] == {"messages": []}
        assert set(client.state()) == {"slack", "notion", "trello", "gdrive", "gsheets", "webhook"}

    def test_webhook_any_method_any_path(self, http: httpx.Client, client: SandboxClient) -> None:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            resp = http.request(method, f"/webhook/a/{method.lower()}", json={"m": method})
            assert resp.json() == {"ok": True, "received": {"m": method}}
        raw = http.post("/webhook/raw", content=b"plain text").json()
        assert raw == {"ok": True, "received": "plain text"}
        log = client.requests("webhook")
        assert [e["method"] for e in log] == ["GET", "POST", "PUT", "PATCH", "DELETE", "POST"]
        assert log[-1]["body"] == "plain text"
        assert len(client.state("webhook")["received"]) == 6


class TestSheets:
    def append(self, http: httpx.Client, rng: str, *rows: list[Any], sid: str = "book") -> dict[str, Any]:
        resp = http.post(f"/gsheets/v4/spreadsheets/{sid}/values/{rng}:append", json={"values": list(rows)},
                         params={"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"},
                         headers=BEARER)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def sheet_ids(self, http: httpx.Client, sid: str = "book") -> dict[str, int]:
        meta = http.get(f"/gsheets/v4/spreadsheets/{sid}", params={"fields": "sheets.properties"},
                        headers=BEARER).json()
        assert set(meta) == {"sheets"}
        return {s["properties"]["title"]: s["properties"]["sheetId"] for s in meta["sheets"]}

    def batch(self, http: httpx.Client, *requests: dict[str, Any]) -> httpx.Response:
        return http.post("/gsheets/v4/spreadsheets/book:batchUpdate", json={"requests": list(requests)},
                         headers=BEARER)

    def test_append_creates_book_and_tab_then_appends_below(self, http: httpx.Client,
                                                            client: SandboxClient) -> None:
        first = self.append(http, "Tasks%21A1", ["a", 1])
        assert first["updates"]["updatedRange"] == "Tasks!A1:B1" and first["updates"]["updatedRows"] == 1
        second = self.append(http, "Tasks!A1", ["b", 2, True])
        assert second["updates"]["updatedRange"] == "Tasks!A2:C2"
        assert second["tableRange"] == "Tasks!A1:B1"
        spaced = self.append(http, "%27My%20tab%27%21A1", ["x"])
        assert spaced["updates"]["updatedRange"] == "'My tab'!A1:A1"
        ids = self.sheet_ids(http)
        assert list(ids) == ["Sheet1", "Tasks", "My tab"]
        assert ids["Sheet1"] == 0 and all(isinstance(v, int) and v > 0 for v in list(ids.values())[1:])
        rows = client.state("gsheets")["spreadsheets"]["book"]["sheets"]["Tasks"]["rows"]
        assert rows == [["a", 1], ["b", 2, True]]

    def test_deleted_row_shifts_the_rest_up_and_insert_makes_room(self, http: httpx.Client,
                                                                   client: SandboxClient) -> None:
        self.append(http, "Rows!A1", ["r1"], ["r2"], ["r3"])
        tab = self.sheet_ids(http)["Rows"]
        rng = {"sheetId": tab, "dimension": "ROWS", "startIndex": 0, "endIndex": 1}
        assert self.batch(http, {"deleteDimension": {"range": rng}}).status_code == 200
        assert client.state("gsheets")["spreadsheets"]["book"]["sheets"]["Rows"]["rows"] == [["r2"], ["r3"]]
        assert self.append(http, "Rows!A1", ["r4"])["updates"]["updatedRange"] == "Rows!A3:A3"
        assert self.batch(http, {"insertDimension": {"range": rng}}).status_code == 200
        put = http.put("/gsheets/v4/spreadsheets/book/values/Rows!A1", params={"valueInputOption": "RAW"},
                       json={"values": [["r1"]]}, headers=BEARER)
        assert put.json()["updatedRange"] == "Rows!A1:A1"
        assert client.state("gsheets")["spreadsheets"]["book"]["sheets"]["Rows"]["rows"] == [
            ["r1"], ["r2"], ["r3"], ["r4"]]

    def test_batch_update_is_atomic(self, http: httpx.Client, client: SandboxClient) -> None:
        self.append(http, "Rows!A1", ["keep"])
        tab = self.sheet_ids(http)["Rows"]
        good = {"deleteDimension": {"range": {"sheetId": tab, "dimension": "ROWS", "startIndex": 0,
                                              "endIndex": 1}}}
        bad = {"deleteDimension": {"range": {"sheetId": 424242, "dimension": "ROWS", "startIndex": 0,
                                             "endIndex": 1}}}
        resp = self.batch(http, good, bad)
        assert resp.status_code == 400 and "No grid with id: 424242" in resp.json()["error"]["message"]
        assert client.state("gsheets")["spreadsheets"]["book"]["sheets"]["Rows"]["rows"] == [["keep"]]

    def test_values_get_formatted_and_unformatted(self, http: httpx.Client) -> None:
        self.append(http, "Rows!A1", ["a", 2.0, True, None, 7])
        base = "/gsheets/v4/spreadsheets/book/values/Rows!A1:ZZ1"
        formatted = http.get(base, headers=BEARER).json()
        assert formatted["values"] == [["a", "2", "TRUE", "", "7"]]
        raw = http.get(base, params={"valueRenderOption": "UNFORMATTED_VALUE"}, headers=BEARER).json()
        assert raw["values"] == [["a", 2.0, True, "", 7]]
        empty = http.get("/gsheets/v4/spreadsheets/book/values/Rows!A9:ZZ9", headers=BEARER).json()
        assert "values" not in empty
        assert http.get("/gsheets/v4/spreadsheets/book/values/Nope!A1", headers=BEARER).status_code == 400
        missing_option = http.post("/gsheets/v4/spreadsheets/book/values/Rows!A1:append",
                                   json={"values": [[1]]}, headers=BEARER)
        assert missing_option.status_code == 400


class TestFaults:
    def test_error_times_two_hits_exactly_two_then_clears(self, http: httpx.Client,
                                                          client: SandboxClient) -> None:
        fault = client.fault("trello", "error", status=503, times=2)
        assert fault["remaining"] == 2
        statuses = [http.get("/trello/1/members/me", headers=BEARER).status_code for _ in range(4)]
        assert statuses == [503, 503, 200, 200]
        assert client.faults() == []
        log = client.requests("trello")
        assert [e["status"] for e in log] == statuses
        assert [e["fault"] for e in log] == ["error", "error", None, None]

    def test_rate_zero_hits_nothing(self, http: httpx.Client, client: SandboxClient) -> None:
        client.fault("gdrive", "error", rate=0.0)
        statuses = {http.post("/gdrive/drive/v3/files", json={}, headers=BEARER).status_code
                    for _ in range(10)}
        assert statuses == {200}
        (fault,) = client.faults()
        assert fault["hits"] == 0

    def test_match_limits_the_fault_to_some_paths(self, http: httpx.Client, client: SandboxClient) -> None:
        client.fault("slack", "error", status=500, match="chat.delete")
        assert post_message(http).status_code == 200
        resp = http.post("/slack/chat.delete", json={"channel": "C1234567", "ts": "1"}, headers=BEARER)
        assert resp.status_code == 500 and resp.json() == {"ok": False, "error": "internal_error"}

    def test_body_match_limits_the_fault_to_some_requests(self, http: httpx.Client, client: SandboxClient) -> None:
        client.fault("slack", "rate_limit", retry_after=3, body_match={"channel": "C7654321"})
        assert post_message(http).status_code == 200  # another channel
        resp = http.post("/slack/chat.postMessage", json={"channel": "C7654321", "text": "x"}, headers=BEARER)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
        logged = client.requests("slack")[-1]
        assert logged["body"]["channel"] == "C7654321" and logged["fault"] == "rate_limit" and logged["started"]

    def test_googles_403_rate_limit(self, http: httpx.Client, client: SandboxClient) -> None:
        client.fault("gsheets", "rate_limit", status=403)
        resp = http.get("/gsheets/v4/spreadsheets/x", headers=BEARER)
        assert resp.status_code == 403 and "Retry-After" not in resp.headers
        assert resp.json()["error"]["errors"][0]["reason"] == "rateLimitExceeded"

    def test_rate_limit_sends_retry_after(self, http: httpx.Client, client: SandboxClient) -> None:
        client.fault("notion", "rate_limit", retry_after=2)
        resp = http.get("/notion/v1/users/me", headers=NOTION)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
        assert resp.json()["code"] == "rate_limited"

    def test_auth_fault(self, http: httpx.Client, client: SandboxClient) -> None:
        client.fault("slack", "auth")
        client.fault("gsheets", "auth")
        assert post_message(http).json() == {"ok": False, "error": "invalid_auth"}
        assert http.get("/gsheets/v4/spreadsheets/x", headers=BEARER).status_code == 401
        assert client.state("gsheets") == {"spreadsheets": {}}

    def test_timeout_holds_the_request_past_the_client_timeout(self, http: httpx.Client,
                                                               client: SandboxClient) -> None:
        client.fault("gdrive", "timeout", times=1)
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            http.get("/gdrive/drive/v3/about", params={"fields": "user"}, headers=BEARER, timeout=0.3)
        assert time.monotonic() - started < 2
        (entry,) = client.requests("gdrive")
        assert entry["status"] is None and entry["fault"] == "timeout"

    def test_reset_answers_requests_held_by_a_fault(self, server: SandboxServer,
                                                   client: SandboxClient) -> None:
        client.fault("gdrive", "timeout")
        answer: dict[str, httpx.Response] = {}
        caller = threading.Thread(target=lambda: answer.setdefault("r", httpx.get(
            f"{server.url}/gdrive/drive/v3/about?fields=user", headers=BEARER, timeout=10)))
        caller.start()
        wait_until(lambda: client.requests("gdrive"))
        started = time.monotonic()
        client.reset()
        caller.join(5)
        assert time.monotonic() - started < 2
        assert answer["r"].status_code == 504
        assert client.requests("gdrive")[0]["status"] == 504

    def test_latency_and_replacement_and_clearing(self, http: httpx.Client, client: SandboxClient) -> None:
        client.fault("webhook", "ok", latency_ms=150)
        started = time.monotonic()
        assert http.post("/webhook/x", json={}).status_code == 200
        assert time.monotonic() - started >= 0.14
        client.fault("webhook", "error", status=502)  # replaces the previous webhook fault
        assert [f["mode"] for f in client.faults()] == ["error"]
        client.fault("slack", "error")
        client.clear_faults("webhook")
        assert [f["platform"] for f in client.faults()] == ["slack"]
        client.clear_faults()
        assert client.faults() == []

    @pytest.mark.parametrize("spec", [
        {"platform": "myspace"}, {"platform": "slack", "mode": "explode"}, {"platform": "slack", "rate": 2},
        {"platform": "slack", "times": 0}, {"platform": "slack", "status": 200},
        {"platform": "slack", "colour": 1},
    ])
    def test_invalid_faults_are_refused(self, client: SandboxClient, spec: dict[str, Any]) -> None:
        with pytest.raises(RuntimeError, match="HTTP 400"):
            client.fault(**spec)
        assert client.faults() == []
