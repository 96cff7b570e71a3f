"""executors.registry is the one list of platforms: queues, settings, health, the CLI and the sandbox
follow from it, and a new executor module (plus its emulator module) is all a new platform needs."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from executors.base import Executor
from executors.registry import EXECUTORS, PLATFORMS, TOKEN_PLATFORMS, discover, ordered
from executors.sandbox.common import Emulator
from executors.sandbox.server import Sandbox, emulator_classes
from workers.ops import health
from workers.queues import ALL_QUEUES, PLATFORM_QUEUES, queue_for
from workers.settings import (
    DEFAULT_BASE_URLS,
    DEFAULT_RATE_LIMITS,
    RateLimitConfig,
    Settings,
    reload_settings,
    with_platforms,
)


@pytest.fixture(autouse=True)
def _no_opsq_env(monkeypatch: pytest.MonkeyPatch):
    for key in [k for k in os.environ if k.startswith("OPSQ_")]:
        monkeypatch.delenv(key)
    yield
    monkeypatch.undo()
    reload_settings()


def test_the_platforms_in_their_listing_order():
    assert PLATFORMS == ("slack", "notion", "trello", "gdrive", "gsheets", "webhook", "noop")
    assert TOKEN_PLATFORMS == ("slack", "notion", "trello", "gdrive", "gsheets")
    assert all(EXECUTORS[p].platform == p for p in PLATFORMS)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_platform_has_its_queue_and_defaults(platform: str):
    assert PLATFORM_QUEUES == PLATFORMS and platform in ALL_QUEUES and queue_for(platform) == platform
    assert platform in DEFAULT_BASE_URLS and platform in DEFAULT_RATE_LIMITS
    if platform in TOKEN_PLATFORMS:
        assert DEFAULT_BASE_URLS[platform].startswith("https://")
        assert Settings().rate_limit(platform) == DEFAULT_RATE_LIMITS[platform]


@pytest.mark.parametrize("platform", [p for p in PLATFORMS if EXECUTORS[p].remote])
def test_every_remote_platform_has_its_settings_and_an_emulator(platform: str, monkeypatch: pytest.MonkeyPatch):
    fields = Settings.model_fields
    assert f"{platform}_base_url" in fields and f"{platform}_token" in fields
    for key in EXECUTORS[platform].extra_settings:
        assert f"{platform}_{key}" in fields
    monkeypatch.setenv(f"OPSQ_{platform.upper()}_TOKEN", "tok-123456")
    monkeypatch.setenv(f"OPSQ_{platform.upper()}_BASE_URL", "http://127.0.0.1:9/x/")
    config = Settings().executor_config(platform)
    assert (config.token, config.base_url) == ("tok-123456", "http://127.0.0.1:9/x")
    assert platform in emulator_classes() and platform in Sandbox().emulators


def test_noop_has_no_settings_nor_emulator():
    assert not any(name.startswith("noop_") for name in Settings.model_fields)
    assert "noop" not in emulator_classes()
    assert Settings().executor_config("noop").base_url == ""


def test_the_environment_names_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch):
    s = Settings()
    assert s.executor_config("notion").extra == {"version": "2022-06-28", "effect_property": "opsq_effect"}
    assert s.executor_config("gsheets").extra == {"spreadsheet_id": "opsqueue", "effect_column": "",
                                                  "effect_sheet": "opsq_effects"}
    assert s.executor_config("trello").extra == {}  # unset: left out
    monkeypatch.setenv("OPSQ_NOTION_VERSION", "2025-09-03")
    monkeypatch.setenv("OPSQ_TRELLO_API_KEY", "trello-key-1")
    monkeypatch.setenv("OPSQ_GSHEETS_SPREADSHEET_ID", "book-7")
    monkeypatch.setenv("OPSQ_PLATFORM_BASE_URL", "http://127.0.0.1:8765/")
    s = Settings()
    assert isinstance(s.model_dump()["trello_api_key"], SecretStr)
    assert s.executor_config("notion").extra == {"version": "2025-09-03", "effect_property": "opsq_effect"}
    assert s.executor_config("trello").extra == {"api_key": "trello-key-1"}
    assert s.executor_config("gsheets").extra == {"spreadsheet_id": "book-7", "effect_column": "",
                                                  "effect_sheet": "opsq_effects"}
    assert s.platform("slack").base_url == "http://127.0.0.1:8765/slack"
    assert "trello-key-1" not in repr(s.platform("trello"))


def test_validate_env_and_test_auth_follow_the_declarations(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPSQ_TRELLO_TOKEN", "trello-token-1")
    reload_settings()
    checks = {c.name: c for c in health.validate_env()}
    assert checks["OPSQ_TRELLO_API_KEY"].status == "warn"  # Trello's api_key is required_with_token
    assert "needs the API key with the token" in checks["OPSQ_TRELLO_API_KEY"].detail
    assert {f"OPSQ_{p.upper()}_TOKEN" for p in TOKEN_PLATFORMS if p != "trello"} <= set(checks)
    assert "OPSQ_WEBHOOK_TOKEN" in checks and checks["OPSQ_WEBHOOK_TOKEN"].status == "ok"  # optional
    for name in ("noop", "nosuch"):
        with pytest.raises(ValueError, match="unknown platform"):
            health.test_auth([name])


def test_validate_env_checks_the_webhook_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRETS", "{not json")
    monkeypatch.setenv("OPSQ_WEBHOOK_MAX_REDIRECTS", "two")
    monkeypatch.setenv("OPSQ_WEBHOOK_ALLOW_HOSTS", "127.0.0.1/32,169.254.0.0/16")
    reload_settings()
    checks = {c.name: c for c in health.validate_env()}
    assert checks["OPSQ_WEBHOOK_SECRETS"].status == "fail" and "not JSON" in checks["OPSQ_WEBHOOK_SECRETS"].detail
    assert checks["OPSQ_WEBHOOK_MAX_REDIRECTS"].status == "fail"
    assert checks["OPSQ_WEBHOOK_ALLOW_HOSTS"].status == "warn"
    assert "169.254.0.0/16" in checks["OPSQ_WEBHOOK_ALLOW_HOSTS"].detail
    monkeypatch.setenv("OPSQ_WEBHOOK_SECRETS", '{"https://hooks.example.com": "whsec-abcdef-123"}')
    monkeypatch.setenv("OPSQ_WEBHOOK_MAX_REDIRECTS", "2")
    monkeypatch.setenv("OPSQ_WEBHOOK_ALLOW_HOSTS", "127.0.0.1/32,hooks.internal")
    reload_settings()
    assert all(c.status == "ok" for c in health.validate_env() if c.name.startswith("OPSQ_WEBHOOK_"))


# -- A new platform: one executor module and one emulator module -------------------------------------

EXECUTOR_MODULE = '''
from executors.base import ActionParams, Executor, RateLimit, Setting


class PingParams(ActionParams):
    text: str


class ZoomExecutor(Executor):
    platform = "zoom"
    actions = {"ping": PingParams}
    default_base_url = "https://api.zoom.example"
    default_rate_limit = RateLimit(rate=2.0, burst=4)
    extra_settings = {"region": Setting(default="eu"), "app_secret": Setting(secret=True)}

    def check_auth(self):
        return {"ok": True}


class Helper:  # not an executor: ignored
    platform = "not-a-platform"
'''

EMULATOR_MODULE = '''
from executors.sandbox.common import Emulator, Reply


class ZoomEmulator(Emulator):
    platform = "zoom"

    def reset(self):
        self.pings = []

    def snapshot(self):
        return {"pings": list(self.pings)}

    def handle(self, call):
        self.pings.append(call.body)
        return Reply(200, {"ok": True})
'''


@pytest.fixture
def plugin_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pkg = tmp_path / "opsq_fake_platforms"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "zoom.py").write_text(textwrap.dedent(EXECUTOR_MODULE))
    (pkg / "zoom_emulator.py").write_text(textwrap.dedent(EMULATOR_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("opsq_fake_platforms")
    for name in [m for m in sys.modules if m.startswith("opsq_fake_platforms")]:
        del sys.modules[name]


def test_a_new_module_is_a_new_platform(plugin_package, monkeypatch: pytest.MonkeyPatch):
    found = discover(plugin_package, Executor)
    assert list(found) == ["zoom"] and found["zoom"].__name__ == "ZoomExecutor"
    assert list(discover(plugin_package, Emulator)) == ["zoom"]
    registry = ordered({**EXECUTORS, **found})
    assert list(registry) == ["slack", "notion", "trello", "gdrive", "gsheets", "zoom", "webhook", "noop"]

    # Its settings, from its declarations alone: OPSQ_ZOOM_BASE_URL, OPSQ_ZOOM_TOKEN, OPSQ_ZOOM_<EXTRA>.
    WithZoom = with_platforms(Settings, found)
    assert {"zoom_base_url", "zoom_token", "zoom_region", "zoom_app_secret"} <= set(WithZoom.model_fields)
    s = WithZoom()
    assert s.base_url("zoom") == "https://api.zoom.example"
    assert s.rate_limit("zoom") == RateLimitConfig(rate=2.0, burst=4)
    assert s.executor_config("zoom").extra == {"region": "eu"}
    monkeypatch.setenv("OPSQ_ZOOM_TOKEN", "zoom-token-1")
    monkeypatch.setenv("OPSQ_ZOOM_REGION", "us")
    monkeypatch.setenv("OPSQ_ZOOM_APP_SECRET", "zoom-secret-1")
    monkeypatch.setenv("OPSQ_PLATFORM_BASE_URL", "http://127.0.0.1:8765")
    config = WithZoom().executor_config("zoom")
    assert config.token == "zoom-token-1" and config.base_url == "http://127.0.0.1:8765/zoom"
    assert config.extra == {"region": "us", "app_secret": "zoom-secret-1"}
    assert isinstance(WithZoom().model_dump()["zoom_app_secret"], SecretStr)
    assert WithZoom().executor_config("slack").base_url == "http://127.0.0.1:8765/slack"  # the rest unchanged


def test_two_classes_for_one_platform_are_refused(plugin_package):
    (Path(plugin_package.__path__[0]) / "zoom2.py").write_text(textwrap.dedent(EXECUTOR_MODULE))
    with pytest.raises(RuntimeError, match="two classes for platform 'zoom'"):
        discover(plugin_package, Executor)


def test_platform_settings_may_not_shadow_existing_ones():
    class Clash(EXECUTORS["notion"]):  # type: ignore[misc,valid-type]
        platform = "outcome"
        extra_settings = {"flush_ms": EXECUTORS["notion"].extra_settings["version"]}

    with pytest.raises(ValueError, match="outcome_flush_ms"):
        with_platforms(Settings, {"outcome": Clash})
