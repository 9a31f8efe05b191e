"""Alarm value types and the pure rules that decide when a point is in alarm.

Nothing here touches storage or threads: the limit evaluation works on whole columns of a change set at once (numpy),
so a flood of thousands of rows costs a few vector operations; only rows whose alarm level changed reach Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from models.points import PointDef, Priority, Quality
from scada.errors import ScadaError


class AlarmError(ScadaError):
    """An alarm operation was refused; the message names the alarm and the problem."""


class AlarmState(StrEnum):
    """ISA-18.2-style lifecycle of one alarm record."""

    ACTIVE_UNACKED = "active_unacked"
    ACTIVE_ACKED = "active_acked"
    CLEARED_UNACKED = "cleared_unacked"  # returned to normal before anyone acknowledged it
    CLOSED = "closed"  # normal and acknowledged: history only


class AlarmKind(StrEnum):
    LIMIT = "limit"  # analog value outside lo/hi (lolo/hihi) limits
    STATE = "state"  # status point in a configured alarm state
    SYSTEM = "system"  # raised by the server itself (link loss, adapter restart); point = -1


class AlarmEventKind(StrEnum):
    RAISED = "raised"  # new record, or a CLEARED_UNACKED record reopened by a re-raise
    UPDATED = "updated"  # condition, priority, text or occurrence count changed while active
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"  # returned to normal, still unacknowledged
    CLOSED = "closed"  # left the active list (normal and acknowledged)
    SHELVED = "shelved"
    UNSHELVED = "unshelved"


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    key: str  # condition key: "limit:<point>", "state:<point>:<value>" or "system:<key>"
    point: int  # -1 for system alarms
    point_name: str
    kind: AlarmKind
    condition: str  # "HI", "HIHI", "LO", "LOLO", "state=1", or the system key
    priority: Priority
    text: str
    value: float  # point value at the last transition (NaN for system alarms)
    state: AlarmState
    raised_ms: int  # latest raise (a reopen moves it), UTC epoch ms, field time when the field gave one
    updated_ms: int  # last transition of any kind
    cleared_ms: int | None
    acked_by: str | None
    acked_ms: int | None
    shelved_until_ms: int | None
    shelved_by: str | None
    shelve_reason: str | None
    occurrences: int

    @property
    def is_open(self) -> bool:
        return self.state is not AlarmState.CLOSED

    def shelved_at(self, now_ms: int) -> bool:
        return self.shelved_until_ms is not None and self.shelved_until_ms > now_ms


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    kind: AlarmEventKind
    alarm: Alarm
    time_ms: int


#: Quality bits under which a row says nothing trustworthy about the process: such rows never raise or clear.
#: COMM_LOST is reported once per RTU as a system alarm by the server, never per point (that would flood).
SKIP_QUALITY = int(Quality.INVALID | Quality.COMM_LOST)

#: Limit levels held per point; the sign is the side, the magnitude the severity.
LEVEL_LOLO, LEVEL_LO, LEVEL_NORMAL, LEVEL_HI, LEVEL_HIHI = -2, -1, 0, 1, 2
LEVEL_NAMES: dict[int, str] = {-2: "LOLO", -1: "LO", 1: "HI", 2: "HIHI"}
LEVEL_OF_CONDITION: dict[str, int] = {v: k for k, v in LEVEL_NAMES.items()}
_LEVEL_WORDS: dict[int, str] = {-2: "low-low", -1: "low", 1: "high", 2: "high-high"}

#: Column order of the limit table built by ``limit_table``.
LIMIT_COLUMNS = ("lolo", "lo", "hi", "hihi")


def limit_key(point: int) -> str:
    return f"limit:{point}"


def state_key(point: int, value: int) -> str:
    return f"state:{point}:{value}"


def system_key(key: str) -> str:
    return f"system:{key}"


def limit_table(points: Sequence[PointDef]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point: limits (n, 4) float with NaN for a disabled limit, deadband (n,), and a has-limits mask."""
    n = len(points)
    lim = np.full((n, 4), np.nan)
    db = np.zeros(n)
    has = np.zeros(n, dtype=bool)
    for p in points:
        if p.limits is None:
            continue
        vals = [getattr(p.limits, c) for c in LIMIT_COLUMNS]
        if all(v is None for v in vals):
            continue
        lim[p.id] = [np.nan if v is None else v for v in vals]
        db[p.id] = p.limits.deadband
        has[p.id] = True
    return lim, db, has


