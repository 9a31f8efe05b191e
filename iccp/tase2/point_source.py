"""Where the values a TASE.2 server publishes come from: the :class:`PointSource` interface, an RTDB-backed
implementation (:class:`RtdbPointSource`: values from snapshots, changes from an RTDB subscription) and an in-memory
one (:class:`InMemoryPointSource`) for tests and the transmission simulator.

Points are named by their RTDB point name (``BilateralPoint.point``); values are RTDB rows
(:class:`iccp.tase2.mapping.RtdbValue`), turned into TASE.2 values by the server with ``iccp.tase2.mapping``.
Change listeners are called on whatever thread produced the change (the server moves the work to its loop) with
every change in order, so a transfer set with AllChangesReported can report each one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from iccp.errors import IccpError
from iccp.mms.codec import DataAccessCode
from iccp.tase2.bilateral import BilateralTable
from iccp.tase2.mapping import RtdbValue
from models.points import PointDef, Quality

if TYPE_CHECKING:
    from iccp.tase2.peer_writes import PeerWrites

__all__ = [
    "ChangeListener",
    "InMemoryPointSource",
    "PointSource",
    "PointSourceError",
    "RtdbPointSource",
    "SourceChange",
    "UNKNOWN_VALUE",
]

log = logging.getLogger("iccp.tase2.point_source")

#: The value of a point nobody has reported yet: invalid, source unreachable (as the RTDB starts).
UNKNOWN_VALUE = RtdbValue(math.nan, Quality.INVALID | Quality.COMM_LOST, -1)


class PointSourceError(IccpError):
    """A point source was asked about a point it does not hold, or refused a write; ``code`` is what the peer's
    write gets."""

    def __init__(self, message: str, code: DataAccessCode = DataAccessCode.OBJECT_ACCESS_DENIED) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SourceChange:
    """One new value of RTDB point ``point``."""

    point: str
    value: RtdbValue


ChangeListener = Callable[[Sequence[SourceChange]], None]


class PointSource(Protocol):
    """What the TASE.2 server reads published values from."""

    def definition(self, point: str) -> PointDef | None:
        """The point's definition (None: the source does not hold it)."""
        ...

    def values(self, points: Sequence[str]) -> list[RtdbValue]:
        """Current values, in order (a point the source does not hold gives :data:`UNKNOWN_VALUE`). Fast: called on
        the server loop for every read and report."""
        ...

    def write(self, point: str, value: RtdbValue, *, table: BilateralTable) -> None:
        """``table``'s peer wrote a point of its ``write`` list; raise :class:`PointSourceError` to refuse. May block
        (a set-point command waits for the field)."""
        ...

    def add_listener(self, listener: ChangeListener) -> None:
        ...

    def remove_listener(self, listener: ChangeListener) -> None:
        ...


class _Listeners:
    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self._lock = threading.Lock()

    def add_listener(self, listener: ChangeListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, changes: Sequence[SourceChange]) -> None:
        if not changes:
            return
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(changes)
            except Exception:  # noqa: BLE001 - one faulty listener must not starve the others
                log.exception("point source listener failed")


class InMemoryPointSource(_Listeners):
    """Values held in a dict; :meth:`update` stores and notifies. Thread-safe."""

    def __init__(self, points: Iterable[PointDef], *, writable: bool = True) -> None:
        super().__init__()
        self._defs = {p.name: p for p in points}
        self._values: dict[str, RtdbValue] = {}
        self._writable = writable
        self._values_lock = threading.Lock()
        self.writes: list[tuple[str, RtdbValue]] = []  # what peers wrote, in order

    def definition(self, point: str) -> PointDef | None:
        return self._defs.get(point)

    def values(self, points: Sequence[str]) -> list[RtdbValue]:
        with self._values_lock:
            get = self._values.get
            return [get(p, UNKNOWN_VALUE) for p in points]

    def update(self, changes: Iterable[tuple[str, float, int, int]]) -> None:
        """Store ``(point, value, quality, source_time_ms)`` rows and notify listeners once for all of them."""
        out = []
        with self._values_lock:
            for point, value, quality, time_ms in changes:
                if point not in self._defs:
                    raise PointSourceError(f"point source: unknown point {point!r}")
                v = RtdbValue(float(value), Quality(int(quality)), int(time_ms))
                self._values[point] = v
                out.append(SourceChange(point, v))
        self._notify(out)

    def set(self, point: str, value: float, quality: int = Quality.GOOD, source_time_ms: int = -1) -> None:
        self.update([(point, value, quality, source_time_ms)])

    def write(self, point: str, value: RtdbValue, *, table: BilateralTable | None = None) -> None:
        if not self._writable:
            raise PointSourceError(f"point source: {point!r} is not writable here")
        self.writes.append((point, value))
        self.update([(point, value.value, value.quality, value.source_time_ms)])


