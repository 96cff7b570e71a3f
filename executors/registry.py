"""Executors by platform name: the one list of platforms.

A platform is a module directly in the `executors` package that defines an Executor subclass with its
own `platform`. Nothing else lists them: the queues (workers.queues), the OPSQ_<PLATFORM>_* settings
(workers.settings), the health checks, the CLI and the sandbox all derive from EXECUTORS.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import executors
from executors.base import ActionParams, Executor
from executors.errors import InvalidParams


def discover(package: ModuleType, base: type[Any]) -> dict[str, type[Any]]:
    """platform -> class, for every concrete subclass of `base` that declares its own `platform` in a
    module directly in `package` (sub-packages are not searched). Two classes for one platform fail."""
    found: dict[str, type[Any]] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        name = f"{package.__name__}.{info.name}"
        if info.ispkg or info.name.startswith("_") or name == __name__:
            continue
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, base) and obj is not base
                    and obj.__module__ == name and "platform" in vars(obj) and not inspect.isabstract(obj)):
                platform: str = vars(obj)["platform"]
                other = found.get(platform)
                if other is not None:
                    raise RuntimeError(f"two classes for platform {platform!r}: "
                                       f"{other.__module__}.{other.__qualname__} and {name}.{obj.__qualname__}")
                found[platform] = obj
    return found


def ordered(found: Mapping[str, type[Executor]]) -> dict[str, type[Executor]]:
    """By each executor's `order`, then by name: the order every listing shows."""
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


EXECUTORS: dict[str, type[Executor]] = ordered(discover(executors, Executor))

PLATFORMS: tuple[str, ...] = tuple(EXECUTORS)
#: the platforms that authenticate with OPSQ_<PLATFORM>_TOKEN (validate-env checks them, test-auth tries them)
TOKEN_PLATFORMS: tuple[str, ...] = tuple(p for p, cls in EXECUTORS.items() if cls.needs_token)


def executor_class(platform: str) -> type[Executor]:
    try:
        return EXECUTORS[platform]
    except KeyError:
        raise InvalidParams(f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})") from None


def validate_action(platform: str, action: str, params: Mapping[str, Any]) -> ActionParams:
    """Check platform, action and params before anything is enqueued."""
    return executor_class(platform).validate(action, params)
