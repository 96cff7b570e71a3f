"""The workflow spec (YAML or a dict), validated whole before anything runs.

Every problem is reported at once, each once, with its step id and (from YAML) its line: an unknown or
misspelt key, a missing field, a cycle, an unknown `depends_on`, an unknown platform or action, params that fail
the executor's schema, a template naming a step that is not upstream, an approval policy that cannot be met.
`check()` is the one way in for what people submit (the CLI's `workflow validate` and `workflow run`, the HTTP
API, workflows.client.submit_workflow): the structure and the meaning are checked in one pass, so a misspelt
key does not hide the rest.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic import ValidationError as PydanticError

from executors.errors import InvalidParams
from executors.registry import EXECUTORS
from workers.errors import OpsqError
from workers.priorities import PRIORITY_NAMES
from workers.redaction import is_secret_key
from workers.settings import get_settings
from workflows import templates
from workflows.yaml_lines import Duplicate, Loc, duplicates, line_map, line_of

STEP_ID = r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}$"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: what (the message names the step), where (the path into the document) and,
    for YAML, on which line."""

    message: str
    loc: Loc = ()
    line: int | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class WorkflowInvalid(OpsqError):
    def __init__(self, errors: Sequence[str | Problem]) -> None:
        self.problems = [e if isinstance(e, Problem) else Problem(e) for e in errors]
        self.errors = [str(p) for p in self.problems]
        super().__init__("invalid workflow: " + "; ".join(self.errors))


class CompensationSpec(BaseModel):
    """Overrides a step's undo with another action (params may template the step's own output as
    `{{ steps.<this step>.output.<key> }}`)."""

    model_config = ConfigDict(extra="forbid")
    platform: str
    action: str
    params: dict[str, Any] = Field(default_factory=dict)


class ApprovalPolicy(BaseModel):
    """Who may decide a gate, and how many must approve (workflows.client.approve). A gate without one keeps
    the default: anyone may decide it, alone, except that its submitter may not approve it."""

    model_config = ConfigDict(extra="forbid")
    #: Actor names (`dana`, `api:release-bot`) or `group:NAME` (OPSQ_APPROVER_GROUPS); empty: anyone.
    approvers: list[str] = Field(default_factory=list)
    #: N-of-M: this many distinct approvers must approve before the workflow goes on; one denial is enough.
    required: int = Field(1, ge=1, le=20)
    #: False: whoever submitted the workflow may not approve it (they may still deny it).
    allow_self_approval: bool = False


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID)
    platform: str
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    requires_approval: bool = False
    #: The gate's approval policy (with requires_approval).
    approval: ApprovalPolicy | None = None
    #: None: the executor's own undo; False: nothing to undo; or another action that undoes it.
    compensation: CompensationSpec | bool | None = None
    max_attempts: int | None = Field(None, ge=1, le=100)


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    priority: str = "normal"
    approval_expires_s: float = Field(86400.0, gt=0)
    #: When a step fails for good: `rollback` undoes what completed (the workflow ends rolled_back); `stop`
    #: keeps it and ends `failed`, to be retried from the failed step (`opsq workflow retry --from-failed-step`)
    #: or rolled back by hand. `stop` is for steps whose failure a person can cure (a credential, a quota).
    on_failure: Literal["rollback", "stop"] = "rollback"
    steps: list[StepSpec] = Field(min_length=1)
    # step id -> step, built on first use: levels() and the compiler look up every step, and a scan per lookup
    # made a 2000-step workflow's levels quadratic (about 0.1 s each time they were computed).
    _by_id: dict[str, StepSpec] | None = PrivateAttr(default=None)
    # levels(), kept: a worker keeps a parsed spec per workflow (workflows.tasks.spec_of) and each segment of a
    # long workflow plans from it; computed each time, that was O(steps) per segment (80 ms at 10,000 steps).
    _levels: tuple[int, list[list[str]]] | None = PrivateAttr(default=None)  # (for how many steps, levels)
    # path -> line in the YAML it was loaded from (workflows.yaml_lines), for validate()'s problems; empty for a dict.
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # The fields only: the private caches and the YAML lines say nothing about what the workflow is.
        return isinstance(other, WorkflowSpec) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # as pydantic's own models: mutable, so not hashable

    def step(self, step_id: str) -> StepSpec:
        if self._by_id is None or len(self._by_id) != len(self.steps):
            self._by_id = {}
            for s in self.steps:
                self._by_id.setdefault(s.id, s)  # the first of a duplicated id, as a scan finds (validate refuses)
        try:
            return self._by_id[step_id]
        except KeyError:
            raise StopIteration(step_id) from None  # what the scan raised: callers' handling stays as it was


