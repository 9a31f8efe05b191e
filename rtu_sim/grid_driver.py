"""Drives the points bound to CIM measurements from ``GridPhysics``: reruns the flow periodically and after every
switching, and reports what changed spontaneously.

Reporting rule (so measurement noise does not flood the links): an analog is reported when it moved by more than
``deadband_pct`` of its last reported value (at least a small absolute floor per unit), when it crosses to or from
zero (a section dies or comes back), or when it was last reported ``max_report_age_s`` ago (keeps it topical in the
RTDB). Status points are reported on every change. Operator commands on a bound ``Pos`` point switch the physics
(``Outstation.on_command_applied``); trips and FPIs from faults come back as status reports with the event's time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from models.measurement_points import MeasurementBinding, Quantity
from models.points import DoubleState, PointDef
from rtu_sim.outstation import Outstation
from rtu_sim.physics import FaultKind, FaultResult, FlowSnapshot, GridPhysics, SwitchEvent

log = logging.getLogger(__name__)

__all__ = ["PhysicsDriver", "PhysicsSettings"]

_ABS_FLOOR = {Quantity.VOLTAGE_KV: 0.005, Quantity.CURRENT_A: 0.5, Quantity.P_KW: 0.5, Quantity.Q_KVAR: 0.5,
              Quantity.TAP_POSITION: 0.5}
_STATUS = (Quantity.SWITCH_POSITION, Quantity.FAULT_INDICATOR)


@dataclass(frozen=True, slots=True)
class PhysicsSettings:
    period_s: float = 5.0  # flow rerun period (load curves move slowly)
    noise_pct: float = 0.5  # Gaussian measurement noise, one sigma, of the value
    deadband_pct: float = 2.0
    max_report_age_s: float = 30.0


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

    def _on_command(self, point: PointDef, value: float) -> None:
        x = self._by_name.get(point.name)
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
                if q is Quantity.FAULT_INDICATOR or (q is Quantity.SWITCH_POSITION and not only_fpi):
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
                v = self.physics.value(x.binding, snap, noisy=q not in _STATUS)
                if q not in _STATUS and x.outstation.held(x.point.name):
                    continue  # set_value holds it (a scripted bad measurement) until release
                if q in _STATUS:
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
