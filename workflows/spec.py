"""The workflow spec (YAML or a dict), validated whole before anything runs.

Every problem is reported at once, each with its step id: a cycle, an unknown `depends_on`, an unknown
platform or action, params that fail the executor's schema, a template naming a step that is not
upstream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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

STEP_ID = r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}$"


class WorkflowInvalid(OpsqError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid workflow: " + "; ".join(errors))
        self.errors = errors


class CompensationSpec(BaseModel):
    """Overrides a step's undo with another action (params may template the step's own output as
    `{{ steps.<this step>.output.<key> }}`)."""

    model_config = ConfigDict(extra="forbid")
    platform: str
    action: str
    params: dict[str, Any] = Field(default_factory=dict)


class ApprovalPolicy(BaseModel):
    """Who may decide a gate, and how many must approve (workflows.client.approve). A gate without one keeps
    the rule it always had: anyone may decide it, alone, the submitter included."""

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
    """A spec from a dict, a YAML/JSON file path, or YAML text. Structural errors are WorkflowInvalid."""
    if isinstance(source, WorkflowSpec):
        return source
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
        data = _load_yaml(text)
    if not isinstance(data, Mapping):
        raise WorkflowInvalid(["a workflow is a mapping with `name` and `steps`"])
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = list(err["loc"])
            where = ".".join(str(p) for p in loc)
            if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
                steps = data.get("steps") or []
                sid = steps[loc[1]].get("id") if loc[1] < len(steps) and isinstance(steps[loc[1]], Mapping) else None
                where = f"step {sid or '#' + str(loc[1] + 1)}: " + ".".join(str(p) for p in loc[2:])
            errors.append(f"{where}: {err['msg']}")
        raise WorkflowInvalid(errors) from None


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


def _load_yaml(text: str) -> Any:
    try:
        # The reader checks the characters as it is made: a control character is a YAMLError here already.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise WorkflowInvalid([f"not valid YAML: {str(exc).splitlines()[0]}"]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_EXPANDED_NODES:
            raise WorkflowInvalid([f"the document expands to more than {MAX_EXPANDED_NODES} values through its "
                                   "aliases (&anchor / *alias): refused"])
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise WorkflowInvalid([f"not valid YAML: {str(exc).splitlines()[0]}"]) from None
    except RecursionError:
        raise WorkflowInvalid(["the document is nested too deeply"]) from None
    finally:
        loader.dispose()


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
    graph = {s.id: [d for d in s.depends_on if d in {t.id for t in spec.steps}] for s in spec.steps}
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


def _schema_errors(platform: str, action: str, params: dict[str, Any], input_: dict[str, Any]) -> list[str]:
    """Params are checked with `input.` templates filled in; a field that still holds a `steps.` or
    `settings.` template is only known at run time, so its schema check is left to the executor then."""

    rendered = templates.render_input_only(params, input_)
    schema = EXECUTORS[platform].actions[action]
    try:
        schema.model_validate(rendered)
    except PydanticError as exc:
        out = []
        for err in exc.errors():
            value: Any = rendered
            for part in err["loc"]:
                try:
                    value = value[part]
                except (KeyError, IndexError, TypeError):
                    value = None
                    break
            if any(not ref.startswith("input.") for ref in templates.references(value)):
                continue
            out.append(f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}")
        return out
    except InvalidParams as exc:  # pragma: no cover - schemas raise pydantic errors
        return [str(exc)]
    return []


def _secret_paths(value: Any, path: str) -> list[str]:
    out = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and is_secret_key(k) and v not in (None, ""):
                out.append(here)
            else:
                out.extend(_secret_paths(v, here))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            out.extend(_secret_paths(v, f"{path}[{n}]"))
    return out


SECRET_HINT = ("workflows are stored, and stored secrets are redacted, so a secret there would reach the "
               "platform as '[redacted]': give credentials through the platform's token setting "
               "(OPSQ_<PLATFORM>_TOKEN; webhooks: OPSQ_WEBHOOK_TOKEN)")


def validate(spec: WorkflowSpec, input_override: Mapping[str, Any] | None = None) -> WorkflowSpec:
    """Raise WorkflowInvalid listing every problem, or return the spec."""
    if input_override:
        _check_size(_json_size(input_override, _spec_limit()), "the workflow's input (as JSON)", exact=False)
    errors: list[str] = []
    input_ = {**spec.input, **(input_override or {})}
    for where in _secret_paths(input_, "input"):
        errors.append(f"{where} looks like a secret: {SECRET_HINT}")
    for s in spec.steps:
        for where in _secret_paths(s.params, "params"):
            errors.append(f"step {s.id}: {where} looks like a secret: {SECRET_HINT}")
    if spec.priority not in PRIORITY_NAMES:
        errors.append(f"priority: unknown priority {spec.priority!r} (use one of: {', '.join(PRIORITY_NAMES)})")
    ids = [s.id for s in spec.steps]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"step {dup}: the id is used more than once")
    known = set(ids)
    for s in spec.steps:
        for dep in s.depends_on:
            if dep not in known:
                errors.append(f"step {s.id}: depends_on names unknown step {dep!r}")
            if dep == s.id:
                errors.append(f"step {s.id}: depends on itself")
    cycle = _cycle(spec)
    if cycle:
        errors.append(f"step {cycle[0]}: dependency cycle {' -> '.join(cycle)}")
    for s in spec.steps:
        errors.extend(_step_errors(spec, s, input_))
        if s.approval is not None and not s.requires_approval:
            errors.append(f"step {s.id}: approval: a policy needs `requires_approval: true`")
        elif (s.approval is not None and s.approval.approvers
              and not any(a.startswith("group:") for a in s.approval.approvers)
              and s.approval.required > len(set(s.approval.approvers))):
            errors.append(f"step {s.id}: approval: required is {s.approval.required} but only "
                          f"{len(set(s.approval.approvers))} approver(s) are named")
    if errors:
        raise WorkflowInvalid(errors)
    return spec


def _step_errors(spec: WorkflowSpec, s: StepSpec, input_: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    executor = EXECUTORS.get(s.platform)
    if executor is None:
        return [f"step {s.id}: unknown platform {s.platform!r} (known: {', '.join(EXECUTORS)})"]
    if s.action not in executor.actions:
        return [f"step {s.id}: unknown action {s.platform}.{s.action} (known: {', '.join(sorted(executor.actions))})"]
    upstream = upstream_of(spec, s.id) - {s.id}
    for ref in templates.references(s.params):
        problem = templates.check_reference(ref, upstream)
        if problem:
            errors.append(f"step {s.id}: {problem}")
        elif ref.startswith("input.") and ref.split(".")[1] not in input_:
            errors.append(f"step {s.id}: template {{{{ {ref} }}}} names input {ref.split('.')[1]!r}, "
                          "which the workflow has no value for")
    if not errors:
        errors.extend(f"step {s.id}: {e}" for e in _schema_errors(s.platform, s.action, s.params, input_))
    if isinstance(s.compensation, CompensationSpec):
        c = s.compensation
        cexec = EXECUTORS.get(c.platform)
        if cexec is None or c.action not in cexec.actions:
            errors.append(f"step {s.id}: compensation names unknown action {c.platform}.{c.action}")
        else:
            for ref in templates.references(c.params):
                problem = templates.check_reference(ref, upstream | {s.id})
                if problem:
                    errors.append(f"step {s.id}: compensation {problem}")
    elif s.compensation is True:
        errors.append(f"step {s.id}: compensation is an action spec, false, or left out")
    return errors
