"""Procedural memory: named, versioned skills an agent loads at run time.

A skill is what an agent needs to do one kind of task: instructions, the names (and optionally
JSON schemas) of the tools it may use, and worked examples. Saving a changed skill creates the
next version; versions are immutable, so an agent pinned to ``("summarise", 3)`` behaves the same
tomorrow, while ``load(name)`` without a version gets the latest.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from keel.errors import SkillNotFoundError, StoreError

__all__ = ["SQLiteSkillStore", "Skill", "SkillExample", "SkillSpec", "SkillStore"]


class SkillExample(BaseModel):
    """A worked example: an input and the output (or tool calls, as text) it should lead to."""

    model_config = ConfigDict(frozen=True)

    input: str
    output: str


class SkillSpec(BaseModel):
    """A skill's content, as written by a person or an agent."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description: str = ""
    instructions: str = Field(min_length=1)
    tools: list[str] = []
    tool_schemas: dict[str, dict[str, Any]] = {}
    examples: list[SkillExample] = []

    def content_sha256(self) -> str:
        """Hash of the content, so saving an unchanged skill creates no new version."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class Skill(SkillSpec):
    """One stored version of a skill."""

    version: int = Field(ge=1)
    created_at: AwareDatetime


class SkillStore(ABC):
    """Keeps versions of skills."""

    @abstractmethod
    async def save(self, spec: SkillSpec) -> Skill:
        """Store ``spec`` as the next version of its name; if it equals the latest version,
        return that version instead of creating another."""

    @abstractmethod
    async def load(self, name: str, version: int | None = None) -> Skill:
        """Version ``version`` of skill ``name`` (the latest if None); ``SkillNotFoundError``
        if there is none."""

    @abstractmethod
    async def versions(self, name: str) -> list[int]:
        """The versions of ``name``, oldest first (empty if unknown)."""

    @abstractmethod
    async def names(self) -> list[str]:
        """Every skill name, sorted."""

    @abstractmethod
    async def close(self) -> None:
        """Release files and connections; safe to call twice."""


class SQLiteSkillStore(SkillStore):
    """Skills in the SQLite file at ``path``, one row per version."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS skills (name TEXT NOT NULL, version INTEGER NOT NULL, "
                "sha256 TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (name, version))"
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open skill store {self.path}: {e}") from e
        self._db: sqlite3.Connection | None = db

    async def save(self, spec: SkillSpec) -> Skill:
        return await asyncio.to_thread(self._save, SkillSpec.model_validate(spec.model_dump()))

    async def load(self, name: str, version: int | None = None) -> Skill:
        return await asyncio.to_thread(self._load, name, version)

    async def versions(self, name: str) -> list[int]:
        rows = await asyncio.to_thread(
            self._read, "SELECT version FROM skills WHERE name = ? ORDER BY version", (name,)
        )
        return [int(str(row[0])) for row in rows]

    async def names(self) -> list[str]:
        rows = await asyncio.to_thread(
            self._read, "SELECT DISTINCT name FROM skills ORDER BY name", ()
        )
        return [str(row[0]) for row in rows]

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"skill store {self.path} is closed")
        return self._db

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn().execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read skill store {self.path}: {e}") from e

    def _save(self, spec: SkillSpec) -> Skill:
        digest = spec.content_sha256()
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                latest = db.execute(
                    "SELECT version, sha256, record FROM skills WHERE name = ? "
                    "ORDER BY version DESC LIMIT 1",
                    (spec.name,),
                ).fetchone()
                if latest is not None and latest[1] == digest:
                    db.execute("COMMIT")
                    return Skill.model_validate_json(latest[2])
                skill = Skill(
                    **spec.model_dump(),
                    version=1 if latest is None else int(latest[0]) + 1,
                    created_at=datetime.now(UTC),
                )
                db.execute(
                    "INSERT INTO skills VALUES (?, ?, ?, ?)",
                    (skill.name, skill.version, digest, skill.model_dump_json()),
                )
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"cannot write skill store {self.path}: {e}") from e
        return skill

    def _load(self, name: str, version: int | None) -> Skill:
        if version is None:
            sql = "SELECT record FROM skills WHERE name = ? ORDER BY version DESC LIMIT 1"
            rows = self._read(sql, (name,))
        else:
            rows = self._read(
                "SELECT record FROM skills WHERE name = ? AND version = ?", (name, version)
            )
        if not rows:
            known = [
                int(str(r[0]))
                for r in self._read(
                    "SELECT version FROM skills WHERE name = ? ORDER BY version", (name,)
                )
            ]
            if not known:
                raise SkillNotFoundError(f"no skill named {name!r}")
            raise SkillNotFoundError(
                f"skill {name!r} has no version {version}",
                hint=f"versions: {', '.join(map(str, known))}",
            )
        return Skill.model_validate_json(str(rows[0][0]))
