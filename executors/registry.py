"""Executors by platform name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executors.base import ActionParams, Executor
from executors.errors import InvalidParams
from executors.gdrive import GDriveExecutor
from executors.gsheets import GSheetsExecutor
from executors.noop import NoopExecutor
from executors.notion import NotionExecutor
from executors.slack import SlackExecutor
from executors.trello import TrelloExecutor
from executors.webhook import WebhookExecutor

EXECUTORS: dict[str, type[Executor]] = {
    cls.platform: cls
    for cls in (SlackExecutor, NotionExecutor, TrelloExecutor, GDriveExecutor, GSheetsExecutor,
                WebhookExecutor, NoopExecutor)
}

PLATFORMS: tuple[str, ...] = tuple(EXECUTORS)


def executor_class(platform: str) -> type[Executor]:
    try:
        return EXECUTORS[platform]
    except KeyError:
        raise InvalidParams(f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})") from None


def validate_action(platform: str, action: str, params: Mapping[str, Any]) -> ActionParams:
    """Check platform, action and params before anything is enqueued."""
    return executor_class(platform).validate(action, params)
