"""Loaders turn a file's bytes into text with sections (headings, pages) for the chunker.

One small protocol, ``Loader.load(data) -> LoadedDocument``, and one loader per format: plain
text, Markdown, HTML (the standard library's parser), PDF (``pypdf``, extra ``pdf``) and DOCX
(``python-docx``, extra ``docx``). A file that cannot be loaded raises ``DocumentError`` with a
reason a user can act on; the ingestor reports it and carries on with the other files.
"""

from __future__ import annotations

import io
import logging
from html.parser import HTMLParser
from typing import Protocol

from keel.errors import DocumentError, MissingDependencyError
from keel.memory.chunking import (
    PATH_SEPARATOR,
    LoadedDocument,
    Section,
    markdown_document,
    normalise_newlines,
    text_document,
)

__all__ = [
    "LOADERS",
    "DOCXLoader",
    "HTMLLoader",
    "Loader",
    "MarkdownLoader",
    "PDFLoader",
    "TextLoader",
    "decode_text",
]

_SNIFF = 8192


class Loader(Protocol):
    """Extracts a document's text and its sections from the file's bytes."""

    def load(self, data: bytes) -> LoadedDocument:
        """The document in ``data``; ``DocumentError`` says why it cannot be read."""
        ...


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without a byte-order mark) or BOM-marked UTF-16 text; binary data and
    other encodings are a ``DocumentError``: guessing an encoding would index mojibake."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DocumentError(f"not valid UTF-16 text (bad byte at offset {e.start})") from e
    if b"\x00" in data[:_SNIFF]:
        raise DocumentError("binary content (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DocumentError(
            f"not valid UTF-8 text (bad byte at offset {e.start})",
            hint="convert it to UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from e


class TextLoader:
    """Plain text: one section, no headings."""

    def load(self, data: bytes) -> LoadedDocument:
        return text_document(decode_text(data))


class MarkdownLoader:
    """Markdown: a section per heading, under its heading path."""

    def load(self, data: bytes) -> LoadedDocument:
        return markdown_document(decode_text(data))


_BLOCKS = frozenset(
    {"address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption"}
    | {"figure", "footer", "form", "header", "hr", "li", "main", "nav", "ol", "p", "pre"}
    | {"section", "table", "td", "th", "tr", "ul"}
)
_SKIPPED = frozenset({"script", "style", "noscript", "template", "head", "svg"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


class _HTMLText(HTMLParser):
    """Collects visible text, a paragraph break at each block, and a section per heading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.section_start = 0
        self.skip_depth = 0
        self.pre_depth = 0
        self.heading_level = 0
        self.heading_text: list[str] = []

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def _break(self) -> None:
        if self.parts and not self.parts[-1].endswith("\n\n"):
            self._emit("\n\n" if not self.parts[-1].endswith("\n") else "\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skip_depth += 1
        elif tag in _HEADINGS:
            self.heading_level = _HEADINGS[tag]
            self.heading_text = []
        elif tag in _BLOCKS:
            self.pre_depth += tag == "pre"
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in _HEADINGS and self.heading_level:
            self._close_section()
            level = self.heading_level
            title = " ".join("".join(self.heading_text).split())
            self.path = [(lvl, t) for lvl, t in self.path if lvl < level] + [(level, title)]
            self.heading_level = 0
        elif tag in _BLOCKS:
            self.pre_depth = max(0, self.pre_depth - (tag == "pre"))
            self._break()

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.heading_level:
            self.heading_text.append(data)
            return
        if not self.pre_depth:
            words = " ".join(data.split())
            after_text = bool(self.parts) and not self.parts[-1][-1:].isspace()
            if not words:  # whitespace between inline elements: at most one space
                if after_text:
                    self._emit(" ")
                return
            if data[:1].isspace() and after_text:
                words = " " + words
            data = words + (" " if data[-1:].isspace() else "")
        if data:
            self._emit(data)

    def _close_section(self) -> None:
        heading = PATH_SEPARATOR.join(t for _, t in self.path if t)
        self.sections.append(Section(start=self.section_start, end=self.length, heading=heading))
        self._break()
        self.section_start = self.length

    def document(self) -> LoadedDocument:
        self.close()
        self._close_section()
        return LoadedDocument(text="".join(self.parts), sections=self.sections)


class HTMLLoader:
    """HTML: visible text (no scripts or styles), a section per ``<h1>``-``<h6>`` heading."""

    def load(self, data: bytes) -> LoadedDocument:
        parser = _HTMLText()
        parser.feed(normalise_newlines(decode_text(data)))
        return parser.document()


class PDFLoader:
    """PDF through ``pypdf``: one section per page, numbered from 1."""

    def load(self, data: bytes) -> LoadedDocument:
        try:
            from pypdf import PdfReader
        except ImportError as e:
            raise MissingDependencyError("pypdf", "pdf", feature="PDF ingestion") from e
        # pypdf logs every oddity of a damaged file; the failure is reported once, by the caller.
        pypdf_logger = logging.getLogger("pypdf")
        level = pypdf_logger.level
        pypdf_logger.setLevel(logging.CRITICAL)
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise DocumentError("the PDF is encrypted with a password")
            pages = [normalise_newlines(page.extract_text() or "") for page in reader.pages]
        except DocumentError:
            raise
        except Exception as e:  # corrupt PDFs raise anything from deep inside the parser
            raise DocumentError(f"not a readable PDF ({type(e).__name__}: {e})") from e
        finally:
            pypdf_logger.setLevel(level)
        if not any(page.strip() for page in pages):
            raise DocumentError(
                "the PDF has no extractable text", hint="a scanned PDF needs OCR first"
            )
        text, sections = "", []
        for number, page in enumerate(pages, start=1):
            if text:
                text += "\n\n"
            sections.append(Section(start=len(text), end=len(text) + len(page), page=number))
            text += page
        return LoadedDocument(text=text, sections=sections)


class DOCXLoader:
    """DOCX through ``python-docx``: paragraphs and tables in order, a section per heading."""

    def load(self, data: bytes) -> LoadedDocument:
        try:
            import docx
            from docx.table import Table
        except ImportError as e:
            raise MissingDependencyError("python-docx", "docx", feature="DOCX ingestion") from e
        try:
            blocks = list(docx.Document(io.BytesIO(data)).iter_inner_content())
        except Exception as e:  # a broken zip or XML part surfaces as many exception types
            raise DocumentError(f"not a readable DOCX file ({type(e).__name__}: {e})") from e
        text, sections = "", []
        path: list[tuple[int, str]] = []
        start = 0
        for block in blocks:
            if isinstance(block, Table):
                rows = [" | ".join(c.text.strip() for c in row.cells) for row in block.rows]
                body = "\n".join(rows)
            else:
                body = block.text
                level = _heading_level(block.style.name if block.style is not None else "")
                if level:
                    heading = PATH_SEPARATOR.join(t for _, t in path if t)
                    sections.append(Section(start=start, end=len(text), heading=heading))
                    path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, body.strip())]
                    start = len(text)
                    continue
            if body.strip():
                text += ("\n\n" if text else "") + normalise_newlines(body)
        heading = PATH_SEPARATOR.join(t for _, t in path if t)
        sections.append(Section(start=start, end=len(text), heading=heading))
        return LoadedDocument(text=text, sections=sections)


def _heading_level(style: str | None) -> int:
    """1-9 for Word's "Title" and "Heading N" styles, 0 for any other paragraph."""
    if style == "Title":
        return 1
    if style and style.startswith("Heading "):
        number = style.removeprefix("Heading ")
        return int(number) if number.isdigit() else 0
    return 0


LOADERS: dict[str, Loader] = {
    ".txt": TextLoader(),
    ".text": TextLoader(),
    ".md": MarkdownLoader(),
    ".markdown": MarkdownLoader(),
    ".html": HTMLLoader(),
    ".htm": HTMLLoader(),
    ".pdf": PDFLoader(),
    ".docx": DOCXLoader(),
}
"""The loader for each supported file suffix (lower case)."""
