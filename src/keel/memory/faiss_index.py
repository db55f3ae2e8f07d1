"""The faiss side of the embedded store: exact inner-product indexes and their files.

An index file starts with a stamp (store id, generation, number of records) and a checksum, so the
store loads a file only if it is intact and reflects exactly the SQLite state it is reading;
anything else is rebuilt. The index is a cache of SQLite: losing a file costs a rebuild, never data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

from keel.errors import MissingDependencyError

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("numpy", "faiss", feature="the embedded vector index") from e
try:
    import faiss
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("faiss-cpu", "faiss", feature="the embedded vector index") from e

__all__ = ["IndexStamp", "build_index", "load_index", "save_index", "search"]

logger = logging.getLogger("keel.memory")

_MAGIC = b"KEELIDX1"
_HEADER = struct.Struct("<8s16sqq32s")  # magic, store id, generation, count, sha256 of payload


class IndexStamp(NamedTuple):
    """What an index file must match to be used: its store, generation and record count."""

    store_id: bytes
    generation: int
    records: int


def build_index(
    dimension: int,
    keys: npt.NDArray[np.int64] | None = None,
    vectors: npt.NDArray[np.float32] | None = None,
) -> Any:
    """An exact inner-product index (cosine over unit vectors) with int64 ids."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if keys is not None and vectors is not None and len(keys):
        index.add_with_ids(vectors, keys)
    return index


def search(
    index: Any,
    query: npt.NDArray[np.float32],
    k: int,
    allowed: npt.NDArray[np.int64] | None = None,
) -> list[tuple[int, float]]:
    """(id, score) of the ``k`` best vectors, best first, among ``allowed`` ids if given."""
    limit = min(k, int(index.ntotal))
    if limit == 0:
        return []
    params = None
    if allowed is not None:
        selector = faiss.IDSelectorBatch(allowed)  # kept alive until the search returns
        params = faiss.SearchParameters()
        params.sel = selector
    scores, ids = index.search(query.reshape(1, -1), limit, params=params)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]


def load_index(path: Path, stamp: IndexStamp, dimension: int) -> Any | None:
    """The index in ``path`` if it is intact and carries ``stamp``, else None."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        logger.warning("cannot read index file %s (%s); rebuilding it", path, e)
        return None
    try:
        magic, store_id, generation, count, digest = _HEADER.unpack_from(data)
    except struct.error:
        magic = b""
    payload = data[_HEADER.size :]
    if magic != _MAGIC or hashlib.sha256(payload).digest() != digest:
        logger.warning("index file %s is corrupt; rebuilding it", path)
        return None
    if IndexStamp(store_id, generation, count) != stamp:
        logger.info("index file %s is stale; rebuilding it", path)
        return None
    try:
        index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
    except RuntimeError:
        logger.warning("index file %s cannot be loaded; rebuilding it", path)
        return None
    if index.d != dimension or index.ntotal != stamp.records:
        return None
    return index


def save_index(path: Path, index: Any, stamp: IndexStamp) -> None:
    """Writes ``index`` to ``path`` atomically; a failure is logged, since a rebuild repairs it."""
    payload = faiss.serialize_index(index).tobytes()
    header = _HEADER.pack(_MAGIC, *stamp, hashlib.sha256(payload).digest())
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            f.write(header + payload)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as e:
        logger.warning("cannot write index file %s: %s", path, e)
