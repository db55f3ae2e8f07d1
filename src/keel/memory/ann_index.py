"""The ANN side of the embedded store: usearch HNSW indexes and their files.

An index file starts with a header (store id, the generation it reflects, number of records) and a
checksum of the payload, so the store loads a file only if it is intact and belongs to the SQLite
file it is reading. A file of an older generation is still useful: the store replays the rows
written since (their ``gen`` column says when) instead of rebuilding. The index is a cache of
SQLite: losing a file costs a rebuild, never data.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from keel.errors import MissingDependencyError


def share_cxx_runtime() -> None:
    """Loads the system C++ runtime with global symbols before usearch is imported.

    The usearch 2.26.6 wheel links libstdc++ statically, and the GNU-unique symbols it carries bind
    process-wide whoever loads first. Measured here: importing onnxruntime after usearch kills the
    interpreter (SIGSEGV), and ``ray.init`` after usearch aborts with ``std::regex_error``. With
    ``libstdc++.so.6`` loaded globally first, every library binds to the one shared runtime and
    both orders work. Where there is no such library (not glibc), this does nothing.
    """
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)


share_cxx_runtime()

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("numpy", "ann", feature="the embedded vector index") from e
try:
    from usearch.index import Index
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("usearch", "ann", feature="the embedded vector index") from e

__all__ = [
    "HNSWParams",
    "Index",
    "IndexStamp",
    "load_index",
    "new_index",
    "replace_vectors",
    "share_cxx_runtime",
    "save_index",
    "search",
    "search_among",
]

logger = logging.getLogger("keel.memory")

_MAGIC = b"KEELHNS1"
_HEADER = struct.Struct("<8s16sqq32s")  # magic, store id, generation, count, sha256 of payload


@dataclass(frozen=True)
class HNSWParams:
    """The HNSW graph's parameters.

    ``connectivity`` (M) is the number of links per node: more links, better recall, more memory.
    ``expansion_add`` (ef_construction) is the candidate list while inserting: higher builds a
    better graph, slower. ``expansion_search`` (ef_search) is the candidate list while searching:
    the recall/speed dial. On 49,000 real MiniLM embeddings (bench/ann.py; the store keeps their
    35,410 distinct vectors in the graph) the store's recall@10 was 0.987 at 32, 0.996 at 64 (the
    default) and 0.999 at 128, each doubling costing about 1.6x in speed.
    """

    connectivity: int = 32
    expansion_add: int = 200
    expansion_search: int = 64

    def __post_init__(self) -> None:
        if self.connectivity < 2 or self.expansion_add < 1 or self.expansion_search < 1:
            raise ValueError("HNSW connectivity must be >= 2 and expansions >= 1")


class IndexStamp(NamedTuple):
    """What an index file says about itself: its store, the generation it reflects, its size."""

    store_id: bytes
    generation: int
    records: int


def new_index(dimension: int, params: HNSWParams) -> Index:
    """An empty HNSW index over float32 vectors by inner product (cosine over unit vectors)."""
    return Index(
        ndim=dimension,
        metric="ip",
        dtype="f32",  # bf16, usearch's default, cost 6 points of recall@10 on real embeddings
        connectivity=params.connectivity,
        expansion_add=params.expansion_add,
        expansion_search=params.expansion_search,
    )


def search(
    index: Index, query: npt.NDArray[np.float32], k: int, *, exact: bool = False
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    """Keys and cosine similarities of (about) the ``k`` nearest vectors, best first.

    Calls the compiled ``search_many`` that ``Index.search`` wraps: the wrapper's checks and
    result objects cost a tenth of a search at this size (bench/ann.py shows both).
    """
    compiled = getattr(index, "_compiled", None)
    if compiled is None:  # pragma: no cover - another usearch layout: the public API
        matches = index.search(query, k, threads=1, exact=exact)
        keys: npt.NDArray[np.uint64] = matches.keys
        distances: npt.NDArray[np.float32] = matches.distances
    else:
        found, dists, counts, _, _ = compiled.search_many(query.reshape(1, -1), k, exact, 1)
        keys, distances = found[0, : counts[0]], dists[0, : counts[0]]
    if not exact and len(keys) < min(k, len(index)):
        # The graph walk reached fewer than k nodes (k close to the index's size, or nodes
        # the walk cannot reach): rank every vector instead, so k hits come back whenever k exist.
        return search(index, query, k, exact=True)
    similarities: npt.NDArray[np.float32] = np.float32(1.0) - distances
    return keys, similarities


def search_among(
    index: Index,
    query: npt.NDArray[np.float32],
    k: int,
    allowed: npt.NDArray[np.uint64],
    *,
    exact_limit: int,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float32]]:
    """The ``k`` best of the ``allowed`` keys: ranked exactly when they are at most
    ``exact_limit``, else by HNSW searches that ask for more candidates (in proportion to how
    rare allowed keys are, growing) until ``k`` allowed ones turn up; exactly if they never do."""
    size = len(index)
    if len(allowed) > exact_limit:
        ratio = -(-size // len(allowed))  # 1 in `ratio` records is allowed
        fetch, limit = min(size, 2 * k * ratio), min(size, 32 * k * ratio)
        while True:
            keys, scores = search(index, query, fetch)
            keep = np.isin(keys, allowed)
            if int(keep.sum()) >= k:
                return keys[keep][:k], scores[keep][:k]
            if fetch >= limit:
                break  # a filter the graph serves badly: rank the allowed keys exactly
            fetch = min(limit, fetch * 4)
    if not len(allowed):
        return allowed, np.zeros(0, dtype=np.float32)
    similarities: npt.NDArray[np.float32] = np.asarray(index.get(allowed), np.float32) @ query
    best = np.argsort(-similarities, kind="stable")[:k]
    return allowed[best], similarities[best]


def replace_vectors(
    index: Index, keys: npt.NDArray[np.uint64], vectors: npt.NDArray[np.float32] | None
) -> None:
    """Removes ``keys`` (absent ones are ignored), then adds ``vectors`` under them if given."""
    if len(keys):
        index.remove(keys)
        if vectors is not None:
            index.add(keys, vectors, threads=1)


def load_index(
    path: Path, store_id: bytes, dimension: int, params: HNSWParams
) -> tuple[Index, IndexStamp] | None:
    """The index in ``path`` and its stamp, if the file is intact and belongs to ``store_id``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        logger.warning("cannot read index file %s (%s); rebuilding it", path, e)
        return None
    stamp = read_stamp(data)
    payload = memoryview(data)[_HEADER.size :]
    if stamp is None or hashlib.sha256(payload).digest() != data[_HEADER.size - 32 : _HEADER.size]:
        logger.warning("index file %s is corrupt; rebuilding it", path)
        return None
    if stamp.store_id != store_id:
        logger.info("index file %s belongs to another store; rebuilding it", path)
        return None
    try:
        index = Index.restore(bytes(payload))
    except (RuntimeError, ValueError) as e:
        logger.warning("index file %s cannot be loaded (%s); rebuilding it", path, e)
        return None
    if index is None or index.ndim != dimension or len(index) != stamp.records:
        logger.warning("index file %s does not match its header; rebuilding it", path)
        return None
    if index.connectivity != params.connectivity:
        logger.info("index file %s was built with other HNSW parameters; rebuilding it", path)
        return None
    # Not stored in the file. (usearch declares the setters apart from the getters, which
    # mypy reads as read-only properties.)
    index.expansion_add = params.expansion_add  # type: ignore[misc]
    index.expansion_search = params.expansion_search  # type: ignore[misc]
    return index, stamp


