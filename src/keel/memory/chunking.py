"""Splits documents into chunks small enough to embed, keeping heading, page and offsets.

A loader turns a file into a ``LoadedDocument``: its text and the sections of that text (under a
heading path, on a page). Chunks never cross a section. A section longer than the limits is cut at
paragraph, then line and sentence boundaries, and each piece starts with up to ``overlap``
characters of the previous one so a fact spanning a cut is still found.

Every chunk's text is exactly ``document.text[start:end]``, so an answer can cite the characters
it came from. A chunk fits ``max_chars`` characters and, when a token counter is given (the
embedder's own tokenizer), ``max_tokens`` tokens: the embedder never silently truncates a chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Chunk",
    "LoadedDocument",
    "Section",
    "chunk_document",
    "chunk_markdown",
    "chunk_text",
    "markdown_document",
    "text_document",
]

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD_START = re.compile(r"(?<=\s)\S")
PATH_SEPARATOR = " > "

TokenCounter = Callable[[str], int]
"""Counts the tokens of a text, as the embedder will see it (without special tokens)."""


class Chunk(BaseModel):
    """A piece of a document: its text, heading path, page, and ``[start, end)`` offsets."""

    model_config = ConfigDict(frozen=True)

    text: str
    heading: str
    index: int
    start: int = 0
    end: int = 0
    page: int | None = None


class Section(BaseModel):
    """A span ``[start, end)`` of a document's text under one heading path, on one page."""

    model_config = ConfigDict(frozen=True)

    start: int
    end: int
    heading: str = ""
    page: int | None = None


class LoadedDocument(BaseModel):
    """A document's extracted text and its sections; offsets of chunks index into ``text``."""

    model_config = ConfigDict(frozen=True)

    text: str
    sections: list[Section]


