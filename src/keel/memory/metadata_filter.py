"""Exact metadata filters (``where``) of the embedded store, in Python and as SQLite JSON SQL.

Both forms mean the same: every key of ``where`` is present with an equal value, and a bool only
equals a bool (so ``{"n": True}`` never matches ``n = 1``); ints and floats compare by value.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping

from keel.memory.base import MetadataValue

__all__ = ["matches", "matching_keys", "where_sql"]


def matches(metadata: Mapping[str, MetadataValue], where: Mapping[str, MetadataValue]) -> bool:
    """True if ``metadata`` has every key of ``where`` with an equal value."""
    for key, wanted in where.items():
        if key not in metadata:
            return False
        value = metadata[key]
        if isinstance(value, bool) != isinstance(wanted, bool) or value != wanted:
            return False
    return True


def where_sql(where: Mapping[str, MetadataValue], column: str) -> tuple[str, list[object]] | None:
    """An SQL condition on the JSON text in ``column`` equivalent to ``matches``, with its
    parameters; None if a key cannot be written as a JSON path (then filter in Python)."""
    conditions: list[str] = []
    params: list[object] = []
    for key, wanted in where.items():
        if not key or any(c in key for c in '"\\') or not key.isprintable():
            return None
        path = f'$."{key}"'
        if isinstance(wanted, bool):
            conditions.append(f"json_type({column}, ?) = ?")
            params += [path, "true" if wanted else "false"]
        elif isinstance(wanted, int) and not -(2**63) <= wanted < 2**63:
            return None  # beyond SQLite's integers
        elif isinstance(wanted, int | float):
            conditions.append(
                f"json_type({column}, ?) IN ('integer', 'real') AND json_extract({column}, ?) = ?"
            )
            params += [path, path, wanted]
        else:
            conditions.append(f"json_type({column}, ?) = 'text' AND json_extract({column}, ?) = ?")
            params += [path, path, wanted]
    return " AND ".join(conditions) or "1", params


def matching_keys(
    db: sqlite3.Connection, namespace: str, where: Mapping[str, MetadataValue]
) -> list[tuple[int, int]]:
    """(key, vkey) of the embedded store's records in ``namespace`` whose metadata matches
    ``where`` (in SQL where the keys allow it, else in Python)."""
    condition = where_sql(where, "metadata")
    if condition is not None:
        sql, params = condition
        rows = db.execute(
            f"SELECT key, vkey FROM vector_records WHERE namespace = ? AND {sql}",
            [namespace, *params],
        ).fetchall()
        return [(key, vkey) for key, vkey in rows]
    rows = db.execute(
        "SELECT key, vkey, metadata FROM vector_records WHERE namespace = ?", (namespace,)
    ).fetchall()
    return [(key, vkey) for key, vkey, metadata in rows if matches(json.loads(metadata), where)]