def state_table(points: Sequence[PointDef]) -> np.ndarray:
    """Per point and status value 0..3: True where that value is a configured alarm state."""
    table = np.zeros((len(points), 4), dtype=bool)
    for p in points:
        for sa in p.state_alarms:
            table[p.id, sa.value] = True
    return table


def limit_levels(values: np.ndarray, current: np.ndarray, lim: np.ndarray, deadband: np.ndarray) -> np.ndarray:
    """New limit level per row, with hysteresis.

    A value at or beyond a limit enters that level; an active level is held (or steps down to the less severe one on
    the same side) while the value is back inside by less than ``deadband``. Disabled limits are NaN and compare
    False, so they never trigger. ``current`` is the level before these values; all arrays are per row.
    """
    lolo, lo, hi, hihi = lim[:, 0], lim[:, 1], lim[:, 2], lim[:, 3]
    raw = np.zeros(len(values), dtype=np.int8)
    raw[values <= lo] = LEVEL_LO
    raw[values <= lolo] = LEVEL_LOLO
    raw[values >= hi] = LEVEL_HI
    raw[values >= hihi] = LEVEL_HIHI
    hold_hi = np.where(
        (current >= 2) & (values > hihi - deadband), 2, np.where((current >= 1) & (values > hi - deadband), 1, 0)
    )
    hold_lo = np.where(
        (current <= -2) & (values < lolo + deadband), -2, np.where((current <= -1) & (values < lo + deadband), -1, 0)
    )
    new = np.where(raw > 0, np.maximum(raw, hold_hi), np.where(raw < 0, np.minimum(raw, hold_lo), hold_hi + hold_lo))
    return new.astype(np.int8)


def level_priority(limit_priority: Priority, level: int) -> Priority:
    """HI/LO take the point's limit priority; HIHI/LOLO one level more severe (CRITICAL is the ceiling)."""
    if abs(level) >= 2:
        return Priority(max(int(Priority.CRITICAL), int(limit_priority) - 1))
    return limit_priority


def limit_text(point: PointDef, level: int, lim_row: np.ndarray) -> str:
    limit = float(lim_row[{-2: 0, -1: 1, 1: 2, 2: 3}[level]])
    label = point.description or point.name
    units = f" {point.units}" if point.units else ""
    return f"{label}: {_LEVEL_WORDS[level]} (limit {limit:g}{units})"


def is_escalation(old_level: int, new_level: int) -> bool:
    """More severe on the same side, or a jump to the other side: the operator must acknowledge again."""
    return old_level * new_level < 0 or abs(new_level) > abs(old_level)


def rounds(points: np.ndarray) -> list[np.ndarray]:
    """Split row indices into rounds in which every point appears at most once, preserving per-point order.

    Hysteresis and state transitions depend on the previous row of the same point, so rows of one point must be
    seen in sequence; rows of different points can be evaluated together. A coalesced change set is one round.
    """
    n = len(points)
    if n == 0:
        return []
    order = np.argsort(points, kind="stable")
    sp = points[order]
    start = np.ones(n, dtype=bool)
    start[1:] = sp[1:] != sp[:-1]
    if start.all():
        return [np.arange(n)]
    group_start = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start
    return [np.nonzero(rank == r)[0] for r in range(int(rank.max()) + 1)]


def row_times_ms(rows: np.ndarray) -> np.ndarray:
    """Alarm time of each change row: the field's time tag when it gave one, else the server receive time."""
    st = rows["source_time_ms"]
    return np.where(st >= 0, st, rows["recv_time_ms"]).astype(np.int64)
