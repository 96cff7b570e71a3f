"""Queues and routing: one Celery queue per platform, plus bookkeeping queues (priorities: workers.priorities)."""

from __future__ import annotations

from kombu import Queue

from executors.registry import PLATFORMS

# One queue per platform of the executor registry, named after it.
PLATFORM_QUEUES: tuple[str, ...] = PLATFORMS
CONTROL_QUEUE = "control"
MAINTENANCE_QUEUE = "maintenance"
ALL_QUEUES: tuple[str, ...] = (*PLATFORM_QUEUES, CONTROL_QUEUE, MAINTENANCE_QUEUE)

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
