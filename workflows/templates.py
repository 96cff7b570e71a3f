"""`{{ input.x }}`, `{{ steps.<id>.output.<path> }}` and `{{ settings.<platform>_base_url }}`: a plain path
lookup, never evaluated as code."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from executors.registry import EXECUTORS

TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
PATH = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class TemplateError(ValueError):
    pass


def settings_keys() -> frozenset[str]:
    """What `{{ settings.<key> }}` may read: where each platform is (`<platform>_base_url`, as the worker
    resolves it: its own OPSQ_<PLATFORM>_BASE_URL, else OPSQ_PLATFORM_BASE_URL/<platform>) and
    `platform_base_url`. Addresses only, never a token: rendered params are stored and shown."""
    return frozenset({"platform_base_url", *(f"{p}_base_url" for p, cls in EXECUTORS.items() if cls.remote)})


def settings_context(base_url: Callable[[str], str], platform_base_url: str | None) -> dict[str, str]:
    """The `settings` a template reads, from the worker's settings (`Settings.base_url` and its
    platform_base_url): a step runs against the platforms its worker is configured for."""
    out = {key: base_url(key.removesuffix("_base_url")) for key in settings_keys() if key != "platform_base_url"}
    out["platform_base_url"] = platform_base_url or ""
    return out


def references(value: Any) -> Iterator[str]:
    """Every template expression in a params structure."""
    if isinstance(value, str):
        for m in TEMPLATE.finditer(value):
            yield m.group(1)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def steps_referenced(value: Any) -> set[str] | None:
    """The ids of the steps whose outputs `value`'s templates read (`steps.<id>...`), so a step's context
    holds those and not every earlier output; None when a template reads the whole `steps` mapping
    (`{{ steps }}`: validation refuses it, but render would look it up)."""
    ids: set[str] = set()
    for expr in references(value):
        parts = expr.split(".")  # as lookup walks it
        if parts[0] == "steps":
            if len(parts) == 1:
                return None
            ids.add(parts[1])
    return ids


def check_reference(expr: str, upstream: set[str]) -> str | None:
    """Why `expr` cannot work for a step whose upstream steps are `upstream`, or None if it can."""
    if not PATH.match(expr):
        return f"template {{{{ {expr} }}}} is not a plain path (only input.<key> and steps.<id>.output.<key>)"
    parts = expr.split(".")
    if parts[0] == "settings":
        if len(parts) == 2 and parts[1] in settings_keys():
            return None
        return (f"template {{{{ {expr} }}}}: settings. reads only {', '.join(sorted(settings_keys()))}")
    if parts[0] == "input":
        return None if len(parts) >= 2 else "template {{ input }} must name a key: {{ input.<key> }}"
    if parts[0] == "steps":
        if len(parts) < 3 or parts[2] != "output":
            return f"template {{{{ {expr} }}}} must read steps.<id>.output[.<key>...]"
        if parts[1] not in upstream:
            return f"template {{{{ {expr} }}}} names step {parts[1]!r}, which is not upstream of this step"
        return None
    return f"template {{{{ {expr} }}}} must start with input., steps. or settings."


def lookup(expr: str, context: Mapping[str, Any]) -> Any:
    value: Any = context
    walked = []
    for part in expr.split("."):
        walked.append(part)
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"template {{{{ {expr} }}}}: nothing at {'.'.join(walked)}")
    return value


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """A string that is one whole template keeps the looked-up value's type; templates inside a longer
    string are replaced by their text."""
    if isinstance(value, str):
        whole = TEMPLATE.fullmatch(value.strip())
        if whole:
            return lookup(whole.group(1), context)
        return TEMPLATE.sub(lambda m: _text(lookup(m.group(1), context)), value)
    if isinstance(value, Mapping):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def render_input_only(value: Any, input_: Mapping[str, Any]) -> Any:
    """Renders `input.` templates and leaves `steps.` and `settings.` ones for execution time (used to
    validate early)."""
    if isinstance(value, str):
        if not any(ref.startswith("input.") for ref in references(value)):
            return value
        if any(not ref.startswith("input.") for ref in references(value)):  # steps., settings.: at run time
            return value
        return render(value, {"input": input_})
    if isinstance(value, Mapping):
        return {k: render_input_only(v, input_) for k, v in value.items()}
    if isinstance(value, list):
        return [render_input_only(v, input_) for v in value]
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value

    return json.dumps(value, sort_keys=True)
