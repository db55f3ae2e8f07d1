"""Splits documents into chunks small enough to embed, keeping the heading path as metadata.

Markdown is cut at its headings first, so a chunk never mixes two sections; a section longer than
``max_chars`` is cut at paragraph, then line and sentence boundaries, and each piece starts with
up to ``overlap`` characters of the previous one so a fact spanning a cut is still found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

__all__ = ["Chunk", "chunk_markdown", "chunk_text"]

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PATH_SEPARATOR = " > "


class Chunk(BaseModel):
    """A piece of a document: its text, the path of headings above it, and its position."""

    model_config = ConfigDict(frozen=True)

    text: str
    heading: str
    index: int


def chunk_markdown(text: str, *, max_chars: int, overlap: int) -> list[Chunk]:
    """Chunks of a Markdown document, each under its heading path ("Venus > Rotation").

    Headings inside fenced code blocks are text, not headings. Heading lines themselves are not
    part of any chunk's text: the heading path is carried as metadata.
    """
    _check(max_chars, overlap)
    return _number(
        (heading, piece)
        for heading, body in _sections(text)
        for piece in _split(body, max_chars, overlap)
    )


def chunk_text(text: str, *, max_chars: int, overlap: int) -> list[Chunk]:
    """Chunks of a plain-text document: no headings, so every chunk has heading ""."""
    _check(max_chars, overlap)
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    return _number(("", piece) for piece in _split(body, max_chars, overlap))


def _check(max_chars: int, overlap: int) -> None:
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if not 0 <= overlap < max_chars:
        raise ValueError("overlap must be >= 0 and smaller than max_chars")


def _number(pieces: Iterable[tuple[str, str]]) -> list[Chunk]:
    return [Chunk(text=text, heading=heading, index=i) for i, (heading, text) in enumerate(pieces)]


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading path, body) for the text before the first heading and under each heading."""
    sections: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    fence: str | None = None

    def flush() -> None:
        heading = _PATH_SEPARATOR.join(title for _, title in path if title)
        sections.append((heading, "\n".join(body)))
        body.clear()

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        fence_match = _FENCE.match(line)
        if fence is not None:
            marker = line.strip()
            if fence_match and marker == fence_match.group(1) and marker.startswith(fence):
                fence = None
        elif fence_match:
            fence = fence_match.group(1)
        elif heading := _HEADING.match(line):
            flush()
            level = len(heading.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level]
            path.append((level, (heading.group(2) or "").strip()))
            continue
        body.append(line)
    flush()
    return sections


def _split(body: str, max_chars: int, overlap: int) -> list[str]:
    body = body.strip()
    if not body:
        return []
    if len(body) <= max_chars:
        return [body]
    return _pack(_atoms(body, max_chars), max_chars, overlap)


def _atoms(body: str, max_chars: int) -> list[tuple[str, str]]:
    """(separator before it, text) pieces of at most ``max_chars``, cut as gently as possible."""
    atoms: list[tuple[str, str]] = []
    for paragraph in _PARAGRAPH_BREAK.split(body):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            atoms.append(("\n\n", paragraph))
            continue
        separator = "\n\n"
        for line in paragraph.split("\n"):
            for sentence in _SENTENCE_END.split(line.strip()):
                for piece in _hard_split(sentence, max_chars):
                    atoms.append((separator, piece))
                    separator = " "
            separator = "\n"
    return atoms


def _hard_split(text: str, max_chars: int) -> list[str]:
    """Cuts a sentence longer than ``max_chars`` at spaces, or anywhere if it has none."""
    pieces = []
    while len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        if cut <= 0:
            cut = max_chars
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return [p for p in pieces if p]


def _pack(atoms: list[tuple[str, str]], max_chars: int, overlap: int) -> list[str]:
    """Greedily joins atoms into chunks of at most ``max_chars``, each new chunk starting with
    the last words (up to ``overlap`` characters) of the one before."""
    chunks: list[str] = []
    current = ""
    for separator, atom in atoms:
        if not current:
            current = atom
        elif len(current) + len(separator) + len(atom) <= max_chars:
            current += separator + atom
        else:
            chunks.append(current)
            tail = _tail(current, min(overlap, max_chars - len(atom) - len(separator)))
            current = tail + separator + atom if tail else atom
    if current:
        chunks.append(current)
    return chunks


def _tail(text: str, size: int) -> str:
    """The last whole words of ``text`` that fit in ``size`` characters."""
    if size <= 0:
        return ""
    if len(text) <= size:
        return text
    start = len(text) - size
    if not text[start - 1].isspace():
        space = re.search(r"\s", text[start:])
        if space is None:
            return ""
        start += space.end()
    return text[start:].strip()