def read_stamp(data: bytes) -> IndexStamp | None:
    """The stamp in the header of an index file's bytes, or None if it has none."""
    try:
        magic, store_id, generation, count, _digest = _HEADER.unpack_from(data)
    except struct.error:
        return None
    return IndexStamp(store_id, generation, count) if magic == _MAGIC else None


def saved_generation(path: Path) -> int | None:
    """The generation the file at ``path`` claims to reflect (unverified), or None."""
    try:
        with path.open("rb") as f:
            stamp = read_stamp(f.read(_HEADER.size))
    except OSError:
        return None
    return None if stamp is None else stamp.generation


def save_index(path: Path, index: Index, stamp: IndexStamp) -> bool:
    """Writes ``index`` to ``path`` atomically (temporary file, fsync, rename), unless the file
    there already reflects a newer generation. A failure is logged: a rebuild repairs it."""
    newer = saved_generation(path)
    if newer is not None and newer > stamp.generation:
        return False  # another process saved a later state of the same namespace
    payload = index.save()
    if payload is None:  # pragma: no cover - save() without a path always returns the bytes
        return False
    header = _HEADER.pack(_MAGIC, *stamp, hashlib.sha256(payload).digest())
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as e:
        logger.warning("cannot write index file %s: %s", path, e)
        tmp.unlink(missing_ok=True)
        return False
    return True
