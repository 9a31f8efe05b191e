"""The adapter side of the one update path: values gathered on library threads, sent up as ``UpdateBatch``es.

A protocol library calls back on its own threads; those only ``add`` rows (and ``event`` link/interrogation
messages) under a lock. The adapter's main loop calls ``flush``, which sends a batch once the oldest row has waited
``FLUSH_PERIOD_S`` or ``FLUSH_MAX_ROWS`` rows are waiting, and sends every event behind exactly the rows that were
buffered before it, so the RTDB sees values and link state in wire order.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from frontend_protocols.channel import AdapterChannel
from models.timebase import now_ms
from models.updates import UPDATE_DTYPE, Cause, UpdateBatch

FLUSH_PERIOD_S = 0.02  # longest time a received value waits in the adapter
FLUSH_MAX_ROWS = 1000  # a batch is sent early once it holds this many rows


class UpdateBuffer:
    """Thread-safe row buffer of one adapter; ``counters`` feed its Heartbeat."""

    def __init__(self, channel: AdapterChannel, adapter: str) -> None:
        self._channel = channel
        self._adapter = adapter
        self._lock = threading.Lock()
        self._rows: list[tuple[int, float, int, int, int]] = []
        self._events: list[tuple[int, Any]] = []  # (rows buffered before it, message)
        self._first_row_t = 0.0
        self._counters: dict[str, float] = {}

    def add(self, point: int, value: float, quality: int, source_time_ms: int, cause: Cause | int) -> None:
        """One received value (engineering units, ``models.points.Quality`` bits, UTC epoch ms or -1)."""
        with self._lock:
            if not self._rows:
                self._first_row_t = time.monotonic()
            self._rows.append((point, value, int(quality), int(source_time_ms), int(cause)))

    def event(self, msg: Any) -> None:
        """Queue a message (LinkEvent, InterrogationDone, ...) behind every row already buffered."""
        with self._lock:
            self._events.append((len(self._rows), msg))

    def count(self, name: str, n: float = 1.0) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0.0) + n

    def counters(self) -> tuple[tuple[str, float], ...]:
        with self._lock:
            return tuple(sorted(self._counters.items()))

    @property
    def waiting(self) -> bool:
        """True while rows or events wait: the main loop should poll its channel with a short time-out."""
        with self._lock:
            return bool(self._rows or self._events)

    def flush(self, *, force: bool = False) -> None:
        """Send what is due (everything when ``force``); call from the adapter's main loop only."""
        with self._lock:
            if not self._rows and not self._events:
                return
            due = (force or self._events or len(self._rows) >= FLUSH_MAX_ROWS
                   or time.monotonic() - self._first_row_t >= FLUSH_PERIOD_S)
            if not due:
                return
            rows, events = self._rows, self._events
            self._rows, self._events = [], []
            if rows:  # how long the oldest value waited in the adapter: its share of the field->RTDB latency
                age_ms = (time.monotonic() - self._first_row_t) * 1000.0
                self._counters["flush_age_max_ms"] = max(self._counters.get("flush_age_max_ms", 0.0), age_ms)
        start = 0
        for index, msg in events:
            if index > start:
                self._send_rows(rows[start:index])
                start = index
            self._channel.send(msg)
        if start < len(rows):
            self._send_rows(rows[start:])

    def _send_rows(self, rows: list[tuple[int, float, int, int, int]]) -> None:
        out = np.array(rows, dtype=UPDATE_DTYPE)
        received_ms = now_ms()
        for start in range(0, len(out), FLUSH_MAX_ROWS):
            self._channel.send(UpdateBatch(self._adapter, out[start:start + FLUSH_MAX_ROWS], received_ms))
        self.count("rx_points", len(rows))
        self.count("batches", math.ceil(len(rows) / FLUSH_MAX_ROWS))
