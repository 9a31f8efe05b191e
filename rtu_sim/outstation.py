"""A simulated field device, independent of its protocol: point state, load curves, trips, FPIs, blocking and
local/remote, and a paced report queue. Subclasses (``outstation104``, ``outstation_dnp3``, ``outstation_modbus``,
``outstation61850``) put it on a protocol stack.

Threads: the simulator's loop thread calls ``tick`` and ``pump`` (the only place reports are handed to the library);
the library's threads call ``check_command``/``execute_command``; API calls (set_value, trip, fpi, block, link_down)
come from any thread. ``_lock`` guards state and queue and is never held across a library call; ``_io_lock``
serialises library writes, transmissions and link start/stop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from models.config import RtuConfig, SimProfile
from models.points import ControlType, DoubleState, PointDef, PointKind, Quality
from models.timebase import now_ms
from models.updates import Cause
from rtu_sim.curves import curve_multiplier, energy_kwh, hour_of_day
from rtu_sim.errors import SimulatorError, UnknownPointError, UnknownRtuError
from rtu_sim.pacing import TokenBucket

log = logging.getLogger(__name__)

COUNTER_REFRESH_S = 1.0  # counters are written into the static tables this often (read by interrogations/polls)
T = TypeVar("T")


class CommandAnswer(StrEnum):
    """How the device answers a command; each protocol maps it to its own status codes."""

    ACCEPTED = "accepted"
    BLOCKED = "blocked"  # the point is blocked (e.g. maintenance, interlocked at the device)
    LOCAL = "local"  # the device is in local control: remote commands are refused
    INVALID = "invalid"  # the value makes no sense for the point (e.g. a double command 0 or 3)


class SharedResources:
    """Process-wide resources shared by the outstations of one simulator (a DNP3 manager, an asyncio loop thread).

    ``get`` creates a resource on first use; ``close_all`` closes them in reverse creation order after every
    outstation has been closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[Any, Callable[[Any], None]]] = {}

    def get(self, key: str, factory: Callable[[], T], close: Callable[[T], None]) -> T:
        with self._lock:
            if key not in self._items:
                self._items[key] = (factory(), close)
            return self._items[key][0]  # type: ignore[no-any-return]

    def close_all(self) -> None:
        with self._lock:
            items = list(self._items.items())[::-1]
            self._items.clear()
        for key, (obj, close) in items:
            try:
                close(obj)
            except Exception:
                log.exception("closing shared simulator resource %r failed", key)


@dataclass(frozen=True, slots=True)
class RtuStats:
    """Counters of one simulated RTU since start; ``sent`` counts each report once even on a redundant pair."""

    rtu: str
    sent: int  # reports accepted by the library for at least one link
    sent_by_kind: dict[str, int]  # PointKind value -> reports
    unsent: int  # reports due while no link was running: the next interrogation covers them
    dropped: int  # reports lost because the send queue was full (pacing could not keep up)
    queued: int  # reports waiting for the token bucket now
    commands_executed: int
    commands_refused: int
    links_up: tuple[str, ...]  # addresses whose server is running
    clients: int  # open master connections over all addresses
    sent_by_address: dict[str, int] = field(default_factory=dict)
    protocol: str = ""


class Slot:
    """Run-time state of one configured point on this device."""

    __slots__ = ("index", "point", "sim", "value", "quality", "forced", "next_due_s", "breakers", "counter_last_s",
                 "monitored", "handles")

    def __init__(self, index: int, point: PointDef, sim: SimProfile) -> None:
        self.index = index
        self.point = point
        self.sim = sim
        self.value = 0.0
        self.quality = Quality.GOOD
        self.forced = False  # set_value holds the point: the load curve no longer drives it
        self.next_due_s = 0.0
        self.breakers: tuple[int, ...] = ()  # double points on the same element: an open one de-energises it
        self.counter_last_s = 0.0
        self.monitored = point.kind is not PointKind.COMMAND  # has a value the protocol reports
        self.handles: list[Any] = []  # the protocol library's objects for this point, one per link (subclass use)


