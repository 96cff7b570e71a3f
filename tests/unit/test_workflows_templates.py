"""workflows.templates: `{{ input.x }}` and `{{ steps.<id>.output.<path> }}` are plain path lookups in
mappings and lists; nothing is ever evaluated, called or read as an attribute."""

from __future__ import annotations

import re

import pytest

from workers.settings import Settings
from workflows.templates import (
    TemplateError,
    check_reference,
    lookup,
    references,
    render,
    render_input_only,
    settings_context,
    settings_keys,
    steps_referenced,
)

CONTEXT = {
    "input": {"customer": "ACME", "amount": 120, "tags": ["a", "b"]},
    "steps": {"scan": {"output": {"file_id": "f1", "rows": [{"n": 1}, {"n": 2}], "meta": {"ok": True}}}},
}


def test_references_finds_every_template_at_any_depth():
    params = {"text": "Hi {{ input.customer }}, see {{steps.scan.output.file_id}}", "n": 3,
              "nested": [{"x": "{{ input.amount }}"}, "plain", None], "none": None}
    assert list(references(params)) == ["input.customer", "steps.scan.output.file_id", "input.amount"]
    assert list(references("no template {here}")) == []
    assert list(references(42)) == []


def test_steps_referenced_names_the_steps_whose_outputs_the_templates_read():
    params = {"a": "{{ steps.scan.output.file_id }} and {{ input.customer }}", "b": ["{{steps.review.output}}"],
              "c": {"d": "{{ steps.scan.output.rows.0.n }}"}, "e": 7}
    assert steps_referenced(params) == {"scan", "review"}
    assert steps_referenced({"x": "{{ input.customer }}", "y": "plain"}) == set()
    # {{ steps }} reads every output (validation refuses it; rendering would still look it up).
    assert steps_referenced({"x": "{{ steps }}", "y": "{{ steps.scan.output }}"}) is None


@pytest.mark.parametrize(("expr", "upstream", "problem"), [
    ("input.customer", set(), None),
    ("input.a.b", set(), None),
    ("steps.scan.output", {"scan"}, None),
    ("steps.scan.output.rows.0.n", {"scan"}, None),
    ("input", set(), "template {{ input }} must name a key: {{ input.<key> }}"),
    ("steps.scan.output.file_id", set(), "names step 'scan', which is not upstream of this step"),
    ("steps.scan.result", {"scan"}, "must read steps.<id>.output[.<key>...]"),
    ("steps.scan", {"scan"}, "must read steps.<id>.output[.<key>...]"),
    ("env.HOME", set(), "must start with input., steps. or settings."),
    ("settings.webhook_base_url", set(), None),
    ("settings.platform_base_url", set(), None),
    ("settings.slack_token", set(), "settings. reads only "),  # addresses only, never a secret
    ("settings.webhook_base_url.x", set(), "settings. reads only "),
    ("settings", set(), "settings. reads only "),
    ("__import__('os')", set(), "is not a plain path"),
    ("input.customer | upper", set(), "is not a plain path"),
    ("input.customer.__class__()", set(), "is not a plain path"),
    ("input..x", set(), "is not a plain path"),
])
def test_check_reference(expr, upstream, problem):
    found = check_reference(expr, upstream)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_lookup_walks_mappings_and_list_indexes():
    assert lookup("input.customer", CONTEXT) == "ACME"
    assert lookup("steps.scan.output.rows.1.n", CONTEXT) == 2
    assert lookup("steps.scan.output.meta", CONTEXT) == {"ok": True}


@pytest.mark.parametrize(("expr", "where"), [
    ("input.missing", "input.missing"),
    ("steps.scan.output.rows.2", "steps.scan.output.rows.2"),  # past the end of the list
    ("steps.scan.output.rows.first", "steps.scan.output.rows.first"),  # a list takes indexes only
    ("input.customer.lower", "input.customer.lower"),  # a string's attributes are not reachable
    ("steps.other.output", "steps.other"),
])
def test_a_missing_path_raises_and_names_where_it_stopped(expr, where):
    with pytest.raises(TemplateError, match=re.escape(f"template {{{{ {expr} }}}}: nothing at {where}") + "$"):
        lookup(expr, CONTEXT)


def test_a_whole_template_keeps_the_value_type_and_an_inline_one_becomes_text():
    params = {"amount": "{{ input.amount }}", "rows": " {{ steps.scan.output.rows }} ",
              "text": "{{ input.customer }} owes {{ input.amount }} ({{ input.tags }})",
              "meta": "meta={{ steps.scan.output.meta }}", "list": ["{{ input.customer }}", 7, None, True]}
    assert render(params, CONTEXT) == {
        "amount": 120, "rows": [{"n": 1}, {"n": 2}],
        "text": 'ACME owes 120 (["a", "b"])', "meta": 'meta={"ok": true}',
        "list": ["ACME", 7, None, True]}
    assert params["amount"] == "{{ input.amount }}"  # the spec's params are not changed in place


def test_code_in_a_template_is_never_evaluated():
    evaluated: list[str] = []

    class Tripwire(dict):  # a context whose values would notice being called or read as attributes
        def __getattr__(self, name: str) -> None:
            evaluated.append(name)

    context = {"input": Tripwire(customer="ACME")}
    for expr in ("{{ __import__('os').system('false') }}", "{{ input.customer.upper() }}", "{{ input.__class__ }}"):
        with pytest.raises(TemplateError, match="nothing at"):
            render({"text": expr}, context)
    assert evaluated == []


def test_validation_renders_input_templates_and_leaves_step_templates_for_run_time():
    params = {"name": "{{ input.customer }}.pdf", "count": "{{ input.amount }}",
              "parent": "{{ steps.scan.output.file_id }}",
              "both": "{{ input.customer }}/{{ steps.scan.output.file_id }}",
              "plain": "x", "items": ["{{ input.customer }}", 1]}
    assert render_input_only(params, CONTEXT["input"]) == {
        "name": "ACME.pdf", "count": 120, "parent": "{{ steps.scan.output.file_id }}",
        "both": "{{ input.customer }}/{{ steps.scan.output.file_id }}", "plain": "x", "items": ["ACME", 1]}
    with pytest.raises(TemplateError, match=r"nothing at input\.missing$"):
        render_input_only({"x": "{{ input.missing }}"}, CONTEXT["input"])


def test_settings_templates_read_each_platforms_base_url_and_are_left_for_run_time():
    settings = Settings(platform_base_url="http://127.0.0.1:9123", slack_base_url="https://slack.example/api",
                        slack_token="xoxb-secret")
    context = {"settings": settings_context(settings.base_url, settings.platform_base_url)}
    assert set(context["settings"]) == settings_keys()
    assert "xoxb-secret" not in str(context)
    assert render({"url": "{{ settings.webhook_base_url }}/pay"}, context) == {"url": "http://127.0.0.1:9123/webhook/pay"}
    assert render("{{ settings.slack_base_url }}", context) == "https://slack.example/api"
    assert render("{{ settings.platform_base_url }}", context) == "http://127.0.0.1:9123"
    # At validation, the submitter's settings are not the worker's: left as written.
    params = {"url": "{{ settings.webhook_base_url }}/{{ input.customer }}"}
    assert render_input_only(params, CONTEXT["input"]) == params
