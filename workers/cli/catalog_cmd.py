"""opsq actions: which platforms and actions exist, each action's params (its JSON schema) and a working example.

Everything shown is read from the executors (executors.registry): an action's description is its params model's
docstring, its example the model's `example(...)`, its schema the model's JSON schema, the same model that
`opsq submit` validates with. Nothing is listed here."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

import click

from workers.cli.options import json_option, read_only
from workers.cli.output import emit_json, table

if TYPE_CHECKING:
    from executors.base import ActionDoc


def submit_command(platform: str, action: str, params: dict[str, Any]) -> str:
    """The `opsq submit` line that sends `params` as they are. `-p k=v` reads a value that parses as JSON as
    JSON (workers.cli.options.parse_params): a text that would (`"5"`, `"true"`) goes as --params-json."""
    words = ["opsq", "submit", platform, action]

    def as_text(value: Any) -> bool:
        try:
            json.loads(value)
        except ValueError:
            return True
        return False

    if all(not isinstance(v, str) or as_text(v) for v in params.values()):
        for key, value in params.items():
            words += ["-p", shlex.quote(f"{key}={value if isinstance(value, str) else json.dumps(value)}")]
    else:
        words += ["--params-json", shlex.quote(json.dumps(params))]
    return " ".join(words)


def _py(value: Any) -> str:
    """A JSON value as a Python literal (true -> True, null -> None), strings in double quotes."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def python_call(platform: str, action: str, params: dict[str, Any]) -> str:
    return f"submit_action({_py(platform)}, {_py(action)}, {_py(params)})"


def _type(prop: dict[str, Any]) -> str:
    """A JSON schema property's type, as a person reads it: `string | null`, `list of string`."""
    if "anyOf" in prop:
        return " | ".join(_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    kind = prop.get("type")
    if kind == "array":
        items = prop.get("items")
        inner = _type(items) if items else "any"
        return f"list of ({inner})" if " | " in inner else f"list of {inner}"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"object of {_type(values)}" if isinstance(values, dict) and values else "object"
    return str(kind) if kind else "any JSON"


CONSTRAINTS = (("minLength", "min length {}"), ("maxLength", "max length {}"), ("pattern", "pattern {}"),
               ("minItems", "at least {} item(s)"), ("minimum", ">= {}"), ("maximum", "<= {}"))


def _constraints(prop: dict[str, Any]) -> str:
    found = [text.format(prop[key]) for key, text in CONSTRAINTS if key in prop]
    for option in prop.get("anyOf", ()):
        found += [text.format(option[key]) for key, text in CONSTRAINTS if key in option]
    return ", ".join(found)


def _details(doc: ActionDoc) -> dict[str, Any]:
    return {"platform": doc.platform, "action": doc.action, "description": doc.description,
            "required": doc.required, "schema": doc.schema, "example": doc.example,
            "submit": submit_command(doc.platform, doc.action, doc.example),
            "python": python_call(doc.platform, doc.action, doc.example)}


def _show(doc: ActionDoc) -> None:
    click.echo(f"{doc.platform} {doc.action}: {doc.description}")
    click.echo()
    properties: dict[str, Any] = doc.schema.get("properties", {})
    rows = []
    for name, prop in properties.items():
        default = "" if name in doc.required else json.dumps(prop.get("default"))
        rows.append([name, "required" if name in doc.required else "optional", _type(prop), default,
                     _constraints(prop)])
    table(["PARAM", "", "TYPE", "DEFAULT", "CONSTRAINTS"], rows)
    click.echo()
    click.echo("example:")
    click.echo(f"  {submit_command(doc.platform, doc.action, doc.example)}")
    click.echo("  from workers.client import submit_action")
    click.echo(f"  {python_call(doc.platform, doc.action, doc.example)}")
    click.echo()
    click.echo("JSON schema:")
    click.echo(json.dumps(doc.schema, indent=2))


@click.command("actions")
@click.argument("platform", required=False)
@click.argument("action", required=False)
@json_option
@read_only
def actions(platform: str | None, action: str | None, as_json: bool) -> None:
    """Every platform's actions (one line each), or one action's params: their JSON schema, types, defaults and
    a working example. `opsq actions slack send_message`."""
    from executors.errors import InvalidParams
    from executors.registry import EXECUTORS, executor_class
    from workers.errors import NotFound

    try:
        if platform is not None and action is not None:
            doc = executor_class(platform).describe(action)
            if as_json:
                emit_json(_details(doc))
            else:
                _show(doc)
            return
        classes = [executor_class(platform)] if platform is not None else list(EXECUTORS.values())
    except InvalidParams as exc:  # an unknown platform or action: the message lists the known ones
        raise NotFound(str(exc)) from None
    docs = [cls.describe(name) for cls in classes for name in cls.actions]
    if as_json:
        emit_json([{k: v for k, v in _details(d).items() if k != "schema"} for d in docs])
        return
    table(["PLATFORM", "ACTION", "REQUIRED PARAMS", "DESCRIPTION"],
          [[d.platform, d.action, ", ".join(d.required) or "-", d.description] for d in docs])
    click.echo("\nAn action's params, their types and an example: opsq actions PLATFORM ACTION")


def register(cli: click.Group) -> None:
    cli.add_command(actions)
