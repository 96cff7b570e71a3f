"""Priorities: critical, high, normal, low, and the kombu Redis priority step each maps onto."""

from __future__ import annotations

from typing import Literal

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
