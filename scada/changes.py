"""Change sets published by the RTDB, and bounded, coalescing subscriptions to them.

The RTDB writer publishes each committed transaction as one ChangeSet. Every subscriber owns a bounded queue; when
it is full the pending change sets are merged into one holding the latest row per point, and the rows merged away
are counted as drops, so a slow subscriber never slows ingest or the other subscribers.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: One row per changed point value in a committed transaction.
CHANGE_DTYPE = np.dtype(
    [
        ("point", "<i4"),
        ("value", "<f8"),
        ("quality", "<u2"),
        ("source_time_ms", "<i8"),  # field time tag, -1 if the source gave none
        ("recv_time_ms", "<i8"),  # when the server received it (UTC epoch ms)
        ("seq", "<i8"),  # RTDB change sequence, strictly increasing
        ("cause", "u1"),  # models.updates.Cause
        ("prev_value", "<f8"),  # value before this change (NaN if none)
    ]
)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    rows: np.ndarray  # CHANGE_DTYPE, in sequence order
    status: bool  # True if any row is a single/double status point (topology work needed)
    commit_monotonic: float  # time.monotonic() at commit, for latency measurement
    coalesced_drops: int = 0  # rows merged away in this subscriber's queue before delivery

    @property
    def last_seq(self) -> int:
        return int(self.rows["seq"][-1]) if len(self.rows) else -1


def coalesce(sets: list[ChangeSet]) -> ChangeSet:
    """Merge change sets into one holding only the latest row per point (rows stay in sequence order)."""
    rows = np.concatenate([s.rows for s in sets])
    # keep the last occurrence of each point
    _, last_from_end = np.unique(rows["point"][::-1], return_index=True)
    keep = np.sort(len(rows) - 1 - last_from_end)
    merged = rows[keep]
    dropped = len(rows) - len(merged) + sum(s.coalesced_drops for s in sets)
    return ChangeSet(
        rows=merged,
        status=any(s.status for s in sets),
        commit_monotonic=min(s.commit_monotonic for s in sets),
        coalesced_drops=dropped,
    )


@dataclass
class Subscription:
    """A bounded queue of change sets for one subscriber. ``points`` filters rows (None = all)."""

    name: str
    max_pending: int = 64
    points: np.ndarray | None = None  # sorted int32 point ids
    status_only: bool = False
    _q: deque[ChangeSet] = field(default_factory=deque)
    _cv: threading.Condition = field(default_factory=threading.Condition)
    drops: int = 0
    delivered_rows: int = 0
    closed: bool = False

    def offer(self, cs: ChangeSet) -> None:
        """Called by the RTDB writer; never blocks beyond a short lock."""
        if self.status_only and not cs.status:
            return
        if self.points is not None:
            mask = np.isin(cs.rows["point"], self.points, assume_unique=False)
            if not mask.any():
                return
            cs = ChangeSet(cs.rows[mask], cs.status, cs.commit_monotonic)
        with self._cv:
            if self.closed:
                return
            self._q.append(cs)
            if len(self._q) > self.max_pending:
                merged = coalesce(list(self._q))
                self.drops += merged.coalesced_drops - sum(s.coalesced_drops for s in self._q)
                self._q.clear()
                self._q.append(merged)
            self._cv.notify()

    def get(self, timeout_s: float | None = None) -> ChangeSet | None:
        """Next change set, or None on timeout or once closed and drained."""
        with self._cv:
            if not self._q and not self.closed:
                self._cv.wait(timeout_s)
            if not self._q:
                return None
            cs = self._q.popleft()
        self.delivered_rows += len(cs.rows)
        return cs

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        return len(self._q)