def normalise_newlines(text: str) -> str:
    """``\\r\\n`` and ``\\r`` become ``\\n``: offsets then mean the same on every platform."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_document(text: str) -> LoadedDocument:
    """Plain text: one section without a heading."""
    text = normalise_newlines(text)
    return LoadedDocument(text=text, sections=[Section(start=0, end=len(text))])


def markdown_document(text: str) -> LoadedDocument:
    """Markdown: one section per heading, under its heading path ("Venus > Rotation").

    Headings inside fenced code blocks are text, not headings. Heading lines are in no section:
    the heading path is carried as metadata.
    """
    text = normalise_newlines(text)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body_start = 0
    fence: str | None = None
    offset = 0
    for line in text.split("\n"):
        line_end = offset + len(line)
        fence_match = _FENCE.match(line)
        if fence is not None:
            marker = line.strip()
            if fence_match and marker == fence_match.group(1) and marker.startswith(fence):
                fence = None
        elif fence_match:
            fence = fence_match.group(1)
        elif heading := _HEADING.match(line):
            sections.append(Section(start=body_start, end=offset, heading=_path(path)))
            level = len(heading.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level]
            path.append((level, (heading.group(2) or "").strip()))
            body_start = min(line_end + 1, len(text))
        offset = line_end + 1
    sections.append(Section(start=body_start, end=len(text), heading=_path(path)))
    return LoadedDocument(text=text, sections=sections)


def _path(path: list[tuple[int, str]]) -> str:
    return PATH_SEPARATOR.join(title for _, title in path if title)


def chunk_markdown(text: str, *, max_chars: int, overlap: int) -> list[Chunk]:
    """Chunks of a Markdown document, each under its heading path."""
    return chunk_document(markdown_document(text), max_chars=max_chars, overlap=overlap)


def chunk_text(text: str, *, max_chars: int, overlap: int) -> list[Chunk]:
    """Chunks of a plain-text document: no headings, so every chunk has heading ""."""
    return chunk_document(text_document(text), max_chars=max_chars, overlap=overlap)


def chunk_document(
    document: LoadedDocument,
    *,
    max_chars: int,
    overlap: int,
    count_tokens: TokenCounter | None = None,
    max_tokens: int | None = None,
) -> list[Chunk]:
    """Chunks of every section of ``document``, numbered in order, none empty."""
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if not 0 <= overlap < max_chars:
        raise ValueError("overlap must be >= 0 and smaller than max_chars")
    if (count_tokens is None) != (max_tokens is None):
        raise ValueError("give both count_tokens and max_tokens, or neither")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    splitter = _Splitter(document.text, max_chars, overlap, count_tokens, max_tokens)
    chunks: list[Chunk] = []
    for section in document.sections:
        for start, end in splitter.split(section.start, section.end):
            chunks.append(
                Chunk(
                    text=document.text[start:end],
                    heading=section.heading,
                    index=len(chunks),
                    start=start,
                    end=end,
                    page=section.page,
                )
            )
    return chunks


class _Splitter:
    """Cuts spans of one text into spans that fit the character and token limits."""

    def __init__(
        self,
        text: str,
        max_chars: int,
        overlap: int,
        count_tokens: TokenCounter | None,
        max_tokens: int | None,
    ) -> None:
        self.text = text
        self.max_chars = max_chars
        self.overlap = overlap
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens

    def fits(self, start: int, end: int) -> bool:
        if end - start > self.max_chars:
            return False
        if self.count_tokens is None or self.max_tokens is None:
            return True
        return self.count_tokens(self.text[start:end]) <= self.max_tokens

    def _strip(self, start: int, end: int) -> tuple[int, int]:
        while start < end and self.text[start].isspace():
            start += 1
        while end > start and self.text[end - 1].isspace():
            end -= 1
        return start, end

    def split(self, start: int, end: int) -> list[tuple[int, int]]:
        start, end = self._strip(start, end)
        if start == end:
            return []
        if self.fits(start, end):
            return [(start, end)]
        return self._pack(list(self._atoms(start, end)))

    def _pieces(self, start: int, end: int, pattern: re.Pattern[str]) -> Iterator[tuple[int, int]]:
        """Non-empty stripped spans of ``[start, end)`` between matches of ``pattern``."""
        position = start
        for match in pattern.finditer(self.text, start, end):
            piece = self._strip(position, match.start())
            if piece[0] < piece[1]:
                yield piece
            position = match.end()
        piece = self._strip(position, end)
        if piece[0] < piece[1]:
            yield piece

    def _atoms(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Spans that fit, cut as gently as possible: paragraphs, lines, sentences, words."""
        for paragraph in self._pieces(start, end, _PARAGRAPH_BREAK):
            if self.fits(*paragraph):
                yield paragraph
                continue
            for line in self._pieces(*paragraph, re.compile(r"\n")):
                for sentence in self._pieces(*line, _SENTENCE_END):
                    yield from self._hard_split(*sentence)

    def _hard_split(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Cuts a span that does not fit at spaces, or anywhere if it has none."""
        while not self.fits(start, end):
            low, high = start + 1, min(end, start + self.max_chars)
            while low < high:  # the longest prefix that fits (at least one character)
                middle = (low + high + 1) // 2
                if self.fits(start, middle):
                    low = middle
                else:
                    high = middle - 1
            cut = low
            space = self.text.rfind(" ", start + 1, cut + 1)
            if space > start and cut < end and not self.text[cut].isspace():
                cut = space
            piece = self._strip(start, cut)
            if piece[0] < piece[1]:
                yield piece
            start, end = self._strip(cut, end)
            if start == end:
                return
        yield start, end

    def _pack(self, atoms: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Greedily joins atoms into chunks that fit, each new chunk starting with the last words
        (up to ``overlap`` characters) of the one before."""
        chunks: list[tuple[int, int]] = []
        current: tuple[int, int] | None = None
        for atom in atoms:
            if current is None:
                current = atom
            elif self.fits(current[0], atom[1]):
                current = (current[0], atom[1])
            else:
                chunks.append(current)
                current = (self._tail(current, atom), atom[1])
        if current is not None:
            chunks.append(current)
        return chunks

    def _tail(self, previous: tuple[int, int], atom: tuple[int, int]) -> int:
        """Start of the next chunk: the first word of the last ``overlap`` characters of
        ``previous`` from which the chunk up to the end of ``atom`` still fits."""
        if self.overlap == 0:
            return atom[0]
        start = max(previous[0] + 1, previous[1] - self.overlap)
        while start < previous[1]:
            at_word = self.text[start - 1].isspace() and not self.text[start].isspace()
            if at_word and self.fits(start, atom[1]):
                return start
            match = _WORD_START.search(self.text, start + 1, previous[1])
            if match is None:
                break
            start = match.start()
        return atom[0]
