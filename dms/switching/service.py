"""The live switching order service: create, validate, simulate, approve, execute, record, abort, export.

Execution in real time: the next step of an approved order runs when the operator asks (``execute_next_step``, or
``execute`` for every step up to the next manual one). A telemetered step goes out through the SCADA command service
(select + operate by the executing operator: roles, tags, interlocks and audit apply as for any command), then waits
for the position feedback and for the live topology to show the switch in its new state. A manual step waits for
the field crew: ``record_manual_step`` records what the crew reports, sets the manual state of the non-telemetered
switch in the topology (``TopologyService.set_manual_switch_state``, audited there) or places/removes the earth
marking (CLEARANCE tag). Tag/untag steps place or remove a HOLD tag when executed in the control room. A step that
fails stops the order (it stays ``executing`` with the step ``failed``; running it again retries it, or the order is
aborted) and raises a system alarm. Every transition is audited (action ``switching_order``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dms.network_state import NetworkState
from dms.switching.errors import OrderStateError, StepRefusedError, SwitchingError
from dms.switching.export import order_document, order_specs_from_document
from dms.switching.order import (
    OrderState,
    SimulationReport,
    StepAction,
    StepSpec,
    StepStatus,
    SwitchingOrder,
    SwitchingStep,
    ValidationReport,
)
from dms.switching.store import OrderStore
from dms.switching.validation import markings_from_tags, simulate_steps, validate_steps
from models.commands import ControlStatus
from models.config import OperatorConfig, StationConfig
from models.network import NetworkModel
from models.points import ControlType, DoubleState, PointKind, Priority
from models.timebase import now_ms
from scada.commands import CommandService, FeedbackStatus
from scada.errors import CommandRefused
from scada.tags import TagKind, TagStore
from scada.topology_service import TopologyService, TopologyServiceError, UpdateCause, bind_switch_points

if TYPE_CHECKING:
    from scada.alarms import AlarmManager
    from scada.server import ControlCenter

__all__ = ["ExecutionOutcome", "SwitchingService"]

log = logging.getLogger(__name__)

#: Field answers worth one more try, as an operator would (the demo's FRTUs occasionally refuse or stay silent).
_RETRYABLE = (ControlStatus.REFUSED_BY_FIELD, ControlStatus.TIMEOUT)


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    """What one execution request did: the order after it and the step it touched (None when nothing was left)."""

    order: SwitchingOrder
    step: SwitchingStep | None
    executed: bool  # the step was carried out now
    waiting_for_crew: bool  # the next step is manual: record it when the crew reports
    message: str


class SwitchingService:
    """Switching orders of one control centre. Build with :meth:`for_center` (or the explicit constructor)."""

    def __init__(self, config: StationConfig, topology: TopologyService, commands: CommandService, tags: TagStore,
                 store: OrderStore, *, audit: Any = None, alarms: AlarmManager | None = None,
                 parallel_allowed: Iterable[str] = (), confirm_timeout_s: float = 15.0, attempts: int = 2,
                 live_state: Callable[[], NetworkState] | None = None,
                 study_state: Callable[[int], NetworkState] | None = None) -> None:
        """``live_state``: real time as a NetworkState (``dms.live_state.LiveStateSource.state``, loads from the
        metering); without it the model's loads with the live switch positions. ``study_state``: study id -> that
        study's state (``lambda i: studies.get(i).state``), for simulations in a study case."""
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self._config = config
        self._topology = topology
        self._commands = commands
        self._tags = tags
        self.store = store
        self._audit = audit
        self._alarms = alarms
        self._parallel_allowed = frozenset(parallel_allowed)
        self._confirm_timeout_s = confirm_timeout_s
        self._attempts = attempts
        self._lock = threading.RLock()  # one order transition at a time (executions are operator-paced)
        self._points_for: tuple[NetworkModel, dict[str, int]] | None = None
        self._live_state = live_state
        self._study_state = study_state

    @classmethod
    def for_center(cls, center: ControlCenter, *, data_dir: str | Path | None = None,
                   **options: Any) -> SwitchingService:
        if center.topology is None:
            raise SwitchingError("switching orders need a station with a network model ([network] cim)")
        store = OrderStore(Path(data_dir or center.data_dir) / "switching.sqlite")
        return cls(center.config, center.topology, center.commands, center.tags, store, audit=center.audit,
                   alarms=center.alarms, **options)

    def start(self) -> None:
        """Nothing runs in the background: executions are driven by operator requests."""

    def stop(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------------------ look-ups
    def _control_points(self) -> dict[str, int]:
        """Switch mRID -> id of its controllable position point (the point a telemetered step commands)."""
        model = self._topology.model
        if self._points_for is not None and self._points_for[0] is model:
            return self._points_for[1]
        points = self._config.points
        out: dict[str, int] = {}
        for sw, ids in bind_switch_points(self._config, model).items():
            ctl = [p for p in ids if points[p].control is not None]
            if ctl:
                out[model.switches[sw].mrid] = ctl[0]
        keys = {s.name: s.mrid for s in model.switches} | {s.mrid: s.mrid for s in model.switches}
        for p in points:  # a pure double command point bound to the switch (no status of its own)
            if (p.kind is PointKind.COMMAND and p.control is not None and p.control.type is ControlType.DOUBLE
                    and p.element in keys):
                out.setdefault(keys[p.element], p.id)
        self._points_for = (model, out)
        return out

    def _resolve(self, spec: StepSpec, number: int) -> SwitchingStep:
        found = self._topology.element_buses(spec.target.strip())
        if found is None:  # kept: validation reports the unknown element with its step
            return SwitchingStep(number, StepAction(spec.action), spec.target.strip(), "", False, spec.note)
        element, _buses = found
        telemetered = StepAction(spec.action).operates_switch and element.mrid in self._control_points()
        return SwitchingStep(number, StepAction(spec.action), element.name, element.mrid, telemetered, spec.note)

    def live_state(self) -> NetworkState:
        """Real time as a network state: the live source's, else the model with the live switch positions."""
        if self._live_state is not None:
            return self._live_state()
        snap = self._topology.snapshot()
        return NetworkState.from_model(snap.model, label=f"real time (topology v{snap.version})",
                                       frequency_hz=self._config.frequency_hz).with_switch_array(snap.switch_closed)

    # ------------------------------------------------------------------------------------------ orders
    def create_order(self, title: str, purpose: str, author: str, steps: Sequence[StepSpec]) -> SwitchingOrder:
        title = title.strip()
        if not title:
            raise SwitchingError("a switching order needs a title")
        if not steps:
            raise SwitchingError(f"switching order {title!r} has no steps")
        if not author.strip():
            raise SwitchingError(f"switching order {title!r}: the author must be named")
        resolved = tuple(self._resolve(s, i) for i, s in enumerate(steps, start=1))
        t = now_ms()
        order = self.store.create(SwitchingOrder(0, title, purpose.strip(), author, OrderState.DRAFT, t, t, resolved,
                                                 network=self._topology.model.name))
        self._record(author, order, "created", f"{len(resolved)} steps: {title}")
        return order

    def import_document(self, doc: dict[str, Any] | str | bytes, author: str) -> SwitchingOrder:
        """A new draft order from a SwitchingPlan document (see ``dms.switching.export``)."""
        plan = order_specs_from_document(doc)
        return self.create_order(plan.title, plan.purpose, author, plan.steps)

    def export_document(self, order_id: int) -> dict[str, Any]:
        return order_document(self.store.get(order_id))

    def get(self, order_id: int) -> SwitchingOrder:
        return self.store.get(order_id)

    def list(self, state: OrderState | None = None) -> list[SwitchingOrder]:
        return self.store.list(state)

    def _markings(self) -> tuple:
        return markings_from_tags(self._tags.active())

    def validate(self, order_id: int, operator: str = "", *, state: NetworkState | None = None) -> ValidationReport:
        """Check every step not yet done, in order, on a copy of real time (or ``state``). On real time, a clean draft
        becomes ``validated`` and a validated order with problems goes back to ``draft``."""
        with self._lock:
            order = self.store.get(order_id)
            basis = state if state is not None else self.live_state()
            report = validate_steps(basis.base, basis.switch_closed, _remaining(order), markings=self._markings(),
                                    parallel_allowed=self._parallel_allowed, order_id=order.id, basis=basis.label)
            if state is None:
                new = order.state
                if report.ok and order.state is OrderState.DRAFT:
                    new = OrderState.VALIDATED
                elif not report.ok and order.state is OrderState.VALIDATED:
                    new = OrderState.DRAFT
                if new is not order.state:
                    self.store.save(replace(order, state=new, updated_ms=now_ms()))
                self._record(operator or order.author, order, "validated" if report.ok else "validation_failed",
                             "; ".join(p.text() for p in report.problems) or f"no problem on {basis.label}")
            return report

    def study(self, study_id: int) -> NetworkState:
        if self._study_state is None:
            raise SwitchingError(f"no study cases are attached to switching orders: cannot simulate in study "
                                 f"{study_id}")
        return self._study_state(study_id)

    def simulate(self, order_id: int, *, state: NetworkState | None = None, study_id: int | None = None,
                 flow: bool = True) -> SimulationReport:
        """Study-mode run of the order's remaining steps on ``state``, study ``study_id``, or a copy of real time;
        nothing reaches the field."""
        order = self.store.get(order_id)
        if state is None:
            state = self.study(study_id) if study_id else self.live_state()
        return simulate_steps(state, _remaining(order),
                              markings=self._markings(), parallel_allowed=self._parallel_allowed, order_id=order.id,
                              flow=flow)

    def approve(self, order_id: int, operator: OperatorConfig) -> SwitchingOrder:
        """A validated order, re-validated on real time now, becomes ``approved`` (ready to execute)."""
        with self._lock:
            order = self.store.get(order_id)
            if order.state is not OrderState.VALIDATED:
                raise OrderStateError(f"switching order {order.id} is {order.state.value}: only a validated order "
                                      "can be approved (validate it first)")
            report = self.validate(order_id, operator.name)
            if not report.ok:
                raise OrderStateError(f"switching order {order.id} no longer validates on real time: "
                                      + "; ".join(p.text() for p in report.problems))
            order = replace(self.store.get(order_id), state=OrderState.APPROVED, approved_by=operator.name,
                            updated_ms=now_ms())
            self.store.save(order)
            self._record(operator.name, order, "approved", order.title)
            return order

    def abort(self, order_id: int, operator: OperatorConfig, reason: str = "") -> SwitchingOrder:
        with self._lock:
            order = self.store.get(order_id)
            if order.state in (OrderState.COMPLETED, OrderState.ABORTED):
                raise OrderStateError(f"switching order {order.id} is already {order.state.value}")
            steps = tuple(replace(s, status=StepStatus.SKIPPED) if s.status is StepStatus.PENDING else s
                          for s in order.steps)
            order = replace(order, state=OrderState.ABORTED, steps=steps, updated_ms=now_ms())
            self.store.save(order)
            self._record(operator.name, order, "aborted", reason or "aborted by the operator")
            self._clear_alarm(order)
            return order

    # ------------------------------------------------------------------------------------------ execution
    def _executable(self, order_id: int) -> tuple[SwitchingOrder, SwitchingStep | None]:
        order = self.store.get(order_id)
        if order.state not in (OrderState.APPROVED, OrderState.EXECUTING):
            raise OrderStateError(f"switching order {order.id} is {order.state.value}: only an approved order runs")
        return order, order.next_step()

    def execute_next_step(self, order_id: int, operator: OperatorConfig) -> ExecutionOutcome:
        """Run the next step if the control room does it (telemetered, tag/untag); a manual step is left for the
        crew (``waiting_for_crew``)."""
        with self._lock:
            order, step = self._executable(order_id)
            if step is None:
                return ExecutionOutcome(self._complete(order, operator), None, False, False,
                                        f"switching order {order.id} has no step left")
            if not step.telemetered and step.action not in (StepAction.TAG, StepAction.UNTAG):
                return ExecutionOutcome(order, step, False, True,
                                        f"{step.describe()} is for the field crew: record it when they report")
            if order.state is OrderState.APPROVED:
                order = replace(order, state=OrderState.EXECUTING, updated_ms=now_ms())
            try:
                detail = (self._run_telemetered(order, step, operator) if step.telemetered
                          else self._apply_tag(order, step, operator))
            except (SwitchingError, CommandRefused, TopologyServiceError) as exc:
                return self._fail(order, step, operator, str(exc))
            done = replace(step, status=StepStatus.DONE, executed_by=operator.name, executed_ms=now_ms(),
                           detail=detail)
            order = self._finish_step(order, done, operator)
            return ExecutionOutcome(order, done, True, False, f"{done.describe()} done: {detail}")

    def execute(self, order_id: int, operator: OperatorConfig) -> list[ExecutionOutcome]:
        """Run steps until the order completes, a step fails, or a manual step waits for the crew."""
        out: list[ExecutionOutcome] = []
        while True:
            res = self.execute_next_step(order_id, operator)
            out.append(res)
            if not res.executed or res.order.state is not OrderState.EXECUTING:
                return out

    def record_manual_step(self, order_id: int, step_number: int, operator: OperatorConfig,
                           done_at_ms: int | None = None, detail: str = "") -> SwitchingOrder:
        """The field crew reports a manual step done: update the model state / markings and mark the step."""
        with self._lock:
            order, nxt = self._executable(order_id)
            try:
                step = order.step(step_number)
            except IndexError as exc:
                raise StepRefusedError(str(exc)) from None
            if step.telemetered:
                raise StepRefusedError(f"switching order {order.id}: {step.describe()} is telemetered; execute it "
                                       "through SCADA, not as a crew report")
            if nxt is None or nxt.number != step.number:
                raise StepRefusedError(f"switching order {order.id}: step {step.number} is not the next step "
                                       f"(next is {nxt.number if nxt else 'none'}): steps are done in order")
            if not step.target_mrid:
                raise StepRefusedError(f"switching order {order.id}: {step.describe()}: unknown element")
            if order.state is OrderState.APPROVED:
                order = replace(order, state=OrderState.EXECUTING, updated_ms=now_ms())
            reason = f"switching order {order.id} step {step.number}" + (f": {step.note}" if step.note else "")
            if step.action.operates_switch:
                # refused (TopologyServiceError) when the switch has a valid field position: then it is no manual step
                self._topology.set_manual_switch_state(step.target, step.action is StepAction.CLOSE, operator, reason)
                what = f"crew reported {step.target} {'closed' if step.action is StepAction.CLOSE else 'open'}"
            elif step.action in (StepAction.EARTH, StepAction.UNEARTH):
                what = self._mark_earth(step, operator, reason)
            else:
                what = self._apply_tag(order, step, operator)
            done = replace(step, status=StepStatus.DONE, executed_by=operator.name,
                           executed_ms=int(done_at_ms) if done_at_ms else now_ms(),
                           detail=(f"{what}; {detail}" if detail else what))
            return self._finish_step(order, done, operator)

    # ------------------------------------------------------------------------------------------ step work
    def _run_telemetered(self, order: SwitchingOrder, step: SwitchingStep, operator: OperatorConfig) -> str:
        point = self._control_points().get(step.target_mrid)
        if point is None:
            raise StepRefusedError(f"{step.describe()}: switch {step.target} has no controllable position point")
        close = step.action is StepAction.CLOSE
        value = float(DoubleState.ON if close else DoubleState.OFF)
        p = self._config.points[point]
        if p.control is not None and p.control.type is ControlType.SINGLE:
            value = 1.0 if close else 0.0
        if self._topology.switch_state(step.target_mrid).closed == close:
            raise StepRefusedError(f"{step.describe()}: switch {step.target} is already "
                                   f"{'closed' if close else 'open'}")
        outcome = None
        for _attempt in range(self._attempts):
            if p.control is not None and p.control.mode.selects:
                sel = self._commands.select(point, value, operator)
                if sel.status is not ControlStatus.SUCCESS:
                    outcome = sel
                    if sel.status in _RETRYABLE:
                        continue
                    break
            outcome = self._commands.operate(point, value, operator)
            if outcome.status is ControlStatus.SUCCESS or outcome.status not in _RETRYABLE:
                break
        assert outcome is not None
        if outcome.status is not ControlStatus.SUCCESS:
            raise StepRefusedError(f"{step.describe()}: {p.name} {outcome.action.value} answered "
                                   f"{outcome.status.value} {outcome.field_detail}".strip())
        if outcome.feedback is not FeedbackStatus.CONFIRMED:
            raise StepRefusedError(f"{step.describe()}: {p.name} did not report "
                                   f"{'closed' if close else 'open'} (feedback {outcome.feedback.value})")
        deadline = time.monotonic() + self._confirm_timeout_s
        while self._topology.switch_state(step.target_mrid).closed != close:
            if time.monotonic() > deadline:
                raise StepRefusedError(f"{step.describe()}: the topology does not show {step.target} "
                                       f"{'closed' if close else 'open'} {self._confirm_timeout_s:g} s after feedback")
            time.sleep(0.05)
        return f"{p.name} {'closed' if close else 'opened'} in {outcome.elapsed_ms:.0f} ms, topology confirmed"

    def _apply_tag(self, order: SwitchingOrder, step: SwitchingStep, operator: OperatorConfig) -> str:
        reason = f"switching order {order.id} step {step.number}" + (f": {step.note}" if step.note else "")
        if step.action is StepAction.TAG:
            tag = self._tags.place(step.target, TagKind.HOLD, operator.name, reason)
            return f"hold tag {tag.id} placed on {step.target}"
        removed = self._remove_tags(step, TagKind.HOLD, operator, reason)
        return f"hold tag(s) {removed} removed from {step.target}"

    def _mark_earth(self, step: SwitchingStep, operator: OperatorConfig, reason: str) -> str:
        if step.action is StepAction.EARTH:
            tag = self._tags.place(step.target, TagKind.CLEARANCE, operator.name, reason)
            what = f"earthed: clearance tag {tag.id} on {step.target}"
        else:
            what = f"earths removed: clearance tag(s) {self._remove_tags(step, TagKind.CLEARANCE, operator, reason)}"
        self._topology.republish(UpdateCause.MARKING)
        return what

    def _remove_tags(self, step: SwitchingStep, kind: TagKind, operator: OperatorConfig, reason: str) -> str:
        tags = [t for key in dict.fromkeys((step.target, step.target_mrid)) for t in self._tags.active(key)
                if t.kind is kind]
        if not tags:
            raise StepRefusedError(f"{step.describe()}: {step.target} carries no active {kind.value} tag")
        for t in tags:
            self._tags.remove(t.id, operator.name, reason)
        return ", ".join(str(t.id) for t in tags)

    # ------------------------------------------------------------------------------------------ bookkeeping
    def _finish_step(self, order: SwitchingOrder, done: SwitchingStep, operator: OperatorConfig) -> SwitchingOrder:
        order = order.with_step(done, updated_ms=now_ms(), state=OrderState.EXECUTING)
        self._record(operator.name, order, "step_done", f"{done.describe()}: {done.detail}")
        self._clear_alarm(order)
        if order.next_step() is None:
            return self._complete(order, operator)
        self.store.save(order)
        return order

    def _complete(self, order: SwitchingOrder, operator: OperatorConfig) -> SwitchingOrder:
        order = replace(order, state=OrderState.COMPLETED, updated_ms=now_ms())
        self.store.save(order)
        self._record(operator.name, order, "completed", order.title)
        return order

    def _fail(self, order: SwitchingOrder, step: SwitchingStep, operator: OperatorConfig,
              why: str) -> ExecutionOutcome:
        failed = replace(step, status=StepStatus.FAILED, executed_by=operator.name, executed_ms=now_ms(), detail=why)
        order = order.with_step(failed, updated_ms=now_ms(), state=OrderState.EXECUTING)
        self.store.save(order)
        self._record(operator.name, order, "step_failed", why)
        if self._alarms is not None:
            self._alarms.raise_system(f"switching-order-{order.id}",
                                      f"switching order {order.id} ({order.title}) stopped: {why}", Priority.HIGH)
        log.warning("switching order %d stopped: %s", order.id, why)
        return ExecutionOutcome(order, failed, False, False, f"order stopped: {why}")

    def _clear_alarm(self, order: SwitchingOrder) -> None:
        if self._alarms is not None:
            self._alarms.clear_system(f"switching-order-{order.id}")

    def _record(self, operator: str, order: SwitchingOrder, event: str, detail: str) -> None:
        if self._audit is None:
            return
        self._audit.record(operator=operator, role="", point=-1, point_name=f"switching order {order.id}",
                           action="switching_order", value=float(order.id), outcome="answered", reason=event,
                           field_detail=detail)


def _remaining(order: SwitchingOrder) -> tuple[SwitchingStep, ...]:
    """The steps still to do: a half-executed order is judged on the network its done steps left."""
    return tuple(s for s in order.steps if s.status is not StepStatus.DONE)
