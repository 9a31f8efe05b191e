"""The pipe between a supervised adapter process and the server.

Up (adapter -> server): models.updates.UpdateBatch, LinkEvent, InterrogationDone, models.commands.ControlResult,
Heartbeat. Down (server -> adapter): ControlRequest, InterrogationRequest, ClockSyncRequest, Shutdown.
Messages are frozen dataclasses pickled by multiprocessing; bulk rows are numpy arrays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from models.config import StationConfig


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent by the adapter's main loop at least every ``HEARTBEAT_PERIOD_S``; silence means a hang."""

    adapter: str
    time_ms: int
    counters: tuple[tuple[str, float], ...] = ()  # adapter statistics, e.g. (("rx_points", 1234.0),)


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


HEARTBEAT_PERIOD_S = 0.5


class AdapterChannel:
    """The adapter's end of the pipe; ``send`` is safe from any thread (protocol callbacks run on library threads)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.closed = False

    def send(self, msg: Any) -> bool:
        """Send one message up; False once the server end is gone (the adapter should then exit)."""
        if self.closed:
            return False
        try:
            with self._lock:
                self._conn.send(msg)
            return True
        except (BrokenPipeError, EOFError, OSError):
            self.closed = True
            return False

    def recv(self, timeout_s: float) -> Any | None:
        """Next message from the server, or None on timeout. A closed pipe yields Shutdown()."""
        try:
            if self._conn.poll(timeout_s):
                return self._conn.recv()
            return None
        except (EOFError, OSError):
            self.closed = True
            return Shutdown()


class AdapterMain(Protocol):
    """Entry point of an adapter process: run until Shutdown arrives or the channel closes."""

    def __call__(self, channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
        ...
