"""Markdown and text chunking: heading paths, size limits, overlap, fences, no empty chunks."""

from __future__ import annotations

import itertools
import re

import pytest

from keel.memory.chunking import (
    chunk_document,
    chunk_markdown,
    chunk_text,
    markdown_document,
    text_document,
)
from keel.memory.onnx_embedder import MiniLMEmbedder

SENTENCES = [
    f"Sentence number {i} says that Venus turns slowly and that its day lasts long."
    for i in range(40)
]


def test_heading_paths_follow_the_nesting_of_headings() -> None:
    doc = (
        "Preamble before any heading.\n\n"
        "# Venus\n\nThe second planet.\n\n"
        "## Rotation and the length of a day\n\nIt spins backwards.\n\n"
        "### Measurements\n\nRadar timed it.\n\n"
        "## Atmosphere ##\n\nMostly carbon dioxide.\n\n"
        "# Mars\n\nThe red planet.\n"
    )
    chunks = chunk_markdown(doc, max_chars=500, overlap=50)
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "Preamble before any heading."),
        ("Venus", "The second planet."),
        ("Venus > Rotation and the length of a day", "It spins backwards."),
        ("Venus > Rotation and the length of a day > Measurements", "Radar timed it."),
        ("Venus > Atmosphere", "Mostly carbon dioxide."),
        ("Mars", "The red planet."),
    ]
    assert [c.index for c in chunks] == list(range(6))


def test_long_sections_are_split_under_max_chars_with_overlap() -> None:
    paragraphs = [" ".join(SENTENCES[i : i + 4]) for i in range(0, 40, 4)]
    doc = "# Venus\n\n" + "\n\n".join(paragraphs)
    chunks = chunk_markdown(doc, max_chars=400, overlap=80)

    assert len(chunks) > 5
    assert all(len(c.text) <= 400 for c in chunks)
    assert all(c.heading == "Venus" for c in chunks)
    for sentence in SENTENCES:  # nothing is lost at a cut
        assert any(sentence in c.text for c in chunks), sentence
    for before, after in itertools.pairwise(chunks):
        shared = max((n for n in range(1, 81) if before.text.endswith(after.text[:n])), default=0)
        assert 0 < shared <= 80, (before.text, after.text)


def test_paragraphs_that_fit_are_never_cut() -> None:
    paragraphs = [" ".join(SENTENCES[i : i + 2]) for i in range(0, 20, 2)]
    chunks = chunk_markdown("\n\n".join(paragraphs), max_chars=400, overlap=0)
    assert len(chunks) > 1
    for paragraph in paragraphs:
        assert any(paragraph in c.text for c in chunks)


def test_a_sentence_longer_than_max_chars_is_cut_at_spaces() -> None:
    sentence = " ".join(["word"] * 200)
    chunks = chunk_text(sentence, max_chars=100, overlap=10)
    assert all(0 < len(c.text) <= 100 for c in chunks)
    assert all(re.fullmatch(r"word( word)*", c.text) for c in chunks)


def test_text_without_spaces_is_cut_anywhere() -> None:
    chunks = chunk_text("x" * 250, max_chars=100, overlap=10)
    assert [len(c.text) for c in chunks] == [100, 100, 50]


def test_headings_inside_code_fences_are_text() -> None:
    doc = (
        "# Shell\n\nRun this:\n\n```bash\n# install the package\npip install keel\n```\n\n"
        "~~~\n## not a heading either\n~~~\n\nAfter the code.\n\n## Next\n\nMore."
    )
    chunks = chunk_markdown(doc, max_chars=1000, overlap=0)
    assert [c.heading for c in chunks] == ["Shell", "Shell > Next"]
    assert "# install the package" in chunks[0].text
    assert "## not a heading either" in chunks[0].text
    assert "After the code." in chunks[0].text


def test_no_empty_chunks() -> None:
    doc = "# A\n\n\n## B\n\n   \n\n### C\n\nText.\n\n# D\n"
    chunks = chunk_markdown(doc, max_chars=100, overlap=10)
    assert [(c.heading, c.text, c.index) for c in chunks] == [("A > B > C", "Text.", 0)]
    assert chunk_markdown("# Only\n## Headings\n", max_chars=100, overlap=0) == []
    assert chunk_text(" \n\n \t\n", max_chars=100, overlap=0) == []


def test_plain_text_has_no_headings() -> None:
    chunks = chunk_text("# not a heading\n\nJust text.", max_chars=100, overlap=0)
    assert [(c.heading, c.text) for c in chunks] == [("", "# not a heading\n\nJust text.")]


def test_hashtags_and_crlf() -> None:
    doc = "# Title\r\n\r\n#hashtag is text\r\n"
    chunks = chunk_markdown(doc, max_chars=100, overlap=0)
    assert [(c.heading, c.text) for c in chunks] == [("Title", "#hashtag is text")]


@pytest.mark.parametrize(("max_chars", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_invalid_sizes_are_rejected(max_chars: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_markdown("text", max_chars=max_chars, overlap=overlap)


def test_every_chunk_is_the_slice_of_the_document_its_offsets_name() -> None:
    document = markdown_document(
        "# Venus\r\n\r\n" + "\n\n".join(SENTENCES[:20]) + "\n\n## Air\n\n" + " ".join(SENTENCES)
    )
    chunks = chunk_document(document, max_chars=300, overlap=60)
    assert len(chunks) > 5
    for chunk in chunks:
        assert document.text[chunk.start : chunk.end] == chunk.text
    assert {c.heading for c in chunks} == {"Venus", "Venus > Air"}


def test_token_limits_are_kept_with_the_real_tokenizer(minilm: MiniLMEmbedder) -> None:
    # Numbers split into many WordPiece tokens: 1,000 characters is far over 60 tokens.
    text = " ".join(f"{i * 7919 % 100003}.{i * 31 % 97} kg/m3" for i in range(300))
    chunks = chunk_document(
        text_document(text),
        max_chars=1000,
        overlap=50,
        count_tokens=minilm.count_tokens,
        max_tokens=60,
    )
    assert len(chunks) > len(text) // 1000 + 1
    assert all(minilm.count_tokens(c.text) <= 60 for c in chunks)
    assert " ".join(c.text for c in chunks).count("kg/m3") >= 300  # nothing lost


def test_a_token_limit_needs_a_counter() -> None:
    with pytest.raises(ValueError, match="count_tokens"):
        chunk_document(text_document("x"), max_chars=10, overlap=0, max_tokens=5)
