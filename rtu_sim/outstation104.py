"""One simulated IEC 60870-5-104 RTU on c104: point state, command handling and paced transmission.

The point state lives here in Python (engineering units); each configured address runs its own ``c104.Server``
whose points mirror that state, so a redundant pair reports the same values and a master can switch over.

Threads: the simulator's loop thread calls ``tick`` and ``pump`` (the only place points are written and transmitted);
c104's own thread calls the command handlers, which only change the Python state and queue the report; API calls
from any thread do the same. ``_lock`` guards state and queue and is never held across a c104 call; ``_c104_lock``
serialises point writes, transmissions and server start/stop.

No ``from __future__ import annotations`` here: c104 checks callback type hints against its own classes, which
postponed (string) annotations would defeat.
"""

import datetime
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import c104

from models.config import RtuConfig, SimProfile
from models.points import ControlMode, ControlType, DoubleState, PointDef, PointKind, Quality
from models.timebase import now_ms
from rtu_sim.curves import curve_multiplier, energy_kwh, hour_of_day
from rtu_sim.errors import SimulatorError, UnknownPointError, UnknownRtuError
from rtu_sim.pacing import TokenBucket

log = logging.getLogger(__name__)

#: Quality flags an IEC 104 quality descriptor can carry, per point kind.
_QUALITY_TO_C104: tuple[tuple[Quality, c104.Quality], ...] = (
    (Quality.INVALID, c104.Quality.Invalid),
    (Quality.BLOCKED, c104.Quality.Blocked),
    (Quality.SUBSTITUTED, c104.Quality.Substituted),
    (Quality.NOT_TOPICAL, c104.Quality.NonTopical),
    (Quality.OVERFLOW, c104.Quality.Overflow),
)
_IEC_QUALITY = Quality.INVALID | Quality.BLOCKED | Quality.SUBSTITUTED | Quality.NOT_TOPICAL | Quality.OVERFLOW
_STATUS_QUALITY = _IEC_QUALITY & ~Quality.OVERFLOW  # SIQ/DIQ have no overflow bit
_COUNTER_QUALITY = Quality.INVALID  # BCR carries only IV (plus carry/adjusted, which mean something else)

_DOUBLE = {0: c104.Double.INTERMEDIATE, 1: c104.Double.OFF, 2: c104.Double.ON, 3: c104.Double.INDETERMINATE}
_CONTROL_TYPES = {
    ControlType.SINGLE: c104.Type.C_SC_NA_1,
    ControlType.DOUBLE: c104.Type.C_DC_NA_1,
    ControlType.SETPOINT_FLOAT: c104.Type.C_SE_NC_1,
    ControlType.SETPOINT_SCALED: c104.Type.C_SE_NB_1,
}
_TIME_TAGGED = frozenset({"M_SP_TB_1", "M_DP_TB_1", "M_ME_TD_1", "M_ME_TE_1", "M_ME_TF_1", "M_IT_TB_1"})
_COUNTER_REFRESH_S = 1.0  # counters are written into the point table this often (read by counter interrogation)
_INT16_MIN, _INT16_MAX = -32768, 32767
_NORMALIZED_MAX = 1.0 - 2.0**-15




