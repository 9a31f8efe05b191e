"""Live Volt/VAR control inside the control centre: propose from the present state, execute through SCADA commands.

- State: a callable returning the present ``NetworkState`` (the state estimate in real time). The default reads the
  live topology's switch states and, from the RTDB, tap positions (``TAP_POSITION`` points) and capacitor states
  (``SWITCH_POSITION`` points bound to a capacitor) of good quality; loads are the model's.
- ``propose()`` runs :func:`dms.voltvar.engine.optimise` with today's operations left and keeps the proposal under an
  id; ``execute(id, operator)`` checks it is verified and still current (every control where the proposal started),
  then runs its actions one at a time through the CommandService (roles, tags, interlocks, audit): a tap changer by
  its set-point point ``<tap changer>.Step.Set`` confirmed by its position point reaching the target, a capacitor by
  its ``Pos`` double command (ON=2 energises, OFF=1) confirmed by the command service's status feedback. Each
  confirmed action is counted against the daily limits; the first failure stops the sequence and is reported.
- Periodic mode (off by default, ``period_s > 0``): proposes on a timer, raises a system alarm while the band cannot
  be met, and executes verified proposals itself only when ``auto_execute`` is set.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from dms.flow_check import VoltageBand
from dms.network_state import NetworkState
from dms.voltvar.engine import ControlKind, Objective, VoltVarAction, VoltVarOptions, VoltVarProposal, optimise
from dms.voltvar.errors import ExecutionError, StaleProposalError, VoltVarError
from dms.voltvar.limits import CounterEntry, DailyLimits, OperationCounter
from models.commands import ControlStatus
from models.config import OperatorConfig, Role, StationConfig
from models.measurement_points import Quantity
from models.network import NetworkModel
from models.points import DoubleState, PointDef, Quality
from scada.alarms import Priority
from scada.commands import CommandService, FeedbackStatus
from scada.errors import CommandRefused
from scada.rtdb import Rtdb

__all__ = ["SERVICE_OPERATOR", "ActionResult", "ActionStatus", "ExecutionReport", "StoredProposal", "VoltVarService",
           "band_of"]

log = logging.getLogger(__name__)

SERVICE_OPERATOR = OperatorConfig("dms:voltvar", Role.OPERATOR, "")
ALARM_KEY = "dms:voltvar:band"
_BAD = int(Quality.INVALID | Quality.COMM_LOST | Quality.NOT_TOPICAL)
_KEEP_PROPOSALS = 32

StateSource = Callable[[], NetworkState]


class ActionStatus(StrEnum):
    DONE = "done"  # commanded and confirmed by feedback
    FAILED = "failed"  # refused, failed in the field or not confirmed: the sequence stopped here
    NOT_RUN = "not_run"  # after a failure


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: VoltVarAction
    point: str  # the command point used ("" when none was found)
    value: float  # the commanded value (tap step, or DoubleState for a capacitor)
    status: ActionStatus
    detail: str
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    proposal_id: int
    operator: str
    completed: bool
    results: tuple[ActionResult, ...]
    message: str


@dataclass(frozen=True, slots=True)
class StoredProposal:
    id: int
    created_s: float
    proposal: VoltVarProposal


class VoltVarService:
    def __init__(self, config: StationConfig, rtdb: Rtdb, topology: Any, commands: CommandService, *,
                 data_dir: str | Path, alarms: Any = None, state_source: StateSource | None = None,
                 options: VoltVarOptions | None = None, limits: DailyLimits | None = None,
                 period_s: float = 0.0, auto_execute: bool = False, feedback_timeout_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if config.network is None:
            raise VoltVarError(f"{config.source_path}: Volt/VAR control needs a network model ([network] cim)")
        self.config = config
        self.rtdb = rtdb
        self.topology = topology
        self.commands = commands
        self.alarms = alarms
        self.options = options or VoltVarOptions()
        self.period_s = period_s
        self.auto_execute = auto_execute
        self.feedback_timeout_s = feedback_timeout_s
        self.counter = OperationCounter(Path(data_dir) / "voltvar.sqlite", limits or DailyLimits(), clock=clock)
        self._clock = clock
        self._state_source = state_source or self.telemetered_state
        self._ids = itertools.count(1)
        self._proposals: OrderedDict[int, StoredProposal] = OrderedDict()
        self._lock = threading.Lock()
        self._exec_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._points_by_name = {p.name: p for p in config.points}
        self._bindings = [(p, config.binding(p)) for p in config.points]

    @classmethod
    def from_center(cls, center: Any, **kwargs: Any) -> VoltVarService:
        """Built from a ``scada.server.ControlCenter``'s pieces; ``kwargs`` as the constructor's keywords."""
        kwargs.setdefault("data_dir", center.data_dir)
        kwargs.setdefault("alarms", center.alarms)
        return cls(center.config, center.rtdb, center.topology, center.commands, **kwargs)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.period_s > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="voltvar", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.counter.close()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                stored = self.propose()
                p = stored.proposal
                if self.alarms is not None:
                    if p.feasible:
                        self.alarms.clear_system(ALARM_KEY)
                    else:
                        self.alarms.raise_system(ALARM_KEY, f"Volt/VAR: {p.message}", Priority.MEDIUM)
                if self.auto_execute and p.actions and p.verified:
                    report = self.execute(stored.id, SERVICE_OPERATOR)
                    if not report.completed:
                        log.warning("Volt/VAR automatic execution stopped: %s", report.message)
            except Exception:  # a periodic run must not kill the thread; the next one retries
                log.exception("Volt/VAR periodic run failed")

    # ------------------------------------------------------------------------------------------ state
    @property
    def model(self) -> NetworkModel:
        if self.topology is not None:
            return self.topology.model
        assert self.config.network is not None
        return self.config.network

    def telemetered_state(self) -> NetworkState:
        """Model loads with the live switch states, tap positions and capacitor states (good-quality values only)."""
        model = self.model
        state = NetworkState.from_model(model, label=f"real time {time.strftime('%H:%M:%S')}",
                                        frequency_hz=self.config.frequency_hz)
        if self.topology is not None:
            snap = self.topology.snapshot()
            if len(snap.switch_closed) == len(model.switches):
                state = state.with_switch_array(snap.switch_closed)
        taps = state.tap_step.copy()
        for i, tc in enumerate(model.tap_changers):
            p = self._tap_position_point(tc.mrid)
            value = self._good_value(p)
            if value is not None and tc.low_step <= round(value) <= tc.high_step:
                taps[i] = round(value)
        caps = state.capacitor_sections.copy()
        for i, cap in enumerate(model.capacitors):
            values = [self._good_value(p) for p in self._capacitor_points(cap.mrid)]
            values = [v for v in values if v in (DoubleState.ON, DoubleState.OFF)]
            if values:  # a bank is in service only when every phase's switch is closed
                caps[i] = max(cap.maximum_sections, 1) if all(v == DoubleState.ON for v in values) else 0.0
        return state.replace(tap_step=taps, capacitor_sections=caps)

    def _good_value(self, p: PointDef | None) -> float | None:
        if p is None:
            return None
        row = self.rtdb.snapshot([p.id])[0]
        return None if int(row["quality"]) & _BAD else float(row["value"])

    def _tap_position_point(self, tap_mrid: str) -> PointDef | None:
        return next((p for p, b in self._bindings if b is not None and b.quantity is Quantity.TAP_POSITION
                     and b.tap_changer_mrid == tap_mrid), None)

    def _tap_setpoint_point(self, name: str, tap_mrid: str) -> PointDef | None:
        p = self._points_by_name.get(f"{name}.Step.Set")
        if p is not None and p.controllable:
            return p
        return next((p for p, b in self._bindings if b is not None and p.controllable
                     and b.quantity.value == "tap_setpoint" and b.tap_changer_mrid == tap_mrid), None)

    def _capacitor_points(self, cap_mrid: str) -> list[PointDef]:
        return [p for p, b in self._bindings if b is not None and b.quantity is Quantity.SWITCH_POSITION
                and b.element_mrid == cap_mrid]

    # ------------------------------------------------------------------------------------------ proposals
    def propose(self, *, objective: Objective | None = None, band: VoltageBand | None = None) -> StoredProposal:
        state = self._state_source()
        options = replace(self.options, objective=objective or self.options.objective,
                          band=band or self.options.band,
                          operations_left=self.counter.operations_left(state.base))
        proposal = optimise(state, options)
        with self._lock:
            stored = StoredProposal(next(self._ids), self._clock(), proposal)
            self._proposals[stored.id] = stored
            while len(self._proposals) > _KEEP_PROPOSALS:
                self._proposals.popitem(last=False)
        return stored

    def proposal(self, proposal_id: int) -> StoredProposal:
        with self._lock:
            stored = self._proposals.get(proposal_id)
        if stored is None:
            raise ExecutionError(f"Volt/VAR proposal {proposal_id} is unknown (expired or never made)")
        return stored

    def counters(self) -> tuple[CounterEntry, ...]:
        return self.counter.entries(self.model)

    # ------------------------------------------------------------------------------------------ execution
    def execute(self, proposal_id: int, operator: OperatorConfig) -> ExecutionReport:
        """Run a stored proposal's actions in order; raises before the first command when it cannot run at all."""
        stored = self.proposal(proposal_id)
        p = stored.proposal
        if not p.verified:
            raise ExecutionError(f"Volt/VAR proposal {proposal_id} on {p.network!r} is not verified: "
                                 f"{'; '.join(v.text() for v in p.new_violations) or p.message}")
        if not p.actions:
            return ExecutionReport(proposal_id, operator.name, True, (), "nothing to do: the proposal has no action")
        with self._exec_lock:
            self._check_current(proposal_id, p)
            for a in p.actions:
                self.counter.check(a)  # all or nothing on the limits: do not start what cannot finish
            results: list[ActionResult] = []
            failed: ActionResult | None = None
            for a in p.actions:
                if failed is not None:
                    results.append(ActionResult(a, "", a.after, ActionStatus.NOT_RUN, "after a failed action", 0.0))
                    continue
                r = self._run_action(a, operator)
                results.append(r)
                if r.status is ActionStatus.DONE:
                    self.counter.record(a, operator.name)
                else:
                    failed = r
        if failed is None:
            message = f"{len(results)} action(s) done and confirmed"
        else:
            message = f"stopped at {failed.action.text()}: {failed.detail}"
            if self.alarms is not None:
                self.alarms.raise_system(f"dms:voltvar:exec:{failed.action.element}",
                                         f"Volt/VAR action failed: {failed.action.text()}: {failed.detail}",
                                         Priority.HIGH)
        return ExecutionReport(proposal_id, operator.name, failed is None, tuple(results), message)

    def _check_current(self, proposal_id: int, p: VoltVarProposal) -> None:
        now = self._state_source()
        for a in p.actions:
            kind = "tap changer" if a.kind is ControlKind.TAP else "capacitor"
            i = now.index_of(kind, a.element)
            value = float(now.tap_step[i] if a.kind is ControlKind.TAP else now.capacitor_sections[i])
            if value != a.before:
                raise StaleProposalError(f"Volt/VAR proposal {proposal_id}: {kind} {a.element!r} is at {value:g}, "
                                         f"the proposal started from {a.before:g}; propose again")

    def _run_action(self, a: VoltVarAction, operator: OperatorConfig) -> ActionResult:
        started = time.monotonic()
        model = self.model
        pos: PointDef | None = None  # a tap changer's position point: the feedback of its set-point
        if a.kind is ControlKind.TAP:
            tc = next(t for t in model.tap_changers if t.name == a.element)
            point = self._tap_setpoint_point(tc.name, tc.mrid)
            pos = self._tap_position_point(tc.mrid)
            value = float(a.after)
        else:
            cap = next(c for c in model.capacitors if c.name == a.element)
            point = next((p for p in self._capacitor_points(cap.mrid) if p.controllable), None)
            value = float(DoubleState.ON if a.after > 0 else DoubleState.OFF)
        if point is None:
            return ActionResult(a, "", value, ActionStatus.FAILED,
                                f"{a.kind.value} {a.element!r} has no command point in this station", 0.0)

        def result(status: ActionStatus, detail: str) -> ActionResult:
            return ActionResult(a, point.name, value, status, detail, (time.monotonic() - started) * 1e3)

        try:
            assert point.control is not None
            if point.control.mode.selects:
                sel = self.commands.select(point.id, value, operator)
                if sel.status is not ControlStatus.SUCCESS:
                    return result(ActionStatus.FAILED, f"select of {point.name} {sel.status.value}: "
                                                       f"{sel.field_detail}".strip())
            out = self.commands.operate(point.id, value, operator)
        except CommandRefused as exc:
            return result(ActionStatus.FAILED, f"refused: {exc}")
        if out.status is not ControlStatus.SUCCESS:
            return result(ActionStatus.FAILED, f"{point.name} {out.status.value}: {out.field_detail}".strip())
        if a.kind is ControlKind.CAPACITOR:
            if out.feedback is not FeedbackStatus.CONFIRMED:
                return result(ActionStatus.FAILED, f"{point.name}: position not confirmed ({out.feedback.value})")
            return result(ActionStatus.DONE, f"{point.name} confirmed in {out.elapsed_ms:.0f} ms")
        if pos is None:
            return result(ActionStatus.FAILED, f"tap changer {a.element!r} has no position point to confirm step "
                                               f"{a.after:g}")
        deadline = time.monotonic() + self.feedback_timeout_s
        seen: float | None = None
        while time.monotonic() < deadline:
            seen = self._good_value(pos)
            if seen is not None and round(seen) == a.after:  # a tap position is a whole step; some RTUs add noise
                return result(ActionStatus.DONE, f"{pos.name} reached {a.after:g}")
            time.sleep(0.1)
        return result(ActionStatus.FAILED, f"{pos.name} did not reach {a.after:g} within "
                                           f"{self.feedback_timeout_s:g} s (last {seen})")


def band_of(low_pu: float, high_pu: float) -> VoltageBand | None:
    """A band from request fields: None when both are 0 (the service's default)."""
    if low_pu == 0 and high_pu == 0:
        return None
    return VoltageBand(low_pu, high_pu)

