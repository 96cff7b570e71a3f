"""workflows.spec: loading a spec (dict, YAML text, file), validating it whole — every problem reported
at once, each with its step id — and its levels and upstream steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from executors.registry import EXECUTORS
from workers.cli.main import cli, register
from workers.settings import reload_settings
from workflows.client import gate_policy
from workflows.spec import ApprovalPolicy, WorkflowInvalid, WorkflowSpec, check, levels, load, upstream_of, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def slack(step_id: str, *deps: str, text: str = "t", **extra: object) -> dict:
    return {"id": step_id, "platform": "slack", "action": "send_message", "params": {"channel": "#c", "text": text},
            "depends_on": list(deps), **extra}


def spec(*steps: dict, **fields: object) -> WorkflowSpec:
    return load({"name": "w", "steps": list(steps), **fields})


def problems(s: WorkflowSpec, input_override: dict | None = None) -> list[str]:
    with pytest.raises(WorkflowInvalid) as info:
        validate(s, input_override)
    assert str(info.value) == "invalid workflow: " + "; ".join(info.value.errors)
    return info.value.errors


# -- load ------------------------------------------------------------------------------------------------


def test_load_takes_a_dict_yaml_text_or_a_file(tmp_path):
    from_dict = load({"name": "w", "steps": [slack("a")]})
    text = "name: w\nsteps:\n  - id: a\n    platform: slack\n    action: send_message\n" \
           "    params: {channel: '#c', text: t}\n"
    path = tmp_path / "w.yaml"
    path.write_text(text)
    assert load(text) == load(path) == load(str(path)) == from_dict
    assert load(from_dict) is from_dict
    assert from_dict.priority == "normal" and from_dict.approval_expires_s == 86400.0
    assert from_dict.step("a").compensation is None and from_dict.step("a").max_attempts is None


@pytest.mark.parametrize(("source", "error"), [
    ("/nonexistent/w.yaml", "no such workflow file: /nonexistent/w.yaml"),
    ("name: w\nsteps: [unclosed\n", "line 3, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' "
                                   "(while parsing a flow sequence at line 2, column 8)"),
    # A control character (the reader refuses it as it is made) and a lone surrogate (UTF-8 cannot count it):
    # both reach load() as text over the HTTP API.
    ("name: w\x7f\nsteps: []\n", "line 1, column 8: not valid YAML: unacceptable character #x007f"),
    ("name: w\ud800\nsteps: []\n", "line 1, column 8: not valid YAML: unacceptable character #xd800"),
    ("- just\n- a list\n", "a workflow is a mapping with `name` and `steps`"),
    ({"steps": [slack("a")]}, "name: Field required"),
    ({"name": "w", "steps": []}, "steps: List should have at least 1 item"),
    ({"name": "w", "steps": [slack("a", colour="red")]}, "step a: colour: unknown key (known: action, approval, "
                                                      "compensation, depends_on, id, max_attempts, params, platform, "
                                                      "requires_approval)"),
    ({"name": "w", "steps": [slack("a"), {"id": "b", "platform": "slack"}]}, "step b: action: Field required"),
    ({"name": "w", "steps": [slack("a"), {"platform": "slack", "action": "x"}]}, "step #2: id: Field required"),
    ({"name": "w", "steps": [slack("bad id!")]}, "step bad id!: id: String should match pattern"),
    ({"name": "w", "steps": [slack("a", max_attempts=0)]}, "step a: max_attempts: Input should be greater than"),
])
def test_structural_errors_are_refused_with_where_they_are(source, error):
    with pytest.raises(WorkflowInvalid) as info:
        load(source)
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_the_examples_load_and_validate():
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    for path in examples:
        s = validate(load(path))
        assert s.steps and levels(s)


# -- validate ----------------------------------------------------------------------------------------------


def test_a_valid_spec_is_returned_as_it_is():
    s = spec(slack("a"), slack("b", "a", text="after {{ steps.a.output.ts }} for {{ input.who }}"),
             input={"who": "ops"})
    assert validate(s) is s


def test_every_problem_is_reported_at_once_each_with_its_step():
    s = spec(
        {"id": "a", "platform": "jira", "action": "x"},
        {"id": "b", "platform": "slack", "action": "fax"},
        {"id": "c", "platform": "slack", "action": "send_message", "params": {"channel": "#c"}, "depends_on": ["zz"]},
        slack("d", "d"),
        slack("e", text="{{ steps.f.output.ts }}"),
        slack("f"),
        priority="urgent",
    )
    assert problems(s) == [
        "priority: unknown priority 'urgent' (use one of: critical, high, normal, low)",
        "step c: depends_on names unknown step 'zz'",
        "step d: depends on itself",
        f"step a: unknown platform 'jira' (known: {', '.join(EXECUTORS)})",
        "step b: unknown action slack.fax (known: request_approval, send_message)",
        "step c: text: Field required",
        "step e: template {{ steps.f.output.ts }} names step 'f', which is not upstream of this step",
    ]


def test_a_cycle_is_named_with_its_path():
    errors = problems(spec(slack("a", "c"), slack("b", "a"), slack("c", "b"), slack("d")))
    assert errors == ["step a: dependency cycle a -> c -> b -> a"]


def test_a_duplicate_id_is_reported_once():
    assert "step a: the id is used more than once" in problems(spec(slack("a"), slack("a"), slack("a")))
    assert problems(spec(slack("a"), slack("a"))).count("step a: the id is used more than once") == 1


@pytest.mark.parametrize(("text", "problem"), [
    ("{{ __import__('os') }}", "template {{ __import__('os') }} is not a plain path"),
    ("{{ env.HOME }}", "must start with input., steps. or settings."),
    ("{{ settings.slack_token }}", "settings. reads only "),
    ("{{ steps.a.result }}", "must read steps.<id>.output"),
    ("{{ input }}", "must name a key"),
    ("{{ input.missing }}", "template {{ input.missing }} names input 'missing', which the workflow has no value for"),
    ("{{ steps.c.output.ts }}", "names step 'c', which is not upstream of this step"),  # a sibling, not upstream
])
def test_bad_templates_are_reported_with_their_step(text, problem):
    errors = problems(spec(slack("a"), slack("b", "a", text=text), slack("c", "a"), input={"who": "x"}))
    assert len(errors) == 1 and errors[0].startswith("step b: ") and problem in errors[0], errors


def test_templates_may_name_any_step_upstream_not_only_direct_dependencies():
    s = spec(slack("a"), slack("b", "a"), slack("c", "b", text="{{ steps.a.output.ts }}"))
    assert validate(s) is s


def test_an_input_given_at_submit_satisfies_a_template_and_is_checked_for_secrets():
    s = spec(slack("a", text="{{ input.who }}"))
    assert "names input 'who'" in problems(s)[0]
    assert validate(s, {"who": "ops"}) is s
    assert problems(s, {"who": "ops", "password": "hunter2"}) == [
        "input.password looks like a secret: " + _hint()]


def test_params_are_schema_checked_with_input_filled_in_and_step_templates_left_for_run_time():
    gdrive = {"id": "g", "platform": "gdrive", "action": "create_file", "depends_on": ["a"]}
    ok = spec(slack("a"), {**gdrive, "params": {"name": "{{ steps.a.output.ts }}"}})
    assert validate(ok) is ok
    empty_name = spec(slack("a"), {**gdrive, "params": {"name": "{{ input.name }}"}}, input={"name": ""})
    assert problems(empty_name) == ["step g: name: String should have at least 1 character"]


@pytest.mark.parametrize(("where", "step"), [
    ({"params": {"channel": "#c", "text": "t", "token": "xoxb-1"}}, "step a: params.token"),  # (and not in the schema)
    ({"params": {"channel": "#c", "text": "t", "blocks": [{"api_key": "k"}]}}, "step a: params.blocks[0].api_key"),
])
def test_secrets_in_params_are_refused_with_their_path(where, step):
    errors = problems(spec({**slack("a"), **where}))
    assert errors[0] == f"{step} looks like a secret: " + _hint()


def test_empty_secret_named_fields_are_not_secrets():
    s = spec(slack("a"), input={"token": "", "password": None})
    assert validate(s) is s


def test_compensations_are_checked_like_steps():
    undo = {"platform": "slack", "action": "send_message",
            "params": {"channel": "#c", "text": "undo {{ steps.a.output.ts }} {{ steps.b.output.ts }}"}}
    ok = spec(slack("a", compensation=undo), slack("b", "a", compensation=undo))
    assert problems(ok) == ["step a: compensation template {{ steps.b.output.ts }} names step 'b', which is not "
                            "upstream of this step"]  # b's own output and a's are fine for b's undo
    assert problems(spec(slack("a", compensation={"platform": "slack", "action": "unsend"}))) == [
        "step a: compensation names unknown action slack.unsend"]
    assert problems(spec(slack("a", compensation=True))) == [
        "step a: compensation is an action spec (platform, action, params), false, or left out"]
    assert validate(spec(slack("a", compensation=False))).step("a").compensation is False


# -- levels and upstream_of ---------------------------------------------------------------------------------


def test_levels_group_steps_by_depth_keeping_the_file_order():
    diamond = spec(slack("scan"), slack("review", "scan"), slack("compliance", "scan"),
                   slack("notify", "compliance", "review"), slack("solo"))
    assert levels(diamond) == [["scan", "solo"], ["review", "compliance"], ["notify"]]
    chain = spec(slack("c", "b"), slack("b", "a"), slack("a"))
    assert levels(chain) == [["a"], ["b"], ["c"]]
    uneven = spec(slack("a"), slack("b", "a"), slack("c", "a", "b"))  # c waits for the deeper one
    assert levels(uneven) == [["a"], ["b"], ["c"]]


def test_upstream_of_is_every_step_depended_on_directly_or_not():
    s = spec(slack("a"), slack("b", "a"), slack("c", "b"), slack("d"), slack("e", "c", "d", "ghost"))
    assert upstream_of(s, "e") == {"a", "b", "c", "d"}
    assert upstream_of(s, "b") == {"a"} and upstream_of(s, "a") == set()


def _hint() -> str:
    return ("workflows are stored, and stored secrets are redacted, so a secret there would reach the platform "
            "as '[redacted]': give credentials through the platform's token setting (OPSQ_<PLATFORM>_TOKEN; "
            "webhooks: OPSQ_WEBHOOK_TOKEN)")


def _laughs(levels: int = 9) -> str:
    """A "billion laughs": each level is ten aliases of the one before (10^levels values in all)."""
    lines = ['lol0: &l0 ["lol"]']
    for n in range(1, levels + 1):
        lines.append(f"lol{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]")
    return "\n".join(lines)


BOMB_IN_INPUT = ("name: bomb\ninput:\n  " + _laughs().replace("\n", "\n  ")
                 + "\nsteps:\n  - id: a\n    platform: noop\n    action: noop\n")
BOMB_IN_PARAMS = ("name: bomb\nanchors:\n  " + _laughs().replace("\n", "\n  ")
                  + "\nsteps:\n  - id: a\n    platform: noop\n    action: noop\n    params: {echo: *l9}\n")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", [BOMB_IN_INPUT, BOMB_IN_PARAMS], ids=["input", "params"])
def test_an_alias_bomb_is_refused_before_anything_walks_it(text):
    assert len(text) < 2000
    with pytest.raises(WorkflowInvalid, match="expands to more than"):
        load(text)


@pytest.mark.timeout(10)
def test_a_document_that_refers_to_itself_is_refused():
    with pytest.raises(WorkflowInvalid, match="refers to itself"):
        load("name: loop\nsteps: &s\n  - id: a\n    platform: noop\n    action: noop\n    params: {echo: *s}\n")


def test_anchors_that_keep_a_spec_short_still_work():
    spec = load("name: dry\nsteps:\n  - id: a\n    platform: noop\n    action: noop\n    params: &p {echo: 1}\n"
                "  - id: b\n    platform: noop\n    action: noop\n    params: *p\n    depends_on: [a]\n")
    assert [s.params for s in spec.steps] == [{"echo": 1}, {"echo": 1}]


def _big_spec(nbytes: int) -> str:
    return ("name: big\nsteps:\n  - id: a\n    platform: noop\n    action: noop\n    params: {echo: "
            + "x" * nbytes + "}\n")


@pytest.fixture
def spec_limit_4k(monkeypatch):
    monkeypatch.setenv("OPSQ_MAX_SPEC_BYTES", "4096")
    reload_settings()


def test_a_spec_over_the_size_limit_is_refused_naming_the_setting(spec_limit_4k, tmp_path):
    assert load(_big_spec(3000)).name == "big"
    with pytest.raises(WorkflowInvalid, match=r"the workflow spec is 5\d\d\d bytes; the limit is 4096 "
                                              r"\(OPSQ_MAX_SPEC_BYTES\)"):
        load(_big_spec(5000))
    path = tmp_path / "big.yaml"
    path.write_text(_big_spec(5000))
    with pytest.raises(WorkflowInvalid, match=r"big.yaml is 5\d\d\d bytes; the limit is 4096"):
        load(path)
    with pytest.raises(WorkflowInvalid, match=r"\(as JSON\) is more than 4096 bytes"):
        load({"name": "big", "steps": [{"id": "a", "platform": "noop", "action": "noop",
                                        "params": {"echo": "x" * 5000}}]})
    with pytest.raises(WorkflowInvalid, match=r"the workflow's input \(as JSON\) is more than 4096 bytes"):
        validate(load(_big_spec(10)), {"blob": "x" * 5000})


@pytest.mark.timeout(10)
def test_a_mapping_with_shared_parts_is_measured_without_writing_it_whole(spec_limit_4k):
    shared: object = ["lol"]
    for _ in range(30):  # 10^30 values if written out
        shared = [shared] * 10
    with pytest.raises(WorkflowInvalid, match="more than 4096 bytes"):
        load({"name": "bomb", "input": {"x": shared}, "steps": [{"id": "a", "platform": "noop", "action": "noop"}]})


def test_the_cli_says_it_in_one_line(spec_limit_4k, tmp_path):
    register()
    path = tmp_path / "big.yaml"
    path.write_text(_big_spec(5000))
    out = CliRunner().invoke(cli, ["workflow", "validate", str(path)])
    assert out.exit_code == 1 and "OPSQ_MAX_SPEC_BYTES" in out.output and "Traceback" not in out.output


def test_every_gate_has_a_policy_and_by_default_its_submitter_may_not_approve_it():
    """Issue 15: `allow_self_approval: false` is the default for every gate, with or without an `approval:`."""
    plain = spec(slack("a", requires_approval=True))
    assert gate_policy({"step_ids": ["a"]}, plain) == ApprovalPolicy(approvers=[], required=1,
                                                                     allow_self_approval=False)
    allowed = spec(slack("a", requires_approval=True, approval={"allow_self_approval": True}))
    assert gate_policy({"step_ids": ["a"]}, allowed).allow_self_approval is True
    # Two gated steps in one level: the strictest; a step without a policy has the default one.
    both = spec(slack("a", requires_approval=True, approval={"allow_self_approval": True}),
                slack("b", requires_approval=True))
    assert gate_policy({"step_ids": ["a", "b"]}, both).allow_self_approval is False
    named = spec(slack("a", requires_approval=True, approval={"approvers": ["dana", "lee"], "required": 2,
                                                              "allow_self_approval": True}),
                 slack("b", requires_approval=True, approval={"approvers": ["lee", "sam"],
                                                              "allow_self_approval": True}))
    assert gate_policy({"step_ids": ["a", "b"]}, named) == ApprovalPolicy(approvers=["lee"], required=2,
                                                                         allow_self_approval=True)


# -- every problem in one pass, each once, with its line (issue 16 item 5) ----------------------------------

# Six problems: a misspelt key, an unknown platform, a bad template, a self-dependency, params failing the
# action's schema, an approval policy that cannot be met. Before, the misspelt key hid the rest, and the
# self-dependency was reported twice (as itself and as a cycle).
SIX_PROBLEMS = """\
name: release
steps:
  - id: build
    platform: slack
    action: send_message
    dependson: [lint]
    params: {channel: "#ops", text: built}
  - id: deploy
    platform: jenkins
    action: run
  - id: announce
    platform: slack
    action: send_message
    depends_on: [build, announce]
    params:
      channel: 42
      text: "deployed {{ steps.deploy.output.url }}"
  - id: gate
    platform: noop
    action: noop
    requires_approval: true
    approval: {approvers: [dana], required: 2}