def _utc(time_ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(time_ms / 1000.0, tz=datetime.UTC)


def quality_flags_supported(kind: PointKind) -> Quality:
    """Which of our quality flags the IEC 104 information object of ``kind`` can transmit."""
    if kind is PointKind.COUNTER:
        return _COUNTER_QUALITY
    if kind.is_status:
        return _STATUS_QUALITY
    return _IEC_QUALITY


@dataclass(frozen=True, slots=True)
class RtuStats:
    """Counters of one simulated RTU since start; ``sent`` counts each report once even on a redundant pair."""

    rtu: str
    sent: int  # reports accepted by c104 for at least one connected master
    sent_by_kind: dict[str, int]  # PointKind value -> reports
    unsent: int  # reports due while no master was connected (or every link was down): the next GI covers them
    dropped: int  # reports lost because the send queue was full (pacing could not keep up)
    queued: int  # reports waiting for the token bucket now
    commands_executed: int
    commands_refused: int
    links_up: tuple[str, ...]  # addresses whose server is running
    clients: int  # open master connections over all addresses
    sent_by_address: dict[str, int] = field(default_factory=dict)


class _Slot:
    """Run-time state of one configured point on this RTU."""

    __slots__ = ("index", "point", "sim", "type", "c104_points", "value", "quality", "forced", "next_due_s",
                 "breakers", "counter_last_s", "c104_controls")

    def __init__(self, index: int, point: PointDef, sim: SimProfile) -> None:
        self.index = index
        self.point = point
        self.sim = sim
        self.type: c104.Type | None = getattr(c104.Type, point.source.type_id) if point.source.type_id else None
        self.c104_points: list[c104.Point] = []  # one per server (address); empty for pure command points
        self.c104_controls: list[c104.Point] = []  # the command object, one per server
        self.value = 0.0
        self.quality = Quality.GOOD
        self.forced = False  # set_value holds the point: the load curve no longer drives it
        self.next_due_s = 0.0
        self.breakers: tuple[int, ...] = ()  # double points on the same element: an open one de-energises it
        self.counter_last_s = 0.0


class Outstation104:
    """One RTU of the station configuration served on every one of its addresses."""

    def __init__(self, rtu: RtuConfig, points: Sequence[PointDef], sims: Sequence[SimProfile], *,
                 rng: random.Random, max_queue: int = 200_000, tick_rate_ms: int = 100) -> None:
        if len(points) != len(sims):
            raise SimulatorError(f"RTU {rtu.name!r}: {len(points)} points but {len(sims)} sim profiles")
        self.rtu = rtu
        self._rng = rng
        self._lock = threading.Lock()
        self._c104_lock = threading.RLock()
        self._queue: deque[tuple[int, float, Quality, int, c104.Cot]] = deque()
        self._max_queue = max_queue
        self._bucket = TokenBucket(rtu.max_updates_per_s, now_s=time.monotonic())
        self._blocked: set[int] = set()
        self._sent = 0
        self._sent_by_kind: dict[str, int] = {k.value: 0 for k in PointKind}
        self._sent_by_address: dict[str, int] = dict.fromkeys(rtu.addresses, 0)
        self._unsent = 0
        self._inflight = 0
        self._dropped = 0
        self._executed = 0
        self._refused = 0
        self._counter_refresh_due_s = 0.0
        # Called (outside the locks, on c104's thread) after a command changed a status point: the grid physics
        # follows the switch this way. Must not raise; must not call back into c104.
        self.on_command_applied: Callable[[PointDef, float], None] | None = None

        self._slots = [_Slot(i, p, s) for i, (p, s) in enumerate(zip(points, sims, strict=True))]
        self._by_name = {s.point.name: s for s in self._slots}
        self._by_control: dict[int, _Slot] = {s.point.control.address: s for s in self._slots if s.point.control}
        doubles_by_element: dict[str, list[int]] = {}
        for s in self._slots:
            if s.point.kind is PointKind.DOUBLE and s.point.element:
                doubles_by_element.setdefault(s.point.element, []).append(s.index)
        start_s = time.time()
        for s in self._slots:
            if s.point.kind in (PointKind.ANALOG, PointKind.COUNTER):
                s.breakers = tuple(doubles_by_element.get(s.point.element, ()))
        for s in self._slots:
            s.value = self._initial_value(s, start_s)
            s.counter_last_s = start_s
            # Stagger the periodic reports over one period so the points do not all report at once.
            s.next_due_s = start_s + rng.uniform(0.0, s.sim.period_s)

        select_timeout_ms = int(1000 * max([10.0] + [p.control.timeout_s for p in points if p.control]))
        self._servers: list[c104.Server] = []
        self._running: list[bool] = []
        for address in rtu.addresses:
            host, port = address.rsplit(":", 1)
            server = c104.Server(ip=host, port=int(port), tick_rate_ms=tick_rate_ms,
                                 select_timeout_ms=select_timeout_ms)
            station = server.add_station(common_address=rtu.common_address)
            if station is None:
                raise SimulatorError(f"RTU {rtu.name!r}: c104 refused common address {rtu.common_address}")
            for s in self._slots:
                self._add_points(station, s, address)
            self._servers.append(server)
            self._running.append(False)
        stamp = now_ms()
        for s in self._slots:
            if s.c104_points:
                self._write(s, s.value, s.quality, stamp)

    # ------------------------------------------------------------------------------------------- construction

    def _initial_value(self, s: _Slot, epoch_s: float) -> float:
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

    def _add_points(self, station: c104.Station, s: _Slot, address: str) -> None:
        p = s.point
        where = f"RTU {self.rtu.name!r} ({address}) point {p.name!r}"
        if s.type is not None:
            cp = station.add_point(io_address=p.source.address, type=s.type)
            if cp is None:
                raise SimulatorError(f"{where}: c104 refused IOA {p.source.address} type {p.source.type_id}")
            s.c104_points.append(cp)
        if p.control is not None:
            mode = (c104.CommandMode.SELECT_AND_EXECUTE if p.control.mode is ControlMode.SELECT_BEFORE_OPERATE
                    else c104.CommandMode.DIRECT)
            cmd = station.add_point(io_address=p.control.address, type=_CONTROL_TYPES[p.control.type],
                                    command_mode=mode)
            if cmd is None:
                raise SimulatorError(f"{where}: c104 refused control IOA {p.control.address}")
            cmd.on_receive(callable=self._command_handler(s))
            s.c104_controls.append(cmd)

    def _command_handler(self, s: _Slot) -> Callable[[c104.Point, c104.Information, c104.IncomingMessage],
                                                     c104.ResponseState]:
        def on_command(point: c104.Point, previous_info: c104.Information,
                       message: c104.IncomingMessage) -> c104.ResponseState:
            # c104 removes a raising callback and then confirms commands positively: never let anything escape.
            try:
                return self._execute(s, point.info.value)
            except Exception:
                log.exception("RTU %r: command on %r failed; answered negatively", self.rtu.name, s.point.name)
                with self._lock:
                    self._refused += 1
                return c104.ResponseState.FAILURE

        return on_command

    # ------------------------------------------------------------------------------------------- value model

    def _de_energised(self, s: _Slot) -> bool:
        return any(self._slots[b].value == DoubleState.OFF for b in s.breakers)

    def _model_value(self, s: _Slot, epoch_s: float) -> float:
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
    def point_names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def point(self, name: str) -> PointDef:
        return self._slot(name).point

    def has_point(self, name: str) -> bool:
        return name in self._by_name

    def start(self, timeout_s: float = 5.0) -> None:
        """Start every server; returns when all of them run."""
        for address in self.rtu.addresses:
            self.link_up(address, timeout_s=timeout_s)

    def stop(self) -> None:
        with self._c104_lock:
            for i, server in enumerate(self._servers):
                if self._running[i]:
                    server.stop()
                    self._running[i] = False

    def close(self) -> None:
        """Stop the servers and drop the c104 objects now.

        The command handlers close over this object, which holds the servers that hold the handlers: without
        breaking that cycle the native servers live on until some later garbage-collector run destroys them on
        whatever thread triggers it. Idempotent; the outstation cannot start again.
        """
        self.stop()
        with self._c104_lock:
            for s in self._slots:
                for cmd in s.c104_controls:
                    cmd.on_receive(callable=None)
                s.c104_controls.clear()
                s.c104_points.clear()
            self._servers.clear()
            self._running.clear()

    def link_down(self, address: str | None = None) -> None:
        """Stop the server on ``address`` (None: all of them) so connected masters lose their TCP connection."""
        with self._c104_lock:
            for i in self._address_indexes(address):
                if self._running[i]:
                    self._servers[i].stop()
                    self._running[i] = False

    def link_up(self, address: str | None = None, *, timeout_s: float = 5.0) -> None:
        with self._c104_lock:
            for i in self._address_indexes(address):
                if self._running[i]:
                    continue
                server = self._servers[i]
                server.start()
                deadline = time.monotonic() + timeout_s
                while not server.is_running:
                    if time.monotonic() > deadline:
                        raise SimulatorError(f"RTU {self.name!r}: server on {self.rtu.addresses[i]} did not start "
                                             f"within {timeout_s} s (port in use?)")
                    time.sleep(0.01)
                self._running[i] = True

    def _address_indexes(self, address: str | None) -> list[int]:
        if not self._servers:
            raise SimulatorError(f"RTU {self.name!r} is closed")
        if address is None:
            return list(range(len(self._servers)))
        if address not in self.rtu.addresses:
            raise UnknownRtuError(f"RTU {self.name!r} has no address {address!r} "
                                  f"(it serves {', '.join(self.rtu.addresses)})")
        return [self.rtu.addresses.index(address)]

    def value(self, name: str) -> float:
        s = self._slot(name)
        with self._lock:
            return s.value

    def quality(self, name: str) -> Quality:
        s = self._slot(name)
        with self._lock:
            return s.quality

    def set_value(self, name: str, value: float, quality: Quality = Quality.GOOD, *, time_ms: int | None = None,
                  hold: bool = True) -> None:
        """Set a point and report it spontaneously; ``hold`` stops the load curve from driving it (see release)."""
        s = self._slot(name)
        self._check_value(s, value, quality)
        stamp = now_ms() if time_ms is None else time_ms
        with self._lock:
            if hold and s.point.kind in (PointKind.ANALOG, PointKind.COUNTER):
                s.forced = True
            self._change(s, float(value), quality, stamp, c104.Cot.SPONTANEOUS)

    def held(self, name: str) -> bool:
        """True while ``set_value`` holds the point (the curve or the grid physics does not drive it)."""
        s = self._slot(name)
        with self._lock:
            return s.forced

    def release(self, name: str) -> None:
        """Let the load curve drive a point again after set_value; the measurement is healthy again."""
        s = self._slot(name)
        with self._lock:
            s.forced = False
            s.quality = Quality.GOOD
            s.next_due_s = 0.0

    def trip(self, name: str, *, time_ms: int | None = None) -> tuple[str, ...]:
        """Protection trip: the breaker goes OFF and its protection-trip points go to 1 with one time tag.

        Returns the names of the protection points that were set.
        """
        s = self._slot(name)
        if s.point.kind is not PointKind.DOUBLE:
            raise SimulatorError(f"point {name!r} is a {s.point.kind.value} point; only a double-point breaker "
                                 f"can trip")
        stamp = now_ms() if time_ms is None else time_ms
        prot = self._protection_slots(s)
        with self._lock:
            for p in prot:  # the relay operates first, then the breaker opens: same ms, relay reported first
                self._change(p, 1.0, p.quality, stamp, c104.Cot.SPONTANEOUS)
            self._change(s, float(DoubleState.OFF), s.quality, stamp, c104.Cot.SPONTANEOUS)
        return tuple(p.point.name for p in prot)

    def fpi(self, name: str, picked_up: bool = True, *, time_ms: int | None = None) -> None:
        s = self._slot(name)
        if s.point.kind is not PointKind.SINGLE:
            raise SimulatorError(f"point {name!r} is a {s.point.kind.value} point; a fault passage indicator "
                                 f"must be a single point")
        stamp = now_ms() if time_ms is None else time_ms
        with self._lock:
            self._change(s, 1.0 if picked_up else 0.0, s.quality, stamp, c104.Cot.SPONTANEOUS)

    def block(self, name: str, blocked: bool = True) -> None:
        """Refuse commands to this point's control object.

        c104 2.2.1 still sends ACT_TERM ~1 ms after a *negative* execute confirmation of a select-before-operate
        command, and its own client then turns the failure into success (a race). So a blocked SBO control refuses
        already the select, as a real RTU in local/blocked state does: the command object is switched to direct mode,
        which c104 answers with a negative select confirmation and no ACT_TERM. Direct-mode controls are refused
        on execute by the command handler.
        """
        s = self._slot(name)
        if s.point.control is None:
            raise SimulatorError(f"point {name!r} on RTU {self.name!r} has no control: nothing to block")
        with self._lock:
            if blocked:
                self._blocked.add(s.index)
            else:
                self._blocked.discard(s.index)
        if s.point.control.mode is ControlMode.SELECT_BEFORE_OPERATE:
            mode = c104.CommandMode.DIRECT if blocked else c104.CommandMode.SELECT_AND_EXECUTE
            with self._c104_lock:
                for cmd in s.c104_controls:
                    cmd.command_mode = mode

    def is_blocked(self, name: str) -> bool:
        s = self._slot(name)
        with self._lock:
            return s.index in self._blocked

    def load_candidates(self, status: bool) -> list[str]:
        """Points the load generator may change: status points, or analogs not held by set_value."""
        with self._lock:
            if status:
                return [s.point.name for s in self._slots if s.point.kind.is_status]
            return [s.point.name for s in self._slots if s.point.kind is PointKind.ANALOG and not s.forced]

    def random_change(self, name: str, time_ms: int) -> None:
        """One load-generator change: a status flip, or a fresh analog value from the curve."""
        s = self._slot(name)
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
            self._change(s, new, s.quality, time_ms, c104.Cot.SPONTANEOUS)

    # ------------------------------------------------------------------------------------------- commands

    def _execute(self, s: _Slot, command_value: object) -> c104.ResponseState:
        p = s.point
        assert p.control is not None
        with self._lock:
            if s.index in self._blocked:
                self._refused += 1
                log.info("RTU %r: command on blocked point %r refused", self.name, p.name)
                return c104.ResponseState.FAILURE
        stamp = now_ms()
        ctype = p.control.type
        if ctype is ControlType.DOUBLE:
            state = int(command_value)  # type: ignore[call-overload]
            if state not in (DoubleState.OFF, DoubleState.ON):
                return self._refuse(p, f"double command state {state} is neither OFF nor ON")
            new = float(state)
        elif ctype is ControlType.SINGLE:
            new = 1.0 if command_value else 0.0
        else:
            raw = float(int(command_value)) if ctype is ControlType.SETPOINT_SCALED else float(command_value)
            new = raw * p.scale + p.offset
        with self._lock:
            self._executed += 1
            if p.kind is PointKind.COMMAND or not s.c104_points:
                return c104.ResponseState.SUCCESS  # pulse command without status feedback
            closing = p.kind is PointKind.DOUBLE and new == DoubleState.ON and s.value != DoubleState.ON
            if closing:  # closing the breaker resets its latched protection-trip indication
                for prot in self._protection_slots(s):
                    if prot.value:
                        self._change(prot, 0.0, prot.quality, stamp, c104.Cot.SPONTANEOUS)
            self._change(s, new, s.quality, stamp, c104.Cot.RETURN_INFO_REMOTE)
        hook = self.on_command_applied
        if hook is not None:
            hook(p, new)
        return c104.ResponseState.SUCCESS

    def _refuse(self, p: PointDef, why: str) -> c104.ResponseState:
        log.info("RTU %r: command on %r refused: %s", self.name, p.name, why)
        with self._lock:
            self._refused += 1
        return c104.ResponseState.FAILURE

    def _protection_slots(self, breaker: _Slot) -> list[_Slot]:
        element = breaker.point.element
        if not element:
            return []
        return [s for s in self._slots if s.point.kind is PointKind.SINGLE and s.point.element == element
                and "PROT" in s.point.name.upper()]

    # ------------------------------------------------------------------------------------------- state changes

    def _change(self, s: _Slot, value: float, quality: Quality, time_ms: int, cause: c104.Cot) -> None:
        """Apply a change and queue its report. Caller holds ``_lock``."""
        was = s.value
        s.value = value
        s.quality = quality
        if s.point.kind is PointKind.DOUBLE and (was == DoubleState.OFF) != (value == DoubleState.OFF):
            for t in self._slots:  # energised state changed: refresh what this breaker feeds at the next tick
                if s.index in t.breakers and not t.forced:
                    t.next_due_s = 0.0
        if not s.c104_points:
            return
        if len(self._queue) >= self._max_queue:
            self._dropped += 1
            return
        self._queue.append((s.index, value, quality, time_ms, cause))

    def _check_value(self, s: _Slot, value: float, quality: Quality) -> None:
        p = s.point
        if not s.c104_points:
            raise SimulatorError(f"point {p.name!r} on RTU {self.name!r} is a pure command point without a value")
        bad = Quality(quality) & ~quality_flags_supported(p.kind)
        if bad:
            raise SimulatorError(f"point {p.name!r}: IEC 104 {p.source.type_id} cannot carry quality "
                                 f"{'|'.join(bad.names())}")
        if p.kind is PointKind.DOUBLE and value not in (0, 1, 2, 3):
            raise SimulatorError(f"point {p.name!r}: double-point value must be 0..3, got {value}")
        if p.kind is PointKind.SINGLE and value not in (0, 1):
            raise SimulatorError(f"point {p.name!r}: single-point value must be 0 or 1, got {value}")

    def _slot(self, name: str) -> _Slot:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownPointError(f"point {name!r} is not on RTU {self.name!r}") from None

    # ------------------------------------------------------------------------------------------- loop thread

    def tick(self, epoch_s: float) -> None:
        """Drive the load curves: due analogs get a fresh value and a report; counters accumulate."""
        stamp = int(epoch_s * 1000)
        refresh_counters = epoch_s >= self._counter_refresh_due_s
        counters: list[tuple[_Slot, float]] = []
        with self._lock:
            for s in self._slots:
                kind = s.point.kind
                if kind is PointKind.ANALOG:
                    if s.sim.period_s <= 0 or s.forced:
                        continue
                    if epoch_s >= s.next_due_s:
                        s.next_due_s = epoch_s + s.sim.period_s
                        self._change(s, self._model_value(s, epoch_s), s.quality, stamp, c104.Cot.SPONTANEOUS)
                elif kind is PointKind.COUNTER:
                    if not s.forced and not self._de_energised(s):
                        s.value += energy_kwh(s.sim.curve, s.sim.nominal, s.counter_last_s, epoch_s)
                    s.counter_last_s = epoch_s
                    if refresh_counters:
                        counters.append((s, s.value))
                        if s.sim.period_s > 0 and epoch_s >= s.next_due_s:
                            s.next_due_s = epoch_s + s.sim.period_s
                            self._change(s, s.value, s.quality, stamp, c104.Cot.SPONTANEOUS)
        if refresh_counters:
            self._counter_refresh_due_s = epoch_s + _COUNTER_REFRESH_S
            with self._c104_lock:
                for s, v in counters:
                    self._write(s, v, s.quality, stamp)

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
        by_address = [0] * len(self._servers)
        with self._c104_lock:
            running = [i for i, up in enumerate(self._running) if up]
            for index, value, quality, time_ms, cause in items:
                s = self._slots[index]
                ok = False
                for i in running:
                    cp = s.c104_points[i]
                    cp.info = self._info(s, value, quality, time_ms)
                    if cp.transmit(cause=cause):
                        ok = True
                        by_address[i] += 1
                for i in range(len(self._servers)):
                    if i not in running:  # a stopped server still answers the next GI from its point table
                        s.c104_points[i].info = self._info(s, value, quality, time_ms)
                if ok:
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

    def _write(self, s: _Slot, value: float, quality: Quality, time_ms: int) -> None:
        for cp in s.c104_points:
            cp.info = self._info(s, value, quality, time_ms)

    def _info(self, s: _Slot, value: float, quality: Quality, time_ms: int) -> c104.Information:
        p = s.point
        type_id = p.source.type_id
        at = _utc(time_ms) if type_id in _TIME_TAGGED else None
        if p.kind is PointKind.COUNTER:
            raw = round((value - p.offset) / p.scale)
            raw = ((raw + 2**31) % 2**32) - 2**31  # a 32-bit binary counter wraps
            bq = c104.BinaryCounterQuality.Invalid if quality & Quality.INVALID else c104.BinaryCounterQuality()
            return c104.BinaryCounterInfo(counter=raw, sequence=c104.UInt5(0), quality=bq, recorded_at=at)
        q = c104.Quality()
        for ours, theirs in _QUALITY_TO_C104:
            if quality & ours:
                q = q | theirs
        if p.kind is PointKind.DOUBLE:
            return c104.DoubleInfo(state=_DOUBLE[int(value) & 3], quality=q, recorded_at=at)
        if p.kind is PointKind.SINGLE:
            return c104.SingleInfo(on=bool(value), quality=q, recorded_at=at)
        raw_f = (value - p.offset) / p.scale
        if type_id in ("M_ME_NC_1", "M_ME_TF_1"):
            return c104.ShortInfo(actual=raw_f, quality=q, recorded_at=at)
        if type_id in ("M_ME_NB_1", "M_ME_TE_1"):
            raw_i = min(_INT16_MAX, max(_INT16_MIN, round(raw_f)))
            return c104.ScaledInfo(actual=c104.Int16(raw_i), quality=q, recorded_at=at)
        if type_id in ("M_ME_NA_1", "M_ME_TD_1"):
            raw_n = min(_NORMALIZED_MAX, max(-1.0, raw_f))
            return c104.NormalizedInfo(actual=c104.NormalizedFloat(raw_n), quality=q, recorded_at=at)
        raise SimulatorError(f"point {p.name!r}: type {type_id} is not simulated")

    # ------------------------------------------------------------------------------------------- stats

    def stats(self) -> RtuStats:
        with self._c104_lock:
            links = tuple(a for a, up in zip(self.rtu.addresses, self._running, strict=True) if up)
            clients = sum(srv.open_connection_count for srv, up in zip(self._servers, self._running, strict=True)
                          if up)
        with self._lock:
            return RtuStats(
                rtu=self.name, sent=self._sent, sent_by_kind=dict(self._sent_by_kind), unsent=self._unsent,
                dropped=self._dropped, queued=len(self._queue), commands_executed=self._executed,
                commands_refused=self._refused, links_up=links, clients=clients,
                sent_by_address=dict(self._sent_by_address),
            )
