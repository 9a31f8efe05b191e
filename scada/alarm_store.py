"""SQLite persistence of alarm records: open alarms survive a restart, closed ones form the queryable history."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable

from models.points import Priority
from scada.alarm_rules import Alarm, AlarmKind, AlarmState
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

_COLUMNS = (
    "id", "key", "point", "point_name", "kind", "condition", "priority", "text", "value", "state", "raised_ms",
    "updated_ms", "cleared_ms", "acked_by", "acked_ms", "shelved_until_ms", "shelved_by", "shelve_reason",
    "occurrences",
)
_COLS = ", ".join(_COLUMNS)
_UPSERT = (
    f"INSERT INTO alarms ({_COLS}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in _COLUMNS[1:])}"
)


def _row(a: Alarm) -> tuple[object, ...]:
    # str()/int() so the driver never meets an enum subclass; SQLite would turn a NaN into NULL anyway
    return (
        a.id, a.key, a.point, a.point_name, str(a.kind), a.condition, int(a.priority), a.text,
        None if math.isnan(a.value) else a.value, str(a.state), a.raised_ms, a.updated_ms, a.cleared_ms, a.acked_by,
        a.acked_ms, a.shelved_until_ms, a.shelved_by, a.shelve_reason, a.occurrences,
    )


def _alarm(r: tuple) -> Alarm:
    return Alarm(
        id=r[0], key=r[1], point=r[2], point_name=r[3], kind=AlarmKind(r[4]), condition=r[5], priority=Priority(r[6]),
        text=r[7], value=math.nan if r[8] is None else r[8], state=AlarmState(r[9]), raised_ms=r[10],
        updated_ms=r[11], cleared_ms=r[12], acked_by=r[13], acked_ms=r[14], shelved_until_ms=r[15], shelved_by=r[16],
        shelve_reason=r[17], occurrences=r[18],
    )


class AlarmStore(SqliteStore):
    """One row per alarm record, rewritten on every transition (upsert by id)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS alarms (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        point INTEGER NOT NULL,
        point_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        condition TEXT NOT NULL,
        priority INTEGER NOT NULL,
        text TEXT NOT NULL,
        value REAL,
        state TEXT NOT NULL,
        raised_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        cleared_ms INTEGER,
        acked_by TEXT,
        acked_ms INTEGER,
        shelved_until_ms INTEGER,
        shelved_by TEXT,
        shelve_reason TEXT,
        occurrences INTEGER NOT NULL
    );
    -- one open record per condition: a second one would be a bug in the manager, caught here
    CREATE UNIQUE INDEX IF NOT EXISTS alarms_open_key ON alarms(key) WHERE state != 'closed';
    CREATE INDEX IF NOT EXISTS alarms_state_updated ON alarms(state, updated_ms);
    """

    def save(self, alarms: Iterable[Alarm]) -> None:
        """Write the records in one transaction."""
        rows = [_row(a) for a in alarms]
        if not rows:
            return
        try:
            with self.conn() as c:
                c.executemany(_UPSERT, rows)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot save {len(rows)} alarm record(s): {exc}") from exc

    def load_open(self) -> list[Alarm]:
        return self._query(f"SELECT {_COLS} FROM alarms WHERE state != 'closed' ORDER BY id", ())

    def get(self, alarm_id: int) -> Alarm | None:
        got = self._query(f"SELECT {_COLS} FROM alarms WHERE id = ?", (alarm_id,))
        return got[0] if got else None

    def max_id(self) -> int:
        try:
            (n,) = self.conn().execute("SELECT COALESCE(MAX(id), 0) FROM alarms").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read alarm ids: {exc}") from exc
        return int(n)

    def closed(self, start_ms: int | None, end_ms: int | None, limit: int) -> list[Alarm]:
        """Closed records that were open at some time in [start_ms, end_ms), most recently closed first."""
        sql = f"SELECT {_COLS} FROM alarms WHERE state = 'closed'"
        args: list[object] = []
        if start_ms is not None:
            sql += " AND updated_ms >= ?"  # closed at or after the window start
            args.append(start_ms)
        if end_ms is not None:
            sql += " AND raised_ms < ?"  # raised before the window end
            args.append(end_ms)
        sql += " ORDER BY updated_ms DESC, id DESC LIMIT ?"
        args.append(limit)
        return self._query(sql, tuple(args))

    def count_closed(self) -> int:
        try:
            (n,) = self.conn().execute("SELECT COUNT(*) FROM alarms WHERE state = 'closed'").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot count closed alarms: {exc}") from exc
        return int(n)

    def _query(self, sql: str, args: tuple) -> list[Alarm]:
        try:
            return [_alarm(r) for r in self.conn().execute(sql, args).fetchall()]
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read alarms: {exc}") from exc
