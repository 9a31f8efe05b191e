"""Operator tags: safety markers on points and network elements that block (or annotate) control.

A HOLD ("do not operate") or CLEARANCE (permit to work: the element is earthed for work) tag blocks every command on
the tagged point, or, when placed on a network element, on every point whose ``element`` is that element. An INFO tag
is a note and blocks nothing. FAULTED and PARALLEL_ALLOWED are topology markings read by the interlocks
(``scada.interlocks``): a CLEARANCE or FAULTED element must not be energized by closing a switch, and a
PARALLEL_ALLOWED switch may join two sources. Tags are never deleted: removing one records who removed it, when and
why, so the history of a work permit stays readable. Every call reads the database, so two server threads (or a
restart) always see the same tags.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from models.points import PointDef
from models.timebase import now_ms
from scada.errors import ScadaError, StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["Tag", "TagError", "TagKind", "TagStore"]


class TagKind(StrEnum):
    HOLD = "hold"  # do not operate
    CLEARANCE = "clearance"  # permit to work: earthed for work
    INFO = "info"  # note, does not block
    # Topology markings on network elements (scada.interlocks): they block no command on the element itself (the
    # switches around a fault must stay operable to isolate it) but refuse closing anything that would energize it.
    FAULTED = "faulted"  # a faulted section, until repaired
    PARALLEL_ALLOWED = "parallel_allowed"  # on a switch: closing it may parallel two sources (e.g. a bus coupler)

    @property
    def blocks(self) -> bool:
        """Blocks every command on the tagged point or element."""
        return self in (TagKind.HOLD, TagKind.CLEARANCE)


class TagError(ScadaError):
    """A tag cannot be placed or removed as asked."""


@dataclass(frozen=True, slots=True)
class Tag:
    id: int
    target: str  # point name, or network element name/mRID
    kind: TagKind
    operator: str
    reason: str
    placed_ms: int
    removed_ms: int | None = None  # None while the tag is active
    removed_by: str = ""
    removal_reason: str = ""

    @property
    def active(self) -> bool:
        return self.removed_ms is None


_COLS = "id, target, kind, operator, reason, placed_ms, removed_ms, removed_by, removal_reason"
_BLOCKING_KINDS = tuple(k.value for k in TagKind if k.blocks)



class TagStore(SqliteStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS tags (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, even after the newest tag is removed
        target TEXT NOT NULL,
        kind TEXT NOT NULL,
        operator TEXT NOT NULL,
        reason TEXT NOT NULL,
        placed_ms INTEGER NOT NULL,
        removed_ms INTEGER,
        removed_by TEXT NOT NULL DEFAULT '',
        removal_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS tags_active_target ON tags(target) WHERE removed_ms IS NULL;
    """

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        super().__init__(path, durable=durable)

    def place(self, target: str, kind: TagKind | str, operator: str, reason: str) -> Tag:
        """Place a tag on a point name or network element; ``reason`` is required."""
        target = target.strip()
        if not target:
            raise TagError("cannot place a tag without a target (point name or network element)")
        try:
            kind = TagKind(kind)
        except ValueError:
            raise TagError(
                f"cannot tag {target!r}: unknown tag kind {kind!r} (expected one of {', '.join(TagKind)})"
            ) from None
        if not operator.strip():
            raise TagError(f"cannot tag {target!r}: the operator placing the tag must be named")
        reason = reason.strip()
        if not reason:
            raise TagError(f"cannot place a {kind} tag on {target!r}: a reason is required")
        placed_ms = now_ms()
        try:
            with self.conn() as c:
                cur = c.execute(
                    "INSERT INTO tags (target, kind, operator, reason, placed_ms) VALUES (?, ?, ?, ?, ?)",
                    (target, kind.value, operator, reason, placed_ms),
                )
                tag_id = int(cur.lastrowid or 0)  # always set after an INSERT
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store a {kind} tag on {target!r}: {exc}") from exc
        return Tag(tag_id, target, kind, operator, reason, placed_ms)

    def remove(self, tag_id: int, operator: str, reason: str = "") -> Tag:
        """Remove an active tag; the tag stays in the history with who removed it, when and why."""
        if not operator.strip():
            raise TagError(f"cannot remove tag {tag_id}: the operator removing it must be named")
        removed_ms = now_ms()
        try:
            with self.conn() as c:
                # the WHERE makes check-and-set one statement: two operators removing at once cannot both succeed
                cur = c.execute(
                    "UPDATE tags SET removed_ms = ?, removed_by = ?, removal_reason = ? "
                    "WHERE id = ? AND removed_ms IS NULL",
                    (removed_ms, operator, reason.strip(), tag_id),
                )
                updated = cur.rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot remove tag {tag_id}: {exc}") from exc
        tag = self.get(tag_id)
        if tag is None:
            raise TagError(f"cannot remove tag {tag_id}: no such tag")
        if not updated:
            raise TagError(
                f"cannot remove tag {tag_id} on {tag.target!r}: already removed by {tag.removed_by} "
                f"at {tag.removed_ms} ms"
            )
        return tag

    def get(self, tag_id: int) -> Tag | None:
        got = self._query(f"SELECT {_COLS} FROM tags WHERE id = ?", (tag_id,))
        return got[0] if got else None

    def active(self, target: str | None = None) -> list[Tag]:
        """Active tags, oldest first; only those on ``target`` if given."""
        if target is None:
            return self._query(f"SELECT {_COLS} FROM tags WHERE removed_ms IS NULL ORDER BY id", ())
        return self._query(
            f"SELECT {_COLS} FROM tags WHERE removed_ms IS NULL AND target = ? ORDER BY id", (target.strip(),)
        )

    def blocking(self, point: PointDef) -> list[Tag]:
        """Active HOLD/CLEARANCE tags on the point's name or on its network element, oldest first."""
        targets = (point.name, point.element) if point.element else (point.name,)
        marks = ", ".join("?" * len(targets))
        kinds = ", ".join("?" * len(_BLOCKING_KINDS))
        return self._query(
            f"SELECT {_COLS} FROM tags WHERE removed_ms IS NULL AND target IN ({marks}) AND kind IN ({kinds}) "
            "ORDER BY id",
            (*targets, *_BLOCKING_KINDS),
        )

    def history(self, target: str | None = None, *, limit: int = 1000) -> list[Tag]:
        """Every tag, active or removed, newest first."""
        if target is None:
            return self._query(f"SELECT {_COLS} FROM tags ORDER BY id DESC LIMIT ?", (limit,))
        return self._query(f"SELECT {_COLS} FROM tags WHERE target = ? ORDER BY id DESC LIMIT ?", (target, limit))

    def _query(self, sql: str, args: tuple) -> list[Tag]:
        try:
            got = self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read tags: {exc}") from exc
        return [Tag(r[0], r[1], TagKind(r[2]), r[3], r[4], r[5], r[6], r[7], r[8]) for r in got]