"""


def test_every_problem_of_a_yaml_spec_is_reported_once_with_its_line():
    with pytest.raises(WorkflowInvalid) as info:
        check(SIX_PROBLEMS)
    assert info.value.errors == [
        "line 6: step build: dependson: unknown key (did you mean 'depends_on'?)",
        f"line 9: step deploy: unknown platform 'jenkins' (known: {', '.join(EXECUTORS)})",
        "line 14: step announce: depends on itself",
        "line 16: step announce: channel: Input should be a valid string",
        "line 17: step announce: template {{ steps.deploy.output.url }} names step 'deploy', which is not "
        "upstream of this step",
        "line 22: step gate: approval: required is 2 but only 1 approver(s) are named",
    ]
    assert [p.line for p in info.value.problems] == [6, 9, 14, 16, 17, 22]
    # The same list through load() then validate() with the typo fixed: the rest were never hidden by it.
    fixed = SIX_PROBLEMS.replace("dependson: [lint]", "depends_on: []")
    with pytest.raises(WorkflowInvalid) as again:
        validate(load(fixed))
    assert again.value.errors == info.value.errors[1:]


def test_a_dict_spec_is_checked_in_one_pass_too_without_lines():
    with pytest.raises(WorkflowInvalid) as info:
        check({"name": "w", "steps": [slack("a", colour="red", platform="jira"), slack("b", "b"), "oops"]})
    assert info.value.errors == [
        "step a: colour: unknown key (known: action, approval, compensation, depends_on, id, max_attempts, params, "
        "platform, requires_approval)",
        "step #3: a step is a mapping with id, platform and action",
        "step b: depends on itself",
        f"step a: unknown platform 'jira' (known: {', '.join(EXECUTORS)})",
    ]
    assert all(p.line is None for p in info.value.problems)


def test_a_broken_step_is_named_and_the_steps_depending_on_it_are_not_blamed():
    text = ("name: w\nsteps:\n  - id: fetch\n    platform: slack\n  - id: use\n    platform: slack\n"
            "    action: send_message\n    depends_on: [fetch]\n"
            "    params: {channel: '#c', text: '{{ steps.fetch.output.ts }}'}\n")
    with pytest.raises(WorkflowInvalid) as info:
        check(text)
    assert info.value.errors == ["line 3: step fetch: action: Field required"]


@pytest.mark.parametrize(("compensation", "problem"), [
    ({"platform": "slack", "action": "send_message", "colour": "red"},
     "step a: compensation.colour: unknown key (known: action, params, platform)"),
    ({"platform": "slack"}, "step a: compensation.action: Field required"),
    ("undo it", "step a: compensation is an action spec (platform, action, params), false, or left out"),
])
def test_a_compensation_problem_is_reported_once_not_once_per_kind_of_compensation(compensation, problem):
    with pytest.raises(WorkflowInvalid) as info:
        check({"name": "w", "steps": [slack("a", compensation=compensation)]})
    assert info.value.errors == [problem]


def test_a_misspelt_top_level_key_and_a_bad_value_are_each_reported_once():
    text = "name: w\nprioirty: high\napproval_expires_s: -1\nsteps:\n  - id: a\n    platform: noop\n    action: noop\n"
    with pytest.raises(WorkflowInvalid) as info:
        check(text)
    assert info.value.errors == ["line 2: prioirty: unknown key (did you mean 'priority'?)",
                                 "line 3: approval_expires_s: Input should be greater than 0"]


@pytest.mark.parametrize(("text", "error"), [
    ("name: w\nsteps:\n  - id: a\n    params: {channel: '#c', text: x\n  - id: b\n",
     "line 5, column 7: not valid YAML: expected ',' or '}', but got ':' (while parsing a flow mapping at line 4, "
     "column 13)"),
    ("name: w\nsteps:\n  - id: a\n   platform: slack\n",
     "line 4, column 4: not valid YAML: expected <block end>, but found '<block mapping start>' (while parsing a "
     "block collection at line 3, column 3)"),
    ("name: w\n\tsteps: []\n", "line 2, column 1: not valid YAML: found character '\\t' that cannot start any token "
                               "(while scanning for the next token)"),
])
def test_malformed_yaml_is_one_problem_with_pyyamls_line_and_column(text, error):
    with pytest.raises(WorkflowInvalid) as info:
        check(text)
    assert info.value.errors == [error]


def test_lines_follow_anchors_and_merge_keys():
    text = ("name: w\ndefaults: &d\n  platform: slack\n  action: send_message\nsteps:\n  - id: a\n    <<: *d\n"
            "    params: {channel: '#c'}\n")
    with pytest.raises(WorkflowInvalid) as info:
        check(text)
    # `defaults` is not a workflow key; the missing `text` is in the params of line 8.
    assert info.value.errors == ["line 2: defaults: unknown key (known: approval_expires_s, description, input, name, "
                                 "on_failure, priority, steps)",
                                 "line 8: step a: text: Field required"]


def test_a_repeated_key_is_a_problem_and_the_value_kept_is_the_one_placed():
    # PyYAML keeps the last `action` silently: the unknown action is on line 7, and the repeat is said too.
    text = ("name: w\nsteps:\n  - id: a\n    platform: slack\n    action: send_message\n"
            "    params: {channel: '#c', text: t}\n    action: nope\n")
    with pytest.raises(WorkflowInvalid) as info:
        check(text)
    assert info.value.errors == [
        f"line 7: step a: unknown action slack.nope (known: {', '.join(sorted(EXECUTORS['slack'].actions))})",
        "line 7: step a: action: duplicate key (also on line 5)"]
    # A repeat alone is refused too (by load() as by check()), every repeat naming the first; the value dropped
    # (the first `params`, whose channel is no string) is not checked.
    text = ("name: w\nname: v\nsteps:\n  - id: a\n    platform: slack\n    action: send_message\n"
            "    params: {channel: 3}\n    params: {channel: '#c', text: t}\nname: u\n")
    for way in (check, load):
        with pytest.raises(WorkflowInvalid) as info:
            way(text)
        assert info.value.errors == ["line 2: name: duplicate key (also on line 1)",
                                     "line 8: step a: params: duplicate key (also on line 7)",
                                     "line 9: name: duplicate key (also on line 1)"]


def test_a_key_overriding_a_merged_one_is_no_repeat_and_is_placed_on_its_own_line():
    text = ("name: w\nsteps:\n  - &base\n    id: a\n    platform: slack\n    action: send_message\n"
            "    params: {channel: '#c', text: t}\n  - <<: *base\n    id: b\n    action: nope\n")
    with pytest.raises(WorkflowInvalid) as info:
        check(text)
    # b's own `action` (line 10) overrides the merged one (line 6): that is what merge keys are for, not a repeat.
    assert info.value.errors == [
        f"line 10: step b: unknown action slack.nope (known: {', '.join(sorted(EXECUTORS['slack'].actions))})"]


def test_the_cli_lists_every_problem_with_its_line(tmp_path):
    register()
    path = tmp_path / "six.yaml"
    path.write_text(SIX_PROBLEMS)
    for command in ("validate", "run"):
        out = CliRunner().invoke(cli, ["workflow", command, str(path)])
        lines = out.output.splitlines()
        assert out.exit_code == 1 and len(lines) == 6 and all(ln.startswith("invalid: line ") for ln in lines), \
            out.output
        assert "Traceback" not in out.output


def test_a_step_on_a_platform_the_installation_does_not_use_is_a_problem(monkeypatch):
    """OPSQ_PLATFORMS: a workflow is refused at submit as an action is (workers.client), for its steps' platforms and
    their compensations', every one in the same pass; noop and the platforms in use pass."""
    monkeypatch.setenv("OPSQ_PLATFORMS", "slack")
    reload_settings()
    undo = {"platform": "trello", "action": "add_label", "params": {"card_id": "c1", "label_id": "l1"}}
    s = spec(slack("a"),
             {"id": "b", "platform": "notion", "action": "create_task", "params": {"database_id": "d", "title": "t"}},
             slack("c", "a", compensation=undo),
             {"id": "d", "platform": "noop", "action": "noop", "params": {}})
    assert problems(s) == [
        "step b: platform 'notion' is not used by this installation (OPSQ_PLATFORMS is slack)",
        "step c: compensation: platform 'trello' is not used by this installation (OPSQ_PLATFORMS is slack)"]
    monkeypatch.delenv("OPSQ_PLATFORMS")
    reload_settings()
    assert validate(s) is not None
