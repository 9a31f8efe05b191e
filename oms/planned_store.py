"""SQLite storage of planned outages (``data_dir/planned.sqlite``): the outages, their affected customers, the
customer notification feed (a sequence number per notification, so a customer-care or SMS system polls "since N")
and the audit of who did what.

Only :mod:`oms.planned` writes here; the service owns the state machine, this module only stores rows.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["AuditEntry", "NotificationKind", "PlannedNotification", "PlannedOrigin", "PlannedOutage",
           "PlannedState", "PlannedStore"]


class PlannedOrigin(StrEnum):
    ASSET_MANAGEMENT = "asset_management"  # maintenance planned by the asset-management system
    FIELD_INTIMATION = "field_intimation"  # the field staff asked for a shutdown


class PlannedState(StrEnum):
    SCHEDULED = "scheduled"  # planned, customers not yet told
    NOTIFIED = "notified"  # the notifications went out
    STARTING = "starting"  # the isolation order runs (a manual step may wait for the crew)
    IN_PROGRESS = "in_progress"  # isolated: the work area is dead, customers are off
    RESTORING = "restoring"  # the restoration order runs
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self not in (PlannedState.COMPLETED, PlannedState.CANCELLED)


class NotificationKind(StrEnum):
    SCHEDULED = "scheduled"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class PlannedOutage:
    id: int
    title: str
    reason: str  # the work to be done: becomes the outage record's cause
    origin: PlannedOrigin
    switches: tuple[str, ...]  # model names of the switches opened to isolate the work area, in opening order
    earths: tuple[str, ...]  # elements earthed after the opening (model names), in order
    start_ms: int  # the announced window, UTC epoch ms
    end_ms: int
    state: PlannedState
    created_by: str
    created_ms: int
    updated_ms: int
    customer_count: int  # customers the isolation de-energises (the list: PlannedStore.customers)
    feeder: str = ""
    basis: str = ""  # the switch states the customers were computed on ("real time (topology v12)")
    isolation_order: int = 0  # switching order ids (0: none yet)
    restoration_order: int = 0
    record_id: int = 0  # the outage record opened when the work area was isolated
    exec_started_ms: int = -1  # Start was called (the isolation order was created)
    isolated_ms: int = -1  # customers lost supply (the first opening step's field time)
    restored_ms: int = -1  # customers got supply back (the last closing step's field time)
    completed_ms: int = -1

    @property
    def ref(self) -> str:
        return f"PO-{self.id}"


@dataclass(frozen=True, slots=True)
class PlannedNotification:
    seq: int
    outage_id: int
    consumer_number: str
    kind: NotificationKind
    start_ms: int
    end_ms: int
    text: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    outage_id: int
    time_ms: int
    operator: str
    action: str  # scheduled, notified, rescheduled, cancelled, start_requested, isolated, ...
    detail: str


_OUTAGE_COLS = ("id", "title", "reason", "origin", "switches", "earths", "start_ms", "end_ms", "state", "created_by",
                "created_ms", "updated_ms", "customer_count", "feeder", "basis", "isolation_order",
                "restoration_order", "record_id", "exec_started_ms", "isolated_ms", "restored_ms", "completed_ms")
_NOTE_COLS = "seq, outage_id, consumer_number, kind, start_ms, end_ms, text, created_ms"


class PlannedStore(SqliteStore):
    """Thread-safe: one write lock; every multi-row change is one transaction."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS planned_outages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL, reason TEXT NOT NULL, origin TEXT NOT NULL,
        switches TEXT NOT NULL, earths TEXT NOT NULL,
        start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, state TEXT NOT NULL,
        created_by TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
        customer_count INTEGER NOT NULL, feeder TEXT NOT NULL, basis TEXT NOT NULL,
        isolation_order INTEGER NOT NULL, restoration_order INTEGER NOT NULL, record_id INTEGER NOT NULL,
        exec_started_ms INTEGER NOT NULL, isolated_ms INTEGER NOT NULL, restored_ms INTEGER NOT NULL,
        completed_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS planned_customers (
        outage_id INTEGER NOT NULL REFERENCES planned_outages (id),
        consumer_number TEXT NOT NULL,
        load_name TEXT NOT NULL,
        PRIMARY KEY (outage_id, consumer_number)
    );
    CREATE INDEX IF NOT EXISTS planned_customers_number ON planned_customers (consumer_number);
    CREATE TABLE IF NOT EXISTS planned_notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        outage_id INTEGER NOT NULL, consumer_number TEXT NOT NULL, kind TEXT NOT NULL,
        start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, text TEXT NOT NULL, created_ms INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS planned_notifications_customer ON planned_notifications (consumer_number);
    CREATE TABLE IF NOT EXISTS planned_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        outage_id INTEGER NOT NULL, time_ms INTEGER NOT NULL, operator TEXT NOT NULL, action TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        super().__init__(path, durable=durable)
        self.write_lock = threading.RLock()

    # ------------------------------------------------------------------------------------------ writes
    def save(self, outage: PlannedOutage, *, customers: Sequence[tuple[str, str]] | None = None,
             notifications: Sequence[PlannedNotification] = (), audit: Sequence[AuditEntry] = ()) -> PlannedOutage:
        """Insert (id 0) or update ``outage``; ``customers`` (consumer number, load name) replace the stored list
        when given; the notifications (their outage id filled in) and audit entries are added in the same
        transaction. Returns the outage as stored."""
        values = (outage.title, outage.reason, outage.origin.value, json.dumps(outage.switches),
                  json.dumps(outage.earths), outage.start_ms, outage.end_ms, outage.state.value, outage.created_by,
                  outage.created_ms, outage.updated_ms, outage.customer_count, outage.feeder, outage.basis,
                  outage.isolation_order, outage.restoration_order, outage.record_id, outage.exec_started_ms,
                  outage.isolated_ms, outage.restored_ms, outage.completed_ms)
        names = _OUTAGE_COLS[1:]
        try:
            with self.write_lock, self.conn() as c:
                if outage.id == 0:
                    cur = c.execute(f"INSERT INTO planned_outages ({', '.join(names)}) VALUES "
                                    f"({', '.join('?' * len(names))})", values)
                    oid = int(cur.lastrowid or 0)
                else:
                    oid = outage.id
                    cur = c.execute(f"UPDATE planned_outages SET {', '.join(n + '=?' for n in names)} WHERE id=?",
                                    (*values, oid))
                    if cur.rowcount != 1:
                        raise LookupError(f"no planned outage {oid} in {self.path}")
                if customers is not None:
                    c.execute("DELETE FROM planned_customers WHERE outage_id = ?", (oid,))
                    c.executemany("INSERT INTO planned_customers (outage_id, consumer_number, load_name) "
                                  "VALUES (?, ?, ?)", [(oid, num, load) for num, load in customers])
                c.executemany("INSERT INTO planned_notifications (outage_id, consumer_number, kind, start_ms, "
                              "end_ms, text, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [(oid, n.consumer_number, n.kind.value, n.start_ms, n.end_ms,
                                n.text.replace("{ref}", f"PO-{oid}"), n.created_ms) for n in notifications])
                c.executemany("INSERT INTO planned_audit (outage_id, time_ms, operator, action, detail) "
                              "VALUES (?, ?, ?, ?, ?)", [(oid, a.time_ms, a.operator, a.action, a.detail)
                                                         for a in audit])
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store planned outage {outage.id or outage.title!r}: "
                               f"{exc}") from exc
        return self.get(oid)

    # ------------------------------------------------------------------------------------------ reads
    def get(self, outage_id: int) -> PlannedOutage:
        rows = self._outages("WHERE id = ?", (int(outage_id),))
        if not rows:
            raise LookupError(f"no planned outage {outage_id} in {self.path}")
        return rows[0]

    def list(self, *, state: PlannedState | None = None, active_only: bool = False,
             since_ms: int | None = None) -> list[PlannedOutage]:
        """By scheduled start; ``since_ms``: outages whose window ends at or after it."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(PlannedState(state).value)
        if active_only:
            where.append(f"state NOT IN ('{PlannedState.COMPLETED.value}', '{PlannedState.CANCELLED.value}')")
        if since_ms is not None:
            where.append("end_ms >= ?")
            args.append(int(since_ms))
        return self._outages(("WHERE " + " AND ".join(where)) if where else "", tuple(args))

    def executing(self) -> list[PlannedOutage]:
        """Outages whose switching began (Start was called), cancelled ones aside."""
        return self._outages("WHERE exec_started_ms >= 0 AND state != ?", (PlannedState.CANCELLED.value,))

    def customers(self, outage_id: int) -> tuple[str, ...]:
        rows = self._read("SELECT consumer_number FROM planned_customers WHERE outage_id = ? ORDER BY consumer_number",
                          (int(outage_id),))
        return tuple(r[0] for r in rows)

    def outages_of_customer(self, consumer_number: str) -> list[PlannedOutage]:
        ids = [r[0] for r in self._read("SELECT outage_id FROM planned_customers WHERE consumer_number = ?",
                                        (consumer_number,))]
        if not ids:
            return []
        return self._outages(f"WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids))

    def notifications(self, since_seq: int = 0, *, limit: int = 1000,
                      consumer_number: str | None = None) -> list[PlannedNotification]:
        """Notifications with a sequence number above ``since_seq``, oldest first."""
        sql = f"SELECT {_NOTE_COLS} FROM planned_notifications WHERE seq > ?"
        args: list[object] = [int(since_seq)]
        if consumer_number is not None:
            sql += " AND consumer_number = ?"
            args.append(consumer_number)
        rows = self._read(sql + " ORDER BY seq LIMIT ?", (*args, int(limit)))
        return [PlannedNotification(r[0], r[1], r[2], NotificationKind(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def last_seq(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM planned_notifications", ())[0][0])

    def audit(self, outage_id: int) -> list[AuditEntry]:
        rows = self._read("SELECT outage_id, time_ms, operator, action, detail FROM planned_audit WHERE outage_id = ? "
                          "ORDER BY id", (int(outage_id),))
        return [AuditEntry(*r) for r in rows]

    def _outages(self, where: str, args: tuple) -> list[PlannedOutage]:
        rows = self._read(f"SELECT {', '.join(_OUTAGE_COLS)} FROM planned_outages {where} ORDER BY start_ms, id", args)
        return [PlannedOutage(r[0], r[1], r[2], PlannedOrigin(r[3]), tuple(json.loads(r[4])), tuple(json.loads(r[5])),
                              r[6], r[7], PlannedState(r[8]), r[9], r[10], r[11], r[12], r[13], r[14], r[15], r[16],
                              r[17], r[18], r[19], r[20], r[21]) for r in rows]

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read planned outages: {exc}") from exc
