"""Outage records: one per outage, opened by whoever detects it (FLISR now; AMI last-gasp and calls with #6) and
updated as it is isolated and restored.

A record is keyed by ``(source, source_ref)`` (``("flisr", "run-12")``), so a source updates its own record with
``open_or_update`` however often it reports. Status: ``open`` while customers are off and nothing was restored yet,
``restored`` once the restoration finished (customers in the faulted section may still be off: ``customers_still_off``),
``closed`` when the repair is done (the OMS closes it; FLISR never does). Stored in SQLite (WAL), so records outlive a
restart of the server.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from models.timebase import now_ms
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["OutageRecord", "OutageRecordStore", "OutageStatus"]


class OutageStatus(StrEnum):
    OPEN = "open"
    RESTORED = "restored"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class OutageRecord:
    id: int
    source: str  # "flisr" (later: "ami", "call", "manual")
    source_ref: str  # the source's own key ("run-12")
    feeder: str
    tripped_device: str
    faulted_elements: tuple[str, ...]
    isolated_boundary: tuple[str, ...]  # switches opened to isolate the faulted section
    customers_interrupted: int
    customers_restored: int
    customers_still_off: int
    started_ms: int  # the trip (field time), UTC epoch ms
    isolated_ms: int = -1
    restored_ms: int = -1
    status: OutageStatus = OutageStatus.OPEN
    notes: tuple[str, ...] = field(default=())
    updated_ms: int = -1


_COLS = ("id, source, source_ref, feeder, tripped_device, faulted_elements, isolated_boundary, customers_interrupted, "
         "customers_restored, customers_still_off, started_ms, isolated_ms, restored_ms, status, notes, updated_ms")


class OutageRecordStore(SqliteStore):
    """Outage records in ``path``; thread-safe (one writer lock around read-modify-write)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS outage_records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        source_ref TEXT NOT NULL,
        feeder TEXT NOT NULL,
        tripped_device TEXT NOT NULL,
        faulted_elements TEXT NOT NULL,
        isolated_boundary TEXT NOT NULL,
        customers_interrupted INTEGER NOT NULL,
        customers_restored INTEGER NOT NULL,
        customers_still_off INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        isolated_ms INTEGER NOT NULL,
        restored_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        notes TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        UNIQUE (source, source_ref)
    );
    CREATE INDEX IF NOT EXISTS outage_records_started ON outage_records (started_ms);
    """

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        super().__init__(path, durable=durable)
        self._write_lock = threading.Lock()

    def open_or_update(
        self,
        *,
        source: str,
        source_ref: str,
        feeder: str,
        tripped_device: str,
        faulted_elements: tuple[str, ...] = (),
        isolated_boundary: tuple[str, ...] = (),
        customers_interrupted: int = 0,
        customers_restored: int = 0,
        customers_still_off: int = 0,
        started_ms: int = -1,
        isolated_ms: int = -1,
        restored_ms: int = -1,
        status: OutageStatus | str = OutageStatus.OPEN,
        notes: tuple[str, ...] = (),
    ) -> OutageRecord:
        """Open the record of ``(source, source_ref)`` or replace its fields; returns it as stored. A closed record
        stays closed (a late update from its source does not reopen it)."""
        if not source or not source_ref:
            raise ValueError(f"outage record: source and source_ref must not be empty (got {source!r}, "
                             f"{source_ref!r})")
        try:
            status = OutageStatus(status)
        except ValueError:
            raise ValueError(f"outage record {source}/{source_ref}: unknown status {status!r} (expected one of "
                             f"{', '.join(OutageStatus)})") from None
        with self._write_lock:
            old = self._find(source, source_ref)
            if old is not None and old.status is OutageStatus.CLOSED:
                status = OutageStatus.CLOSED
            rec = OutageRecord(
                id=old.id if old is not None else 0, source=source, source_ref=source_ref, feeder=feeder,
                tripped_device=tripped_device, faulted_elements=tuple(faulted_elements),
                isolated_boundary=tuple(isolated_boundary), customers_interrupted=int(customers_interrupted),
                customers_restored=int(customers_restored), customers_still_off=int(customers_still_off),
                started_ms=int(started_ms if started_ms >= 0 else (old.started_ms if old else now_ms())),
                isolated_ms=int(isolated_ms), restored_ms=int(restored_ms), status=status, notes=tuple(notes),
                updated_ms=now_ms())
            values = (rec.source, rec.source_ref, rec.feeder, rec.tripped_device, json.dumps(rec.faulted_elements),
                      json.dumps(rec.isolated_boundary), rec.customers_interrupted, rec.customers_restored,
                      rec.customers_still_off, rec.started_ms, rec.isolated_ms, rec.restored_ms, rec.status.value,
                      json.dumps(rec.notes), rec.updated_ms)
            try:
                with self.conn() as c:
                    if old is None:
                        cur = c.execute(f"INSERT INTO outage_records ({_COLS}) VALUES "
                                        "(NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                        rec = replace(rec, id=int(cur.lastrowid or 0))
                    else:
                        c.execute("UPDATE outage_records SET source=?, source_ref=?, feeder=?, tripped_device=?, "
                                  "faulted_elements=?, isolated_boundary=?, customers_interrupted=?, "
                                  "customers_restored=?, customers_still_off=?, started_ms=?, isolated_ms=?, "
                                  "restored_ms=?, status=?, notes=?, updated_ms=? WHERE id=?", (*values, old.id))
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: cannot store outage record {source}/{source_ref}: {exc}") from exc
            return rec

    def close_record(self, record_id: int, note: str = "") -> OutageRecord:
        """Close a record (repair done); LookupError when there is no such record."""
        with self._write_lock:
            rec = self.get(record_id)
            notes = rec.notes + ((note,) if note else ())
            try:
                with self.conn() as c:
                    c.execute("UPDATE outage_records SET status=?, notes=?, updated_ms=? WHERE id=?",
                              (OutageStatus.CLOSED.value, json.dumps(notes), now_ms(), record_id))
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: cannot close outage record {record_id}: {exc}") from exc
            return self.get(record_id)

    def get(self, record_id: int) -> OutageRecord:
        rows = self._query(f"SELECT {_COLS} FROM outage_records WHERE id = ?", (record_id,))
        if not rows:
            raise LookupError(f"no outage record {record_id} in {self.path}")
        return rows[0]

    def find(self, source: str, source_ref: str) -> OutageRecord | None:
        return self._find(source, source_ref)

    def list(self, *, status: OutageStatus | str | None = None, feeder: str | None = None,
             limit: int = 1000) -> list[OutageRecord]:
        """Newest first."""
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(OutageStatus(status).value)
        if feeder is not None:
            where.append("feeder = ?")
            args.append(feeder)
        sql = f"SELECT {_COLS} FROM outage_records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._query(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))

    def _find(self, source: str, source_ref: str) -> OutageRecord | None:
        rows = self._query(f"SELECT {_COLS} FROM outage_records WHERE source = ? AND source_ref = ?",
                           (source, source_ref))
        return rows[0] if rows else None

    def _query(self, sql: str, args: tuple) -> list[OutageRecord]:
        try:
            rows = self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read outage records: {exc}") from exc
        return [OutageRecord(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), tuple(json.loads(r[6])), r[7],
                             r[8], r[9], r[10], r[11], r[12], OutageStatus(r[13]), tuple(json.loads(r[14])), r[15])
                for r in rows]