def load(source: str | Path | Mapping[str, Any] | WorkflowSpec) -> WorkflowSpec:
    """A spec from a dict, a YAML/JSON file path, or YAML text. Structural errors are WorkflowInvalid (every one,
    with its line); what the spec means is validate()'s, and check() does both in one pass."""
    spec, problems, repeated = _parse(source)
    if problems or repeated:
        raise WorkflowInvalid(_placed(problems + repeated, spec._lines if spec is not None else {}))
    assert spec is not None  # _parse returns a spec or problems
    return spec


def check(source: str | Path | Mapping[str, Any] | WorkflowSpec,
          input_override: Mapping[str, Any] | None = None) -> WorkflowSpec:
    """load() and validate() in one pass: raise WorkflowInvalid listing every problem once, structural (a
    misspelt key, a missing field) and of meaning (a cycle, an unknown action, a bad template) alike, each with
    its line when the spec is YAML; or return the spec. What the CLI, the HTTP API and submit_workflow use."""
    spec, problems, repeated = _parse(source)
    if spec is not None:
        if input_override:
            _check_size(_json_size(input_override, _spec_limit()), "the workflow's input (as JSON)", exact=False)
        structural = [p.loc for p in problems]
        problems += [p for p in _meaning(spec, input_override)
                     if not any(p.loc[:len(loc)] == loc for loc in structural)]  # one problem per place
    # A repeated key hides nothing: its kept value was checked like any other (and its problems are its own).
    problems += repeated
    if problems:
        raise WorkflowInvalid(_placed(problems, spec._lines if spec is not None else {}))
    assert spec is not None
    return spec


def _parse(source: str | Path | Mapping[str, Any] | WorkflowSpec
           ) -> tuple[WorkflowSpec | None, list[Problem], list[Problem]]:
    """(the spec, [], the keys YAML repeats) or (a stand-in to check the meaning of what could be read, or None;
    the structural problems; the repeated keys). Unreadable input (a missing file, YAML syntax, too large, not a
    mapping) raises at once."""
    if isinstance(source, WorkflowSpec):
        return source, [], []
    lines: dict[Loc, int] = {}
    repeated: list[Duplicate] = []
    if isinstance(source, Mapping):
        _check_size(_json_size(source, _spec_limit()), "the workflow spec (as JSON)", exact=False)
        data: Any = dict(source)
    else:
        path = Path(source) if not (isinstance(source, str) and "\n" in source) else None
        if path is not None:
            if not path.is_file():
                raise WorkflowInvalid([f"no such workflow file: {path}"])
            _check_size(path.stat().st_size, f"{path}")  # before reading it
            text = path.read_text()
        else:
            text = str(source)
            # surrogatepass: a lone surrogate is counted, then refused by the YAML reader, not a crash here.
            _check_size(len(text.encode(errors="surrogatepass")), "the workflow spec")
        data, lines, repeated = _load_yaml(text)
    if not isinstance(data, Mapping):
        raise WorkflowInvalid(["a workflow is a mapping with `name` and `steps`"])
    try:
        spec: WorkflowSpec | None = WorkflowSpec.model_validate(data)
        problems: list[Problem] = []
    except ValidationError as exc:
        problems = _structural(exc, data)
        spec = _stand_in(data, problems)
    if spec is not None:
        spec._lines = lines
    return spec, problems, [Problem(f"{_where(data, d.loc)}: duplicate key (also on line {d.first_line})", d.loc,
                                    d.line) for d in repeated]


