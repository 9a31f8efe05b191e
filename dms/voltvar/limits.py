"""Daily operation limits of tap changers and capacitor banks, counted from executed Volt/VAR actions.

Tap changer contacts and capacitor switches wear with every operation, so utilities cap them per day (typical:
20-40 tap steps per OLTC or regulator, 2-6 switchings per capacitor bank). A tap step is one operation (a set-point
three steps away moves the changer three times); each capacitor section switched is one. Counts are kept per local
calendar day in SQLite (``voltvar.sqlite`` in the data dir), with a log of every executed action, so a restart of the
server does not reset them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dms.voltvar.engine import ControlKind, VoltVarAction
from dms.voltvar.errors import DailyLimitError, VoltVarError
from models.network import NetworkModel
from scada.sqlite_store import SqliteStore

__all__ = ["CounterEntry", "DailyLimits", "OperationCounter"]


@dataclass(frozen=True, slots=True)
class DailyLimits:
    max_tap_operations: int = 30  # per tap changer per day
    max_capacitor_switchings: int = 4  # per capacitor bank per day

    def __post_init__(self) -> None:
        if self.max_tap_operations < 0 or self.max_capacitor_switchings < 0:
            raise VoltVarError(f"daily limits must be >= 0 (taps {self.max_tap_operations}, "
                               f"capacitors {self.max_capacitor_switchings})")

    def of(self, kind: ControlKind) -> int:
        return self.max_tap_operations if kind is ControlKind.TAP else self.max_capacitor_switchings


@dataclass(frozen=True, slots=True)
class CounterEntry:
    element: str
    kind: ControlKind
    day: str  # ISO date
    used: int
    limit: int

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)


class OperationCounter(SqliteStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS operations (
        day TEXT NOT NULL, element TEXT NOT NULL, kind TEXT NOT NULL, used INTEGER NOT NULL,
        PRIMARY KEY (day, element));
    CREATE TABLE IF NOT EXISTS actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time_s REAL NOT NULL, day TEXT NOT NULL, element TEXT NOT NULL,
        kind TEXT NOT NULL, before REAL NOT NULL, after REAL NOT NULL, operations INTEGER NOT NULL,
        operator TEXT NOT NULL);
    """

    def __init__(self, path: str | Path, limits: DailyLimits = DailyLimits(), *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(path)
        self.limits = limits
        self._clock = clock

    def day(self) -> str:
        """Today's local date: the operating day the limits count."""
        return dt.datetime.fromtimestamp(self._clock()).date().isoformat()

    def used(self, element: str, day: str | None = None) -> int:
        row = self.conn().execute("SELECT used FROM operations WHERE day = ? AND element = ?",
                                  (day or self.day(), element)).fetchone()
        return int(row[0]) if row else 0

    def left(self, element: str, kind: ControlKind, day: str | None = None) -> int:
        return max(self.limits.of(kind) - self.used(element, day), 0)

    def operations_left(self, model: NetworkModel) -> dict[str, int]:
        """Each tap changer and capacitor of ``model`` -> operations left today (for ``VoltVarOptions``)."""
        today = self.day()
        used = dict(self.conn().execute("SELECT element, used FROM operations WHERE day = ?", (today,)).fetchall())
        out = {t.name: self.limits.max_tap_operations - int(used.get(t.name, 0)) for t in model.tap_changers}
        out |= {c.name: self.limits.max_capacitor_switchings - int(used.get(c.name, 0)) for c in model.capacitors}
        return {k: max(v, 0) for k, v in out.items()}

    def entries(self, model: NetworkModel) -> tuple[CounterEntry, ...]:
        today = self.day()
        items = [(t.name, ControlKind.TAP) for t in model.tap_changers]
        items += [(c.name, ControlKind.CAPACITOR) for c in model.capacitors]
        return tuple(CounterEntry(name, kind, today, self.used(name, today), self.limits.of(kind))
                     for name, kind in items)

    def check(self, action: VoltVarAction) -> None:
        """Raise DailyLimitError when ``action`` needs more operations than are left today."""
        left = self.left(action.element, action.kind)
        if action.operations > left:
            limit = self.limits.of(action.kind)
            raise DailyLimitError(
                f"{action.kind.value} {action.element!r}: {action.operations} operation(s) needed, {left} of "
                f"{limit} left today ({self.day()})")

    def record(self, action: VoltVarAction, operator: str) -> None:
        """Count an executed action (one transaction: the counter and the log line)."""
        now = self._clock()
        today = dt.datetime.fromtimestamp(now).date().isoformat()
        try:
            with self.conn() as conn:
                conn.execute(
                    "INSERT INTO operations (day, element, kind, used) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (day, element) DO UPDATE SET used = used + excluded.used",
                    (today, action.element, action.kind.value, action.operations))
                conn.execute("INSERT INTO actions (time_s, day, element, kind, before, after, operations, operator) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (now, today, action.element, action.kind.value, action.before, action.after,
                              action.operations, operator))
        except sqlite3.Error as exc:
            raise VoltVarError(f"{self.path}: cannot record the operation of {action.element!r}: {exc}") from exc
