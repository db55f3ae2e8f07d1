"""The runs API end to end: start, stream events (and resume the stream), interrupts, cancel."""

from __future__ import annotations

import asyncio

from conftest import GATES, SENT, Api


def open_gate(name: str) -> None:
    GATES.setdefault(name, asyncio.Event()).set()


def test_a_run_streams_its_events_and_ends_with_its_output(api: Api) -> None:
    run = api.start("echo", "hello")
    assert run["status"] == "running" and run["agent"] == "echo"
    events = api.events(run["id"])
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-2:] == ["run_finished", "end"]
    assert "node_started" in kinds and "state" in kinds
    tokens = [e["data"]["data"]["data"] for e in events if e["event"] == "custom"]
    assert "".join(tokens) == "echo: hello"
    ids = [int(e["id"]) for e in events if "id" in e]
    assert ids == list(range(1, len(ids) + 1))
    done = api.finish(run["id"])
    assert done["status"] == "done" and done["output"] == "echo: hello"
    assert done["state"]["turns"] == 1


def test_the_event_stream_resumes_after_last_event_id(api: Api) -> None:
    run = api.start("echo", "again")
    everything = [e for e in api.events(run["id"]) if "id" in e]
    rest = api.events(run["id"], **{"Last-Event-ID": everything[2]["id"]})
    assert [e["id"] for e in rest if "id" in e] == [e["id"] for e in everything[3:]]
    by_query = api.client.get(f"/v1/runs/{run['id']}/events?after=4", headers=api.headers())
    assert by_query.status_code == 200 and "id: 4\n" not in by_query.text
    assert f"id: {len(everything)}\n" in by_query.text


def test_runs_are_listed_newest_first_with_filters(api: Api) -> None:
    first = api.finish(api.start("echo", "one")["id"])
    second = api.finish(api.start("echo", "two")["id"])
    gated = api.start("gated", {"input": "list"})
    r = api.client.get("/v1/runs", headers=api.headers())
    assert [x["id"] for x in r.json()["data"]] == [gated["id"], second["id"], first["id"]]
    only = api.client.get("/v1/runs?agent=gated&status=running", headers=api.headers())
    assert [x["id"] for x in only.json()["data"]] == [gated["id"]]
    limited = api.client.get("/v1/runs?limit=1&status=done", headers=api.headers())
    assert [x["id"] for x in limited.json()["data"]] == [second["id"]]
    api.client.post(f"/v1/runs/{gated['id']}/cancel", headers=api.headers())


def test_an_approved_tool_call_runs_once_and_the_run_finishes(api: Api) -> None:
    run = api.start("mailer", "hi ana")
    events = api.events(run["id"])
    assert events[-1] == {"event": "end", "data": {"status": "interrupted"}}
    paused = api.client.get(f"/v1/runs/{run['id']}", headers=api.headers()).json()
    assert paused["status"] == "interrupted" and SENT == []
    (ask,) = paused["interrupts"]
    assert ask["value"]["tool"] == "send_email"
    r = api.client.post(
        f"/v1/runs/{run['id']}/interrupts/{ask['id']}",
        json={"approved": True},
        headers=api.headers(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "running"
    done = api.finish(run["id"])
    assert done["status"] == "done" and done["output"] == "done: sent to ana@example.com"
    assert SENT == ["ana@example.com"]
    again = api.client.post(
        f"/v1/runs/{run['id']}/interrupts/{ask['id']}",
        json={"approved": True},
        headers=api.headers(),
    )
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"


def test_a_denied_tool_call_does_not_run(api: Api) -> None:
    run = api.start("mailer", "spam everyone")
    api.events(run["id"])
    (ask,) = api.client.get(f"/v1/runs/{run['id']}", headers=api.headers()).json()["interrupts"]
    unknown = api.client.post(
        f"/v1/runs/{run['id']}/interrupts/nope", json={"approved": True}, headers=api.headers()
    )
    assert unknown.status_code == 404
    r = api.client.post(
        f"/v1/runs/{run['id']}/interrupts/{ask['id']}",
        json={"approved": False, "reason": "no spam"},
        headers=api.headers(),
    )
    assert r.status_code == 200
    done = api.finish(run["id"])
    assert done["status"] == "done" and "no spam" in done["output"] and SENT == []


def test_cancelling_a_running_run(api: Api) -> None:
    run = api.start("gated", {"input": "never"})
    r = api.client.post(f"/v1/runs/{run['id']}/cancel", headers=api.headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    events = api.events(run["id"])
    assert events[-2]["event"] == "run_cancelled"
    twice = api.client.post(f"/v1/runs/{run['id']}/cancel", headers=api.headers())
    assert twice.status_code == 409
    assert "never" not in {k for k, g in GATES.items() if g.is_set()}


def test_a_gated_run_finishes_when_the_gate_opens(api: Api) -> None:
    run = api.start("gated", {"input": "door"})
    running = api.client.get(f"/v1/runs/{run['id']}", headers=api.headers()).json()
    assert running["status"] == "running"
    assert api.client.portal is not None
    api.client.portal.call(open_gate, "door")  # on the service's event loop
    done = api.finish(run["id"])
    assert done["output"] == "opened door"


def test_unknown_agents_and_runs_are_404_with_the_error_body(api: Api) -> None:
    r = api.client.post("/v1/runs", json={"agent": "nobody", "input": "x"}, headers=api.headers())
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "agent_not_found" and "echo" in r.json()["error"]["hint"]
    missing = "0" * 32
    for method, path in [
        ("GET", f"/v1/runs/{missing}"),
        ("GET", f"/v1/runs/{missing}/events"),
        ("POST", f"/v1/runs/{missing}/cancel"),
    ]:
        r = api.client.request(method, path, headers=api.headers())
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["type"] == "not_found"


def test_input_that_does_not_fit_the_agent_is_422(api: Api) -> None:
    r = api.client.post(
        "/v1/runs", json={"agent": "gated", "input": {"input": 5, "x": 1}}, headers=api.headers()
    )
    assert (
        r.status_code == 422 and "invalid input for agent 'gated'" in r.json()["error"]["message"]
    )


def test_health_needs_no_key(api: Api) -> None:
    r = api.client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