def _placed(problems: list[Problem], lines: Mapping[Loc, int]) -> list[Problem]:
    """Each problem with its line, in the file's order (those of the whole document first)."""
    if not lines:
        return problems
    placed = [p if p.line is not None else Problem(p.message, p.loc, line_of(lines, p.loc)) for p in problems]
    return sorted(placed, key=lambda p: p.line or 0)


# -- structural problems: what pydantic says, said once each and where -----------------------------------------

# The union `compensation: CompensationSpec | bool | None`: pydantic reports each member's complaint.
_UNION_FIELDS = {"compensation": "an action spec (platform, action, params), false, or left out"}
_REQUIRED_STEP_FIELDS = ("id", "platform", "action")


def _model_at(loc: Loc) -> type[BaseModel] | None:
    shape = tuple("#" if isinstance(p, int) else p for p in loc)
    models: dict[tuple[str | int, ...], type[BaseModel]] = {
        (): WorkflowSpec, ("steps", "#"): StepSpec, ("steps", "#", "approval"): ApprovalPolicy,
        ("steps", "#", "compensation"): CompensationSpec}
    return models.get(shape)


def _value_at(data: Any, loc: Loc) -> Any:
    """What `loc` holds in the raw document, or None."""
    value = data
    for part in loc:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return None
    return value


