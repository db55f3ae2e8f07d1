"""Bad input gets a 4xx with the one error body, never a 500."""

from __future__ import annotations

from conftest import Api

from keel.serve.app import BodyLimit
from keel.serve.schemas import ErrorBody


def error(r) -> dict:  # type: ignore[no-untyped-def, type-arg]
    ErrorBody.model_validate(r.json())
    return dict(r.json()["error"])


def test_malformed_json_is_400(api: Api) -> None:
    r = api.client.post(
        "/v1/runs",
        content=b'{"agent": "echo", "input": ',
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and error(r)["type"] == "invalid_json"


def test_wrong_types_and_unknown_fields_are_422(api: Api) -> None:
    for body in [
        {"agent": 5, "input": "x"},
        {"agent": "echo"},
        {"agent": "echo", "input": "x", "extra": 1},
        {"agent": "echo", "input": ""},
        [],
        "text",
    ]:
        r = api.client.post("/v1/runs", json=body, headers=api.headers())
        assert r.status_code == 422, body
        assert error(r)["type"] == "invalid_request"
    r = api.client.get("/v1/runs?limit=0", headers=api.headers())
    assert r.status_code == 422 and error(r)["param"] == "query.limit"
    r = api.client.get("/v1/runs/not-a-run-id", headers=api.headers())
    assert r.status_code == 422


def test_an_oversized_body_is_refused_before_it_is_read(api: Api) -> None:
    big = {"agent": "echo", "input": "x" * 70_000}  # the test service accepts 64 kB
    r = api.client.post("/v1/runs", json=big, headers=api.headers())
    assert r.status_code == 413 and error(r)["type"] == "payload_too_large"
    assert api.client.get("/v1/runs", headers=api.headers()).json()["data"] == []


async def test_the_body_limit_stops_reading_a_stream_without_content_length() -> None:
    reached: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        reached.append("app")

    limit = BodyLimit(app, limit=10_000)
    chunks_read = 0

    async def receive() -> dict:  # type: ignore[type-arg]
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"z" * 1000, "more_body": True}  # endless

    replies: list[dict] = []  # type: ignore[type-arg]

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        replies.append(message)

    scope = {"type": "http", "method": "POST", "headers": [], "path": "/v1/runs"}
    await limit(scope, receive, send)
    assert reached == [] and chunks_read == 11
    assert replies[0]["status"] == 413


def test_unknown_routes_and_methods_use_the_error_body(api: Api) -> None:
    r = api.client.get("/v1/nothing", headers=api.headers())
    assert r.status_code == 404 and error(r)["type"] == "not_found"
    r = api.client.delete("/v1/runs", headers=api.headers())
    assert r.status_code == 405 and error(r)["type"] == "method_not_allowed"
