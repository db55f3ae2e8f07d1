"""Several versions per tool, pins, effects, declared secrets, and composable views."""

from typing import Annotated

import pytest

from keel.errors import ToolNotFoundError
from keel.llm import ToolCallPart
from keel.tools import Effect, Secret, ToolRegistry


def versioned() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(name="search", version="1.0.0", effects="read_only")
    def search_v1(query: str) -> str:
        """Search the web."""
        return f"v1:{query}"

    @registry.tool(name="search", version="1.10.0", effects=[Effect.READ_ONLY])
    def search_v110(query: str, limit: int = 3) -> str:
        """Search the web."""
        return f"v1.10:{query}:{limit}"

    @registry.tool(name="search", version="1.2", effects="read_only")
    def search_v12(query: str) -> str:
        """Search the web."""
        return f"v1.2:{query}"

    @registry.tool(effects=["writes", "sends_outside"], secrets=["SMTP_HOST"])
    def send(to: str, token: Annotated[str, Secret("SMTP_TOKEN")]) -> str:
        """Send an email."""
        return to

    return registry


def call(name: str, **arguments: object) -> ToolCallPart:
    return ToolCallPart(id="c1", name=name, arguments=arguments)


async def test_latest_version_is_the_default_and_versions_compare_semantically() -> None:
    registry = versioned()
    assert [t.version for t in registry.versions("search")] == ["1.0.0", "1.2", "1.10.0"]
    assert registry.get("search").version == "1.10.0"
    assert registry.get("search", "1.2.0").version == "1.2"
    assert registry.get("search@1.0.0").ref == "search@1.0.0"
    result = await registry.call(call("search", query="q"))
    assert result.value == "v1.10:q:3"
    assert len(registry.definitions()) == 2
    with pytest.raises(ToolNotFoundError, match=r"no version 9; registered: 1.0.0, 1.2, 1.10.0"):
        registry.get("search", "9")
    with pytest.raises(ValueError, match="semantic version"):
        registry.register(lambda q: q, name="bad", version="v1")


async def test_an_agent_pins_name_at_version() -> None:
    registry = versioned()
    pinned = registry.select("search@1.0.0")
    assert [t.name for t in pinned.tools()] == ["search"]
    assert pinned.definitions()[0].parameters["required"] == ["query"]
    assert "limit" not in pinned.definitions()[0].parameters["properties"]
    assert (await pinned.call(call("search", query="q"))).value == "v1:q"
    # The original registry is unchanged; pin() keeps every other tool.
    assert (await registry.call(call("search", query="q"))).value == "v1.10:q:3"
    assert registry.pin("search", "1.2").get("search").version == "1.2"
    assert "send" in registry.pin("search", "1.2")


def test_effects_and_secrets_are_declared_and_secret_parameters_hidden() -> None:
    registry = versioned()
    send = registry.get("send")
    assert send.effects == {Effect.WRITES, Effect.SENDS_OUTSIDE}
    assert send.has_side_effects
    assert not registry.get("search").has_side_effects
    assert send.secrets == ("SMTP_TOKEN", "SMTP_HOST")
    assert send.secret_parameters == (("token", "SMTP_TOKEN"),)
    assert list(send.parameters["properties"]) == ["to"]

    @registry.tool
    def undeclared() -> int:
        """No effects declared."""
        return 1

    assert registry.get("undeclared").effects == frozenset()
    assert registry.get("undeclared").has_side_effects
    with pytest.raises(ValueError, match="'teleports'"):
        registry.register(lambda: 1, name="bad", effects="teleports")


def test_schema_hash_ignores_the_version_but_not_the_contract() -> None:
    registry = versioned()
    v1, v12 = registry.get("search", "1.0.0"), registry.get("search", "1.2")
    assert v1.schema_hash == v12.schema_hash
    assert v1.schema_hash != registry.get("search").schema_hash


async def test_views_filter_prefix_rename_and_require_approval() -> None:
    registry = versioned()
    read_only = registry.filter(lambda t: not t.has_side_effects)
    assert [t.name for t in read_only] == ["search"]

    web = registry.prefix("web_")
    assert sorted(t.name for t in web) == ["web_search", "web_send"]
    assert (await web.call(call("web_search", query="x"))).value == "v1.10:x:3"
    unknown = await web.call(call("search", query="x"))
    assert unknown.error is not None and unknown.error["type"] == "unknown_tool"

    renamed = registry.rename({"search": "lookup"}).select("lookup@1.2")
    assert (await renamed.call(call("lookup", query="x"))).value == "v1.2:x"
    with pytest.raises(ToolNotFoundError):
        registry.rename({"nope": "x"})

    guarded = registry.require_approval(lambda t: t.has_side_effects)
    assert guarded.get("send").requires_approval
    assert not guarded.get("search").requires_approval
    assert not registry.get("send").requires_approval
    assert all(t.requires_approval for t in registry.require_approval().all_versions())
    assert registry.require_approval(["search"]).get("search", "1.0.0").requires_approval


async def test_views_share_policies_and_include_rejects_clashes() -> None:
    registry = versioned()
    view = registry.prefix("p_")
    assert view.get("p_search").policy is registry.get("search").policy
    other = ToolRegistry()

    @other.tool(name="search", version="1.0.0")
    def clash(query: str) -> str:
        """Same name and version."""
        return query

    with pytest.raises(ValueError, match="already registered"):
        registry.include(other)
    both = registry.include(other.prefix("o_"))
    assert sorted(t.name for t in both) == ["o_search", "search", "send"]
