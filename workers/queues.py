"""Queues, priorities and routing. One Celery queue per platform, plus bookkeeping queues."""

from __future__ import annotations

from typing import Literal

from kombu import Queue

from executors.registry import PLATFORMS

# One queue per platform of the executor registry, named after it.
PLATFORM_QUEUES: tuple[str, ...] = PLATFORMS
CONTROL_QUEUE = "control"
MAINTENANCE_QUEUE = "maintenance"
ALL_QUEUES: tuple[str, ...] = (*PLATFORM_QUEUES, CONTROL_QUEUE, MAINTENANCE_QUEUE)

Priority = Literal["critical", "high", "normal", "low"]
PRIORITY_NAMES: tuple[str, ...] = ("critical", "high", "normal", "low")

# kombu's Redis transport keeps one list per priority step and pops the lowest number first:
# 0 is the HIGHEST priority there (the opposite of AMQP). Each name maps onto its own step.
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
PRIORITY_VALUES: dict[str, int] = dict(zip(PRIORITY_NAMES, PRIORITY_STEPS, strict=True))


def priority_value(name: str) -> int:
    try:
        return PRIORITY_VALUES[name]
    except KeyError:
        raise ValueError(f"unknown priority {name!r} (use one of: {', '.join(PRIORITY_NAMES)})") from None


def priority_name(value: int | None) -> str:
    if value is None:
        return "normal"
    return min(PRIORITY_VALUES, key=lambda n: abs(PRIORITY_VALUES[n] - value))


def queue_for(platform: str) -> str:
    if platform not in PLATFORM_QUEUES:
        raise ValueError(f"no queue for platform {platform!r}")
    return platform


def celery_queues() -> list[Queue]:
    return [Queue(name, routing_key=name) for name in ALL_QUEUES]


def parse_queue_list(value: str | None) -> list[str]:
    """'slack,notion' -> ['slack', 'notion']; unknown names are refused so a typo does not idle a worker."""
    if not value:
        return list(ALL_QUEUES)
    names = [q.strip() for q in value.split(",") if q.strip()]
    unknown = [q for q in names if q not in ALL_QUEUES]
    if unknown:
        raise ValueError(f"unknown queue(s): {', '.join(unknown)} (known: {', '.join(ALL_QUEUES)})")
    return names