def _structural(exc: ValidationError, data: Mapping[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[Loc, str]] = set()
    for err in exc.errors():
        loc: Loc = tuple(err["loc"])
        message = ""
        for n, part in enumerate(loc):  # a union member's tag (`CompensationSpec`, `bool`) is not in the data
            if part in _UNION_FIELDS and len(loc) > n + 1 and n >= 1 and loc[0] == "steps":
                value = _value_at(data, loc[:n + 1])
                tag = loc[n + 1]
                loc = (*loc[:n + 1], *loc[n + 2:])
                if not isinstance(value, Mapping):
                    loc = loc[:n + 1]
                    message = f"{_where(data, loc)} is {_UNION_FIELDS[str(part)]}"
                elif not (isinstance(tag, str) and tag[:1].isupper()):
                    message = "-"  # the scalar member's complaint about a mapping: the model member's say it
                break
        if message == "-":
            continue
        if not message:
            msg = err["msg"]
            if err["type"] == "extra_forbidden" and loc:
                msg = _unknown_key(loc)
            elif err["type"] == "model_type" and len(loc) == 2 and loc[0] == "steps":
                msg = "a step is a mapping with id, platform and action"
            message = f"{_where(data, loc)}: {msg}"
        if (loc, message) not in seen:
            seen.add((loc, message))
            out.append(Problem(message, loc))
    return out


def _unknown_key(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    known = sorted(model.model_fields) if model is not None else []
    guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if guess:
        return f"unknown key (did you mean {guess[0]!r}?)"
    return f"unknown key (known: {', '.join(known)})" if known else "unknown key"


def _where(data: Mapping[str, Any], loc: Loc) -> str:
    """`step deploy: params.channel`, `step #3: action`, `approval_expires_s`: how the messages name a place."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        return f"step {_step_label(data, loc[1])}" + (": " + _dotted(loc[2:]) if len(loc) > 2 else "")
    return _dotted(loc) or "the workflow"


def _step_label(data: Mapping[str, Any], index: int) -> str:
    sid = _value_at(data, ("steps", index, "id"))
    return sid if isinstance(sid, str) and sid else f"#{index + 1}"


def _dotted(loc: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _stand_in(data: Mapping[str, Any], problems: list[Problem]) -> WorkflowSpec | None:
    """The spec without what is wrong with it, so its meaning is checked too (unknown platforms, templates,
    dependencies) in the same pass: each structural problem's field is left out (a default then) or, for a
    step's id, platform and action, stands in for (their own problems were reported; the meaning problems
    at those places are not added: check()). None when nothing that could be checked is left."""
    top = dict(data)
    raw_steps = top.get("steps")
    if not isinstance(raw_steps, list):
        return None
    steps: list[dict[str, Any] | None] = [dict(s) if isinstance(s, Mapping) else None for s in raw_steps]
    broken_ids: set[int] = set()
    for p in problems:
        loc = p.loc
        if not loc:
            continue
        if loc[0] != "steps":
            if loc[0] == "name":
                top["name"] = "-"
            else:
                top.pop(str(loc[0]), None)
            continue
        if len(loc) < 2 or not isinstance(loc[1], int):
            return None  # `steps` itself: not a list, or empty
        step = steps[loc[1]]
        if step is None or len(loc) == 2:
            steps[loc[1]] = None
        elif loc[2] in _REQUIRED_STEP_FIELDS:
            step[str(loc[2])] = "-"
            if loc[2] == "id":
                broken_ids.add(loc[1])
        else:
            step.pop(str(loc[2]), None)
    for n, step in enumerate(steps):
        if step is None:
            steps[n] = {"id": "-", "platform": "-", "action": "-"}
            broken_ids.add(n)
        if n in broken_ids:
            steps[n]["id"] = f"_{n}"  # type: ignore[index]  # valid for the model; its label is put back below
    top["steps"] = steps
    try:
        spec = WorkflowSpec.model_validate(top)
    except ValidationError:
        return None
    for n in broken_ids:
        spec.steps[n].id = _step_label(data, n)
    return spec


# A spec is a small document, and it is stored with its run and read by every step: one larger than
# OPSQ_MAX_SPEC_BYTES (its bytes, or a mapping's JSON; its input too) is refused before it is parsed.
def _spec_limit() -> int:
    return get_settings().max_spec_bytes


def _check_size(size: int, what: str, *, exact: bool = True) -> None:
    limit = _spec_limit()
    if size > limit:
        shown = f"{size}" if exact else f"more than {limit}"
        raise WorkflowInvalid([f"{what} is {shown} bytes; the limit is {limit} (OPSQ_MAX_SPEC_BYTES): put large "
                               "content somewhere the platform can fetch it and pass its URL"])


def _json_size(value: Any, limit: int) -> int:
    """The size of `value` as compact JSON, counted only up to just past `limit`: a mapping whose parts are
    shared (the same dict referenced a billion times) is never serialized whole."""
    size = 0
    try:
        for chunk in json.JSONEncoder(separators=(",", ":"), default=str).iterencode(value):
            size += len(chunk.encode())
            if size > limit:
                break
    except ValueError as exc:  # a circular reference
        raise WorkflowInvalid([f"the workflow cannot be written as JSON: {exc}"]) from None
    return size


# A spec is a small document. Aliases are allowed (anchors keep a spec DRY), but what they expand to is
# counted before anything walks it: a "billion laughs" is a few hundred bytes that expand to 10^9 nodes,
# and validation (secrets, templates, schemas) would walk every one of them.
MAX_EXPANDED_NODES = 100_000


def _load_yaml(text: str) -> tuple[Any, dict[Loc, int], list[Duplicate]]:
    """The document, its lines and its repeated keys (workflows.yaml_lines); a syntax error is one problem naming
    PyYAML's line and column."""
    try:
        # The reader checks the characters as it is made: a control character is a YAMLError here already.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise WorkflowInvalid([_yaml_problem(exc, text)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        size = _expanded_size(node, {}, set())
        if size > MAX_EXPANDED_NODES:
            raise WorkflowInvalid([f"the document expands to more than {MAX_EXPANDED_NODES} values through its "
                                   "aliases (&anchor / *alias): refused"])
        repeated = duplicates(node)  # before constructing, which merges `<<:` keys into the mappings' own
        data = loader.construct_document(node)
        return data, line_map(node), repeated  # after: the pairs in the order the constructor applied them
    except yaml.YAMLError as exc:
        raise WorkflowInvalid([_yaml_problem(exc, text)]) from None
    except RecursionError:
        raise WorkflowInvalid(["the document is nested too deeply"]) from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    """`line 3, column 9: not valid YAML: expected ',' or ']', but got '<stream end>' (in the flow sequence
    started at line 2, column 8)`: PyYAML's finding in one line, with its place (its marks count from 0)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or str(exc).splitlines()[0]
        if exc.context and exc.context_mark is not None:
            what += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        elif exc.context:
            what += f" ({exc.context})"
        return Problem(f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {what}")
    if isinstance(exc, yaml.reader.ReaderError):  # a character the reader refuses: its place is an offset
        before = text[:exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return Problem(f"line {line}, column {column}: not valid YAML: {str(exc).splitlines()[0]}")
    return Problem(f"not valid YAML: {str(exc).splitlines()[0]}")


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` stands for once every alias is expanded: each node's size is computed once
    (an alias is the same node object), so this is linear in the document, whatever it expands to."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise WorkflowInvalid(["the document refers to itself through an alias: refused"])
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes)
            if size > MAX_EXPANDED_NODES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            size += _expanded_size(item, sizes, open_nodes)
            if size > MAX_EXPANDED_NODES:
                break
    open_nodes.discard(key)
    sizes[key] = size
    return size


def levels(spec: WorkflowSpec) -> list[list[str]]:
    """Steps by depth: level 0 has no dependencies, level n depends on something at n-1.
    Assumes a valid DAG (see validate). Computed once per spec object (specs are not changed once loaded):
    callers must not change the lists."""
    if spec._levels is None or spec._levels[0] != len(spec.steps):
        spec._levels = (len(spec.steps), _levels(spec))
    return spec._levels[1]


def _levels(spec: WorkflowSpec) -> list[list[str]]:
    depth: dict[str, int] = {}

    def visit(step_id: str) -> int:
        if step_id not in depth:
            deps = spec.step(step_id).depends_on
            depth[step_id] = 1 + max((visit(d) for d in deps), default=-1)
        return depth[step_id]

    for s in spec.steps:
        visit(s.id)
    out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for s in spec.steps:  # keep the file's order within a level
        out[depth[s.id]].append(s.id)
    return out


def upstream_of(spec: WorkflowSpec, step_id: str) -> set[str]:
    """Every step `step_id` depends on, directly or not (unknown ids are skipped: validate reports them)."""
    by_id = {s.id: s for s in spec.steps}
    seen: set[str] = set()
    stack = list(by_id[step_id].depends_on)
    while stack:
        sid = stack.pop()
        if sid not in seen and sid in by_id:
            seen.add(sid)
            stack.extend(by_id[sid].depends_on)
    return seen


def _cycle(spec: WorkflowSpec) -> list[str] | None:
    """A dependency cycle through two steps or more (a step naming itself is reported as that, once)."""
    known = {t.id for t in spec.steps}
    graph = {s.id: [d for d in s.depends_on if d in known and d != s.id] for s in spec.steps}
    state: dict[str, int] = {}
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in graph:
        if node not in state and (found := dfs(node)):
            return found
    return None


def _schema_errors(platform: str, action: str, params: dict[str, Any],
                   input_: dict[str, Any]) -> list[tuple[Loc, str]]:
    """(path in params, message) of each schema problem. Params are checked with `input.` templates filled in;
    a field that still holds a `steps.` or `settings.` template is only known at run time, so its schema check is
    left to the executor then."""

    rendered = templates.render_input_only(params, input_)
    schema = EXECUTORS[platform].actions[action]
    try:
        schema.model_validate(rendered)
    except PydanticError as exc:
        out: list[tuple[Loc, str]] = []
        for err in exc.errors():
            value: Any = rendered
            for part in err["loc"]:
                try:
                    value = value[part]
                except (KeyError, IndexError, TypeError):
                    value = None
                    break
            # Still a template once `input.` ones are filled in: a `steps.` one (run time) or a bad one (reported).
            if any(True for _ in templates.references(value)):
                continue
            msg = err["msg"]
            if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                guess = difflib.get_close_matches(str(err["loc"][0]), list(schema.model_fields), n=1, cutoff=0.6)
                msg = (f"unknown param (did you mean {guess[0]!r}?)" if guess
                       else f"unknown param (known: {', '.join(schema.model_fields)})")
            out.append((tuple(err["loc"]), f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {msg}"))
        return out
    except InvalidParams as exc:  # pragma: no cover - schemas raise pydantic errors
        return [((), str(exc))]
    return []


def _secret_paths(value: Any, loc: Loc) -> list[Loc]:
    out: list[Loc] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and is_secret_key(k) and v not in (None, ""):
                out.append((*loc, k))
            else:
                out.extend(_secret_paths(v, (*loc, k)))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            out.extend(_secret_paths(v, (*loc, n)))
    return out


def _leaves(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Every string in a params structure, with its path (a template's place)."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, (*loc, k))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            yield from _leaves(v, (*loc, n))


SECRET_HINT = ("workflows are stored, and stored secrets are redacted, so a secret there would reach the "
               "platform as '[redacted]': give credentials through the platform's token setting "
               "(OPSQ_<PLATFORM>_TOKEN; webhooks: OPSQ_WEBHOOK_TOKEN)")


def validate(spec: WorkflowSpec, input_override: Mapping[str, Any] | None = None) -> WorkflowSpec:
    """Raise WorkflowInvalid listing every problem of meaning (with its line when the spec came from YAML),
    or return the spec. For text or a dict, check() also reports the structural ones in the same pass."""
    if input_override:
        _check_size(_json_size(input_override, _spec_limit()), "the workflow's input (as JSON)", exact=False)
    problems = _meaning(spec, input_override)
    if problems:
        raise WorkflowInvalid(_placed(problems, spec._lines))
    return spec


def _meaning(spec: WorkflowSpec, input_override: Mapping[str, Any] | None) -> list[Problem]:
    errors: list[Problem] = []
    input_ = {**spec.input, **(input_override or {})}
    for loc in _secret_paths(input_, ("input",)):
        errors.append(Problem(f"{_dotted(loc)} looks like a secret: {SECRET_HINT}", loc))
    for n, s in enumerate(spec.steps):
        for loc in _secret_paths(s.params, ("params",)):
            errors.append(Problem(f"step {s.id}: {_dotted(loc)} looks like a secret: {SECRET_HINT}",
                                  ("steps", n, *loc)))
    if spec.priority not in PRIORITY_NAMES:
        errors.append(Problem(f"priority: unknown priority {spec.priority!r} (use one of: {', '.join(PRIORITY_NAMES)})",
                              ("priority",)))
    first: dict[str, int] = {}
    reported: set[str] = set()
    for n, s in enumerate(spec.steps):
        if s.id in first and s.id not in reported:  # once, at its second use
            reported.add(s.id)
            errors.append(Problem(f"step {s.id}: the id is used more than once", ("steps", n, "id")))
        first.setdefault(s.id, n)
    for n, s in enumerate(spec.steps):
        for k, dep in enumerate(s.depends_on):
            if dep == s.id:
                errors.append(Problem(f"step {s.id}: depends on itself", ("steps", n, "depends_on", k)))
            elif dep not in first:
                errors.append(Problem(f"step {s.id}: depends_on names unknown step {dep!r}",
                                      ("steps", n, "depends_on", k)))
    cycle = _cycle(spec)
    if cycle:
        errors.append(Problem(f"step {cycle[0]}: dependency cycle {' -> '.join(cycle)}",
                              ("steps", first[cycle[0]], "depends_on")))
    for n, s in enumerate(spec.steps):
        errors.extend(_step_errors(spec, n, s, input_))
        if s.approval is not None and not s.requires_approval:
            errors.append(Problem(f"step {s.id}: approval: a policy needs `requires_approval: true`",
                                  ("steps", n, "approval")))
        elif (s.approval is not None and s.approval.approvers
              and not any(a.startswith("group:") for a in s.approval.approvers)
              and s.approval.required > len(set(s.approval.approvers))):
            errors.append(Problem(f"step {s.id}: approval: required is {s.approval.required} but only "
                                  f"{len(set(s.approval.approvers))} approver(s) are named",
                                  ("steps", n, "approval", "required")))
    return errors


def _step_errors(spec: WorkflowSpec, n: int, s: StepSpec, input_: dict[str, Any]) -> list[Problem]:
    here: Loc = ("steps", n)
    errors: list[Problem] = []
    executor = EXECUTORS.get(s.platform)
    if executor is None:
        return [Problem(f"step {s.id}: unknown platform {s.platform!r} (known: {', '.join(EXECUTORS)})",
                        (*here, "platform"))]
    if s.action not in executor.actions:
        return [Problem(f"step {s.id}: unknown action {s.platform}.{s.action} "
                        f"(known: {', '.join(sorted(executor.actions))})", (*here, "action"))]
    settings = get_settings()
    for platform, where in ((s.platform, "platform"),
                            *(((s.compensation.platform, "compensation"),)
                              if isinstance(s.compensation, CompensationSpec) else ())):
        if platform in EXECUTORS and not settings.uses(platform):
            # As submit_action refuses it (workers.client.check_submission): no credentials here, only an auth
            # failure at the worker, and for a compensation only when the rollback needs it.
            errors.append(Problem(f"step {s.id}: {'' if where == 'platform' else where + ': '}platform {platform!r} "
                                  "is not used by this installation "
                                  f"(OPSQ_PLATFORMS is {','.join(settings.platforms or ())})", (*here, where)))
    upstream = upstream_of(spec, s.id) - {s.id}
    for loc, text in _leaves(s.params, (*here, "params")):
        for ref in templates.references(text):
            problem = templates.check_reference(ref, upstream)
            if problem:
                errors.append(Problem(f"step {s.id}: {problem}", loc))
            elif ref.startswith("input.") and ref.split(".")[1] not in input_:
                errors.append(Problem(f"step {s.id}: template {{{{ {ref} }}}} names input {ref.split('.')[1]!r}, "
                                      "which the workflow has no value for", loc))
    # The schema too, whatever the templates' problems (fields holding one are left out: _schema_errors). An
    # `input.` template with nothing to fill it in cannot be rendered: reported above, the schema waits for it.
    with contextlib.suppress(templates.TemplateError):
        errors.extend(Problem(f"step {s.id}: {e}", (*here, "params", *loc))
                      for loc, e in _schema_errors(s.platform, s.action, s.params, input_))
    if isinstance(s.compensation, CompensationSpec):
        c = s.compensation
        cexec = EXECUTORS.get(c.platform)
        if cexec is None or c.action not in cexec.actions:
            errors.append(Problem(f"step {s.id}: compensation names unknown action {c.platform}.{c.action}",
                                  (*here, "compensation", "action" if cexec else "platform")))
        else:
            for loc, text in _leaves(c.params, (*here, "compensation", "params")):
                for ref in templates.references(text):
                    problem = templates.check_reference(ref, upstream | {s.id})
                    if problem:
                        errors.append(Problem(f"step {s.id}: compensation {problem}", loc))
    elif s.compensation is True:
        errors.append(Problem(f"step {s.id}: compensation is {_UNION_FIELDS['compensation']}", (*here, "compensation")))
    return errors
