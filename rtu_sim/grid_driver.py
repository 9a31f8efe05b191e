"""Drives the points bound to CIM measurements from ``GridPhysics``: reruns the flow periodically and after every
switching, and reports what changed spontaneously.

Reporting rule (so measurement noise does not flood the links): an analog is reported when it moved by more than
``deadband_pct`` of its last reported value (at least a small absolute floor per unit), when it crosses to or from
zero (a section dies or comes back), or when it was last reported ``max_report_age_s`` ago (keeps it topical in the
RTDB). Status points are reported on every change. Operator commands on a bound ``Pos`` point switch the physics
(``Outstation.on_command_applied``) once the device's operate time has passed (``OperateTimes``: the point reads
INTERMEDIATE meanwhile); a command on a tap changer's ``<tap>.Step.Set`` set-point moves the tap (out-of-range steps are
refused INVALID) and the tap position follows at the re-solve. Trips and FPIs from faults come back as status reports
with the event's time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from models.measurement_points import MeasurementBinding, Quantity
from models.network import SwitchKind
from models.points import DoubleState, PointDef
from rtu_sim.errors import SimulatorError
from rtu_sim.outstation import Outstation
from rtu_sim.physics import FaultKind, FaultResult, FlowMethod, FlowSnapshot, GridPhysics, PhysicsError, SwitchEvent

log = logging.getLogger(__name__)

__all__ = ["INSTANT_OPERATE", "FlowMethod", "OperateTimes", "PhysicsDriver", "PhysicsSettings"]

_ABS_FLOOR = {Quantity.VOLTAGE_KV: 0.005, Quantity.CURRENT_A: 0.5, Quantity.P_KW: 0.5, Quantity.Q_KVAR: 0.5,
              Quantity.TAP_POSITION: 0.5}
_STATUS = (Quantity.SWITCH_POSITION, Quantity.FAULT_INDICATOR)
_EXACT = (*_STATUS, Quantity.TAP_SETPOINT)  # reported on every change, never noisy


@dataclass(frozen=True, slots=True)
class OperateTimes:
    """Seconds from an accepted operate to the new position, by device (mechanism travel)."""

    breaker_s: float = 0.08  # breakers and reclosers (spring mechanism)
    load_break_switch_s: float = 1.5  # motorised load-break switches, sectionalisers, plain switches
    disconnector_s: float = 3.0
    capacitor_s: float = 0.08  # capacitor bank (vacuum) switch

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not 0 <= value <= 60:
                raise SimulatorError(f"OperateTimes.{name} must be 0..60 s, got {value}")

    def of(self, b: MeasurementBinding) -> float:
        cls = b.element_class
        if cls in (SwitchKind.BREAKER.value, SwitchKind.RECLOSER.value):
            return self.breaker_s
        if cls == SwitchKind.DISCONNECTOR.value:
            return self.disconnector_s
        if cls == "LinearShuntCompensator":
            return self.capacitor_s
        return self.load_break_switch_s


#: Every device moves at once (the behaviour before operate times).
INSTANT_OPERATE = OperateTimes(0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class PhysicsSettings:
    period_s: float = 5.0  # flow rerun period (load curves move slowly)
    noise_pct: float = 0.5  # Gaussian measurement noise, one sigma, of the value
    deadband_pct: float = 2.0
    max_report_age_s: float = 30.0
    flow: FlowMethod = FlowMethod.BALANCED  # THREE_PHASE: unbalanced per-phase values (models.three_phase_flow)
    frequency_hz: float | None = None  # of the line impedances; None: the station's ``[network] frequency_hz``
    operate_times: OperateTimes = OperateTimes()


@dataclass(slots=True)
class _Bound:
    outstation: Outstation
    point: PointDef
    binding: MeasurementBinding
    last_value: float | None = None
    last_report_s: float = 0.0


class PhysicsDriver:
    """Owns the physics thread; built by ``RtuSimulator`` when its station has a network model."""

    def __init__(self, physics: GridPhysics, bound: list[tuple[Outstation, PointDef, MeasurementBinding]],
                 settings: PhysicsSettings = PhysicsSettings()) -> None:
        self.physics = physics
        self.settings = settings
        self._bound = [_Bound(o, p, b) for o, p, b in bound]
        self._by_name = {x.point.name: x for x in self._bound}
        self._status_of: dict[str, list[_Bound]] = defaultdict(list)  # element mRID -> Pos/FPI points
        for x in self._bound:
            if x.binding.quantity in _STATUS:
                self._status_of[x.binding.element_mrid].append(x)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._push_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.solves = 0
        for o in {id(x.outstation): x.outstation for x in self._bound}.values():
            o.on_command_applied = self._on_command
            o.operate_time_s = self._operate_time
            o.command_check = self._command_ok

    def binding(self, point: str) -> MeasurementBinding | None:
        x = self._by_name.get(point)
        return x.binding if x is not None else None

    # ------------------------------------------------------------------------------------------- lifecycle

    def initialise(self) -> FlowSnapshot:
        """First solve and every bound point set to it (before the servers start, so the first GI sees it)."""
        snap = self.physics.solve()
        self._push(snap, force=True)
        return snap

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rtu-sim-physics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        for o in {id(x.outstation): x.outstation for x in self._bound}.values():
            o.on_command_applied = None
            o.operate_time_s = None
            o.command_check = None

    def request_solve(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            # Also solve when reports fall due by age, so no point outlives the RTDB's stale limit.
            self._wake.wait(min(self.settings.period_s, self.settings.max_report_age_s))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                snap = self.physics.solve()
                self.solves += 1
                self._push(snap)
            except Exception:  # keep simulating; one bad solve must not silence the grid
                log.exception("physics: solve or report failed")

    # ------------------------------------------------------------------------------------------- events

    def _operate_time(self, point: PointDef) -> float:
        x = self._by_name.get(point.name)
        if x is None or x.binding.quantity is not Quantity.SWITCH_POSITION:
            return 0.0
        return self.settings.operate_times.of(x.binding)

    def _command_ok(self, point: PointDef, value: float) -> bool:
        x = self._by_name.get(point.name)
        if x is None or x.binding.quantity is not Quantity.TAP_SETPOINT:
            return True
        tap = next((t for t in self.physics.model.tap_changers if t.mrid == x.binding.tap_changer_mrid), None)
        return tap is not None and value == round(value) and tap.low_step <= value <= tap.high_step

    def _on_command(self, point: PointDef, value: float) -> None:
        x = self._by_name.get(point.name)
        if x is not None and x.binding.quantity is Quantity.TAP_SETPOINT:
            self.set_tap(x.binding.tap_changer_mrid or "", value)
            return
        if x is None or x.binding.quantity is not Quantity.SWITCH_POSITION:
            return
        if value not in (DoubleState.ON, DoubleState.OFF):
            return
        try:
            self.switch_changed(point.name, value == DoubleState.ON)
        except Exception:
            log.exception("physics: command on %r could not be applied", point.name)

    def switch_changed(self, point: str, closed: bool) -> tuple[SwitchEvent, ...]:
        """A bound Pos point changed in the field (command, trip, scripted set): follow it in the physics."""
        x = self._by_name[point]
        events = self.physics.set_switch(x.binding.element_mrid, closed)
        self._apply_events(events)
        self.request_solve()
        return events

    def set_tap(self, tap_changer: str, step: float) -> bool:
        """Move a tap changer (name or mRID) in the physics (a set-point command or a script); its position and
        set-point points follow at the re-solve. False when it was already there or the step is refused (logged)."""
        try:
            moved = self.physics.set_tap(tap_changer, step)
        except PhysicsError as exc:
            log.warning("physics: %s", exc)
            return False
        self.request_solve()
        return moved

    def place_fault(self, line: str, kind: FaultKind = FaultKind.THREE_PHASE) -> FaultResult:
        result, events = self.physics.place_fault(line, kind)
        self._apply_events(events)
        self.request_solve()
        return result

    def clear_fault(self, line: str | None = None) -> tuple[str, ...]:
        cleared = self.physics.clear_fault(line)
        self.request_solve()
        return cleared

    def reset_fpis(self, switch: str | None = None) -> tuple[str, ...]:
        names = self.physics.reset_fpis(switch)
        self._push_status(int(time.time() * 1000))
        return names

    def _apply_events(self, events: tuple[SwitchEvent, ...]) -> None:
        """Report FPIs first (they see the fault current before the relay acts), then each switch movement with
        its own time tag; a protection trip sets the breaker's protection points too (Outstation.trip)."""
        if not events:
            self._push_status(int(time.time() * 1000), only_fpi=True)
            return
        self._push_status(events[0].time_ms, only_fpi=True)
        with self._push_lock:
            for ev in events:
                target = float(DoubleState.ON if ev.closed else DoubleState.OFF)
                for x in self._status_of.get(ev.mrid, ()):
                    if x.binding.quantity is not Quantity.SWITCH_POSITION:
                        continue
                    if ev.trip and x.point.control is not None:
                        x.outstation.trip(x.point.name, time_ms=ev.time_ms)
                    elif x.outstation.value(x.point.name) != target:
                        x.outstation.set_value(x.point.name, target, time_ms=ev.time_ms, hold=False)
                    x.last_value = target

    # ------------------------------------------------------------------------------------------- reporting

    def _push_status(self, stamp_ms: int, *, only_fpi: bool = False) -> None:
        snap = self.physics.last
        if snap is None:
            return
        with self._push_lock:
            for x in self._bound:
                q = x.binding.quantity
                if q is Quantity.FAULT_INDICATOR or (q is Quantity.SWITCH_POSITION and not only_fpi
                                                     and not x.outstation.travelling(x.point.name)):
                    v = self.physics.value(x.binding, snap)
                    if x.outstation.value(x.point.name) != v:
                        x.outstation.set_value(x.point.name, v, time_ms=stamp_ms, hold=False)
                        x.last_value = v

    def _push(self, snap: FlowSnapshot, *, force: bool = False) -> int:
        """Report what changed in ``snap``; returns how many points were reported."""
        now_s = time.time()
        stamp = int(snap.epoch_s * 1000) if force else int(now_s * 1000)
        sent = 0
        s = self.settings
        with self._push_lock:
            for x in self._bound:
                q = x.binding.quantity
                v = self.physics.value(x.binding, snap, noisy=q not in _EXACT)
                if q not in _STATUS and x.outstation.held(x.point.name):
                    continue  # set_value holds it (a scripted bad measurement) until release
                if q is Quantity.SWITCH_POSITION and x.outstation.travelling(x.point.name):
                    continue  # reads INTERMEDIATE until the mechanism arrives (Outstation.execute_command)
                if q in _EXACT:
                    due = force or x.outstation.value(x.point.name) != v
                else:
                    last = x.last_value
                    due = (force or last is None or (last == 0.0) != (v == 0.0)
                           or abs(v - last) > max(_ABS_FLOOR[q], abs(last) * s.deadband_pct / 100.0)
                           or now_s - x.last_report_s >= s.max_report_age_s)
                if not due:
                    continue
                x.outstation.set_value(x.point.name, v, time_ms=stamp, hold=False)
                x.last_value, x.last_report_s = v, now_s
                sent += 1
        return sent
