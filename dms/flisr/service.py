"""The live FLISR service: a protective trip in the RTDB becomes a located fault, a restoration plan and, by mode, its
execution through the SCADA command path, recorded as a :class:`~dms.flisr.runs.FlisrRun` and an OMS outage record.

Trigger: a Breaker or Recloser whose position point goes from closed to open on its own. An opening is not a trip when
it reports cause ``RETURN_REMOTE`` or when a command (anyone's, seen through ``CommandService.add_outcome_listener``)
touched that point within ``command_grace_s`` of it. The service then waits ``settle_s`` for the fault passage
indicators (DNP3 FRTUs report theirs within ~2 s), reads every FPI point that is 1 on a switch now without supply,
builds the live :class:`NetworkState` (topology snapshot's switch positions, loads from the load source), locates the
fault and plans (``dms.flisr.locate`` / ``dms.flisr.planner``, controllable = switches with a controllable position
point).

Modes (changeable any time; a run keeps the mode it was created in):

- ``automatic``: isolation, then restoration, at once;
- ``semi_automatic``: isolation at once; restoration on ``approve``;
- ``manual``: nothing runs until ``approve`` (which runs the isolation); a second ``approve`` runs the restoration.

Execution: one step at a time, one run at a time (executor thread). A telemetered step is select + operate (or direct
operate, per the point's ``ControlMode``) as ``dms:flisr``; the step is done when the command's status feedback came
AND the live topology shows the switch in its new state. A refused command, a failed one (after ``field_retries``
retries of a field refusal or time-out, as an operator would), or a state the topology does not confirm within
``confirm_timeout_s`` stops the run: ``failed``, the remaining steps ``skipped``, a system alarm naming the step and
why. A step on a switch without remote control waits (``awaiting_crew``) for ``confirm_manual_step``, which sets the
switch's manual state in the topology. Every run is audited, persisted (``flisr.sqlite``) and opens/updates one OMS
outage record.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dms.errors import DmsError
from dms.flisr.plan import FlisrMode, FlisrPlan, SwitchAction, SwitchingStep
from dms.flisr.runs import FlisrRun, FlisrRunStore, RunPhase, RunState, StepResult, StepStatus
from dms.live_state import held_switches
from dms.network_state import NetworkState, customers_per_load
from models.commands import ControlStatus
from models.config import OperatorConfig, Role, StationConfig
from models.measurement_points import Quantity
from models.network import NetworkModel, SwitchKind
from models.points import DoubleState, PointDef, PointKind, Priority, Quality
from models.timebase import now_ms
from models.updates import Cause
from scada.bounded_queue import BoundedQueue
from scada.commands import CommandOutcome, CommandService, FeedbackStatus
from scada.errors import CommandRefused, ScadaError
from scada.rtdb import Rtdb
from scada.topology_service import TopologyService, TopologySnapshot, UpdateCause

if TYPE_CHECKING:
    from scada.alarms import AlarmManager
    from scada.server import ControlCenter
    from scada.tags import TagStore

__all__ = ["FLISR_OPERATOR", "FlisrService", "FlisrServiceError", "FlisrSettings", "LoadSource", "OutageRecorder",
           "RunNotFoundError", "RunWatch"]

log = logging.getLogger(__name__)

#: The identity FLISR's commands, tags and manual states carry in the audit log.
FLISR_OPERATOR = OperatorConfig("dms:flisr", Role.OPERATOR, "")
_PROTECTIVE = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER})
_UNUSABLE = int(Quality.INVALID | Quality.COMM_LOST)
_POLL_S = 0.02
_DOUBTFUL_CURRENT = int(Quality.INVALID | Quality.COMM_LOST | Quality.NOT_TOPICAL)


class FlisrServiceError(DmsError):
    """A FLISR request cannot be done as asked (the message names the run or element and why)."""


class RunNotFoundError(FlisrServiceError, LookupError):
    """No FLISR run with that id."""


class OutageRecorder(Protocol):
    """Where every run opens or updates its outage record (``oms.outage_records.OutageRecordStore`` is one)."""

    def open_or_update(self, *, source: str, source_ref: str, feeder: str, tripped_device: str,
                       faulted_elements: tuple[str, ...], isolated_boundary: tuple[str, ...],
                       customers_interrupted: int, customers_restored: int, customers_still_off: int,
                       started_ms: int, isolated_ms: int, restored_ms: int, status: Any,
                       notes: tuple[str, ...]) -> Any: ...


#: Puts load values on a state built from the live switch positions (the state estimator will be one).
LoadSource = Callable[[NetworkState], NetworkState]


@dataclass(frozen=True, slots=True)
class FlisrSettings:
    settle_s: float = 3.0  # after a trip, time for the FPIs to arrive before locating
    command_grace_s: float = 5.0  # an opening this close to a command on its point is the command's, not a trip
    confirm_timeout_s: float = 20.0  # after the command's feedback, time for the topology to show the new state
    field_retries: int = 1  # retries of a step the field refused or did not answer (not of a server refusal)
    mark_faulted: bool = True  # tag the located faulted elements FAULTED once isolated (interlocks keep them dead)
    max_runs_in_memory: int = 500

    def __post_init__(self) -> None:
        for name in ("settle_s", "command_grace_s", "confirm_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v <= 600):
                raise ValueError(f"FlisrSettings.{name} must be within 0..600 s, got {v!r}")
        if not 0 <= self.field_retries <= 5:
            raise ValueError(f"FlisrSettings.field_retries must be within 0..5, got {self.field_retries!r}")
        if self.max_runs_in_memory < 1:
            raise ValueError(f"FlisrSettings.max_runs_in_memory must be >= 1, got {self.max_runs_in_memory!r}")


class RunWatch(BoundedQueue[FlisrRun]):
    """A bounded queue of run updates for one watcher; on overflow the oldest update is dropped (the newest state of
    a run is always the last one queued for it)."""

    def __init__(self, max_pending: int) -> None:
        super().__init__("flisr-watch", max_pending)

    def _overflow(self, backlog: list[FlisrRun], item: FlisrRun) -> list[FlisrRun]:
        return [*backlog[1:], item]


@dataclass(slots=True)
class _Trip:
    switch: int  # index into model.switches
    point: int
    seen_mono: float
    trip_ms: int


class FlisrService:
    """Live FLISR of one control centre. ``start`` subscribes to the RTDB; ``stop`` ends the threads."""

    def __init__(
        self,
        config: StationConfig,
        rtdb: Rtdb,
        topology: TopologyService,
        commands: CommandService,
        alarms: AlarmManager,
        audit: Any,
        *,
        data_dir: str | Path,
        tags: TagStore | None = None,
        mode: FlisrMode = FlisrMode.SEMI_AUTOMATIC,
        options: Any = None,
        settings: FlisrSettings | None = None,
        recorder: OutageRecorder | None = None,
        load_source: LoadSource | None = None,
        operator: OperatorConfig = FLISR_OPERATOR,
    ) -> None:
        self.config = config
        self._rtdb = rtdb
        self._topology = topology
        self._commands = commands
        self._alarms = alarms
        self._audit = audit
        self._tags = tags
        self._mode = FlisrMode(mode)
        self._options = options
        self.settings = settings or FlisrSettings()
        self._recorder = recorder
        self._load_source = load_source
        self.operator = operator
        self._store = FlisrRunStore(Path(data_dir) / "flisr.sqlite")
        self._lock = threading.RLock()
        self._runs: dict[int, FlisrRun] = {r.id: r for r in self._store.load(self.settings.max_runs_in_memory)}
        self._next_id = self._store.last_id() + 1
        self._watchers: list[RunWatch] = []
        self._jobs: queue.SimpleQueue[tuple[int, RunPhase] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sub: Any = None
        self._last_command_mono: dict[int, float] = {}  # point id -> last command activity
        self._head_current_a: dict[str, float] = {}  # feeder mRID -> last good feeder-head current (phase mean)
        self._interrupted: dict[int, np.ndarray] = {}  # run id -> loads its trip interrupted
        self._bind(topology.model)
        commands.add_outcome_listener(self._on_command_outcome)

    @classmethod
    def from_center(cls, center: ControlCenter, **kwargs: Any) -> FlisrService:
        """Built from a running (or about to start) control centre; ``kwargs`` as the constructor's."""
        if center.topology is None:
            raise FlisrServiceError(f"station {center.config.name!r} has no network model: FLISR needs one")
        return cls(center.config, center.rtdb, center.topology, center.commands, center.alarms, center.audit,
                   data_dir=center.data_dir, tags=center.tags, **kwargs)

    # ------------------------------------------------------------------------------------------ binding
    def _bind(self, model: NetworkModel) -> None:
        """Point ids of the protective switches' positions, the FPIs and the feeder-head currents."""
        cfg = self.config
        sw_index = {s.mrid: i for i, s in enumerate(model.switches)} | {s.name: i for i, s in
                                                                         enumerate(model.switches)}
        self._model = model
        self._protective: dict[int, int] = {}  # point -> switch
        self._fpi: dict[int, int] = {}  # point -> switch
        self._control: dict[int, PointDef] = {}  # switch -> its controllable position point
        currents: dict[int, list[int]] = {}  # switch -> current points
        for p in cfg.points:
            b = cfg.binding(p)
            if b is None:
                continue
            sw = sw_index.get(b.element_mrid, sw_index.get(p.element or "", -1))
            if sw < 0:
                continue
            if b.quantity is Quantity.SWITCH_POSITION:
                if p.control is not None:
                    self._control.setdefault(sw, p)
                if model.switches[sw].kind in _PROTECTIVE and p.kind.is_status:
                    self._protective[p.id] = sw
            elif b.quantity is Quantity.FAULT_INDICATOR:
                self._fpi[p.id] = sw
            elif b.quantity is Quantity.CURRENT_A:
                currents.setdefault(sw, []).append(p.id)
        # The head of a feeder: its breaker with current points whose source side is not in the feeder.
        self._head: dict[str, tuple[int, tuple[int, ...]]] = {}  # feeder mRID -> (switch, current points)
        for sw, ids in currents.items():
            s = model.switches[sw]
            if s.kind not in _PROTECTIVE or not s.feeder_mrid:
                continue
            outside = any(model.buses[b].feeder_mrid != s.feeder_mrid for b in (s.from_bus, s.to_bus))
            if outside or s.feeder_mrid not in self._head:
                self._head[s.feeder_mrid] = (sw, tuple(ids))
        self._feeder_name = {f.mrid: f.name for f in model.feeders}

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        points = sorted(set(self._protective) | set(self._fpi) | {p for _sw, ids in self._head.values() for p in ids})
        snap, self._sub = self._rtdb.subscribe_with_snapshot("flisr", points=points, max_pending=1024)
        self._take_currents(snap)
        self._threads = [threading.Thread(target=self._watch_loop, name="flisr-watch", daemon=True),
                         threading.Thread(target=self._exec_loop, name="flisr-exec", daemon=True)]
        for t in self._threads:
            t.start()
        log.info("FLISR watching %d protective switches and %d FPIs in %s mode", len(self._protective),
                 len(self._fpi), self._mode.value)

    def stop(self) -> None:
        self._stop.set()
        self._jobs.put(None)
        if self._sub is not None:
            self._rtdb.unsubscribe(self._sub)
        for t in self._threads:
            t.join(10)
        self._threads = []
        with self._lock:
            for w in self._watchers:
                w.close()
            self._watchers.clear()
        self._store.close()

    # ------------------------------------------------------------------------------------------ mode and queries
    @property
    def mode(self) -> FlisrMode:
        return self._mode

    def set_mode(self, mode: FlisrMode | str, operator: OperatorConfig) -> FlisrMode:
        try:
            new = FlisrMode(mode)
        except ValueError:
            raise ValueError(f"unknown FLISR mode {mode!r} (expected one of {', '.join(FlisrMode)})") from None
        old, self._mode = self._mode, new
        self._audit_event(operator, "flisr_set_mode", "FLISR", 0, f"mode {old.value} -> {new.value}")
        log.info("FLISR mode %s -> %s by %s", old.value, new.value, operator.name)
        return new

    def runs(self, *, limit: int = 100) -> list[FlisrRun]:
        """Newest first."""
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: -r.id)[:limit]

    def run(self, run_id: int) -> FlisrRun:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"no FLISR run {run_id}")
        return run

    def watch(self, max_pending: int = 256) -> RunWatch:
        w = RunWatch(max_pending)
        with self._lock:
            self._watchers.append(w)
        return w

    def unwatch(self, w: RunWatch) -> None:
        w.close()
        with self._lock:
            if w in self._watchers:
                self._watchers.remove(w)

    def live_state(self, snapshot: TopologySnapshot | None = None) -> NetworkState:
        """The network state now: live switch positions, loads from the load source (default: model loads scaled
        per feeder by the last good feeder-head current)."""
        snap = snapshot or self._topology.snapshot()
        state = NetworkState.from_model(snap.model, label=f"real time @ topology v{snap.version}",
                                        frequency_hz=self.config.frequency_hz).with_switch_array(snap.switch_closed)
        if self._load_source is not None:
            return self._load_source(state)
        return self._scaled_by_head_current(state)

    def controllable_switches(self) -> frozenset[str]:
        """Names of the switches with a controllable position point."""
        return frozenset(self._model.switches[i].name for i in self._control)

    # ------------------------------------------------------------------------------------------ planning
    def plan(self, state: NetworkState, tripped_switch: str, picked_up: Sequence[str]) -> FlisrPlan:
        """Locate and plan for a trip of ``tripped_switch`` with the FPIs of ``picked_up`` in ``state``."""
        from dms.flisr.locate import locate_fault

        fault = locate_fault(state, tripped_switch, tuple(picked_up), controllable=self.controllable_switches(),
                             fpi=self.fpi_switches())
        return self._plan_restoration(state, fault)

    def plan_for_fault(self, line: str) -> FlisrPlan:
        """The plan for a hypothetical fault on ``line`` in the live state: the protective switch nearest to it on
        the source side trips, the FPIs between it and the line pick up; nothing is executed."""
        from dms.flisr.locate import locate_section

        state = self.live_state()
        fault = locate_section(state, line, controllable=self.controllable_switches(), fpi=self.fpi_switches())
        return self._plan_restoration(state.with_switches({fault.tripped_switch: False}), fault)

    def fpi_switches(self) -> frozenset[str]:
        """Names of the switches with a fault passage indicator point."""
        return frozenset(self._model.switches[i].name for i in set(self._fpi.values()))

    def _plan_restoration(self, state: NetworkState, fault: Any) -> FlisrPlan:
        from dms.flisr.planner import FlisrOptions, plan_restoration

        options = self._options if self._options is not None else FlisrOptions()
        held = options.held
        if self._tags is not None:  # hold/clearance tags and earthed or faulted markings (not this fault's own)
            held = held | held_switches(state.base, self._tags.active())
        return plan_restoration(state, fault, options=dataclasses.replace(
            options, controllable=self.controllable_switches(), held=held - set(fault.boundary_switches)))

    def submit_plan(self, plan: FlisrPlan, *, trip_ms: int | None = None, mode: FlisrMode | None = None
                    ) -> FlisrRun:
        """A run for a plan made elsewhere (a study, a test), started as its mode says."""
        sw = self._switch_index(plan.fault.tripped_switch)
        snap = self._topology.snapshot()
        interrupted = self._interrupted_loads(snap, sw)
        run = self._new_run(sw, plan.fault.picked_up, now_ms() if trip_ms is None else trip_ms, interrupted,
                            mode or self._mode)
        return self._planned(run.id, plan)

    # ------------------------------------------------------------------------------------------ operator actions
    def approve(self, run_id: int, operator: OperatorConfig) -> FlisrRun:
        """Manual mode: the first approval runs the isolation, the next the restoration; semi-automatic: runs the
        restoration of an isolated run."""
        with self._lock:
            run = self.run(run_id)
            if run.state is RunState.PLANNED:
                phase = RunPhase.ISOLATION
            elif run.state is RunState.AWAITING_APPROVAL:
                phase = RunPhase.RESTORATION
            else:
                why = f"FLISR run {run_id} is {run.state.value}: nothing to approve"
                self._audit_event(operator, "flisr_approve", f"flisr run {run_id}", run_id, why, refused=True)
                raise FlisrServiceError(why)
            run = self._update(run_id, state=RunState.ISOLATING if phase is RunPhase.ISOLATION
                               else RunState.RESTORING, notes=run.notes + (f"{phase.value} approved by "
                                                                            f"{operator.name}",))
        self._audit_event(operator, "flisr_approve", f"flisr run {run_id}", run_id, f"{phase.value} approved")
        self._jobs.put((run_id, phase))
        return run

    def reject(self, run_id: int, operator: OperatorConfig, reason: str = "") -> FlisrRun:
        with self._lock:
            run = self.run(run_id)
            if run.state not in (RunState.PLANNED, RunState.AWAITING_APPROVAL, RunState.AWAITING_CREW):
                why = f"FLISR run {run_id} is {run.state.value}: only a run waiting for approval or a crew can be " \
                      "rejected"
                self._audit_event(operator, "flisr_reject", f"flisr run {run_id}", run_id, why, refused=True)
                raise FlisrServiceError(why)
            text = f"rejected by {operator.name}" + (f": {reason}" if reason else "")
            run = self._finish(run_id, RunState.REJECTED, text)
        self._audit_event(operator, "flisr_reject", f"flisr run {run_id}", run_id, text)
        return run

    def confirm_manual_step(self, run_id: int, step_number: int, operator: OperatorConfig, note: str = ""
                            ) -> FlisrRun:
        """A field crew operated the step's switch: its manual state goes into the topology and the run goes on."""
        with self._lock:
            run = self.run(run_id)
            k = next((k for k, s in enumerate(run.steps) if s.number == step_number), None)
            if k is None:
                raise LookupError(f"FLISR run {run_id} has no step {step_number}")
            step = run.steps[k]
            if run.state is not RunState.AWAITING_CREW or step.status is not StepStatus.AWAITING_CREW:
                raise FlisrServiceError(f"FLISR run {run_id} step {step_number} ({step.action.value} "
                                        f"{step.switch}) is {step.status.value}, not waiting for a crew")
        closed = step.action is SwitchAction.CLOSE
        reason = f"FLISR run {run_id} step {step_number} confirmed by crew" + (f": {note}" if note else "")
        state = self._topology.find_switch(step.switch)
        if state is None:
            raise LookupError(f"FLISR run {run_id} step {step_number}: no switch {step.switch!r} in the live model")
        if state.closed != closed or state.uncertain:
            self._topology.set_manual_switch_state(step.switch, closed, operator, reason)
        done = dataclasses.replace(step, status=StepStatus.CONFIRMED_BY_CREW, finished_ms=now_ms(),
                                   outcome=f"{step.action.value} {step.switch}: confirmed by {operator.name}"
                                           + (f" ({note})" if note else ""))
        phase = self._phase_of(run, step_number)
        with self._lock:
            run = self._update(run_id, steps=_replace_step(self.run(run_id).steps, k, done),
                               state=RunState.ISOLATING if phase is RunPhase.ISOLATION else RunState.RESTORING)
        self._audit_event(operator, "flisr_confirm_step", step.switch, run_id, done.outcome)
        self._jobs.put((run_id, phase))
        return run

    # ------------------------------------------------------------------------------------------ trip detection
    def _on_command_outcome(self, outcome: CommandOutcome) -> None:
        self._last_command_mono[outcome.point] = time.monotonic()

    def _commanded(self, point: int, since_mono: float) -> bool:
        return self._last_command_mono.get(point, -math.inf) >= since_mono

    def _watch_loop(self) -> None:
        pending: list[_Trip] = []
        while not self._stop.is_set():
            timeout = 0.5 if not pending else max(0.0, min(t.seen_mono for t in pending) + self.settings.settle_s
                                                  - time.monotonic())
            cs = self._sub.get(timeout_s=timeout) if self._sub is not None else None
            try:
                if cs is not None:
                    self._take_currents(cs.rows)
                    pending += self._openings(cs.rows)
                due = [t for t in pending if time.monotonic() >= t.seen_mono + self.settings.settle_s]
                for trip in due:
                    pending.remove(trip)
                    self._on_trip(trip)
            except Exception:  # the watcher must survive one bad trip
                log.exception("FLISR: handling a change set failed")

    def _openings(self, rows: np.ndarray) -> list[_Trip]:
        out = []
        now = time.monotonic()
        for r in rows:
            sw = self._protective.get(int(r["point"]))
            if sw is None:
                continue
            p = self.config.points[int(r["point"])]
            closed_before = r["prev_value"] == (DoubleState.ON if p.kind is PointKind.DOUBLE else 1)
            open_now = r["value"] == (DoubleState.OFF if p.kind is PointKind.DOUBLE else 0)
            if not (closed_before and open_now) or int(r["quality"]) & _UNUSABLE:
                continue
            if int(r["cause"]) == Cause.RETURN_REMOTE or self._commanded(p.id, now - self.settings.command_grace_s):
                log.info("FLISR: %s opened by a command, not a trip", p.name)
                continue
            t_ms = int(r["source_time_ms"]) if r["source_time_ms"] > 0 else int(r["recv_time_ms"])
            out.append(_Trip(sw, p.id, now, t_ms))
        return out

    def _on_trip(self, trip: _Trip) -> None:
        name = self._model.switches[trip.switch].name
        if self._commanded(trip.point, trip.seen_mono - self.settings.command_grace_s):
            log.info("FLISR: %s opened around a command on it, not a trip", name)
            return
        snap = self._topology.snapshot()
        if snap.model is not self._model:  # the network model was replaced (a GIS update): bind to the new one
            self._bind(snap.model)
            trip.switch = self._switch_index(name)
        if bool(snap.switch_closed[trip.switch]):
            log.info("FLISR: %s is closed again after the settle window; no run", name)
            return
        fpi_rows = self._rtdb.snapshot(sorted(self._fpi))
        dead = ~snap.colouring.buses["energized"]
        picked = []
        for r in fpi_rows:
            sw = self._fpi[int(r["point"])]
            s = snap.model.switches[sw]
            if r["value"] == 1 and not int(r["quality"]) & _UNUSABLE and (dead[s.from_bus] or dead[s.to_bus]):
                picked.append(s.name)
        with self._lock:
            active = [r for r in self._runs.values() if r.tripped_switch == name and not r.state.final]
        if active:
            log.warning("FLISR: %s tripped again while run %d is %s; no new run", name, active[0].id,
                        active[0].state.value)
            return
        run = self._new_run(trip.switch, tuple(picked), trip.trip_ms, self._interrupted_loads(snap, trip.switch),
                            self._mode)
        try:
            plan = self.plan(self.live_state(snap), name, picked)
        except (DmsError, ScadaError, ValueError, LookupError) as exc:
            self._fail(run.id, f"no plan for the trip of {name}: {exc}")
            return
        self._planned(run.id, plan)

    # ------------------------------------------------------------------------------------------ run lifecycle
    def _new_run(self, sw: int, picked: tuple[str, ...], trip_ms: int, interrupted: np.ndarray,
                 mode: FlisrMode) -> FlisrRun:
        s = self._model.switches[sw]
        customers = int(customers_per_load(self._model)[interrupted].sum()) if len(interrupted) else 0
        with self._lock:
            run = FlisrRun(id=self._next_id, state=RunState.PLANNED, mode=mode,
                           feeder=self._feeder_name.get(s.feeder_mrid or "", ""), tripped_switch=s.name,
                           picked_up=picked, trip_ms=trip_ms, created_ms=now_ms(), customers_interrupted=customers,
                           customers_still_off=customers)
            self._next_id += 1
            self._interrupted[run.id] = interrupted
            self._commit(run)
        self._audit_event(self.operator, "flisr_run", s.name, run.id,
                          f"run {run.id}: {s.name} tripped ({mode.value} mode), FPIs picked up: "
                          f"{', '.join(picked) or 'none'}")
        return run

    def _planned(self, run_id: int, plan: FlisrPlan) -> FlisrRun:
        steps = tuple(StepResult(s.number, s.switch, s.action, s.purpose, s.telemetered) for s in plan.steps)
        with self._lock:
            run = self._update(run_id, plan=plan, steps=steps, planned_ms=now_ms(), record=True)
        self._audit_event(self.operator, "flisr_plan", run.tripped_switch, run_id,
                          f"run {run_id}: {plan.fault.description}; {len(plan.isolation)} isolation and "
                          f"{len(plan.restoration)} restoration steps, {plan.customers_restored} of "
                          f"{plan.customers_interrupted} customers to restore ({plan.plan_ms:.0f} ms)")
        if run.mode is FlisrMode.MANUAL:
            return run
        with self._lock:
            run = self._update(run_id, state=RunState.ISOLATING)
        self._jobs.put((run_id, RunPhase.ISOLATION))
        return run

    def _update(self, run_id: int, *, record: bool = False, **changes: Any) -> FlisrRun:
        """Caller holds the lock. ``record``: update the OMS outage record before anyone sees the new state."""
        run = dataclasses.replace(self._runs[run_id], **changes)
        if record:
            run = self._recorded(run)
        self._commit(run)
        return run

    def _commit(self, run: FlisrRun) -> None:
        self._runs[run.id] = run
        if len(self._runs) > self.settings.max_runs_in_memory:
            finished = [r.id for r in self._runs.values() if r.state.final]
            if finished:  # the store keeps every run; memory only the newest
                self._runs.pop(min(finished))
                self._interrupted.pop(min(finished), None)
        self._store.put(run, now_ms())
        for w in self._watchers:
            w.offer(run)

    def _fail(self, run_id: int, why: str) -> FlisrRun:
        with self._lock:
            run = self._finish(run_id, RunState.FAILED, why)
        key = f"flisr:run:{run_id}"
        self._alarms.raise_system(key, f"FLISR run {run_id} ({run.tripped_switch}) failed: {why}", Priority.HIGH)
        self._alarms.clear_system(key)  # an event to acknowledge, like a failed command
        self._audit_event(self.operator, "flisr_run", run.tripped_switch, run_id, f"run {run_id} failed: {why}",
                          refused=True)
        log.warning("FLISR run %d failed: %s", run_id, why)
        return run

    def _finish(self, run_id: int, state: RunState, why: str) -> FlisrRun:
        """Caller holds the lock."""
        run = self._runs[run_id]
        steps = tuple(dataclasses.replace(s, status=StepStatus.SKIPPED)
                      if s.status in (StepStatus.PENDING, StepStatus.AWAITING_CREW) else s for s in run.steps)
        return self._update(run_id, state=state, error=why, steps=steps, finished_ms=now_ms(), record=True,
                            **self._customer_counts(run))

    # ------------------------------------------------------------------------------------------ execution
    def _exec_loop(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            run_id, phase = job
            try:
                self._execute(run_id, phase)
            except Exception as exc:  # a bug must not leave a run hanging in "isolating"
                log.exception("FLISR run %d: execution failed", run_id)
                self._fail(run_id, f"internal error while executing the {phase.value}: {exc}")

    def _execute(self, run_id: int, phase: RunPhase) -> None:
        run = self.run(run_id)
        if run.state.final or run.plan is None:
            return
        numbers = {s.number for s in (run.plan.isolation if phase is RunPhase.ISOLATION else run.plan.restoration)}
        for k, step in enumerate(run.steps):
            if step.number not in numbers or step.status is not StepStatus.PENDING:
                continue
            if self._stop.is_set() or self.run(run_id).state.final:
                return
            plan_step = next(s for s in run.plan.steps if s.number == step.number)
            result = self._do_step(run_id, k, plan_step)
            if result is StepStatus.FAILED:
                self._fail(run_id, f"step {step.number} ({step.action.value} {step.switch}) failed: "
                                   f"{self.run(run_id).steps[k].outcome}")
                return
            if result is StepStatus.AWAITING_CREW:
                return
        with self._lock:
            run = self.run(run_id)
            if phase is RunPhase.ISOLATION:
                run = self._update(run_id, isolated_ms=now_ms(), state=RunState.AWAITING_APPROVAL
                                   if run.mode is not FlisrMode.AUTOMATIC else RunState.RESTORING, record=True,
                                   **self._customer_counts(run))
            else:
                run = self._update(run_id, restored_ms=now_ms(), state=RunState.COMPLETED, finished_ms=now_ms(),
                                   record=True, **self._customer_counts(run))
        if phase is RunPhase.ISOLATION:
            self._mark_faulted(run)
        if phase is RunPhase.ISOLATION and run.mode is FlisrMode.AUTOMATIC:
            self._execute(run_id, RunPhase.RESTORATION)
        elif phase is RunPhase.RESTORATION:
            self._audit_event(self.operator, "flisr_run", run.tripped_switch, run_id,
                              f"run {run_id} completed: {run.customers_restored} of {run.customers_interrupted} "
                              f"customers restored, trip -> restored {run.trip_to_restored_s or 0:.1f} s")

    def _do_step(self, run_id: int, k: int, step: SwitchingStep) -> StepStatus:
        t0 = now_ms()
        target = step.action is SwitchAction.CLOSE
        sw = self._topology.find_switch(step.switch)
        point = self._control.get(sw.index) if sw is not None else None
        self._set_step(run_id, k, StepStatus.RUNNING, "", started_ms=t0, point=point.name if point else "")
        if sw is None:
            return self._set_step(run_id, k, StepStatus.FAILED, f"no switch {step.switch!r} in the live model")
        if sw.closed == target and not sw.uncertain:
            return self._set_step(run_id, k, StepStatus.ALREADY,
                                  f"{step.switch} already {'closed' if target else 'open'}; nothing sent")
        if point is None or not step.telemetered:
            with self._lock:
                self._update(run_id, state=RunState.AWAITING_CREW)
            return self._set_step(run_id, k, StepStatus.AWAITING_CREW,
                                  f"{step.action.value} {step.switch}: no remote control; waiting for a field crew")
        why = self._command(point, target)
        if why:
            return self._set_step(run_id, k, StepStatus.FAILED, why)
        deadline = time.monotonic() + self.settings.confirm_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            snap = self._topology.snapshot()
            if bool(snap.switch_closed[sw.index]) == target and not snap.switch_uncertain[sw.index]:
                return self._set_step(run_id, k, StepStatus.DONE,
                                      f"{point.name}: {step.action.value} confirmed by the field and the topology "
                                      f"(v{snap.version}) in {now_ms() - t0} ms")
            time.sleep(_POLL_S)
        return self._set_step(run_id, k, StepStatus.FAILED,
                              f"{point.name}: the topology did not show {step.switch} "
                              f"{'closed' if target else 'open'} within {self.settings.confirm_timeout_s:g} s")

    def _command(self, point: PointDef, close: bool) -> str:
        """Select + operate (or direct operate) one position; '' when confirmed, else why not."""
        assert point.control is not None
        if point.kind is PointKind.DOUBLE:
            value = float(DoubleState.ON if close else DoubleState.OFF)
        else:
            value = 1.0 if close else 0.0
        why = ""
        for attempt in range(self.settings.field_retries + 1):
            retry = " (after a retry)" if attempt else ""
            try:
                if point.control.mode.selects:
                    sel = self._commands.select(point.id, value, self.operator)
                    if sel.status is not ControlStatus.SUCCESS:
                        why = f"{point.name}: select {sel.status.value} {sel.field_detail}".strip() + retry
                        if sel.status in (ControlStatus.REFUSED_BY_FIELD, ControlStatus.TIMEOUT):
                            continue
                        return why
                out = self._commands.operate(point.id, value, self.operator)
            except CommandRefused as exc:
                return f"{point.name}: command refused ({exc.reason}): {exc}"
            if out.status is ControlStatus.SUCCESS and out.feedback is not FeedbackStatus.NOT_CONFIRMED:
                return ""
            if out.status is ControlStatus.SUCCESS:
                return (f"{point.name}: operate accepted but the status did not follow within "
                        f"{point.control.feedback_timeout_s:g} s")
            why = f"{point.name}: operate {out.status.value} {out.field_detail}".strip() + retry
            if out.status not in (ControlStatus.REFUSED_BY_FIELD, ControlStatus.TIMEOUT):
                return why
        return why

    def _set_step(self, run_id: int, k: int, status: StepStatus, outcome: str, **changes: Any) -> StepStatus:
        with self._lock:
            run = self.run(run_id)
            step = dataclasses.replace(run.steps[k], status=status, outcome=outcome, **changes)
            if status not in (StepStatus.RUNNING, StepStatus.PENDING):
                step = dataclasses.replace(step, finished_ms=now_ms())
            self._update(run_id, steps=_replace_step(run.steps, k, step))
        return status

    def _phase_of(self, run: FlisrRun, step_number: int) -> RunPhase:
        assert run.plan is not None
        return RunPhase.ISOLATION if any(s.number == step_number for s in run.plan.isolation) \
            else RunPhase.RESTORATION

    # ------------------------------------------------------------------------------------------ figures and records
    def _interrupted_loads(self, snap: TopologySnapshot, sw: int) -> np.ndarray:
        """Loads in the dead island(s) on either side of the tripped switch: what its opening interrupted."""
        s = snap.model.switches[sw]
        buses = snap.colouring.buses
        islands = {int(buses["island"][b]) for b in (s.from_bus, s.to_bus) if not buses["energized"][b]}
        loads = snap.colouring.loads
        return np.nonzero(np.isin(loads["island"], list(islands)) & ~loads["energized"])[0]

    def _customer_counts(self, run: FlisrRun) -> dict[str, int]:
        loads = self._interrupted.get(run.id)
        snap = self._topology.snapshot()
        if loads is None or snap.model is not self._model:  # from before a restart or a model change: keep figures
            return {}
        per_load = customers_per_load(snap.model)
        off = loads[~snap.colouring.loads["energized"][loads]] if len(loads) else loads
        still = int(per_load[off].sum()) if len(off) else 0
        return {"customers_restored": run.customers_interrupted - still, "customers_still_off": still}

    def _recorded(self, run: FlisrRun) -> FlisrRun:
        """``run`` with its outage record opened or updated (the record's id set); the OMS failing does not stop the
        switching: it raises an alarm instead."""
        if self._recorder is None:
            return run
        plan = run.plan
        status = "restored" if run.state is RunState.COMPLETED else "open"
        notes = run.notes + ((run.error,) if run.error else ()) + (plan.notes if plan is not None else ())
        try:
            rec = self._recorder.open_or_update(
                source="flisr", source_ref=f"run-{run.id}", feeder=run.feeder, tripped_device=run.tripped_switch,
                faulted_elements=plan.fault.faulted_elements if plan else (),
                isolated_boundary=tuple(s.switch for s in plan.isolation) if plan else (),
                customers_interrupted=run.customers_interrupted, customers_restored=run.customers_restored,
                customers_still_off=run.customers_still_off, started_ms=run.trip_ms, isolated_ms=run.isolated_ms,
                restored_ms=run.restored_ms, status=status, notes=notes)
        except Exception as exc:
            log.exception("FLISR run %d: outage record not written", run.id)
            self._alarms.raise_system(f"flisr:oms:{run.id}", f"FLISR run {run.id}: outage record not written: {exc}",
                                      Priority.MEDIUM)
            return run
        rid = int(getattr(rec, "id", 0) or 0)
        return dataclasses.replace(run, outage_record_id=rid) if rid else run

    def _mark_faulted(self, run: FlisrRun) -> None:
        if self._tags is None or not self.settings.mark_faulted or run.plan is None:
            return
        from scada.tags import TagKind

        for element in run.plan.fault.faulted_elements:
            if any(t.kind is TagKind.FAULTED for t in self._tags.active(element)):
                continue
            self._tags.place(element, TagKind.FAULTED, self.operator.name,
                             f"FLISR run {run.id}: faulted section isolated")
        if run.plan.fault.faulted_elements:
            self._topology.republish(UpdateCause.MARKING)

    # ------------------------------------------------------------------------------------------ loads
    def _take_currents(self, rows: np.ndarray) -> None:
        """Keep each feeder-head current while its breaker carries load (a trip's zero is not a load)."""
        if not len(rows):
            return
        by_point = {int(r["point"]): r for r in rows}
        for feeder, (_sw, ids) in self._head.items():
            vals = [float(by_point[p]["value"]) for p in ids
                    if p in by_point and not int(by_point[p]["quality"]) & _DOUBTFUL_CURRENT]
            if vals and np.isfinite(vals).all() and min(vals) > 1.0:
                self._head_current_a[feeder] = float(np.mean(vals))

    def _scaled_by_head_current(self, state: NetworkState) -> NetworkState:
        model = state.base
        p = np.array(state.load_p_w, dtype=float)
        q = np.array(state.load_q_var, dtype=float)
        feeder_of = np.array([ld.feeder_mrid or "" for ld in model.loads])
        for feeder, amps in self._head_current_a.items():
            sw, _ids = self._head[feeder]
            s = model.switches[sw]
            v_ll = next((model.buses[b].nominal_v for b in (s.to_bus, s.from_bus)
                         if math.isfinite(model.buses[b].nominal_v) and model.buses[b].nominal_v > 0), math.nan)
            mask = feeder_of == feeder
            s_va = math.hypot(float(p[mask].sum()), float(q[mask].sum()))
            if not mask.any() or not math.isfinite(v_ll) or s_va <= 0:
                continue
            factor = min(3.0, max(0.2, amps / (s_va / (math.sqrt(3) * v_ll))))
            p[mask] *= factor
            q[mask] *= factor
        return state.with_loads(p, q)

    # ------------------------------------------------------------------------------------------ helpers
    def _switch_index(self, name: str) -> int:
        for i, s in enumerate(self._model.switches):
            if name in (s.name, s.mrid):
                return i
        raise LookupError(f"no switch {name!r} in network {self._model.name!r}")

    def _audit_event(self, operator: OperatorConfig, action: str, what: str, run_id: int, detail: str, *,
                     refused: bool = False) -> None:
        if self._audit is None:
            return
        try:
            self._audit.record(operator=operator.name, role=operator.role.value, point=-1, point_name=what,
                               action=action, value=float(run_id), outcome="refused" if refused else "answered",
                               reason="flisr", field_detail=detail)
        except ScadaError:
            log.exception("FLISR: audit record failed")


def _replace_step(steps: tuple[StepResult, ...], k: int, step: StepResult) -> tuple[StepResult, ...]:
    return steps[:k] + (step,) + steps[k + 1:]
