"""Command audit log: one append-only row per event of a command's life.

The command service records every attempt (refused before the field, or sent) and, as a separate row, the field's
answer, linked by ``request_id``. Rows are never changed or deleted: triggers in the schema refuse UPDATE and DELETE,
so not even a bug elsewhere in the server can rewrite what an operator did.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from models.timebase import now_ms
from scada.errors import ScadaError, StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["AuditEntry", "AuditError", "AuditLog", "AuditOutcome"]


class AuditOutcome(StrEnum):
    REFUSED = "refused"  # refused by a server-side check; never reached the field
    SENT = "sent"  # handed to the protocol adapter
    ANSWERED = "answered"  # the field's answer (or time-out) to a sent request


class AuditError(ScadaError):
    """An audit record that cannot be written as given."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    time_ms: int
    operator: str
    role: str
    point: int  # -1 when the request named no known point
    point_name: str
    action: str  # models.commands.ControlAction value
    value: float
    outcome: AuditOutcome
    reason: str  # refusal reason, or the field status for an answer
    field_status: str  # models.commands.ControlStatus value, "" before the field answered
    field_detail: str
    elapsed_ms: float
    request_id: int  # 0 for a request refused before an id was given


_COLS = (
    "id, time_ms, operator, role, point, point_name, action, value, outcome, reason, field_status, field_detail, "
    "elapsed_ms, request_id"
)


class AuditLog(SqliteStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms INTEGER NOT NULL,
        operator TEXT NOT NULL,
        role TEXT NOT NULL,
        point INTEGER NOT NULL,
        point_name TEXT NOT NULL,
        action TEXT NOT NULL,
        value REAL,                      -- NULL stands for NaN
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL,
        field_status TEXT NOT NULL,
        field_detail TEXT NOT NULL,
        elapsed_ms REAL NOT NULL,
        request_id INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audit_time ON audit(time_ms);
    CREATE INDEX IF NOT EXISTS audit_point_time ON audit(point, time_ms);
    CREATE INDEX IF NOT EXISTS audit_operator_time ON audit(operator, time_ms);
    CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be changed'); END;
    CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be deleted'); END;
    """

    def __init__(self, path: str | Path, *, durable: bool = False) -> None:
        super().__init__(path, durable=durable)

    def record(
        self,
        *,
        operator: str,
        role: str,
        point: int,
        point_name: str,
        action: str,
        value: float,
        outcome: AuditOutcome | str,
        reason: str = "",
        field_status: str = "",
        field_detail: str = "",
        elapsed_ms: float = 0.0,
        request_id: int = 0,
        time_ms: int | None = None,
    ) -> AuditEntry:
        """Append one event; ``time_ms`` defaults to now. Returns the stored entry with its id."""
        try:
            outcome = AuditOutcome(outcome)
        except ValueError:
            raise AuditError(
                f"audit of {action!r} on {point_name or point!r} by {operator!r}: unknown outcome {outcome!r} "
                f"(expected one of {', '.join(AuditOutcome)})"
            ) from None
        entry = AuditEntry(
            id=0, time_ms=now_ms() if time_ms is None else int(time_ms), operator=str(operator),
            role=str(role), point=int(point), point_name=str(point_name), action=str(action), value=float(value),
            outcome=outcome, reason=str(reason), field_status=str(field_status), field_detail=str(field_detail),
            elapsed_ms=float(elapsed_ms), request_id=int(request_id),
        )
        try:
            with self.conn() as c:
                cur = c.execute(
                    f"INSERT INTO audit ({_COLS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.time_ms, entry.operator, entry.role, entry.point, entry.point_name, entry.action,
                        entry.value, entry.outcome.value, entry.reason, entry.field_status, entry.field_detail,
                        entry.elapsed_ms, entry.request_id,
                    ),
                )
                new_id = int(cur.lastrowid or 0)  # always set after an INSERT
        except sqlite3.Error as exc:
            raise StorageError(
                f"{self.path}: cannot record {outcome} {action!r} on {point_name or point!r} by {operator!r}: {exc}"
            ) from exc
        return replace(entry, id=new_id)

    def query(
        self,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        point: int | None = None,
        operator: str | None = None,
        request_id: int | None = None,
        limit: int = 1000,
        newest_first: bool = True,
    ) -> list[AuditEntry]:
        """Entries with time in [start_ms, end_ms), filtered by point/operator/request, newest first by default."""
        if limit <= 0:
            return []
        where: list[str] = []
        args: list[object] = []
        for cond, arg in (
            ("time_ms >= ?", start_ms),
            ("time_ms < ?", end_ms),
            ("point = ?", point),
            ("operator = ?", operator),
            ("request_id = ?", request_id),
        ):
            if arg is not None:
                where.append(cond)
                args.append(arg)
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {_COLS} FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY time_ms {order}, id {order} LIMIT ?"
        args.append(int(limit))
        try:
            got = self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the audit log: {exc}") from exc
        return [_entry(r) for r in got]


def _entry(r: tuple) -> AuditEntry:
    return AuditEntry(
        id=r[0], time_ms=r[1], operator=r[2], role=r[3], point=r[4], point_name=r[5], action=r[6],
        value=math.nan if r[7] is None else r[7], outcome=AuditOutcome(r[8]), reason=r[9], field_status=r[10],
        field_detail=r[11], elapsed_ms=r[12], request_id=r[13],
    )