class Outstation(ABC):
    """One RTU of the station configuration, served on every one of its addresses by a protocol subclass."""

    def __init__(self, rtu: RtuConfig, points: Sequence[PointDef], sims: Sequence[SimProfile], *,
                 rng: random.Random, shared: SharedResources | None = None, max_queue: int = 200_000) -> None:
        if len(points) != len(sims):
            raise SimulatorError(f"RTU {rtu.name!r}: {len(points)} points but {len(sims)} sim profiles")
        self.rtu = rtu
        self.shared = shared if shared is not None else SharedResources()
        self._rng = rng
        self._lock = threading.Lock()
        self._io_lock = threading.RLock()
        self._queue: deque[tuple[int, float, Quality, int, Cause]] = deque()
        self._max_queue = max_queue
        self._bucket = TokenBucket(rtu.max_updates_per_s, now_s=time.monotonic())
        self._blocked: set[int] = set()
        self._local = False
        self._sent = 0
        self._sent_by_kind: dict[str, int] = {k.value: 0 for k in PointKind}
        self._sent_by_address: dict[str, int] = dict.fromkeys(rtu.addresses, 0)
        self._unsent = 0
        self._inflight = 0
        self._dropped = 0
        self._executed = 0
        self._refused = 0
        self._counter_refresh_due_s = 0.0
        self._running = [False] * len(rtu.addresses)
        self._closed = False
        # Called (outside the locks, on the library's thread) after a command changed a status point: the grid
        # physics follows the switch this way. Must not raise; must not call back into the library.
        self.on_command_applied: Callable[[PointDef, float], None] | None = None
        # Set by the grid physics (called on the library's thread, must not raise): ``operate_time_s`` gives a double
        # point's mechanism travel time (0: it moves at once; while it travels the point reads INTERMEDIATE and
        # further commands are refused BLOCKED); ``command_check`` refuses a command value as INVALID (a tap step
        # out of range).
        self.operate_time_s: Callable[[PointDef], float] | None = None
        self.command_check: Callable[[PointDef, float], bool] | None = None
        self._moving: dict[int, threading.Timer] = {}  # slot index -> the end of its travel

        self.slots = [Slot(i, p, s) for i, (p, s) in enumerate(zip(points, sims, strict=True))]
        self._by_name = {s.point.name: s for s in self.slots}
        doubles_by_element: dict[str, list[int]] = {}
        for s in self.slots:
            if s.point.kind is PointKind.DOUBLE and s.point.element:
                doubles_by_element.setdefault(s.point.element, []).append(s.index)
        start_s = time.time()
        for s in self.slots:
            if s.point.kind in (PointKind.ANALOG, PointKind.COUNTER):
                s.breakers = tuple(doubles_by_element.get(s.point.element, ()))
        for s in self.slots:
            s.value = self._initial_value(s, start_s)
            s.counter_last_s = start_s
            # Stagger the periodic reports over one period so the points do not all report at once.
            s.next_due_s = start_s + rng.uniform(0.0, s.sim.period_s)

    # ------------------------------------------------------------------------------------------- protocol hooks

    @abstractmethod
    def _start_link(self, index: int, timeout_s: float) -> None:
        """Start serving on ``rtu.addresses[index]``; return once it listens (SimulatorError if it cannot)."""

    @abstractmethod
    def _stop_link(self, index: int) -> None:
        """Stop serving on ``rtu.addresses[index]``, dropping connected masters."""

    @abstractmethod
    def _report(self, s: Slot, value: float, quality: Quality, time_ms: int, cause: Cause, links: list[int]
                ) -> list[int]:
        """Send one change (an event where the protocol has events) on the running ``links``; return those that
        took it."""

    @abstractmethod
    def _store(self, s: Slot, value: float, quality: Quality, time_ms: int, link: int) -> None:
        """Update the static value on one link without an event."""

    def _dispose(self) -> None:
        """Release the library's objects; every link is stopped. The outstation cannot start again."""
        return None

    def _client_count(self) -> int:
        return 0

    def _on_block(self, s: Slot, blocked: bool) -> None:
        """The point's control was blocked or unblocked (a protocol may refuse already the select)."""
        return None

    @classmethod
    def supported_quality(cls, kind: PointKind) -> Quality:
        """Which quality flags this protocol can transmit for a point of ``kind``."""
        return Quality.INVALID | Quality.BLOCKED | Quality.SUBSTITUTED | Quality.NOT_TOPICAL | Quality.OVERFLOW

    def _store_all(self) -> None:
        """Write every monitored point's current value on every link (end of a subclass constructor)."""
        stamp = now_ms()
        with self._io_lock:
            for s in self.slots:
                if s.monitored:
                    for i in range(len(self.rtu.addresses)):
                        self._store(s, s.value, s.quality, stamp, i)

    # ------------------------------------------------------------------------------------------- value model

    def _initial_value(self, s: Slot, epoch_s: float) -> float:
        kind = s.point.kind
        if kind is PointKind.COUNTER:
            return max(0.0, s.sim.nominal) * 1000.0  # about 1000 h of energy: a meter that has been running
        if kind is PointKind.ANALOG:
            return self._model_value(s, epoch_s)
        if kind is PointKind.DOUBLE:
            return float(int(s.sim.nominal)) if 0 <= s.sim.nominal <= 3 else float(DoubleState.ON)
        if kind is PointKind.SINGLE:
            return 1.0 if s.sim.nominal >= 0.5 else 0.0
        return s.sim.nominal

    def _de_energised(self, s: Slot) -> bool:
        return any(self.slots[b].value == DoubleState.OFF for b in s.breakers)

    def _model_value(self, s: Slot, epoch_s: float) -> float:
        if self._de_energised(s):
            return 0.0
        v = s.sim.nominal * curve_multiplier(s.sim.curve, hour_of_day(epoch_s))
        if s.sim.noise_pct:
            v *= 1.0 + self._rng.gauss(0.0, s.sim.noise_pct / 100.0)
        return v

    # ------------------------------------------------------------------------------------------- public API

    @property
    def name(self) -> str:
        return self.rtu.name

    @property
    def protocol(self) -> str:
        return self.rtu.protocol.value

    @property
    def point_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def point(self, name: str) -> PointDef:
        return self.slot(name).point

    def has_point(self, name: str) -> bool:
        return name in self._by_name

    def slot(self, name: str) -> Slot:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownPointError(f"point {name!r} is not on RTU {self.name!r}") from None

    def start(self, timeout_s: float = 5.0) -> None:
        """Start serving on every address; returns when all of them listen."""
        self.link_up(None, timeout_s=timeout_s)

    def stop(self) -> None:
        with self._io_lock:
            for i, up in enumerate(self._running):
                if up:
                    self._stop_link(i)
                    self._running[i] = False

    def close(self) -> None:
        """Stop every link and release the library's objects. Idempotent; the outstation cannot start again."""
        with self._lock:
            moving, self._moving = list(self._moving.values()), {}
        for timer in moving:
            timer.cancel()
        self.stop()
        with self._io_lock:
            if not self._closed:
                self._closed = True
                self._dispose()

    def link_down(self, address: str | None = None) -> None:
        """Stop serving on ``address`` (None: all of them) so connected masters lose their connection."""
        with self._io_lock:
            for i in self._address_indexes(address):
                if self._running[i]:
                    self._stop_link(i)
                    self._running[i] = False

    def link_up(self, address: str | None = None, *, timeout_s: float = 5.0) -> None:
        with self._io_lock:
            for i in self._address_indexes(address):
                if not self._running[i]:
                    self._start_link(i, timeout_s)
                    self._running[i] = True

    def _address_indexes(self, address: str | None) -> list[int]:
        if self._closed:
            raise SimulatorError(f"RTU {self.name!r} is closed")
        if address is None:
            return list(range(len(self.rtu.addresses)))
        if address not in self.rtu.addresses:
            raise UnknownRtuError(f"RTU {self.name!r} has no address {address!r} "
                                  f"(it serves {', '.join(self.rtu.addresses)})")
        return [self.rtu.addresses.index(address)]

    def value(self, name: str) -> float:
        s = self.slot(name)
        with self._lock:
            return s.value

    def quality(self, name: str) -> Quality:
        s = self.slot(name)
        with self._lock:
            return s.quality

    def set_value(self, name: str, value: float, quality: Quality = Quality.GOOD, *, time_ms: int | None = None,
                  hold: bool = True) -> None:
        """Set a point and report it spontaneously; ``hold`` stops the load curve from driving it (see release)."""
        s = self.slot(name)
        self._check_value(s, value, quality)
        stamp = now_ms() if time_ms is None else time_ms
        with self._lock:
            if hold and s.point.kind in (PointKind.ANALOG, PointKind.COUNTER):
                s.forced = True
            self._change(s, float(value), quality, stamp, Cause.SPONTANEOUS)

    def held(self, name: str) -> bool:
        """True while ``set_value`` holds the point (the curve or the grid physics does not drive it)."""
        s = self.slot(name)
        with self._lock:
            return s.forced

    def travelling(self, name: str) -> bool:
        """True while the point's device is moving after an operate (it reads INTERMEDIATE)."""
        s = self.slot(name)
        with self._lock:
            return s.index in self._moving

    def release(self, name: str) -> None:
        """Let the load curve drive a point again after set_value; the measurement is healthy again."""
        s = self.slot(name)
        with self._lock:
            s.forced = False
            s.quality = Quality.GOOD
            s.next_due_s = 0.0

    def trip(self, name: str, *, time_ms: int | None = None) -> tuple[str, ...]:
        """Protection trip: the breaker goes OFF and its protection-trip points go to 1 with one time tag.

        Returns the names of the protection points that were set.
        """
        s = self.slot(name)
        if s.point.kind is not PointKind.DOUBLE:
            raise SimulatorError(f"point {name!r} is a {s.point.kind.value} point; only a double-point breaker "
                                 f"can trip")
        stamp = now_ms() if time_ms is None else time_ms
        prot = self._protection_slots(s)
        with self._lock:
            travel = self._moving.pop(s.index, None)
            if travel is not None:  # the relay wins over a mechanism still travelling
                travel.cancel()
            for p in prot:  # the relay operates first, then the breaker opens: same ms, relay reported first
                self._change(p, 1.0, p.quality, stamp, Cause.SPONTANEOUS)
            self._change(s, float(DoubleState.OFF), s.quality, stamp, Cause.SPONTANEOUS)
        return tuple(p.point.name for p in prot)

    def fpi(self, name: str, picked_up: bool = True, *, time_ms: int | None = None) -> None:
        s = self.slot(name)
        if s.point.kind is not PointKind.SINGLE:
            raise SimulatorError(f"point {name!r} is a {s.point.kind.value} point; a fault passage indicator "
                                 f"must be a single point")
        stamp = now_ms() if time_ms is None else time_ms
        with self._lock:
            self._change(s, 1.0 if picked_up else 0.0, s.quality, stamp, Cause.SPONTANEOUS)

    def block(self, name: str, blocked: bool = True) -> None:
        """Refuse every command to this point's control until unblocked."""
        s = self.slot(name)
        if s.point.control is None:
            raise SimulatorError(f"point {name!r} on RTU {self.name!r} has no control: nothing to block")
        with self._lock:
            if blocked:
                self._blocked.add(s.index)
            else:
                self._blocked.discard(s.index)
        with self._io_lock:
            self._on_block(s, blocked)

    def is_blocked(self, name: str) -> bool:
        s = self.slot(name)
        with self._lock:
            return s.index in self._blocked

    def set_local(self, local: bool = True) -> None:
        """Local/remote switch of the device: in local, every remote command is refused."""
        with self._lock:
            self._local = local

    @property
    def local(self) -> bool:
        with self._lock:
            return self._local

    def load_candidates(self, status: bool) -> list[str]:
        """Points the load generator may change: status points, or analogs not held by set_value."""
        with self._lock:
            if status:
                return [s.point.name for s in self.slots if s.point.kind.is_status and s.monitored]
            return [s.point.name for s in self.slots
                    if s.point.kind is PointKind.ANALOG and not s.forced and s.monitored]

    def random_change(self, name: str, time_ms: int) -> None:
        """One load-generator change: a status flip, or a fresh analog value from the curve."""
        s = self.slot(name)
        with self._lock:
            kind = s.point.kind
            if kind is PointKind.DOUBLE:
                new = float(DoubleState.ON if s.value == DoubleState.OFF else DoubleState.OFF)
            elif kind is PointKind.SINGLE:
                new = 0.0 if s.value else 1.0
            else:
                new = self._model_value(s, time_ms / 1000.0)
                if new == s.value:  # a change must be a change, also for a flat noiseless or de-energised point
                    new += abs(s.sim.nominal) * 1e-3 or 1e-3
            self._change(s, new, s.quality, time_ms, Cause.SPONTANEOUS)

    # ------------------------------------------------------------------------------------------- commands

    def check_command(self, s: Slot) -> CommandAnswer:
        """The device's answer to a select (or the first check of an operate): blocked or local refuse it."""
        with self._lock:
            if self._local:
                answer = CommandAnswer.LOCAL
            elif s.index in self._blocked or s.index in self._moving:
                answer = CommandAnswer.BLOCKED
            else:
                return CommandAnswer.ACCEPTED
            self._refused += 1
        log.info("RTU %r: command on %r refused: %s", self.name, s.point.name, answer.value)
        return answer

    def execute_command(self, s: Slot, command_value: float) -> CommandAnswer:
        """Operate: the device changes state and reports it (cause RETURN_REMOTE).

        ``command_value``: 0/1 for a single command, DoubleState OFF/ON for a double one, the raw set-point value
        (engineering = raw * scale + offset) for a set-point."""
        p = s.point
        assert p.control is not None
        answer = self.check_command(s)
        if answer is not CommandAnswer.ACCEPTED:
            return answer
        stamp = now_ms()
        ctype = p.control.type
        if ctype is ControlType.DOUBLE:
            state = int(command_value)
            if state not in (DoubleState.OFF, DoubleState.ON):
                with self._lock:
                    self._refused += 1
                log.info("RTU %r: command on %r refused: double state %s is neither OFF nor ON", self.name, p.name,
                         state)
                return CommandAnswer.INVALID
            new = float(state)
        elif ctype is ControlType.SINGLE:
            new = 1.0 if command_value else 0.0
        else:
            raw = float(int(command_value)) if ctype is ControlType.SETPOINT_SCALED else float(command_value)
            new = raw * p.scale + p.offset
        check = self.command_check
        if check is not None and not check(p, new):
            with self._lock:
                self._refused += 1
            log.info("RTU %r: command on %r refused: value %g out of the device's range", self.name, p.name, new)
            return CommandAnswer.INVALID
        timing = self.operate_time_s
        travel_s = timing(p) if timing is not None and p.kind is PointKind.DOUBLE else 0.0
        with self._lock:
            self._executed += 1
            if p.kind is PointKind.COMMAND or not s.monitored:
                return CommandAnswer.ACCEPTED  # pulse command without status feedback
            if travel_s > 0 and s.value != new:
                # The mechanism travels: INTERMEDIATE now, the new position (and the physics) after travel_s.
                self._change(s, float(DoubleState.INTERMEDIATE), s.quality, stamp, Cause.RETURN_REMOTE)
                timer = threading.Timer(travel_s, self._end_travel, args=(s, new))
                timer.daemon = True
                self._moving[s.index] = timer
                timer.start()
                return CommandAnswer.ACCEPTED
            self._apply_operate(s, new, stamp)
        hook = self.on_command_applied
        if hook is not None:
            hook(p, new)
        return CommandAnswer.ACCEPTED

    def _apply_operate(self, s: Slot, new: float, stamp: int) -> None:
        """The commanded state is reached. Caller holds ``_lock``."""
        closing = s.point.kind is PointKind.DOUBLE and new == DoubleState.ON and s.value != DoubleState.ON
        if closing:  # closing the breaker resets its latched protection-trip indication
            for prot in self._protection_slots(s):
                if prot.value:
                    self._change(prot, 0.0, prot.quality, stamp, Cause.SPONTANEOUS)
        self._change(s, new, s.quality, stamp, Cause.RETURN_REMOTE)

    def _end_travel(self, s: Slot, new: float) -> None:
        with self._lock:
            if self._moving.get(s.index) is not threading.current_thread():
                return  # cancelled (tripped or closed) meanwhile
            del self._moving[s.index]
            self._apply_operate(s, new, now_ms())
        hook = self.on_command_applied
        if hook is not None:
            try:
                hook(s.point, new)
            except Exception:
                log.exception("RTU %r: applying the end of travel of %r failed", self.name, s.point.name)

    def count_refused(self) -> None:
        """A protocol refused a command before it reached ``execute_command`` (e.g. a malformed request)."""
        with self._lock:
            self._refused += 1

    def _protection_slots(self, breaker: Slot) -> list[Slot]:
        element = breaker.point.element
        if not element:
            return []
        return [s for s in self.slots if s.point.kind is PointKind.SINGLE and s.point.element == element
                and "PROT" in s.point.name.upper()]

    # ------------------------------------------------------------------------------------------- state changes

    def _change(self, s: Slot, value: float, quality: Quality, time_ms: int, cause: Cause) -> None:
        """Apply a change and queue its report. Caller holds ``_lock``."""
        was = s.value
        s.value = value
        s.quality = quality
        if s.point.kind is PointKind.DOUBLE and (was == DoubleState.OFF) != (value == DoubleState.OFF):
            for t in self.slots:  # energised state changed: refresh what this breaker feeds at the next tick
                if s.index in t.breakers and not t.forced:
                    t.next_due_s = 0.0
        if not s.monitored:
            return
        if len(self._queue) >= self._max_queue:
            self._dropped += 1
            return
        self._queue.append((s.index, value, quality, time_ms, cause))

    def _check_value(self, s: Slot, value: float, quality: Quality) -> None:
        p = s.point
        if not s.monitored:
            raise SimulatorError(f"point {p.name!r} on RTU {self.name!r} is a pure command point without a value")
        bad = Quality(quality) & ~self.supported_quality(p.kind)
        if bad:
            raise SimulatorError(f"point {p.name!r}: {self.protocol} {p.source.type_id} cannot carry quality "
                                 f"{'|'.join(bad.names())}")
        if p.kind is PointKind.DOUBLE and value not in (0, 1, 2, 3):
            raise SimulatorError(f"point {p.name!r}: double-point value must be 0..3, got {value}")
        if p.kind is PointKind.SINGLE and value not in (0, 1):
            raise SimulatorError(f"point {p.name!r}: single-point value must be 0 or 1, got {value}")

    # ------------------------------------------------------------------------------------------- loop thread

    def tick(self, epoch_s: float) -> None:
        """Drive the load curves: due analogs get a fresh value and a report; counters accumulate."""
        stamp = int(epoch_s * 1000)
        refresh_counters = epoch_s >= self._counter_refresh_due_s
        counters: list[tuple[Slot, float]] = []
        with self._lock:
            for s in self.slots:
                kind = s.point.kind
                if kind is PointKind.ANALOG:
                    if s.sim.period_s <= 0 or s.forced:
                        continue
                    if epoch_s >= s.next_due_s:
                        s.next_due_s = epoch_s + s.sim.period_s
                        self._change(s, self._model_value(s, epoch_s), s.quality, stamp, Cause.SPONTANEOUS)
                elif kind is PointKind.COUNTER:
                    if not s.forced and not self._de_energised(s):
                        s.value += energy_kwh(s.sim.curve, s.sim.nominal, s.counter_last_s, epoch_s)
                    s.counter_last_s = epoch_s
                    if refresh_counters:
                        counters.append((s, s.value))
                        if s.sim.period_s > 0 and epoch_s >= s.next_due_s:
                            s.next_due_s = epoch_s + s.sim.period_s
                            self._change(s, s.value, s.quality, stamp, Cause.SPONTANEOUS)
        if refresh_counters:
            self._counter_refresh_due_s = epoch_s + COUNTER_REFRESH_S
            with self._io_lock:
                if not self._closed:
                    for s, v in counters:
                        for i in range(len(self.rtu.addresses)):
                            self._store(s, v, s.quality, stamp, i)

    def pump(self, monotonic_s: float) -> int:
        """Transmit what the token bucket allows now; returns how many reports went out."""
        n = self._bucket.available(monotonic_s)
        if n <= 0:
            return 0
        with self._lock:
            take = min(n, len(self._queue))
            items = [self._queue.popleft() for _ in range(take)]
            self._inflight = len(items)
        if not items:
            return 0
        self._bucket.consume(len(items))
        sent = unsent = 0
        by_kind: dict[str, int] = {}
        by_address = [0] * len(self.rtu.addresses)
        with self._io_lock:
            if self._closed:
                items = []
            running = [i for i, up in enumerate(self._running) if up]
            stopped = [i for i, up in enumerate(self._running) if not up]
            for index, value, quality, time_ms, cause in items:
                s = self.slots[index]
                took = self._report(s, value, quality, time_ms, cause, running) if running else []
                for i in took:
                    by_address[i] += 1
                for i in stopped:  # a stopped server still answers the next interrogation from its table
                    self._store(s, value, quality, time_ms, i)
                if took:
                    sent += 1
                    k = s.point.kind.value
                    by_kind[k] = by_kind.get(k, 0) + 1
                else:
                    unsent += 1
        with self._lock:
            self._inflight = 0
            self._sent += sent
            self._unsent += unsent
            for k, c in by_kind.items():
                self._sent_by_kind[k] += c
            for i, c in enumerate(by_address):
                self._sent_by_address[self.rtu.addresses[i]] += c
        return sent

    def pending(self) -> int:
        """Reports queued or being transmitted right now."""
        with self._lock:
            return len(self._queue) + self._inflight

    # ------------------------------------------------------------------------------------------- stats

    def stats(self) -> RtuStats:
        with self._io_lock:
            links = tuple(a for a, up in zip(self.rtu.addresses, self._running, strict=True) if up)
            clients = self._client_count() if not self._closed else 0
        with self._lock:
            return RtuStats(
                rtu=self.name, sent=self._sent, sent_by_kind=dict(self._sent_by_kind), unsent=self._unsent,
                dropped=self._dropped, queued=len(self._queue), commands_executed=self._executed,
                commands_refused=self._refused, links_up=links, clients=clients,
                sent_by_address=dict(self._sent_by_address), protocol=self.protocol,
            )
