"""The OpenAPI spec is valid and complete, and a fuzzer driven by it finds no 500 and no
response that differs from what the spec declares."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
import schemathesis
from conftest import Live
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/v1/agents"),
    ("POST", "/v1/runs"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/runs/{run_id}"),
    ("GET", "/v1/runs/{run_id}/events"),
    ("POST", "/v1/runs/{run_id}/cancel"),
    ("POST", "/v1/runs/{run_id}/interrupts/{interrupt_id}"),
    ("GET", "/v1/traces"),
    ("GET", "/v1/traces/{trace_id}"),
    ("POST", "/v1/memory/{namespace}/documents"),
    ("POST", "/v1/memory/{namespace}/search"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/budget"),
}


def spec(live: Live) -> dict[str, Any]:
    r = httpx2.get(f"{live.base_url}/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def test_the_served_spec_is_valid_openapi_3_1(live: Live) -> None:
    document = spec(live)
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_declares_its_responses_and_errors(live: Live) -> None:
    document = spec(live)
    found = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert found == ROUTES
    error_ref = "#/components/schemas/ErrorBody"
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert any(code.startswith("2") for code in responses), (method, path)
            if path == "/healthz":
                continue
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            for code in ("401", "422"):
                schema = responses[code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, code)
            if method == "post":
                assert "413" in responses and "400" in responses, path
            if "{" in path and not path.startswith("/v1/memory/"):
                assert "404" in responses, path
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_fuzzing_the_api_finds_no_server_error_and_no_undeclared_response(live: Live) -> None:
    """Schemathesis generates requests for every operation from the spec (valid and invalid
    ones) and checks each response: not a 5xx, and status, content type and body as declared."""
    schema = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {live.keys['acme']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ROUTES)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=live.base_url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=10,
            )

        check()
