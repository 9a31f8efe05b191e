"""Outage records: one per outage, opened by whoever detects it (FLISR now; AMI last-gasp and calls with #6) and
updated as it is isolated and restored.

A record is keyed by ``(source, source_ref)`` (``("flisr", "run-12")``), so a source updates its own record with
``open_or_update`` however often it reports. Status: ``open`` while customers are off and nothing was restored yet,
``restored`` once the restoration finished (customers in the faulted section may still be off: ``customers_still_off``),
``closed`` when the repair is done (the OMS closes it; FLISR never does). Stored in SQLite (WAL), so records outlive a
restart of the server.

Besides the source's own fields a record carries its lifecycle, written by the OMS (``set_lifecycle``): the stage
(predicted -> confirmed -> crew assigned -> en route -> on site -> restored -> closed), the crew, the estimated time
of restoration, the cause, whether it was planned, and its restoration steps (customers given back at each time: a
partial restoration is a step), which the reliability indices read. A source that also owns the lifecycle (the OMS)
passes its lifecycle change with the update (``open_or_update(..., lifecycle=LifecycleChange(...))``): one transaction.

One trip seen by two applications is one record: FLISR (source ``flisr``) and the OMS's SCADA-confirmed prediction
(source ``scada``) of the same device within ``MERGE_WINDOW_MS`` are linked, whichever writes first. The FLISR record
is the canonical one (it knows the switching); the other gets ``merged_into`` its id, lifecycle updates addressed to
it land on the canonical record, and the indices skip it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from models.timebase import now_ms
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["MERGE_SOURCES", "MERGE_WINDOW_MS", "LifecycleChange", "LifecycleRule", "OutageRecord", "OutageRecordStore",
           "OutageStatus", "RecordStage", "RestorationStep"]


class OutageStatus(StrEnum):
    OPEN = "open"
    RESTORED = "restored"
    CLOSED = "closed"


class RecordStage(StrEnum):
    """Where the outage is in its lifecycle (``status`` says only open/restored/closed)."""

    PREDICTED = "predicted"
    CONFIRMED = "confirmed"  # SCADA (or a meter ping, a crew) confirmed the device open
    CREW_ASSIGNED = "crew_assigned"
    EN_ROUTE = "en_route"
    ON_SITE = "on_site"
    RESTORED = "restored"
    CLOSED = "closed"


class LifecycleRule(StrEnum):
    """When a ``LifecycleChange`` applies."""

    ALWAYS = "always"
    IF_LATER_STAGE = "if_later_stage"  # only when its stage is later than the record's (a crew's stage is kept)


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    """A move of a record (its canonical one, when merged) along its lifecycle; None keeps the stored value, a note
    is appended to the log. A closed record keeps its stage."""

    stage: RecordStage | None = None
    etr_ms: int | None = None
    crew: str | None = None
    cause: str | None = None
    note: str = ""
    rule: LifecycleRule = LifecycleRule.ALWAYS

    def __post_init__(self) -> None:
        if self.rule is LifecycleRule.IF_LATER_STAGE and self.stage is None:
            raise ValueError("lifecycle change: rule if_later_stage needs a stage")


#: Sources whose records of one trip are merged (see the module text), and how close their starts must be.
MERGE_SOURCES = ("flisr", "scada")
MERGE_WINDOW_MS = 120_000


@dataclass(frozen=True, slots=True)
class RestorationStep:
    """``customers`` got supply back at ``time_ms`` (UTC epoch ms)."""

    time_ms: int
    customers: int
    note: str = ""


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
    planned: bool = False
    cause: str = ""
    stage: RecordStage = RecordStage.PREDICTED
    etr_ms: int = -1  # estimated restoration, UTC epoch ms; -1 unknown
    crew: str = ""
    steps: tuple[RestorationStep, ...] = field(default=())
    closed_ms: int = -1
    merged_into: int = 0  # the canonical record of the same trip (0: this one is canonical)
    log: tuple[str, ...] = field(default=())  # lifecycle entries (crew, cause, closing); ``notes``: the source's


_BASE_COLS = ("id, source, source_ref, feeder, tripped_device, faulted_elements, isolated_boundary, "
              "customers_interrupted, customers_restored, customers_still_off, started_ms, isolated_ms, restored_ms, "
              "status, notes, updated_ms")
# columns added after the first release: (name, SQL type and default) - an older file gets them at open
_LIFECYCLE = (("planned", "INTEGER NOT NULL DEFAULT 0"), ("cause", "TEXT NOT NULL DEFAULT ''"),
              ("stage", "TEXT NOT NULL DEFAULT 'predicted'"), ("etr_ms", "INTEGER NOT NULL DEFAULT -1"),
              ("crew", "TEXT NOT NULL DEFAULT ''"), ("steps", "TEXT NOT NULL DEFAULT '[]'"),
              ("closed_ms", "INTEGER NOT NULL DEFAULT -1"), ("merged_into", "INTEGER NOT NULL DEFAULT 0"),
              ("log", "TEXT NOT NULL DEFAULT '[]'"))
_COLS = _BASE_COLS + ", " + ", ".join(name for name, _ in _LIFECYCLE)


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
        self._write_lock = threading.RLock()
        try:
            with self.conn() as c:
                have = {row[1] for row in c.execute("PRAGMA table_info(outage_records)")}
                for name, decl in _LIFECYCLE:
                    if name not in have:
                        c.execute(f"ALTER TABLE outage_records ADD COLUMN {name} {decl}")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot add the lifecycle columns to outage_records: {exc}") from exc

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
        planned: bool | None = None,
        cause: str | None = None,
        stage: RecordStage | str | None = None,
        steps: tuple[RestorationStep, ...] | None = None,
        merged_into: int | None = None,
        lifecycle: LifecycleChange | None = None,
    ) -> OutageRecord:
        """Open the record of ``(source, source_ref)`` or replace its source fields; returns it as stored. The
        lifecycle fields given as None keep their stored values (a new record: not planned, no cause, stage
        predicted, no steps). A closed record stays closed (a late update from its source does not reopen it).

        Then, in the same transaction: ``merged_into`` folds the record into another one like ``link`` (0 unfolds
        it, None keeps it), and ``lifecycle`` is applied like ``set_lifecycle`` (to the canonical record). An update
        of an unmerged record is one row write."""
        if not source or not source_ref:
            raise ValueError(f"outage record: source and source_ref must not be empty (got {source!r}, "
                             f"{source_ref!r})")
        where = f"outage record {source}/{source_ref}"
        status = _enum(OutageStatus, status, where, "status")
        new_stage = None if stage is None else _enum(RecordStage, stage, where, "stage")
        with self._write_lock, self._transaction(where):
            old = self._find(source, source_ref)
            if old is not None and old.status is OutageStatus.CLOSED:
                status = OutageStatus.CLOSED
            base = old if old is not None else OutageRecord(0, source, source_ref, feeder, tripped_device, (), (), 0,
                                                            0, 0, -1)
            rec = replace(
                base, feeder=feeder, tripped_device=tripped_device, faulted_elements=tuple(faulted_elements),
                isolated_boundary=tuple(isolated_boundary), customers_interrupted=int(customers_interrupted),
                customers_restored=int(customers_restored), customers_still_off=int(customers_still_off),
                started_ms=int(started_ms if started_ms >= 0 else (old.started_ms if old else now_ms())),
                isolated_ms=int(isolated_ms), restored_ms=int(restored_ms), status=status, notes=tuple(notes),
                updated_ms=now_ms(), planned=base.planned if planned is None else bool(planned),
                cause=base.cause if cause is None else cause, steps=base.steps if steps is None else tuple(steps))
            if status is OutageStatus.CLOSED:
                rec = replace(rec, stage=RecordStage.CLOSED)
            elif new_stage is not None:
                rec = replace(rec, stage=new_stage)
            pending = old is not None  # an update is written once, with the link and lifecycle below
            if old is None:
                rec = self._write(rec, insert=True)  # the id is needed from here on
                if source in MERGE_SOURCES:
                    rec = self._link_same_trip(rec)
            if merged_into is not None:
                rec = replace(rec, merged_into=self._fold_target(rec, merged_into), updated_ms=now_ms())
                pending = True
            if lifecycle is not None and not rec.merged_into and _applies(rec, lifecycle):
                rec, pending = _moved(rec, lifecycle), True
            if pending:
                rec = self._write(rec, insert=False)
            if lifecycle is not None and rec.merged_into:  # it lands on the canonical record
                canonical = self.canonical(rec.merged_into)
                if _applies(canonical, lifecycle):
                    self._write(_moved(canonical, lifecycle), insert=False)
            return rec

    def set_lifecycle(self, record_id: int, *, stage: RecordStage | str | None = None, etr_ms: int | None = None,
                      crew: str | None = None, cause: str | None = None, note: str = "") -> OutageRecord:
        """Move a record along its lifecycle (the canonical record when ``record_id`` was merged into another);
        LookupError when there is no such record. A closed record keeps its stage."""
        with self._write_lock, self._transaction(f"outage record {record_id}"):
            rec = self.canonical(record_id)
            new_stage = None if stage is None else _enum(RecordStage, stage, f"outage record {rec.id}", "stage")
            change = LifecycleChange(new_stage, None if etr_ms is None else int(etr_ms), crew, cause, note)
            return self._write(_moved(rec, change), insert=False)

    def close_record(self, record_id: int, note: str = "", *, closed_ms: int | None = None,
                     cause: str | None = None) -> OutageRecord:
        """Close a record (repair done; the canonical one when ``record_id`` was merged); LookupError when there is
        no such record, ValueError when it closes before it started."""
        with self._write_lock, self._transaction(f"outage record {record_id}"):
            rec = self.canonical(record_id)
            when = now_ms() if closed_ms is None or closed_ms < 0 else int(closed_ms)
            if when < rec.started_ms:
                raise ValueError(f"outage record {rec.id}: closing time {when} is before its start {rec.started_ms}")
            if rec.status is OutageStatus.CLOSED:
                return rec
            rec = replace(rec, status=OutageStatus.CLOSED, stage=RecordStage.CLOSED, closed_ms=when,
                          cause=rec.cause if cause is None else cause, log=rec.log + ((note,) if note else ()),
                          updated_ms=now_ms())
            return self._write(rec, insert=False)

    def link(self, record_id: int, into_id: int) -> OutageRecord:
        """Fold a record into another one (its customers are counted there), or unfold it (``into_id`` 0)."""
        with self._write_lock, self._transaction(f"outage record {record_id}"):
            rec = self.get(record_id)
            return self._write(replace(rec, merged_into=self._fold_target(rec, into_id), updated_ms=now_ms()),
                               insert=False)

    def canonical(self, record_id: int) -> OutageRecord:
        """The record itself, or the one it was merged into."""
        rec = self.get(record_id)
        for _ in range(8):  # a chain is at most one link long; bounded against a damaged file
            if not rec.merged_into:
                break
            rec = self.get(rec.merged_into)
        return rec

    def get(self, record_id: int) -> OutageRecord:
        rows = self._query(f"SELECT {_COLS} FROM outage_records WHERE id = ?", (record_id,))
        if not rows:
            raise LookupError(f"no outage record {record_id} in {self.path}")
        return rows[0]

    def find(self, source: str, source_ref: str) -> OutageRecord | None:
        return self._find(source, source_ref)

    def list(self, *, status: OutageStatus | str | None = None, feeder: str | None = None, limit: int = 1000,
             include_merged: bool = True, since_ms: int | None = None) -> list[OutageRecord]:
        """Newest first; ``since_ms``: records started at or after it."""
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(OutageStatus(status).value)
        if feeder is not None:
            where.append("feeder = ?")
            args.append(feeder)
        if not include_merged:
            where.append("merged_into = 0")
        if since_ms is not None:
            where.append("started_ms >= ?")
            args.append(int(since_ms))
        sql = f"SELECT {_COLS} FROM outage_records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._query(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))

    # ------------------------------------------------------------------------------------------ internals
    @contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """One transaction around a read-modify-write (``_write`` itself does not commit); rolled back on any
        error. Reads inside it go through the same per-thread connection, so they see its writes."""
        conn = self.conn()
        try:
            with conn:
                yield
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store {what}: {exc}") from exc

    def _fold_target(self, rec: OutageRecord, into_id: int) -> int:
        """The canonical record ``rec`` folds into (0: unfold); ValueError for itself."""
        if not into_id:
            return 0
        target = self.canonical(into_id)
        if target.id == rec.id:
            raise ValueError(f"outage record {rec.id}: cannot be merged into itself")
        return target.id

    def _link_same_trip(self, rec: OutageRecord) -> OutageRecord:
        """Merge a new flisr/scada record with the other source's open record of the same device and trip."""
        other = next(s for s in MERGE_SOURCES if s != rec.source)
        # a closed mate too: the OMS may have seen the breaker close again before FLISR first wrote its run
        rows = self._query(f"SELECT {_COLS} FROM outage_records WHERE source = ? AND tripped_device = ? AND "
                           "merged_into = 0 AND abs(started_ms - ?) <= ? ORDER BY id DESC LIMIT 1",
                           (other, rec.tripped_device, rec.started_ms, MERGE_WINDOW_MS))
        if not rows:
            return rec
        mate = rows[0]
        flisr, scada = (rec, mate) if rec.source == "flisr" else (mate, rec)
        note = f"same trip as {scada.source} record {scada.id} ({scada.source_ref}): merged into this record"
        # the OMS's lifecycle so far (crew, ETR, cause) moves to the canonical record
        flisr = replace(flisr, stage=_later(flisr.stage, scada.stage), etr_ms=max(flisr.etr_ms, scada.etr_ms),
                        crew=flisr.crew or scada.crew, cause=flisr.cause or scada.cause,
                        log=flisr.log + scada.log + (note,), updated_ms=now_ms())
        self._write(flisr, insert=False)
        merged = self._write(replace(scada, merged_into=flisr.id, updated_ms=now_ms()), insert=False)
        return flisr if rec.source == "flisr" else merged

    def _write(self, rec: OutageRecord, *, insert: bool) -> OutageRecord:
        values = (rec.source, rec.source_ref, rec.feeder, rec.tripped_device, json.dumps(rec.faulted_elements),
                  json.dumps(rec.isolated_boundary), rec.customers_interrupted, rec.customers_restored,
                  rec.customers_still_off, rec.started_ms, rec.isolated_ms, rec.restored_ms, rec.status.value,
                  json.dumps(rec.notes), rec.updated_ms, int(rec.planned), rec.cause, rec.stage.value, rec.etr_ms,
                  rec.crew, json.dumps([[s.time_ms, s.customers, s.note] for s in rec.steps]), rec.closed_ms,
                  rec.merged_into, json.dumps(rec.log))
        names = _COLS.split(", ")[1:]
        try:  # inside the caller's ``_transaction``: it commits
            c = self.conn()
            if insert:
                cur = c.execute(f"INSERT INTO outage_records ({', '.join(names)}) VALUES "
                                f"({', '.join('?' * len(names))})", values)
                return replace(rec, id=int(cur.lastrowid or 0))
            c.execute(f"UPDATE outage_records SET {', '.join(n + '=?' for n in names)} WHERE id=?",
                      (*values, rec.id))
            return rec
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store outage record {rec.source}/{rec.source_ref}: "
                               f"{exc}") from exc

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
                             r[8], r[9], r[10], r[11], r[12], OutageStatus(r[13]), tuple(json.loads(r[14])), r[15],
                             bool(r[16]), r[17], RecordStage(r[18]), r[19], r[20],
                             tuple(RestorationStep(int(t), int(n), str(note)) for t, n, note in json.loads(r[21])),
                             r[22], r[23], tuple(json.loads(r[24])))
                for r in rows]


