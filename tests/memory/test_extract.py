"""Structured extraction with citations: the rules the reply must follow, checked deterministically
with the test-double models, and one run of the real local model on a demo-corpus chapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from keel.errors import DocumentError, OutputValidationError
from keel.llm.testing import FunctionModel, ModelCall, ScriptedModel
from keel.memory.base import Hit
from keel.memory.extract import document_passages, extract, extract_document

DOC = """# Venus

## Heat

The average surface temperature is about 465 °C, hot enough to melt lead.

## Orbit

One orbit of the Sun takes about 225 Earth days. Its distance is 108,200,000 km.

## Moons

Venus has no moons and no rings.
"""


class Planet(BaseModel):
    name: str | None = None
    temperature_c: int | None = Field(None, description="surface temperature in Celsius")
    year_days: float | None = None
    largest_moon: str | None = None


def answer(value: object, *passages: int) -> dict[str, object]:
    return {"value": value, "passages": list(passages)}


def reply(**fields: dict[str, object]) -> str:
    full = {name: answer(None) for name in Planet.model_fields}
    return json.dumps(full | fields)


@pytest.fixture
def venus(tmp_path: Path) -> Path:
    path = tmp_path / "venus.md"
    path.write_text(DOC)
    return path


def test_a_document_becomes_passages_with_ids_and_offsets(venus: Path) -> None:
    passages = document_passages(venus)
    assert [p.id for p in passages] == ["venus.md#0", "venus.md#1", "venus.md#2"]
    text = venus.read_text()
    for p in passages:
        assert text[int(p.metadata["start"]) : int(p.metadata["end"])] == p.text
    assert passages[1].metadata["heading"] == "Venus > Orbit"


async def test_values_come_back_with_verified_citations(venus: Path) -> None:
    model = ScriptedModel(
        [
            reply(
                name=answer("Venus", 1, 3),
                temperature_c=answer(465, 1),
                year_days=answer(225, 2),
            )
        ]
    )
    result = await extract_document(model, Planet, venus)
    model.assert_done()
    assert result.value == Planet(name="Venus", temperature_c=465, year_days=225.0)
    assert result.status == {
        "name": "verified",  # in passage 3's text (passage 1 has it only in its heading)
        "temperature_c": "verified",
        "year_days": "verified",
        "largest_moon": "missing",
    }
    (cite,) = result.citations["temperature_c"]
    assert (cite.chunk_id, cite.source, cite.heading) == ("venus.md#0", "venus.md", "Venus > Heat")
    text = DOC  # what venus.md holds
    assert cite.quote == "465"
    assert cite.quote_start is not None and cite.quote_end is not None
    assert text[cite.quote_start : cite.quote_end] == "465"
    names = result.citations["name"]
    assert [(c.chunk_id, c.quote) for c in names] == [("venus.md#0", None), ("venus.md#2", "Venus")]
    assert result.citations["largest_moon"] == []
    assert result.missing == ["largest_moon"]
    assert result.unverified == []
    assert result.attempts == 1


async def test_the_schema_sent_allows_only_the_shown_passages(venus: Path) -> None:
    model = ScriptedModel([reply()])
    await extract_document(model, Planet, venus)
    (call,) = model.calls
    schema = call.output_schema
    assert schema is not None
    field = schema["$defs"]["Planet_temperature_c"]["properties"]["passages"]
    assert field["items"]["enum"] == [1, 2, 3]
    assert "[3] venus.md § Venus > Moons" in call.last_user_text
    assert "temperature_c (int): surface temperature in Celsius" in call.last_user_text


async def test_a_citation_of_a_passage_not_shown_is_sent_back(venus: Path) -> None:
    model = ScriptedModel(
        [
            reply(temperature_c=answer(465, 7)),  # only 3 passages were shown
            reply(temperature_c=answer(465, 1)),
        ]
    )
    result = await extract_document(model, Planet, venus)
    assert result.attempts == 2
    feedback = model.calls[1].last_user_text
    assert "did not match" in feedback
    assert "temperature_c" in feedback
    assert [c.chunk_id for c in result.citations["temperature_c"]] == ["venus.md#0"]


async def test_a_value_without_a_passage_is_sent_back(venus: Path) -> None:
    model = ScriptedModel([reply(year_days=answer(225)), reply(year_days=answer(225, 2))])
    result = await extract_document(model, Planet, venus)
    assert "passages: List should have at least 1 item" in model.calls[1].last_user_text
    assert result.value.year_days == 225
    assert result.status["year_days"] == "verified"


async def test_a_null_that_cites_passages_is_sent_back(venus: Path) -> None:
    model = ScriptedModel([reply(largest_moon=answer(None, 3)), reply()])
    result = await extract_document(model, Planet, venus)
    assert "passages: List should have at most 0 items" in model.calls[1].last_user_text
    assert result.value.largest_moon is None


async def test_a_model_that_never_follows_the_rules_is_a_typed_error(venus: Path) -> None:
    model = FunctionModel(lambda call: reply(name=answer("Venus", 9)))
    with pytest.raises(OutputValidationError, match="3 attempts"):
        await extract_document(model, Planet, venus, retries=2)
    assert len(model.calls) == 3


async def test_a_value_not_in_the_cited_passage_is_unverified(venus: Path) -> None:
    model = ScriptedModel([reply(temperature_c=answer(500, 1), year_days=answer(225, 1))])
    result = await extract_document(model, Planet, venus)
    assert result.value.temperature_c == 500  # kept, but flagged
    assert result.status["temperature_c"] == "unverified"
    assert result.status["year_days"] == "unverified"  # 225 is in passage 2, not the cited 1
    assert result.citations["temperature_c"][0].quote is None


async def test_numbers_match_as_written_not_inside_other_numbers() -> None:
    passages = [
        Hit(id="a", score=0, text="It is 108,200,000 km away and 1465 m high."),
        Hit(id="b", score=0, text="A year lasts 224.7 days."),
    ]

    class Facts(BaseModel):
        distance_km: int | None = None
        height_m: int | None = None
        year: float | None = None

    model = ScriptedModel(
        [
            json.dumps(
                {
                    "distance_km": answer(108200000, 1),
                    "height_m": answer(465, 1),  # only as part of 1465
                    "year": answer(224.7, 2),
                }
            )
        ]
    )
    result = await extract(model, Facts, passages)
    assert result.status == {
        "distance_km": "verified",
        "height_m": "unverified",
        "year": "verified",
    }
    assert result.citations["distance_km"][0].quote == "108,200,000"


async def test_long_documents_are_read_in_windows_and_stop_when_all_is_found(
    venus: Path,
) -> None:
    def by_window(call: ModelCall) -> str:
        text = call.last_user_text
        if "465" in text:
            return reply(name=answer("Mars", 1), temperature_c=answer(465, 1))
        if "225" in text:
            return reply(year_days=answer(225, 1), temperature_c=answer(470, 1))
        return reply(name=answer("Venus", 1), largest_moon=answer("no moons", 1))

    model = FunctionModel(by_window)
    result = await extract_document(model, Planet, venus, max_prompt_chars=100)
    assert len(model.calls) == 3  # one passage per window
    # The first verified value of a field wins; a later unverified one does not replace it.
    assert result.value == Planet(
        name="Venus", temperature_c=465, year_days=225.0, largest_moon="no moons"
    )
    assert result.citations["name"][0].chunk_id == "venus.md#2"
    assert result.citations["temperature_c"][0].chunk_id == "venus.md#0"
    assert set(result.status.values()) == {"verified"}

    model = FunctionModel(by_window)
    result = await extract_document(model, Planet, venus, max_prompt_chars=100, max_windows=1)
    assert len(model.calls) == 1
    assert result.value.name == "Mars"
    assert result.status["name"] == "unverified"


async def test_every_field_must_accept_none(venus: Path) -> None:
    class Strict(BaseModel):
        name: str

    with pytest.raises(ValueError, match=r"'name'.*does not accept None"):
        await extract_document(ScriptedModel([]), Strict, venus)


async def test_files_that_cannot_be_read_are_document_errors(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="unsupported"):
        document_passages(tmp_path / "table.xlsx")
    with pytest.raises(DocumentError, match="cannot read"):
        document_passages(tmp_path / "missing.md")
    (tmp_path / "bad.txt").write_bytes(b"\x00\x01garbage\x00" * 10)
    with pytest.raises(DocumentError, match=r"bad\.txt"):
        document_passages(tmp_path / "bad.txt")


class VenusFacts(BaseModel):
    surface_temperature: str | None = Field(None, description="the average surface temperature")
    composition: str | None = Field(None, description="what the atmosphere is made of")


@pytest.mark.slow
async def test_the_local_model_fills_the_schema_citing_only_passages_it_was_shown() -> None:
    """What a 135M model can honestly do: a reply that fits the schema, and citations that all
    point at passages of the window it was shown (the values themselves may be poor)."""
    import keel
    from keel.llm.local import LlamaCppModel

    chapter = Path(keel.__file__).parent / "demo" / "corpus" / "03-venus.md"
    passages = document_passages(chapter, max_chars=500)
    atmosphere = [p for p in passages if "greenhouse" in str(p.metadata["heading"])][:2]
    model = LlamaCppModel(context_size=2048, threads=1)
    try:
        result = await extract(model, VenusFacts, atmosphere, max_windows=1, retries=1)
    finally:
        await model.aclose()
    assert isinstance(result.value, VenusFacts)
    shown = {p.id for p in atmosphere}
    for name, status in result.status.items():
        value, cited = getattr(result.value, name), result.citations[name]
        assert {c.chunk_id for c in cited} <= shown
        assert (value is None) == (status == "missing") == (not cited)
        if status == "verified":
            assert any(c.quote for c in cited)
    assert result.attempts >= 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "not of the form module:Class"),
        ("keel_no_such_module:Thing", "cannot import schema"),
        ("pathlib:NoSuchClass", "cannot import schema"),
        ("pathlib:Path", "not a Pydantic model class"),
    ],
)
def test_the_cli_refuses_a_bad_schema_in_one_line(venus: Path, spec: str, message: str) -> None:
    from typer.testing import CliRunner

    from keel.memory.cli import app

    result = CliRunner().invoke(app, ["extract", str(venus), "--schema", spec])
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
