"""A planted secret never shows up in results, errors, messages, spans, logs or files Keel wrote."""

import json
import logging
from pathlib import Path
from typing import Annotated

import pytest

from keel.errors import RetryableToolError, ToolExecutionError
from keel.llm import ToolCallPart
from keel.observe import get_tracer, setup_tracing, shutdown_tracing
from keel.tools import (
    EnvSecretProvider,
    RedactingFilter,
    RetryPolicy,
    Secret,
    ToolPolicy,
    ToolRegistry,
)

PLANTED = "sk-planted-5f3a9c1e7b"
Token = Annotated[str, Secret("SERVICE_TOKEN")]


def leaky_registry() -> ToolRegistry:
    registry = ToolRegistry(secrets=EnvSecretProvider(environ={"SERVICE_TOKEN": PLANTED}))
    user_log = logging.getLogger("user.tool")

    @registry.tool
    def echo(text: str, token: Token) -> str:
        """Echoes the token back (a careless tool)."""
        return f"{text}: token={token}"

    @registry.tool
    def nested(token: Token) -> dict[str, object]:
        """Returns the token deep inside a structure."""
        return {"request": {"headers": {"Authorization": f"Bearer {token}"}}, "n": [1, token]}

    @registry.tool
    def raises(token: Token) -> str:
        """Raises with the token in the message and the hint."""
        raise ToolExecutionError(f"auth failed for {token}", hint=f"rotate {token}")

    @registry.tool(policy=ToolPolicy(retry=RetryPolicy(2, 0.001, 0.002)))
    def retries(token: Token) -> str:
        """Fails retryably with the token in the message (logged on retry)."""
        raise RetryableToolError(f"503 from upstream with key {token}")

    @registry.tool
    def logs(token: Token) -> str:
        """Logs the token through the standard logging module."""
        user_log.warning("calling the service with %s", token)
        user_log.error(f"inline {token}")
        return "done"

    @registry.tool
    def crashes(token: Token) -> str:
        """A plain exception carrying the token."""
        raise KeyError(token)

    return registry


CALLS: list[tuple[str, dict[str, object]]] = [
    ("echo", {"text": "hi"}),
    ("nested", {}),
    ("raises", {}),
    ("retries", {}),
    ("logs", {}),
    ("crashes", {}),
]


async def run_all(registry: ToolRegistry) -> list[str]:
    """Every call, under one root span; returns every text form of every result."""
    outputs: list[str] = []
    with get_tracer("test").start_as_current_span("agent run"):
        for name, arguments in CALLS:
            result = await registry.call(ToolCallPart(id=name, name=name, arguments=arguments))
            outputs += [result.content(), repr(result), result.to_message().model_dump_json()]
            outputs.append(json.dumps(result.value, default=str))
    return outputs


def scan(root: Path, needle: str) -> tuple[list[str], list[str]]:
    """Names of every file under ``root``, and of those whose bytes contain ``needle``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return [p.name for p in files], [p.name for p in files if needle.encode() in p.read_bytes()]


async def test_planted_secret_never_leaves_the_tool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = leaky_registry()
    log_file = tmp_path / "app.log"
    handler = logging.FileHandler(log_file)
    handler.addFilter(RedactingFilter(registry.redactor))
    logging.getLogger().addHandler(handler)
    store = setup_tracing(tmp_path / "traces.db")
    caplog.set_level(logging.INFO)
    try:
        outputs = await run_all(registry)
        trace_id = store.last_trace_id()
        assert trace_id is not None
        spans = store.trace(trace_id)
    finally:
        shutdown_tracing()
        logging.getLogger().removeHandler(handler)
        handler.close()

    # The calls really happened and said what they do, minus the secret.
    joined = "\n".join(outputs)
    assert "hi: token=[secret SERVICE_TOKEN]" in joined
    assert "Bearer [secret SERVICE_TOKEN]" in joined
    assert "auth failed for [secret SERVICE_TOKEN]" in joined
    assert "rotate [secret SERVICE_TOKEN]" in joined
    assert PLANTED not in joined

    span_text = "\n".join(
        f"{s.name} {s.status_message} {dict(s.attributes)} {s.events}" for s in spans
    )
    assert len(spans) == 1 + len(CALLS) and "execute_tool raises" in span_text
    assert "[secret SERVICE_TOKEN]" in span_text and PLANTED not in span_text

    keel_records = [r.getMessage() for r in caplog.records if r.name.startswith("keel")]
    assert any("retrying" in m for m in keel_records)
    assert not any(PLANTED in m for m in keel_records)
    assert "calling the service with [secret SERVICE_TOKEN]" in log_file.read_text()
    assert PLANTED not in log_file.read_text()

    written, leaking = scan(tmp_path, PLANTED)
    assert "traces.db" in written and "app.log" in written
    assert leaking == []