_STAGE_ORDER = {s: i for i, s in enumerate(RecordStage)}


def _later(a: RecordStage, b: RecordStage) -> RecordStage:
    return a if _STAGE_ORDER[a] >= _STAGE_ORDER[b] else b


def _applies(rec: OutageRecord, change: LifecycleChange) -> bool:
    return change.rule is LifecycleRule.ALWAYS or (
        change.stage is not None and _STAGE_ORDER[change.stage] > _STAGE_ORDER[rec.stage])


def _moved(rec: OutageRecord, change: LifecycleChange) -> OutageRecord:
    """``rec`` after ``change`` (whatever its rule: see ``_applies``)."""
    if rec.status is OutageStatus.CLOSED:
        stage = RecordStage.CLOSED
    else:
        stage = rec.stage if change.stage is None else change.stage
    return replace(rec, stage=stage, etr_ms=rec.etr_ms if change.etr_ms is None else int(change.etr_ms),
                   crew=rec.crew if change.crew is None else change.crew,
                   cause=rec.cause if change.cause is None else change.cause,
                   log=rec.log + ((change.note,) if change.note else ()), updated_ms=now_ms())


def _enum(cls: type, value: object, where: str, what: str):  # noqa: ANN202 - returns a member of cls
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"{where}: unknown {what} {value!r} (expected one of "
                         f"{', '.join(m.value for m in cls)})") from None
