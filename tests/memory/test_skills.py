"""Procedural memory: versioned skills in SQLite, pinned versions, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from keel.errors import SkillNotFoundError, StoreError
from keel.memory.skills import SkillExample, SkillSpec, SQLiteSkillStore

SUMMARISE = SkillSpec(
    name="summarise",
    description="Summarise a document with citations.",
    instructions="Read the retrieved passages and answer in three sentences, citing [n].",
    tools=["search_docs"],
    tool_schemas={"search_docs": {"type": "object", "properties": {"q": {"type": "string"}}}},
    examples=[SkillExample(input="Summarise venus.md", output="Venus is hot [1].")],
)


@pytest.fixture
async def skills(tmp_path: Path) -> SQLiteSkillStore:
    return SQLiteSkillStore(tmp_path / "skills.db")


async def test_saving_changes_creates_versions_and_pins_load_old_ones(
    skills: SQLiteSkillStore, tmp_path: Path
) -> None:
    first = await skills.save(SUMMARISE)
    second = await skills.save(SUMMARISE.model_copy(update={"tools": ["search_docs", "fetch"]}))
    assert (first.version, second.version) == (1, 2)

    await skills.close()
    reopened = SQLiteSkillStore(tmp_path / "skills.db")
    pinned = await reopened.load("summarise", version=1)
    assert pinned.tools == ["search_docs"]
    assert pinned.examples == SUMMARISE.examples
    assert pinned.tool_schemas == SUMMARISE.tool_schemas
    assert (await reopened.load("summarise")).version == 2
    assert await reopened.versions("summarise") == [1, 2]
    assert await reopened.names() == ["summarise"]
    await reopened.close()


async def test_saving_an_unchanged_skill_keeps_its_version(skills: SQLiteSkillStore) -> None:
    first = await skills.save(SUMMARISE)
    again = await skills.save(SUMMARISE)
    assert again == first
    assert await skills.versions("summarise") == [1]
    await skills.close()


async def test_unknown_skills_and_versions_are_typed_errors(skills: SQLiteSkillStore) -> None:
    with pytest.raises(SkillNotFoundError, match="no skill named 'nope'"):
        await skills.load("nope")
    await skills.save(SUMMARISE)
    with pytest.raises(SkillNotFoundError, match="has no version 7") as raised:
        await skills.load("summarise", version=7)
    assert raised.value.hint == "versions: 1"
    assert isinstance(raised.value, StoreError)
    await skills.close()


def test_a_skill_needs_a_usable_name_and_instructions() -> None:
    with pytest.raises(ValidationError):
        SkillSpec(name="bad name!", instructions="x")
    with pytest.raises(ValidationError):
        SkillSpec(name="ok", instructions="")
