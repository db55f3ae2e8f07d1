"""Loaders for text, Markdown, HTML, PDF and DOCX: text, sections, pages and clear failures."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pypdf
import pytest
from document_files import make_docx, make_pdf

from keel.errors import DocumentError, MissingDependencyError
from keel.memory.chunking import chunk_document
from keel.memory.ingest import DocumentIngestor
from keel.memory.loaders import (
    DOCXLoader,
    HTMLLoader,
    MarkdownLoader,
    PDFLoader,
    TextLoader,
    decode_text,
)
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder


def sections(loader: object, data: bytes) -> list[tuple[str, int | None, str]]:
    """(heading, page, text) of every non-empty section."""
    document = loader.load(data)  # type: ignore[attr-defined]
    return [
        (s.heading, s.page, document.text[s.start : s.end].strip())
        for s in document.sections
        if document.text[s.start : s.end].strip()
    ]


def test_text_is_decoded_from_utf8_with_or_without_bom_and_utf16_with_bom() -> None:
    assert decode_text("Caf\xe9".encode()) == "Caf\xe9"
    assert decode_text(b"\xef\xbb\xbfbom") == "bom"
    assert decode_text("Caf\xe9".encode("utf-16")) == "Caf\xe9"
    with pytest.raises(DocumentError, match="binary content"):
        decode_text(b"ELF\x00\x01\x02")
    with pytest.raises(DocumentError, match="not valid UTF-8 text \\(bad byte at offset 3\\)"):
        decode_text("Caf\xe9".encode("latin-1"))


def test_text_and_markdown_offsets_index_the_normalised_text() -> None:
    document = TextLoader().load(b"line one\r\nline two\r\n")
    assert document.text == "line one\nline two\n"
    assert sections(MarkdownLoader(), b"# A\r\n\r\nalpha\r\n## B\r\nbeta") == [
        ("A", None, "alpha"),
        ("A > B", None, "beta"),
    ]


def test_html_keeps_visible_text_under_its_headings() -> None:
    html = b"""<!doctype html><html><head><title>T</title><style>p{color:red}</style>
    <script>var secret = 1;</script></head><body>
    <p>Intro &amp; <b>bold</b> text.</p>
    <h1>Venus</h1><p>Hot   planet.</p><ul><li>one</li><li>two</li></ul>
    <h2>Air</h2><div>Carbon<br>dioxide</div><pre>  keep   spacing</pre>
    <h1>Mars</h1><p>Red.</p></body></html>"""
    assert sections(HTMLLoader(), html) == [
        ("", None, "Intro & bold text."),
        ("Venus", None, "Hot planet.\n\none\n\ntwo"),
        ("Venus > Air", None, "Carbon\n\ndioxide\n\n  keep   spacing"),
        ("Mars", None, "Red."),
    ]
    assert "secret" not in HTMLLoader().load(html).text


def test_pdf_pages_become_sections_with_page_numbers() -> None:
    data = make_pdf([["Venus is hot (465 C).", "Its air is CO2."], [], ["Mars is red."]])
    assert sections(PDFLoader(), data) == [
        ("", 1, "Venus is hot (465 C).\nIts air is CO2."),
        ("", 3, "Mars is red."),
    ]
    document = PDFLoader().load(data)
    chunks = chunk_document(document, max_chars=200, overlap=0)
    assert [(c.page, document.text[c.start : c.end]) for c in chunks] == [
        (1, "Venus is hot (465 C).\nIts air is CO2."),
        (3, "Mars is red."),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog garbage", "not a readable PDF"),
        (b"\x00\x01 not a pdf at all", "not a readable PDF"),
        (make_pdf([[], []]), "no extractable text"),
    ],
    ids=["truncated", "garbage", "no text"],
)
def test_bad_pdfs_are_document_errors(data: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        PDFLoader().load(data)


def test_an_encrypted_pdf_is_a_document_error() -> None:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf([["secret"]]))))
    writer.encrypt("pw", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(DocumentError, match="encrypted"):
        PDFLoader().load(out.getvalue())


def test_docx_headings_nest_and_tables_are_text() -> None:
    data = make_docx(
        [
            ("p", "Preface."),
            ("h1", "Venus"),
            ("p", "Hot planet."),
            ("h2", "Air"),
            ("p", "Mostly CO2."),
            ("table", "gas|share;CO2|96%"),
            ("h1", "Mars"),
            ("p", "Red."),
        ]
    )
    assert sections(DOCXLoader(), data) == [
        ("", None, "Preface."),
        ("Venus", None, "Hot planet."),
        ("Venus > Air", None, "Mostly CO2.\n\ngas | share\nCO2 | 96%"),
        ("Mars", None, "Red."),
    ]


def test_a_corrupt_docx_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match="not a readable DOCX"):
        DOCXLoader().load(b"PK\x03\x04 truncated zip")


def test_a_missing_pdf_library_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypdf", None)
    with pytest.raises(MissingDependencyError) as raised:
        PDFLoader().load(make_pdf([["x"]]))
    assert raised.value.extra == "pdf"


async def test_ingest_mixes_formats_and_reports_each_bad_file(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "venus.pdf").write_bytes(make_pdf([["Venus page one."], ["Venus page two."]]))
    (docs / "mars.docx").write_bytes(make_docx([("h1", "Mars"), ("p", "Mars is red.")]))
    (docs / "moon.html").write_bytes(b"<h1>Moon</h1><p>The Moon is grey.</p>")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\n\x00\x00 garbage")
    (docs / "broken.docx").write_bytes(b"not a zip")
    embedder = HashingEmbedder(64)
    store = SQLiteVectorStore(tmp_path / "m.db", 64)
    ingestor = DocumentIngestor(store, embedder, tmp_path / "m.db", max_chars=300, overlap=0)

    report = await ingestor.ingest(docs, "ns")

    assert sorted(f.source for f in report.failed) == ["broken.docx", "broken.pdf"]
    assert report.files_added == 3
    hits = await store.query("ns", (await embedder.embed(["Venus page"]))[0], k=10)
    found = {(h.metadata["source"], h.metadata.get("page"), h.metadata["heading"]) for h in hits}
    assert found == {
        ("venus.pdf", 1, ""),
        ("venus.pdf", 2, ""),
        ("mars.docx", None, "Mars"),
        ("moon.html", None, "Moon"),
    }
    await store.close()
