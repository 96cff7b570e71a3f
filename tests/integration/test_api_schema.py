"""schemathesis against the live API's /openapi.json (issue 15): a bounded number of generated requests per
endpoint, each sent to a real `opsq api` process with an admin token; none may get a 5xx, and every answer must
match the schema it documents (status code, content type, body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api_server import ApiServer
from workers.store import api_tokens

pytestmark = pytest.mark.integration

# Per endpoint: enough to find a 500 on odd input, little enough to keep CI's time (a few seconds in all).
EXAMPLES = 25
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def fuzzed_api(opsq_env_sqlite, tmp_path: Path) -> Iterator[tuple[ApiServer, str]]:
    # Slack configured: its endpoint is then fuzzed against the signature check (unconfigured, it answers 503).
    env = opsq_env_sqlite(OPSQ_SLACK_SIGNING_SECRET="fuzzing-secret")
    token = api_tokens.create("fuzz", "admin", actor="test")
    server = ApiServer(env, tmp_path)
    yield server, token
    server.stop()


def test_the_api_keeps_to_its_schema(fuzzed_api):
    server, token = fuzzed_api
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    tried = []
    # One bounded Hypothesis run per operation (schemathesis.pytest.from_fixture does not run on this pytest).
    for result in schema.get_all_operations():
        operation = result.ok()
        tried.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS)

        check()
    assert len(tried) == 15, tried  # every endpoint, /v1/health included
