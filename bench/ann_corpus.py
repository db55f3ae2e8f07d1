"""The 50,000-chunk corpus of the ANN benchmark: Debian's man pages, embedded once and cached.

Man pages (``/usr/share/man/man1``, roff source) are turned into plain text by dropping macro
lines and font escapes, chunked with Keel's chunker (500 characters, no overlap), and embedded
with the local MiniLM model through Keel's content-hash cache (bench/.cache/embeddings.db), in
batches, so an interrupted run resumes. The matrix is saved as bench/.cache/manpages-<n>.npy.

Run: .venv/bin/python bench/ann_corpus.py [--chunks 50000] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import re
import time
from pathlib import Path

import numpy as np

from keel.memory.cache import CachedEmbedder
from keel.memory.chunking import chunk_document, text_document
from keel.memory.onnx_embedder import MiniLMEmbedder

HERE = Path(__file__).parent
CACHE = HERE / ".cache"
MAN = Path("/usr/share/man/man1")
_FONT_MACRO = re.compile(r"^\.(?:B|I|BR|BI|IR|IB|RB|RI|SM|SB)\s+")
_ESCAPES = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)|\\\(..|\\\*.|\\[&|^%]")


def man_text(path: Path) -> str:
    """Readable text of one roff man page: macro lines dropped, font escapes removed."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if line.startswith((".", "'")):
            if line.startswith((".SH", ".SS")):  # section titles are text worth keeping
                lines.append("\n" + line[3:].strip().strip('"') + "\n")
            elif line.startswith((".PP", ".P ", ".LP", ".TP", ".IP")):
                lines.append("")
            elif _FONT_MACRO.match(line):  # .B word, .IR word text: the words are text
                words = _FONT_MACRO.sub("", line).replace('"', "")
                lines.append(_ESCAPES.sub("", words).replace("\\-", "-"))
            continue
        lines.append(_ESCAPES.sub("", line).replace("\\-", "-").replace("\\e", "\\"))
    return "\n".join(lines)


def corpus(limit: int) -> list[str]:
    """The first ``limit`` chunks of the man pages, in file-name order."""
    chunks: list[str] = []
    for path in sorted(MAN.iterdir()):
        if not path.is_file():
            continue
        text = man_text(path)
        for chunk in chunk_document(text_document(text), max_chars=500, overlap=0):
            if len(chunk.text) >= 40:
                chunks.append(chunk.text)
        if len(chunks) >= limit:
            return chunks[:limit]
    return chunks


def matrix_path(n: int) -> Path:
    return CACHE / f"manpages-{n}.npy"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = corpus(args.chunks)
    print(f"{len(texts)} chunks from {MAN}")
    embedder = CachedEmbedder(
        MiniLMEmbedder(threads=args.threads, batch_size=32), CACHE / "embeddings.db"
    )
    started = time.perf_counter()
    vectors: list[list[float]] = []
    for start in range(0, len(texts), 1000):
        vectors += await embedder.embed(texts[start : start + 1000])
        rate = embedder.misses / max(time.perf_counter() - started, 1e-9)
        print(f"  {len(vectors)} embedded ({embedder.hits} cached, {rate:.0f}/s)", flush=True)
    np.save(matrix_path(len(texts)), np.asarray(vectors, dtype=np.float32))
    embedder.close()
    print(f"saved {matrix_path(len(texts))} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
