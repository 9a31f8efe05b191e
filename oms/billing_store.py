"""SQLite store of the billing feed (``data_dir/billing.sqlite``).

Three tables: ``blocks`` holds the computed blocks of every feeder, day and resolution (a recomputation replaces
them); ``manual_values`` holds the operator's values, one per block, which a recomputation never touches; and
``manual_log`` keeps every manual entry ever made (who, why, the value it replaced), so a corrected entry still shows
the first. ``days`` says which local days were computed, when, and with which UTC offset.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oms.billing_energy import BlockQuality
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["BillingStore", "ManualValue", "StoredBlock"]


@dataclass(frozen=True, slots=True)
class StoredBlock:
    feeder: str  # feeder name
    resolution_min: int  # 15 or 60
    start_ms: int  # UTC epoch ms
    kwh: float | None  # None when missing
    quality: BlockQuality
    source: str  # EnergySource value


@dataclass(frozen=True, slots=True)
class ManualValue:
    feeder: str
    resolution_min: int
    start_ms: int
    kwh: float
    operator: str
    reason: str
    entered_ms: int


class BillingStore(SqliteStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS blocks (
        day TEXT NOT NULL,              -- local date YYYY-MM-DD
        feeder TEXT NOT NULL,           -- feeder name
        resolution_min INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,      -- UTC epoch ms
        kwh REAL,                       -- NULL when missing
        quality TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (feeder, resolution_min, start_ms)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS blocks_day ON blocks (day);
    CREATE TABLE IF NOT EXISTS manual_values (
        feeder TEXT NOT NULL,
        resolution_min INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        kwh REAL NOT NULL,
        operator TEXT NOT NULL,
        reason TEXT NOT NULL,
        entered_ms INTEGER NOT NULL,
        PRIMARY KEY (feeder, resolution_min, start_ms)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS manual_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        feeder TEXT NOT NULL,
        resolution_min INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        kwh REAL NOT NULL,
        operator TEXT NOT NULL,
        reason TEXT NOT NULL,
        entered_ms INTEGER NOT NULL,
        replaced_kwh REAL,              -- the block's value before this entry (NULL: it was missing)
        replaced_quality TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS days (
        day TEXT PRIMARY KEY,
        utc_offset_min INTEGER NOT NULL,
        computed_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    """

    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        super().__init__(path, durable=durable)

    def replace_day(self, day: str, utc_offset_min: int, computed_ms: int, blocks: Sequence[StoredBlock]) -> None:
        """Store the computed blocks of one local day in one transaction, replacing an earlier computation."""
        rows = [(day, b.feeder, b.resolution_min, b.start_ms, b.kwh, b.quality.value, b.source) for b in blocks]
        try:
            with self.conn() as c:
                c.execute("DELETE FROM blocks WHERE day = ?", (day,))
                c.executemany("INSERT OR REPLACE INTO blocks (day, feeder, resolution_min, start_ms, kwh, quality, "
                              "source) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                c.execute("INSERT OR REPLACE INTO days (day, utc_offset_min, computed_ms) VALUES (?, ?, ?)",
                          (day, utc_offset_min, computed_ms))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store the billing blocks of {day}: {exc}") from exc

    def computed(self, day: str) -> int | None:
        """When ``day`` was last computed (UTC epoch ms), None if never."""
        try:
            got = self.conn().execute("SELECT computed_ms FROM days WHERE day = ?", (day,)).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the billing days: {exc}") from exc
        return None if got is None else int(got[0])

    def blocks(self, day: str, resolution_min: int) -> list[StoredBlock]:
        try:
            got = self.conn().execute(
                "SELECT feeder, resolution_min, start_ms, kwh, quality, source FROM blocks "
                "WHERE day = ? AND resolution_min = ? ORDER BY feeder, start_ms", (day, resolution_min)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the billing blocks of {day}: {exc}") from exc
        return [StoredBlock(f, r, s, k, BlockQuality(q), src) for f, r, s, k, q, src in got]

    def put_manual(self, value: ManualValue, replaced_kwh: float | None, replaced_quality: str) -> None:
        try:
            with self.conn() as c:
                c.execute("INSERT OR REPLACE INTO manual_values (feeder, resolution_min, start_ms, kwh, operator, "
                          "reason, entered_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (value.feeder, value.resolution_min, value.start_ms, value.kwh, value.operator,
                           value.reason, value.entered_ms))
                c.execute("INSERT INTO manual_log (feeder, resolution_min, start_ms, kwh, operator, reason, "
                          "entered_ms, replaced_kwh, replaced_quality) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (value.feeder, value.resolution_min, value.start_ms, value.kwh, value.operator,
                           value.reason, value.entered_ms, replaced_kwh, replaced_quality))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store the manual value of {value.feeder} at "
                               f"{value.start_ms}: {exc}") from exc

    def manual(self, start_ms: int, end_ms: int) -> list[ManualValue]:
        """Manual values of blocks starting in [start_ms, end_ms)."""
        try:
            got = self.conn().execute(
                "SELECT feeder, resolution_min, start_ms, kwh, operator, reason, entered_ms FROM manual_values "
                "WHERE start_ms >= ? AND start_ms < ? ORDER BY feeder, resolution_min, start_ms",
                (start_ms, end_ms)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the manual billing values: {exc}") from exc
        return [ManualValue(*r) for r in got]

    def manual_log(self, feeder: str | None = None) -> list[tuple]:
        """Every manual entry, oldest first: (feeder, resolution_min, start_ms, kwh, operator, reason, entered_ms,
        replaced_kwh, replaced_quality)."""
        sql = ("SELECT feeder, resolution_min, start_ms, kwh, operator, reason, entered_ms, replaced_kwh, "
               "replaced_quality FROM manual_log")
        args: tuple = ()
        if feeder is not None:
            sql, args = sql + " WHERE feeder = ?", (feeder,)
        try:
            return self.conn().execute(sql + " ORDER BY id", args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the manual billing log: {exc}") from exc
