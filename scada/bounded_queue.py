"""The bounded queue every subscriber of a published stream owns (topology updates, estimates, FLISR runs): the
publisher never waits, and when the queue is full the subclass's ``_overflow`` decides what the backlog becomes."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["BoundedQueue"]


class BoundedQueue(Generic[T]):
    def __init__(self, name: str, max_pending: int) -> None:
        self.name = name
        self.max_pending = max(1, max_pending)
        self._q: deque[T] = deque()
        self._cv = threading.Condition()
        self.closed = False

    def _overflow(self, backlog: list[T], item: T) -> list[T]:
        """What stays queued when ``item`` arrives at a full queue; default: the newest item alone."""
        return [item]

    def offer(self, item: T) -> None:
        """Called by the publisher; never blocks beyond a short lock."""
        with self._cv:
            if self.closed:
                return
            if len(self._q) >= self.max_pending:
                kept = self._overflow(list(self._q), item)
                self._q.clear()
                self._q.extend(kept)
            else:
                self._q.append(item)
            self._cv.notify()

    def get(self, timeout_s: float | None = None) -> T | None:
        """The next item, or None on timeout or once closed and drained."""
        with self._cv:
            if not self._q and not self.closed:
                self._cv.wait(timeout_s)
            return self._q.popleft() if self._q else None

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        return len(self._q)
