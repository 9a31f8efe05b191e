"""Sequence-of-events journal: every status change, written durably by the RTDB writer before it is published.

The RTDB calls ``append`` inside each transaction, so the write must be short: one SQLite transaction with one
``executemany`` per change set. In WAL mode with synchronous=NORMAL a returned ``append`` survives kill -9 of the
process (the commit is in the WAL file); ``durable=True`` also survives a power loss at the price of an fsync.

Rows are keyed by the RTDB sequence number, so replaying events after a restart is harmless (duplicates are ignored),
and ``last_seq`` lets the RTDB continue its sequence. The point name is stored with each event because point ids are
positions in the configured list: a later configuration may renumber them, the journal must still read correctly.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.points import PointDef, Quality
from models.updates import Cause
from scada.changes import CHANGE_DTYPE
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["SoeEntry", "SoeJournal"]


@dataclass(frozen=True, slots=True)
class SoeEntry:
    seq: int
    point: int
    point_name: str
    value: float
    prev_value: float  # NaN if the point had no value before
    quality: Quality
    source_time_ms: int  # field time tag, -1 if the source gave none
    recv_time_ms: int
    cause: Cause | int  # the raw code if it is not a known Cause (a bad adapter row is kept, not rewritten)

    @property
    def time_ms(self) -> int:
        """Event time: the field's time tag, else the receive time."""
        return self.source_time_ms if self.source_time_ms >= 0 else self.recv_time_ms


_INSERT = (
    "INSERT OR IGNORE INTO soe (seq, point, point_name, value, prev_value, quality, source_time_ms, recv_time_ms, "
    "event_time_ms, cause) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CAUSES: dict[int, Cause] = {int(c): c for c in Cause}
_SELECT = "SELECT seq, point, point_name, value, prev_value, quality, source_time_ms, recv_time_ms, cause FROM soe"


class SoeJournal(SqliteStore):
    """Append-only journal of status events, ordered by event time then sequence."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS soe (
        seq INTEGER PRIMARY KEY,          -- RTDB change sequence (unique, strictly increasing)
        point INTEGER NOT NULL,
        point_name TEXT NOT NULL,
        value REAL,                        -- NULL stands for NaN
        prev_value REAL,
        quality INTEGER NOT NULL,
        source_time_ms INTEGER NOT NULL,   -- -1 if the source gave none
        recv_time_ms INTEGER NOT NULL,
        event_time_ms INTEGER NOT NULL,    -- source time, else receive time: what queries order and filter by
        cause INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS soe_time ON soe(event_time_ms, seq);
    CREATE INDEX IF NOT EXISTS soe_point_time ON soe(point, event_time_ms, seq);
    """

    def __init__(self, path: str | Path, points: Sequence[PointDef], *, durable: bool = False) -> None:
        super().__init__(path, durable=durable)
        # name per point id, looked up vectorised in append
        self._names = np.array([p.name for p in points] + [""], dtype=object)
        self._names[-1] = None  # sentinel slot for ids outside the configuration
        self._n_points = len(points)

    def append(self, rows: np.ndarray) -> int:
        """Write status-change rows (``CHANGE_DTYPE``) in one transaction; returns the number of rows given.

        Rows whose ``seq`` is already journalled are ignored (a replay after restart).
        """
        n = len(rows)
        if n == 0:
            return 0
        if rows.dtype != CHANGE_DTYPE:
            raise StorageError(f"{self.path}: SOE rows must have CHANGE_DTYPE, not {rows.dtype}")
        point = rows["point"]
        src = rows["source_time_ms"]
        event_time = np.where(src >= 0, src, rows["recv_time_ms"])
        known = (point >= 0) & (point < self._n_points)
        names = self._names[np.where(known, point, self._n_points)].tolist()
        if not known.all():
            names = [nm if nm is not None else f"#{pid}" for nm, pid in zip(names, point.tolist(), strict=True)]
        # tolist() turns numpy scalars into Python ints/floats in C; SQLite stores a NaN float as NULL
        params = zip(
            rows["seq"].tolist(), point.tolist(), names, rows["value"].tolist(), rows["prev_value"].tolist(),
            rows["quality"].tolist(), src.tolist(), rows["recv_time_ms"].tolist(), event_time.tolist(),
            rows["cause"].tolist(), strict=True,
        )
        try:
            with self.conn() as c:
                c.executemany(_INSERT, params)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot journal {n} SOE event(s): {exc}") from exc
        return n

    def query(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        points: Sequence[int] | None = None,
        limit: int = 1000,
        newest_first: bool = True,
    ) -> list[SoeEntry]:
        """Events with event time in [start_ms, end_ms), optionally only of ``points``, at most ``limit`` of them.

        Ordered by event time (source time, else receive time) then sequence; newest first by default. The limit
        applies after ordering, so newest_first=True gives the latest ``limit`` events. ``limit <= 0`` gives none.
        """
        if limit <= 0 or (points is not None and len(points) == 0):
            return []
        where: list[str] = []
        args: list[object] = []
        if start_ms is not None:
            where.append("event_time_ms >= ?")
            args.append(int(start_ms))
        if end_ms is not None:
            where.append("event_time_ms < ?")
            args.append(int(end_ms))
        if points is not None:
            # one bound JSON array instead of one parameter per id: no limit on the number of points
            where.append("point IN (SELECT value FROM json_each(?))")
            args.append(json.dumps([int(p) for p in points]))
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY event_time_ms {order}, seq {order} LIMIT ?"
        args.append(int(limit))
        try:
            got = self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read SOE events: {exc}") from exc
        return [_entry(r) for r in got]

    def last_seq(self) -> int:
        """Highest journalled sequence number, -1 if the journal is empty."""
        try:
            (seq,) = self.conn().execute("SELECT MAX(seq) FROM soe").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the last SOE sequence: {exc}") from exc
        return -1 if seq is None else int(seq)

    def count(self) -> int:
        try:
            (n,) = self.conn().execute("SELECT COUNT(*) FROM soe").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot count SOE events: {exc}") from exc
        return int(n)


def _entry(r: tuple) -> SoeEntry:
    return SoeEntry(
        seq=r[0], point=r[1], point_name=r[2], value=math.nan if r[3] is None else r[3],
        prev_value=math.nan if r[4] is None else r[4], quality=Quality(r[5]), source_time_ms=r[6],
        recv_time_ms=r[7], cause=_CAUSES.get(r[8], r[8]),
    )

