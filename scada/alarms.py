"""The alarm manager: RTDB change sets in, alarm records with an ISA-18.2-style lifecycle out.

Lifecycle of one condition (point + condition key):
ACTIVE_UNACKED -(ack)-> ACTIVE_ACKED -(return to normal)-> CLOSED, and
ACTIVE_UNACKED -(return to normal)-> CLEARED_UNACKED -(ack)-> CLOSED; a re-raise of a CLEARED_UNACKED record reopens
it and counts an occurrence; a re-raise after CLOSED starts a new record.

Open records live in memory (the truth while running) and every transition is written to SQLite before any
subscriber hears of it; one change set is one transaction, however many alarms it raises.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from models.config import StationConfig
from models.points import Priority
from models.timebase import now_ms
from models.updates import Cause
from scada.alarm_rules import (
    LEVEL_NAMES,
    LEVEL_OF_CONDITION,
    SKIP_QUALITY,
    Alarm,
    AlarmError,
    AlarmEvent,
    AlarmEventKind,
    AlarmKind,
    AlarmState,
    is_escalation,
    level_priority,
    limit_key,
    limit_levels,
    limit_table,
    limit_text,
    rounds,
    row_times_ms,
    state_key,
    state_table,
    system_key,
)
from scada.alarm_store import AlarmStore
from scada.changes import ChangeSet, Subscription
from scada.errors import ScadaError

__all__ = [
    "Alarm",
    "AlarmError",
    "AlarmEvent",
    "AlarmEventKind",
    "AlarmKind",
    "AlarmManager",
    "AlarmState",
    "AlarmSubscription",
]

log = logging.getLogger(__name__)

_TICK_PERIOD_S = 1.0
_POLL_S = 0.5


class AlarmSubscription:
    """A bounded queue of alarm events for one client; when full the oldest event is dropped and counted."""

    def __init__(self, max_pending: int, on_close: Callable[[AlarmSubscription], None]) -> None:
        if max_pending < 1:
            raise AlarmError(f"alarm subscription: max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._q: deque[AlarmEvent] = deque()
        self._cv = threading.Condition()
        self._on_close = on_close
        self.drops = 0
        self.closed = False

    def offer(self, events: Sequence[AlarmEvent]) -> None:
        """Called by the manager; never blocks beyond a short lock."""
        with self._cv:
            if self.closed:
                return
            self._q.extend(events)
            over = len(self._q) - self.max_pending
            if over > 0:
                for _ in range(over):
                    self._q.popleft()
                self.drops += over
            self._cv.notify()

    def get(self, timeout_s: float | None = None) -> AlarmEvent | None:
        """Next event, or None on timeout or once closed and drained."""
        with self._cv:
            if not self._q and not self.closed:
                self._cv.wait(timeout_s)
            return self._q.popleft() if self._q else None

    def close(self) -> None:
        with self._cv:
            if self.closed:
                return
            self.closed = True
            self._cv.notify_all()
        self._on_close(self)

    @property
    def pending(self) -> int:
        return len(self._q)


@dataclass(slots=True)
class _Batch:
    """Transitions of one operation: written in one transaction, then published."""

    dirty: dict[int, Alarm] = field(default_factory=dict)
    events: list[AlarmEvent] = field(default_factory=list)


class AlarmManager:
    """Evaluates change sets into alarms, and serves acknowledge/shelve/list to operators. Thread-safe."""

    def __init__(
        self, config: StationConfig, db_path: str | Path, *, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.config = config
        self._clock = clock_ms or now_ms
        self._points = config.points
        self._lim, self._db, self._has_limits = limit_table(config.points)
        self._states = state_table(config.points)
        self._has_states = self._states.any(axis=1)
        self._state_defs = {(p.id, sa.value): sa for p in config.points for sa in p.state_alarms}
        n = len(config.points)
        self._level = np.zeros(n, dtype=np.int8)  # current limit level per point (see alarm_rules.LEVEL_*)
        self._cur_state = np.full(n, -1, dtype=np.int8)  # status value currently in alarm per point, -1 none
        self._lock = threading.RLock()
        self._subs: list[AlarmSubscription] = []
        self._unsaved: dict[int, Alarm] = {}  # transitions a failed write left behind; retried with the next one
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._input: Subscription | None = None
        self.store = AlarmStore(db_path)
        self._open: dict[int, Alarm] = {}
        self._by_key: dict[str, int] = {}
        self._shelved: set[int] = set()  # open alarms with a shelving time, so expiry checks skip the rest
        for a in self.store.load_open():
            self._index(a)
            self._restore_point_state(a)
        self._next_id = self.store.max_id() + 1

    # ------------------------------------------------------------------------------------------ processing
    def process(self, cs: ChangeSet) -> int:
        """Evaluate one change set; returns the number of events emitted."""
        rows = cs.rows
        if cs.coalesced_drops:
            # intermediate values were merged away upstream: a short excursion may have gone unseen
            log.warning("alarm input lagged: %d change rows coalesced before evaluation", cs.coalesced_drops)
        if not len(rows):
            return 0
        p = rows["point"]
        ok = (p >= 0) & (p < len(self._points)) & ((rows["quality"] & SKIP_QUALITY) == 0) & np.isfinite(rows["value"])
        rows = rows[ok]
        if not len(rows):
            return 0
        p = rows["point"]
        lim_rows = self._has_limits[p]
        st_rows = self._has_states[p]
        if not (lim_rows.any() or st_rows.any()):
            return 0
        with self._lock:
            batch = _Batch()
            if lim_rows.any():
                self._process_limits(rows[lim_rows], batch)
            if st_rows.any():
                self._process_states(rows[st_rows], batch)
            return self._commit(batch)

    def _process_limits(self, rows: np.ndarray, batch: _Batch) -> None:
        for idx in rounds(rows["point"]):
            r = rows[idx]
            pts = r["point"]
            cur = self._level[pts]
            new = limit_levels(r["value"], cur, self._lim[pts], self._db[pts])
            ch = np.nonzero(new != cur)[0]
            if not len(ch):
                continue
            self._level[pts[ch]] = new[ch]
            times = row_times_ms(r[ch]).tolist()
            for pt, lv, old, val, t in zip(
                pts[ch].tolist(), new[ch].tolist(), cur[ch].tolist(), r["value"][ch].tolist(), times, strict=True
            ):
                key = limit_key(pt)
                if lv == 0:
                    self._return_to_normal(key, val, t, batch)
                    continue
                point = self._points[pt]
                self._raise(
                    key, pt, AlarmKind.LIMIT, LEVEL_NAMES[lv], level_priority(point.limit_priority, lv),
                    limit_text(point, lv, self._lim[pt]), val, t, batch, rearm=is_escalation(old, lv),
                )

    def _process_states(self, rows: np.ndarray, batch: _Batch) -> None:
        for idx in rounds(rows["point"]):
            r = rows[idx]
            pts = r["point"]
            v = r["value"]
            vi = np.clip(np.rint(v), 0, 3).astype(np.int8)
            in_alarm = self._states[pts, vi] & (v == vi)  # a non-integral value is never an alarm state
            new = np.where(in_alarm, vi, -1).astype(np.int8)
            cur = self._cur_state[pts]
            # a spontaneous report of the same alarm state (new time tag) is a fresh operation, e.g. trip-reclose-trip
            again = in_alarm & (new == cur) & (r["cause"] == Cause.SPONTANEOUS) & (v == r["prev_value"])
            ch = np.nonzero((new != cur) | again)[0]
            if not len(ch):
                continue
            self._cur_state[pts[ch]] = new[ch]
            times = row_times_ms(r[ch]).tolist()
            for pt, nv, old, val, cause, t, re in zip(
                pts[ch].tolist(), new[ch].tolist(), cur[ch].tolist(), v[ch].tolist(), r["cause"][ch].tolist(), times,
                again[ch].tolist(), strict=True,
            ):
                if old >= 0 and old != nv:
                    self._return_to_normal(state_key(pt, old), val, t, batch)
                if nv < 0:
                    continue
                sa = self._state_defs[(pt, nv)]
                text, prio = sa.text, sa.priority
                if cause == Cause.RETURN_REMOTE:  # the operator's own command: record it, but do not shout
                    text, prio = f"{text} (commanded)", Priority.LOW
                self._raise(state_key(pt, nv), pt, AlarmKind.STATE, f"state={nv}", prio, text, val, t, batch,
                            rearm=re, again=re)

    # ------------------------------------------------------------------------------------------ transitions
    def _raise(
        self, key: str, point: int, kind: AlarmKind, condition: str, priority: Priority, text: str, value: float,
        t_ms: int, batch: _Batch, *, rearm: bool = False, again: bool = False,
    ) -> Alarm:
        aid = self._by_key.get(key)
        a = self._open.get(aid) if aid is not None else None
        if a is None:
            a = Alarm(
                id=self._next_id, key=key, point=point,
                point_name=self._points[point].name if point >= 0 else "", kind=kind, condition=condition,
                priority=priority, text=text, value=value, state=AlarmState.ACTIVE_UNACKED, raised_ms=t_ms,
                updated_ms=t_ms, cleared_ms=None, acked_by=None, acked_ms=None, shelved_until_ms=None,
                shelved_by=None, shelve_reason=None, occurrences=1,
            )
            self._next_id += 1
            return self._put(a, AlarmEventKind.RAISED, t_ms, batch)
        if a.state is AlarmState.CLEARED_UNACKED:
            a = replace(
                a, state=AlarmState.ACTIVE_UNACKED, condition=condition, priority=priority, text=text, value=value,
                raised_ms=t_ms, updated_ms=t_ms, cleared_ms=None, occurrences=a.occurrences + 1,
            )
            return self._put(a, AlarmEventKind.RAISED, t_ms, batch)
        if not (rearm or again) and (a.condition, a.priority, a.text) == (condition, priority, text):
            return a
        if rearm:
            a = replace(a, state=AlarmState.ACTIVE_UNACKED, acked_by=None, acked_ms=None)
        a = replace(
            a, condition=condition, priority=priority, text=text, value=value, updated_ms=t_ms,
            occurrences=a.occurrences + (1 if again else 0),
        )
        return self._put(a, AlarmEventKind.UPDATED, t_ms, batch)

    def _return_to_normal(self, key: str, value: float, t_ms: int, batch: _Batch) -> Alarm | None:
        aid = self._by_key.get(key)
        a = self._open.get(aid) if aid is not None else None
        if a is None or a.state is AlarmState.CLEARED_UNACKED:
            return None
        if a.state is AlarmState.ACTIVE_ACKED:
            a = replace(a, state=AlarmState.CLOSED, value=value, cleared_ms=t_ms, updated_ms=t_ms)
            return self._put(a, AlarmEventKind.CLOSED, t_ms, batch)
        a = replace(a, state=AlarmState.CLEARED_UNACKED, value=value, cleared_ms=t_ms, updated_ms=t_ms)
        return self._put(a, AlarmEventKind.CLEARED, t_ms, batch)

    def _ack(self, a: Alarm, operator: str, now_ms: int, batch: _Batch) -> Alarm | None:
        if a.state is AlarmState.ACTIVE_UNACKED:
            a = replace(a, state=AlarmState.ACTIVE_ACKED, acked_by=operator, acked_ms=now_ms, updated_ms=now_ms)
            return self._put(a, AlarmEventKind.ACKNOWLEDGED, now_ms, batch)
        if a.state is AlarmState.CLEARED_UNACKED:
            a = replace(a, state=AlarmState.CLOSED, acked_by=operator, acked_ms=now_ms, updated_ms=now_ms)
            return self._put(a, AlarmEventKind.CLOSED, now_ms, batch)
        return None  # already acknowledged or closed: nothing to do

    def _put(self, a: Alarm, kind: AlarmEventKind, t_ms: int, batch: _Batch) -> Alarm:
        if a.state is AlarmState.CLOSED:
            self._open.pop(a.id, None)
            self._shelved.discard(a.id)
            if self._by_key.get(a.key) == a.id:
                del self._by_key[a.key]
        else:
            self._index(a)
        batch.dirty[a.id] = a
        batch.events.append(AlarmEvent(kind, a, t_ms))
        return a

    def _index(self, a: Alarm) -> None:
        self._open[a.id] = a
        self._by_key[a.key] = a.id
        if a.shelved_until_ms is not None:
            self._shelved.add(a.id)
        else:
            self._shelved.discard(a.id)

    def _restore_point_state(self, a: Alarm) -> None:
        """Rebuild the per-point evaluation state from an open record loaded at start-up."""
        if a.state is AlarmState.CLEARED_UNACKED or not 0 <= a.point < len(self._points):
            return
        if a.kind is AlarmKind.LIMIT and a.condition in LEVEL_OF_CONDITION:
            self._level[a.point] = LEVEL_OF_CONDITION[a.condition]
        elif a.kind is AlarmKind.STATE and a.condition.startswith("state="):
            self._cur_state[a.point] = int(a.condition.removeprefix("state="))

    def _commit(self, batch: _Batch) -> int:
        """Persist the batch (plus anything a failed write left behind), then publish. Caller holds the lock."""
        if not batch.dirty:
            return 0
        pending = {**self._unsaved, **batch.dirty} if self._unsaved else batch.dirty
        try:
            self.store.save(pending.values())
        except ScadaError:
            self._unsaved = dict(pending)
            raise
        self._unsaved = {}
        for sub in list(self._subs):
            sub.offer(batch.events)
        return len(batch.events)

    # ------------------------------------------------------------------------------------------ operators
    def list(
        self,
        *,
        include_shelved: bool = False,
        include_closed: bool = False,
        min_priority: Priority | None = None,
        limit: int = 10_000,
    ) -> list[Alarm]:
        """Alarms by priority (critical first), newest first within a priority."""
        now = self._clock()
        with self._lock:
            self._expire_shelves(now)
            out = [
                a for a in self._open.values()
                if (include_shelved or not a.shelved_at(now)) and (min_priority is None or a.priority <= min_priority)
            ]
        if include_closed:
            closed = self.store.closed(None, None, limit)
            out.extend(a for a in closed if min_priority is None or a.priority <= min_priority)
        out.sort(key=lambda a: (a.priority, -a.raised_ms, -a.id))
        return out[:limit]

    def get(self, alarm_id: int) -> Alarm:
        with self._lock:
            self._expire_shelves(self._clock())
            a = self._open.get(alarm_id)
        if a is None:
            a = self.store.get(alarm_id)
        if a is None:
            raise AlarmError(f"alarm {alarm_id}: no such alarm")
        return a

    def acknowledge(self, alarm_ids: Sequence[int] | None, operator: str) -> list[Alarm]:
        """Acknowledge the given alarms, or every visible (unshelved) unacknowledged one; returns those changed.

        Unknown ids refuse the whole request; already acknowledged or closed alarms are skipped.
        """
        now = self._clock()
        with self._lock:
            self._expire_shelves(now)
            if alarm_ids is None:
                targets = [a for a in self._open.values() if not a.shelved_at(now)]
            else:
                targets = []
                for aid in dict.fromkeys(alarm_ids):  # a repeated id is acknowledged once
                    a = self._open.get(aid)
                    if a is None and self.store.get(aid) is None:
                        raise AlarmError(f"alarm {aid}: cannot acknowledge, no such alarm")
                    if a is not None:
                        targets.append(a)
            batch = _Batch()
            done = [x for x in (self._ack(a, operator, now, batch) for a in targets) if x is not None]
            self._commit(batch)
        return done

    def shelve(self, alarm_id: int, operator: str, duration_s: float, reason: str) -> Alarm:
        """Hide an alarm from the default list for ``duration_s`` (capped at ``alarms.shelve_max_s``)."""
        if not duration_s > 0:
            raise AlarmError(f"alarm {alarm_id}: cannot shelve for {duration_s} s, the duration must be > 0")
        now = self._clock()
        duration_s = min(duration_s, self.config.alarms.shelve_max_s)
        with self._lock:
            a = self._open_or_refuse(alarm_id, "shelve")
            a = replace(a, shelved_until_ms=now + math.ceil(duration_s * 1000), shelved_by=operator,
                        shelve_reason=reason, updated_ms=now)
            batch = _Batch()
            self._put(a, AlarmEventKind.SHELVED, now, batch)
            self._commit(batch)
        log.info("alarm %d shelved by %s for %.0f s: %s", alarm_id, operator, duration_s, reason)
        return a

    def unshelve(self, alarm_id: int, operator: str) -> Alarm:
        now = self._clock()
        with self._lock:
            a = self._open_or_refuse(alarm_id, "unshelve")
            if a.shelved_until_ms is None:
                return a
            batch = _Batch()
            a = self._put(self._unshelved(a, now), AlarmEventKind.UNSHELVED, now, batch)
            self._commit(batch)
        log.info("alarm %d unshelved by %s", alarm_id, operator)
        return a

    def raise_system(self, key: str, text: str, priority: Priority) -> Alarm:
        """Raise (or update) a server-side alarm such as an RTU link loss; ``key`` identifies the condition."""
        now = self._clock()
        with self._lock:
            batch = _Batch()
            a = self._raise(system_key(key), -1, AlarmKind.SYSTEM, key, priority, text, math.nan, now, batch)
            self._commit(batch)
        return a

    def clear_system(self, key: str) -> Alarm | None:
        """Return a system alarm to normal; None when it was not active."""
        now = self._clock()
        with self._lock:
            batch = _Batch()
            a = self._return_to_normal(system_key(key), math.nan, now, batch)
            self._commit(batch)
        return a

    def tick(self, now_ms: int | None = None) -> None:
        """Unshelve alarms whose shelving expired."""
        with self._lock:
            self._expire_shelves(self._clock() if now_ms is None else now_ms)

    def history(self, *, start_ms: int | None = None, end_ms: int | None = None, limit: int = 1000) -> list[Alarm]:
        """Closed alarms that were open at some time in [start_ms, end_ms), most recently closed first."""
        return self.store.closed(start_ms, end_ms, limit)

    def subscribe(self, max_pending: int = 1000) -> AlarmSubscription:
        sub = AlarmSubscription(max_pending, self._unsubscribe)
        with self._lock:
            self._subs.append(sub)
        return sub

    def counts(self) -> dict[str, int]:
        """Open alarms per state, ``shelved`` (open and shelved now) and ``closed`` (history size)."""
        now = self._clock()
        with self._lock:
            self._expire_shelves(now)
            out = {s.value: 0 for s in AlarmState}
            out["shelved"] = 0
            for a in self._open.values():
                out[a.state.value] += 1
                out["shelved"] += a.shelved_at(now)
        out[AlarmState.CLOSED.value] = self.store.count_closed()
        return out

    # ------------------------------------------------------------------------------------------ thread
    def start(self, subscription: Subscription) -> None:
        """Process change sets from ``subscription`` on an own thread, and expire shelving about once a second."""
        if self._thread is not None:
            raise AlarmError("alarm manager: already started")
        self._stop.clear()
        self._input = subscription
        self._thread = threading.Thread(target=self._run, args=(subscription,), name="alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, end every alarm subscription and close the database (it reopens on next use)."""
        self._stop.set()
        if self._input is not None:
            self._input.close()
        if self._thread is not None:
            self._thread.join(5.0)
            if self._thread.is_alive():
                log.error("alarm thread did not stop within 5 s")
        self._thread = None
        self._input = None
        for sub in list(self._subs):
            sub.close()
        self.store.close()

    def _run(self, sub: Subscription) -> None:
        next_tick = time.monotonic() + _TICK_PERIOD_S
        while not self._stop.is_set():
            cs = sub.get(timeout_s=_POLL_S)
            try:
                if cs is not None:
                    self.process(cs)
                if time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + _TICK_PERIOD_S
            except Exception:  # one bad change set or a full disk must not end alarm processing
                log.exception("alarm processing failed")
            if cs is None and sub.closed:
                break

    # ------------------------------------------------------------------------------------------ internals
    def _open_or_refuse(self, alarm_id: int, action: str) -> Alarm:
        self._expire_shelves(self._clock())
        a = self._open.get(alarm_id)
        if a is not None:
            return a
        if self.store.get(alarm_id) is not None:
            raise AlarmError(f"alarm {alarm_id}: cannot {action}, the alarm is closed")
        raise AlarmError(f"alarm {alarm_id}: cannot {action}, no such alarm")

    @staticmethod
    def _unshelved(a: Alarm, now_ms: int) -> Alarm:
        return replace(a, shelved_until_ms=None, shelved_by=None, shelve_reason=None, updated_ms=now_ms)

    def _expire_shelves(self, now_ms: int) -> None:
        """Unshelve every open alarm whose shelving ended at or before ``now_ms``. Caller holds the lock."""
        if not self._shelved:
            return
        expired = [a for a in (self._open[i] for i in self._shelved) if (a.shelved_until_ms or 0) <= now_ms]
        if not expired:
            return
        batch = _Batch()
        for a in expired:
            self._put(self._unshelved(a, now_ms), AlarmEventKind.UNSHELVED, now_ms, batch)
        self._commit(batch)

    def _unsubscribe(self, sub: AlarmSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
