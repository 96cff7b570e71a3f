"""Trello REST API emulation: cards (create, get, update, delete), card labels, card actions (the
addLabelToCard / removeLabelFromCard history), list cards, members/me. `fields` narrows cards as Trello's does
(the id always comes back)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from executors.sandbox.common import Call, Emulator, Reply

_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
MEMBER_ID = "5f0c1d2e3f4a5b6c7d8e9f00"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


class TrelloEmulator(Emulator):
    platform = "trello"

    def reset(self) -> None:
        self.cards: dict[str, dict[str, Any]] = {}
        # Trello's action history, newest first as the API returns it: what changed a card, when, by whom.
        self.actions: list[dict[str, Any]] = []
        self._short = 0

    def snapshot(self) -> dict[str, Any]:
        return {"cards": list(self.cards.values())}

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"message": message, "error": code})

    def unauthorized(self, code: str) -> Reply:
        return self.error(401, "unauthorized", "invalid token" if code == "invalid_auth" else "unauthorized")

    def handle(self, call: Call) -> Reply:
        match call.method, call.segments:
            case "POST", ["1", "cards"]:
                args = call.body if isinstance(call.body, dict) else dict(call.query)
                return Reply(200, self._create(args))
            case "GET", ["1", "cards", card_id]:
                return Reply(200, _fields(self._card(card_id), call.query.get("fields")))
            case "GET", ["1", "cards", card_id, "actions"]:
                self._card(card_id)
                return Reply(200, self._card_actions(card_id, call.query))
            case "PUT", ["1", "cards", card_id]:
                return Reply(200, self._update(card_id, call.body if isinstance(call.body, dict) else {}))
            case "DELETE", ["1", "cards", card_id]:
                self._card(card_id)
                del self.cards[card_id]
                return Reply(200, {"limits": {}})
            case "POST", ["1", "cards", card_id, "idLabels"]:
                return Reply(200, self._add_label(card_id, call.body, call.query))
            case "DELETE", ["1", "cards", card_id, "idLabels", label_id]:
                card = self._card(card_id)
                if label_id not in card["idLabels"]:
                    raise self.fail(404, "not_found", "that label is not on the card")
                card["idLabels"].remove(label_id)
                self._record("removeLabelFromCard", card, label_id)
                return Reply(200, {"_value": None})
            case "GET", ["1", "lists", list_id, "cards"]:
                cards = [_fields(c, call.query.get("fields")) for c in self.cards.values()
                         if c["idList"] == list_id and not c["closed"]]
                return Reply(200, cards)
            case "GET", ["1", "members", "me"]:
                return Reply(200, {"id": MEMBER_ID, "username": "opsqsandbox", "fullName": "opsq sandbox"})
        return self.not_found(call)

    def _card(self, card_id: str) -> dict[str, Any]:
        if not _OBJECT_ID.match(card_id):
            raise self.fail(400, "invalid_id", "invalid id")
        card = self.cards.get(card_id)
        if card is None:
            raise self.fail(404, "not_found", "The requested resource was not found.")
        return card

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        list_id = body.get("idList")
        if not isinstance(list_id, str) or not list_id:
            raise self.fail(400, "invalid_value", "invalid value for idList")
        labels = body.get("idLabels") or []
        if isinstance(labels, str):
            labels = [x for x in labels.split(",") if x]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise self.fail(400, "invalid_value", "invalid value for idLabels")
        name = str(body.get("name") or "")
        self._short += 1
        short_link = secrets.token_hex(4)
        card_id = secrets.token_hex(12)
        card = {"id": card_id, "name": name, "desc": str(body.get("desc") or ""),
                "idList": list_id, "idLabels": list(dict.fromkeys(labels)), "closed": False,
                "idShort": self._short, "shortLink": short_link,
                "shortUrl": f"https://trello.com/c/{short_link}",
                "url": f"https://trello.com/c/{short_link}/{self._short}-{_slug(name)}"}
        self.cards[card_id] = card
        return card

    def _update(self, card_id: str, body: dict[str, Any]) -> dict[str, Any]:
        card = self._card(card_id)
        for key in ("name", "desc", "idList"):
            if isinstance(body.get(key), str):
                card[key] = body[key]
        if "closed" in body:
            card["closed"] = bool(body["closed"])
        return card

    def _add_label(self, card_id: str, body: Any, query: dict[str, str]) -> list[str]:
        card = self._card(card_id)
        value = body.get("value") if isinstance(body, dict) else query.get("value")
        if not isinstance(value, str) or not value:
            raise self.fail(400, "invalid_value", "invalid value for value")
        if value in card["idLabels"]:
            raise self.fail(400, "invalid_value", "that label is already on the card")
        card["idLabels"].append(value)
        self._record("addLabelToCard", card, value)
        return list(card["idLabels"])

    def _record(self, kind: str, card: dict[str, Any], label_id: str) -> None:
        self.actions.insert(0, {"id": secrets.token_hex(12), "idMemberCreator": MEMBER_ID, "type": kind,
                                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                                "data": {"card": {"id": card["id"], "name": card["name"]},
                                         "label": {"id": label_id}}})

    def _card_actions(self, card_id: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """GET /1/cards/{id}/actions: `filter` (comma-separated types; Trello's default is commentCard and
        updateCard:idList), `since` (a date: only later actions), `limit` (at most 1000), `fields`."""
        kinds = set((query.get("filter") or "commentCard,updateCard:idList").split(","))
        try:
            since = _date(query["since"]) if query.get("since") else None
        except ValueError:
            raise self.fail(400, "invalid_value", "invalid value for since") from None
        try:
            limit = int(query.get("limit") or 50)
        except ValueError:
            raise self.fail(400, "invalid_value", "invalid value for limit") from None
        if not 0 <= limit <= 1000:
            raise self.fail(400, "invalid_value", "invalid value for limit")
        found = [a for a in self.actions if a["data"]["card"]["id"] == card_id and a["type"] in kinds
                 and (since is None or _date(a["date"]) > since)]
        return [_fields(a, query.get("fields")) for a in found[:limit]]


def _fields(obj: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """Trello's `fields`: `all` (the default) or a comma-separated list; the id always comes back."""
    if not fields or fields == "all":
        return obj
    wanted = {f.strip() for f in fields.split(",")} | {"id"}
    return {k: v for k, v in obj.items() if k in wanted}


def _date(text: str) -> datetime:
    """An ISO 8601 date as Trello takes it (ValueError when it is not one)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