class RtdbPointSource(_Listeners):
    """The RTDB's values of ``points`` (names): snapshots for reads, one RTDB subscription (drained by a thread
    started with :meth:`start`) for changes. Peer writes go to ``writes`` (``iccp.tase2.peer_writes``: set-point
    commands on the command path, values of remote-centre points into the RTDB); without it every write is refused."""

    def __init__(self, rtdb: object, points: Iterable[str], *, name: str = "iccp-server",
                 max_pending: int = 256, writes: PeerWrites | None = None) -> None:
        super().__init__()
        from scada.rtdb import Rtdb  # iccp may import scada; imported here to keep iccp.tase2 importable without it

        if not isinstance(rtdb, Rtdb):
            raise TypeError(f"RtdbPointSource needs a scada.rtdb.Rtdb, got {type(rtdb).__name__}")
        self._rtdb = rtdb
        names = list(dict.fromkeys(points))
        self._ids = {n: rtdb.point_id(n) for n in names}  # raises UnknownPointError naming the point
        self._names = {i: n for n, i in self._ids.items()}
        self._defs = {n: rtdb.config.points[i] for n, i in self._ids.items()}
        self._sub_name = name
        self._max_pending = max_pending
        self._sub: object | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._writes = writes

    def definition(self, point: str) -> PointDef | None:
        return self._defs.get(point)

    def values(self, points: Sequence[str]) -> list[RtdbValue]:
        ids = [self._ids.get(p, -1) for p in points]
        known = [i for i in ids if i >= 0]
        snap = self._rtdb.snapshot(known) if known else None
        out: list[RtdbValue] = []
        k = 0
        for i in ids:
            if i < 0:
                out.append(UNKNOWN_VALUE)
                continue
            row = snap[k]  # type: ignore[index]
            k += 1
            out.append(RtdbValue(float(row["value"]), Quality(int(row["quality"])), int(row["source_time_ms"])))
        return out

    def write(self, point: str, value: RtdbValue, *, table: BilateralTable) -> None:
        p = self._defs.get(point)
        if p is None:
            raise PointSourceError(f"peer {table.peer!r}: point {point!r} is not published",
                                   DataAccessCode.OBJECT_NON_EXISTENT)
        if self._writes is None:
            raise PointSourceError(f"peer {table.peer!r}: point {point!r}: this server takes no peer writes (no "
                                   "command service / RTDB writer configured)")
        self._writes.write(table, p, value)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._sub = self._rtdb.subscribe(self._sub_name, points=list(self._ids.values()),
                                         max_pending=self._max_pending)
        self._thread = threading.Thread(target=self._run, name=f"{self._sub_name}-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sub is not None:
            self._rtdb.unsubscribe(self._sub)  # type: ignore[arg-type]
        if self._thread is not None:
            self._thread.join(5.0)
        self._thread = None
        self._sub = None

    def __enter__(self) -> RtdbPointSource:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        sub = self._sub
        while not self._stop.is_set() and sub is not None:
            cs = sub.get(timeout_s=0.5)  # type: ignore[attr-defined]
            if cs is None:
                if sub.closed:  # type: ignore[attr-defined]
                    break
                continue
            rows = cs.rows
            changes = [SourceChange(self._names[int(r["point"])],
                                    RtdbValue(float(r["value"]), Quality(int(r["quality"])),
                                              int(r["source_time_ms"])))
                       for r in rows if int(r["point"]) in self._names]
            self._notify(changes)
