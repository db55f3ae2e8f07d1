"""Every component of a call changes its exact key; the semantic scope ignores only the last
user message."""

from __future__ import annotations

from typing import Any

from keel.cache.keys import cache_key
from keel.llm.messages import (
    AssistantMessage,
    ModelSettings,
    Provenance,
    Source,
    SystemMessage,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)

SYSTEM = SystemMessage(content="You are terse.")
ASK = UserMessage(content="What is the capital of France?")
TOOL = ToolDefinition(name="search", description="Search the web.")
BASE: dict[str, Any] = {
    "model_name": "m",
    "messages": [SYSTEM, ASK],
    "tools": [TOOL],
    "output_schema": None,
    "settings": ModelSettings(temperature=0.0, max_tokens=64),
}


def key(**changes: Any) -> Any:
    args = {**BASE, **changes}
    name = args.pop("model_name")
    messages = args.pop("messages")
    return cache_key(name, messages, **args)


def test_the_key_is_stable() -> None:
    assert key() == key()
    assert len(key().exact) == 64


def test_each_component_changes_the_exact_key() -> None:
    base = key().exact
    variants = {
        "model": key(model_name="m2"),
        "temperature": key(settings=ModelSettings(temperature=0.5, max_tokens=64)),
        "max_tokens": key(settings=ModelSettings(temperature=0.0, max_tokens=65)),
        "seed": key(settings=ModelSettings(temperature=0.0, max_tokens=64, seed=1)),
        "stop": key(settings=ModelSettings(temperature=0.0, max_tokens=64, stop=("\n",))),
        "schema": key(output_schema={"type": "object"}),
        "tool added": key(tools=[TOOL, ToolDefinition(name="calc")]),
        "tool schema": key(tools=[TOOL.model_copy(update={"parameters": {"type": "string"}})]),
        "tool description": key(tools=[TOOL.model_copy(update={"description": "Search."})]),
        "no tools": key(tools=[]),
        "system prompt": key(messages=[SystemMessage(content="You are verbose."), ASK]),
        "question": key(messages=[SYSTEM, UserMessage(content="What is the capital of Spain?")]),
        "history": key(
            messages=[
                SYSTEM,
                UserMessage(content="Hi"),
                AssistantMessage(parts=(TextPart(text="Hello"),)),
                ASK,
            ]
        ),
    }
    assert all(v.exact != base for v in variants.values())
    assert len({v.exact for v in variants.values()}) == len(variants)


def test_tool_order_and_provenance_do_not_change_the_key() -> None:
    other = ToolDefinition(name="calc")
    assert key(tools=[TOOL, other]).exact == key(tools=[other, TOOL]).exact
    labelled = UserMessage(
        content=ASK.content, provenance=Provenance(sources=(Source(kind="user"),))
    )
    assert key(messages=[SYSTEM, labelled]).exact == key().exact


def test_the_scope_leaves_out_only_the_last_user_message() -> None:
    spain = key(messages=[SYSTEM, UserMessage(content="What is the capital of Spain?")])
    assert spain.scope == key().scope and spain.exact != key().exact
    assert spain.text == "What is the capital of Spain?"
    assert key(model_name="m2").scope != key().scope
    assert key(tools=[]).scope != key().scope
    assert key(messages=[SystemMessage(content="Other."), ASK]).scope != key().scope
    assert key(settings=ModelSettings(temperature=0.0)).scope != key().scope


def test_a_call_ending_in_a_tool_result_has_no_semantic_scope() -> None:
    call = ToolCallPart(id="1", name="search", arguments={"q": "France"})
    after_tool = key(
        messages=[
            SYSTEM,
            ASK,
            AssistantMessage(parts=(call,)),
            ToolMessage(tool_call_id="1", name="search", content="Paris"),
        ]
    )
    assert after_tool.scope is None and after_tool.text is None
