"""The real-time database: one writer thread applies update batches as transactions and publishes change sets.

State is held column-wise in numpy arrays indexed by point id. Every batch is applied vectorised: rows are grouped
per point (stable order, so several reports of one point in a batch are all seen in sequence), compared with the
previous value and quality, and the changed rows become one ChangeSet with strictly increasing sequence numbers.
Status changes are written to the SOE journal *before* the change set is published, so anything a subscriber (or an
operator) has seen is already durable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models.config import StationConfig
from models.points import PointKind, Quality
from models.timebase import now_ms
from models.updates import Cause, InterrogationDone, LinkEvent, UpdateBatch
from scada.changes import CHANGE_DTYPE, ChangeSet, Subscription
from scada.errors import UnknownPointError

log = logging.getLogger(__name__)

#: Quality bits the RTDB keeps across field updates (operator decisions, not the field's to clear).
_STICKY_BITS = int(Quality.OPERATOR_BLOCKED)
_SUPERVISION_PERIOD_S = 0.5


class SoeSink(Protocol):
    def append(self, rows: np.ndarray) -> int: ...


@dataclass(frozen=True, slots=True)
class RtuStatus:
    """Link state of one RTU as the RTDB last heard it from its adapter."""

    name: str
    link_up: bool
    address: str  # the active link when up, the lost one when down, "" before the first event
    since_ms: int  # when the link state last changed, -1 if never
    reason: str  # why it went down
    last_gi_ms: int  # completion of the last general interrogation, -1 if none


@dataclass(frozen=True, slots=True)
class RtdbStats:
    batches: int
    rows: int
    changes: int
    soe_events: int
    stale_marked: int
    last_seq: int
    inbox_depth: int
    subscribers: tuple[tuple[str, int, int], ...]  # (name, pending, drops)



class Rtdb:
    """Point state and change distribution. Thread-safe: ``ingest`` from any thread, one writer applies."""

    def __init__(self, config: StationConfig, *, soe: SoeSink | None = None, start_seq: int = 0) -> None:
        self.config = config
        n = len(config.points)
        self._names = {p.name: p.id for p in config.points}
        self._soe = soe
        self.value = np.full(n, np.nan)
        # Until the field reports, a value is invalid and its source unreachable: never "good" by default.
        self.quality = np.full(n, int(Quality.INVALID | Quality.COMM_LOST), dtype=np.uint16)
        self.source_time_ms = np.full(n, -1, dtype=np.int64)
        self.recv_time_ms = np.full(n, -1, dtype=np.int64)
        self.seq = np.full(n, -1, dtype=np.int64)
        self.cause = np.zeros(n, dtype=np.uint8)
        self._confirmed_mono = np.full(n, time.monotonic())
        self.is_status = np.array([p.kind.is_status for p in config.points], dtype=bool)
        self._stale_after_s = np.array([config.stale_after_s(p) for p in config.points], dtype=float)
        self._monitored = np.array([p.kind is not PointKind.COMMAND for p in config.points], dtype=bool)
        rtu_index = {r.name: i for i, r in enumerate(config.rtus)}
        self._rtu_of = np.array([rtu_index[p.source.rtu] for p in config.points], dtype=np.int32)
        self._rtu_points = {r.name: np.nonzero(self._rtu_of == i)[0] for i, r in enumerate(config.rtus)}
        self._link_up = {r.name: False for r in config.rtus}
        self._link_info = {r.name: ("", -1, "") for r in config.rtus}  # address, since_ms, reason
        self._last_gi_ms = {r.name: -1 for r in config.rtus}
        self._next_seq = start_seq + 1
        self._lock = threading.RLock()  # held by the writer while applying + publishing; snapshots take it too
        self._subs: list[Subscription] = []
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stats = {"batches": 0, "rows": 0, "changes": 0, "soe": 0, "stale": 0}
        self._link_listeners: list[Callable[[LinkEvent], None]] = []

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rtdb-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._inbox.put(None)
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            for s in self._subs:
                s.close()
            self._subs.clear()

    # ------------------------------------------------------------------------------------------ inputs
    def ingest(self, item: UpdateBatch | LinkEvent | InterrogationDone) -> None:
        """Queue an adapter message for the writer; never blocks."""
        self._inbox.put(item)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued before this call has been applied and published."""
        done = threading.Event()
        self._inbox.put(done)
        return done.wait(timeout_s)

    def add_link_listener(self, fn: Callable[[LinkEvent], None]) -> None:
        self._link_listeners.append(fn)

    # ------------------------------------------------------------------------------------------ queries
    def point_id(self, name: str) -> int:
        try:
            return self._names[name]
        except KeyError:
            raise UnknownPointError(f"unknown point {name!r}") from None

    def check_id(self, point: int) -> int:
        if not 0 <= point < len(self.value):
            raise UnknownPointError(f"unknown point id {point}")
        return point

    def rtu_link_up(self, rtu: str) -> bool:
        return self._link_up.get(rtu, False)

    def rtu_status(self) -> list[RtuStatus]:
        return [RtuStatus(name, self._link_up[name], *self._link_info[name], self._last_gi_ms[name])
                for name in self._link_up]

    def snapshot(self, points: Sequence[int] | None = None) -> np.ndarray:
        with self._lock:
            return self._snapshot_locked(points)

    def _snapshot_locked(self, points: Sequence[int] | None) -> np.ndarray:
        idx = np.arange(len(self.value)) if points is None else np.asarray(points, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.value)):
            bad = idx[(idx < 0) | (idx >= len(self.value))][0]
            raise UnknownPointError(f"unknown point id {int(bad)}")
        out = np.zeros(len(idx), dtype=CHANGE_DTYPE)
        out["point"] = idx
        out["value"] = self.value[idx]
        out["quality"] = self.quality[idx]
        out["source_time_ms"] = self.source_time_ms[idx]
        out["recv_time_ms"] = self.recv_time_ms[idx]
        out["seq"] = self.seq[idx]
        out["cause"] = self.cause[idx]
        out["prev_value"] = np.nan
        return out

    def subscribe(
        self,
        name: str,
        *,
        points: Sequence[int] | None = None,
        status_only: bool = False,
        max_pending: int = 256,
    ) -> Subscription:
        sub = Subscription(
            name=name,
            max_pending=max_pending,
            points=None if points is None else np.unique(np.asarray(points, dtype=np.int32)),
            status_only=status_only,
        )
        with self._lock:
            self._subs.append(sub)
        return sub

    def subscribe_with_snapshot(
        self, name: str, *, points: Sequence[int] | None = None, max_pending: int = 256
    ) -> tuple[np.ndarray, Subscription]:
        """Current values and a subscription that continues exactly after them (no gap, no overlap)."""
        with self._lock:
            snap = self._snapshot_locked(points)
            return snap, self.subscribe(name, points=points, max_pending=max_pending)

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def stats(self) -> RtdbStats:
        with self._lock:
            subs = tuple((s.name, s.pending, s.drops) for s in self._subs)
        st = self._stats
        return RtdbStats(st["batches"], st["rows"], st["changes"], st["soe"], st["stale"], self._next_seq - 1,
                         self._inbox.qsize(), subs)

    # ------------------------------------------------------------------------------------------ writer
    def _run(self) -> None:
        next_supervision = time.monotonic() + _SUPERVISION_PERIOD_S
        while not self._stop.is_set():
            timeout = max(0.0, next_supervision - time.monotonic())
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = ...
            try:
                if item is None:
                    break
                if isinstance(item, UpdateBatch):
                    self._apply_batch(item)
                elif isinstance(item, LinkEvent):
                    self._apply_link(item)
                elif isinstance(item, InterrogationDone):
                    self._apply_interrogation(item)
                elif isinstance(item, threading.Event):
                    item.set()
                if time.monotonic() >= next_supervision:
                    self._supervise()
                    next_supervision = time.monotonic() + _SUPERVISION_PERIOD_S
            except Exception:  # the writer must survive one bad message
                log.exception("RTDB writer failed on %r", type(item).__name__)

    def _apply_batch(self, batch: UpdateBatch) -> None:
        rows = batch.rows
        n = len(self.value)
        bad = (rows["point"] < 0) | (rows["point"] >= n)
        if bad.any():
            log.warning("adapter %s sent %d rows for unknown point ids; ignored", batch.adapter, int(bad.sum()))
            rows = rows[~bad]
        if not len(rows):
            return
        t_ms, mono = now_ms(), time.monotonic()
        order = np.argsort(rows["point"], kind="stable")
        r = rows[order]
        p = r["point"].astype(np.int64)
        first = np.ones(len(r), dtype=bool)
        first[1:] = p[1:] != p[:-1]
        last = np.ones(len(r), dtype=bool)
        last[:-1] = p[:-1] != p[1:]
        new_q = r["quality"] | (self.quality[p] & _STICKY_BITS)
        prev_v = np.where(first, self.value[p], np.roll(r["value"], 1))
        prev_q = np.where(first, self.quality[p], np.roll(new_q, 1))
        prev_t = np.where(first, self.source_time_ms[p], np.roll(r["source_time_ms"], 1))
        v = r["value"]
        changed = (v != prev_v) | (new_q != prev_q)
        # A spontaneous status report with a new time tag is an event even if the state reads the same:
        # the device went through a change (e.g. trip and auto-reclose) that the state alone would hide.
        changed |= self.is_status[p] & (r["cause"] == Cause.SPONTANEOUS) & (r["source_time_ms"] != prev_t)
        with self._lock:
            lp = p[last]
            self.value[lp] = v[last]
            self.quality[lp] = new_q[last]
            self.source_time_ms[lp] = r["source_time_ms"][last]
            self.recv_time_ms[lp] = t_ms
            self.cause[lp] = r["cause"][last]
            self._confirmed_mono[p] = mono
            self._stats["batches"] += 1
            self._stats["rows"] += len(r)
            idx = np.nonzero(changed)[0]
            if not len(idx):
                return
            idx = idx[np.argsort(order[idx], kind="stable")]  # back to arrival order
            cs = np.zeros(len(idx), dtype=CHANGE_DTYPE)
            cs["point"] = p[idx]
            cs["value"] = v[idx]
            cs["quality"] = new_q[idx]
            cs["source_time_ms"] = r["source_time_ms"][idx]
            cs["recv_time_ms"] = t_ms
            cs["cause"] = r["cause"][idx]
            cs["prev_value"] = prev_v[idx]
            self._commit(cs, mono)

    def _apply_link(self, ev: LinkEvent) -> None:
        if ev.rtu not in self._link_up:
            log.warning("link event for unknown RTU %r from %s", ev.rtu, ev.adapter)
            return
        if self._link_up[ev.rtu] != ev.up or not self._link_info[ev.rtu][0]:
            self._link_info[ev.rtu] = (ev.address, ev.time_ms or now_ms(), "" if ev.up else ev.reason)
        elif ev.up:
            self._link_info[ev.rtu] = (ev.address, *self._link_info[ev.rtu][1:])  # switch-over keeps "since"
        self._link_up[ev.rtu] = ev.up
        if not ev.up:
            # Every point of the RTU turns communication-lost at once; a fresh value (GI) clears it per point.
            self._mark(self._rtu_points[ev.rtu], int(Quality.COMM_LOST))
        for fn in self._link_listeners:
            try:
                fn(ev)
            except Exception:
                log.exception("link listener failed")

    def _supervise(self) -> None:
        mono = time.monotonic()
        limit = self._stale_after_s
        stale = (limit > 0) & self._monitored & ((mono - self._confirmed_mono) > limit)
        stale &= (self.quality & int(Quality.NOT_TOPICAL | Quality.COMM_LOST)) == 0
        idx = np.nonzero(stale)[0]
        if len(idx):
            self._stats["stale"] += len(idx)
            self._mark(idx, int(Quality.NOT_TOPICAL))

    def _apply_interrogation(self, done: InterrogationDone) -> None:
        """A complete interrogation or scan confirmed every point of the RTU as current, also those whose value did
        not change (a polled device reports only changes): their update age restarts and a stale mark clears."""
        if done.rtu not in self._last_gi_ms:
            log.warning("interrogation done for unknown RTU %r from %s", done.rtu, done.adapter)
            return
        self._last_gi_ms[done.rtu] = done.time_ms
        idx = self._rtu_points[done.rtu]
        with self._lock:
            self._confirmed_mono[idx] = time.monotonic()
            stale = idx[(self.quality[idx] & int(Quality.NOT_TOPICAL)) != 0]
            stale = stale[(self.quality[stale] & int(Quality.COMM_LOST)) == 0]
            if not len(stale):
                return
            self.quality[stale] &= np.uint16(~int(Quality.NOT_TOPICAL) & 0xFFFF)
            cs = self._snapshot_locked(stale)
            cs["prev_value"] = cs["value"]
            cs["recv_time_ms"] = now_ms()
            cs["cause"] = Cause.INTERROGATED
            self._commit(cs, time.monotonic())

    def _mark(self, idx: np.ndarray, bits: int) -> None:
        """Set quality bits on points (supervision), publishing those whose quality changed."""
        with self._lock:
            idx = idx[(self.quality[idx] & bits) != bits]
            if not len(idx):
                return
            self.quality[idx] |= np.uint16(bits)
            cs = self._snapshot_locked(idx)  # the current state, with the new quality...
            cs["prev_value"] = cs["value"]  # ...as a quality-only change from the supervisor
            cs["recv_time_ms"] = now_ms()
            cs["cause"] = Cause.SUPERVISION
            self._commit(cs, time.monotonic())

    def _commit(self, cs: np.ndarray, mono: float) -> None:
        """Assign sequence numbers, journal status events, update state seq, publish. Caller holds the lock."""
        cs["seq"] = np.arange(self._next_seq, self._next_seq + len(cs))
        self._next_seq += len(cs)
        self.seq[cs["point"]] = cs["seq"]
        status_rows = self.is_status[cs["point"]]
        if self._soe is not None and status_rows.any():
            events = cs[status_rows & (cs["cause"] != Cause.SUPERVISION)]
            if len(events):
                self._stats["soe"] += self._soe.append(events)  # durable before anyone sees it
        self._stats["changes"] += len(cs)
        change_set = ChangeSet(rows=cs, status=bool(status_rows.any()), commit_monotonic=mono)
        for sub in self._subs:
            sub.offer(change_set)

