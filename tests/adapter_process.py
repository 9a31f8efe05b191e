"""A protocol adapter in a spawned child process, started exactly as the supervisor starts it, for tests that drive a
master adapter directly (ControlRequest, InterrogationRequest, ClockSyncRequest) and read what it sends up."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from support import wait_for

from frontend_protocols.channel import Heartbeat, Shutdown
from frontend_protocols.supervisor import ADAPTER_ENTRIES, _child_main
from models.commands import ControlRequest, ControlResult
from models.config import StationConfig
from models.updates import UPDATE_DTYPE, InterrogationDone, LinkEvent, UpdateBatch


class AdapterProcess:
    """The adapter of ``protocol`` for ``rtus`` in a spawned child; keeps every message it sends up, with the time it
    arrived here (``arrived_ms``, UTC epoch ms, parallel to ``msgs``) for latency measurements."""

    def __init__(self, config: StationConfig, protocol: str, rtus: tuple[str, ...]) -> None:
        ctx = mp.get_context("spawn")
        self.protocol = protocol
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_child_main, args=(child, ADAPTER_ENTRIES[protocol], config, protocol, rtus),
                                daemon=True, name=f"adapter-{protocol}")
        self.proc.start()
        child.close()
        self.msgs: list[Any] = []
        self.arrived_ms: list[float] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                if self.conn.poll(0.05):
                    msg = self.conn.recv()
                    now_ms = time.time() * 1000.0
                    with self.lock:
                        self.msgs.append(msg)
                        self.arrived_ms.append(now_ms)
            except (EOFError, OSError):
                return

    def send(self, msg: Any) -> None:
        self.conn.send(msg)

    def of(self, typ: type, since: int = 0) -> list[Any]:
        """The messages of ``typ`` from index ``since`` (a ``mark()``) on."""
        with self.lock:
            return [m for m in self.msgs[since:] if isinstance(m, typ)]

    def timed(self, typ: type, since: int = 0) -> list[tuple[float, Any]]:
        """Like ``of`` with each message's arrival time (UTC epoch ms)."""
        with self.lock:
            return [(t, m) for t, m in zip(self.arrived_ms[since:], self.msgs[since:], strict=True)
                    if isinstance(m, typ)]

    def mark(self) -> int:
        with self.lock:
            return len(self.msgs)

    def rows(self, since: int = 0) -> np.ndarray:
        batches = self.of(UpdateBatch, since)
        return np.concatenate([b.rows for b in batches]) if batches else np.zeros(0, dtype=UPDATE_DTYPE)

    def values(self, point: int, since: int = 0) -> np.ndarray:
        """Every row of ``point`` from ``since`` on, oldest first."""
        rows = self.rows(since)
        return rows[rows["point"] == point]

    def last_value(self, point: int, since: int = 0) -> Any:
        hit = self.values(point, since)
        return hit[-1] if len(hit) else None

    def counters(self) -> dict[str, float]:
        beats = self.of(Heartbeat)
        return dict(beats[-1].counters) if beats else {}

    def link_up(self, timeout_s: float = 20.0) -> LinkEvent:
        return wait_for(lambda: next((e for e in self.of(LinkEvent) if e.up), None), timeout_s,
                        f"{self.protocol} adapter: link up")  # type: ignore[return-value]

    def wait_interrogations(self, n: int = 1, timeout_s: float = 20.0) -> None:
        wait_for(lambda: len(self.of(InterrogationDone)) >= n, timeout_s,
                 f"{self.protocol} adapter: InterrogationDone #{n}")

    def control(self, request_id: int, timeout_s: float = 15.0) -> ControlResult:
        def find() -> ControlResult | None:
            return next((r for r in self.of(ControlResult) if r.request_id == request_id), None)

        return wait_for(find, timeout_s, f"{self.protocol} adapter: ControlResult {request_id}")  # type: ignore

    def request(self, req: ControlRequest, timeout_s: float = 15.0) -> ControlResult:
        """Send ``req`` and wait for its result."""
        self.send(req)
        return self.control(req.request_id, timeout_s)

    def close(self) -> int | None:
        """Shutdown and wait; the exit code (0 for a clean exit)."""
        try:
            self.conn.send(Shutdown())
        except OSError:
            pass
        self.proc.join(15)
        code = self.proc.exitcode
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self._stop.set()
        self._reader.join(2)
        self.conn.close()
        return code

    def __enter__(self) -> AdapterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.exitcode is None:
            self.close()



@contextmanager
def adapter_factory(protocol: str, rtus: tuple[str, ...]) -> Iterator[Callable[[StationConfig], AdapterProcess]]:
    """A maker of ``protocol`` adapters for ``rtus`` that closes every one still running at exit (for fixtures)."""
    made: list[AdapterProcess] = []

    def make(config: StationConfig) -> AdapterProcess:
        adapter = AdapterProcess(config, protocol, rtus)
        made.append(adapter)
        return adapter

    try:
        yield make
    finally:
        for adapter in made:
            adapter.__exit__()
