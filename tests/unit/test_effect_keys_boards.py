"""Effect keys (issue 11) for Trello, Notion and Google Sheets, against the sandbox over real HTTP: the key
travels with the call in the platform's own way, `find` finds the effect an earlier call left (and nothing
when there is none), and `find_undone` tells an undo that took effect from one that did not."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from executors.base import EXACTLY_ONCE_EFFECT, Effect, Executor, ExecutorConfig
from executors.errors import InvalidParams
from executors.http import HttpClient
from executors.sandbox import SandboxClient, SandboxServer
from executors.trello import MARKER_PREFIX, TrelloExecutor, marker

TOKEN = "tok-effect-keys"
EXTRA: dict[str, dict[str, str]] = {
    "trello": {"api_key": "k3y"},
    "notion": {"version": "2022-06-28"},
    "gsheets": {"spreadsheet_id": "book1"},
}
Make = Callable[..., Executor]


@pytest.fixture(autouse=True)
def sbx(control: SandboxClient) -> SandboxClient:
    control.reset()
    control.clear_requests()
    return control


@pytest.fixture(scope="module")
def http() -> Iterator[HttpClient]:
    client = HttpClient(connect_timeout_s=2, read_timeout_s=5)
    yield client
    client.close()


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
