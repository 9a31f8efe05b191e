"""Planned outages: maintenance work announced to the customers it interrupts, executed as switching orders.

A planned outage names the switches opened to isolate the work area (and the elements earthed after them), its
origin (the asset-management system or a field intimation) and the announced window (UTC ms). Its life::

    SCHEDULED -> NOTIFIED -> STARTING -> IN_PROGRESS -> RESTORING -> COMPLETED
    SCHEDULED or NOTIFIED -> CANCELLED (before any switching)

- **Schedule**: the isolation is walked on a copy of the present switch positions (``dms.switching.validation``:
  the same rules as a switching order's validation, so an isolation that leaves the earthed section live, names an
  unknown switch or one already open is refused by name); the loads it de-energises give the affected customers
  (their consumer numbers), stored with the outage. Unless held back, one notification per customer goes into the
  notification feed and the outage is NOTIFIED.
- **Reschedule** recomputes the customers on the present network and notifies the window change (customers no longer
  affected get a cancellation); **Cancel** notifies a cancellation to the customers who were told.
- **Start** (``start_outage``) builds the isolation switching order (open the switches, earth the elements),
  validates and approves it on real time and runs it through the SwitchingService of the centre: telemetered steps
  go out as SCADA commands with feedback confirmation; a manual step (an earth, a switch without telecontrol) waits
  for the crew's report (``SwitchingService.record_manual_step``) and Start, asked again, continues the same order.
  When the order is completed the outage is IN_PROGRESS and an outage record is opened (source ``planned``,
  planned=True, cause = the reason, stage confirmed) so the reliability indices count it as planned.
- **Complete** (``complete_outage``) runs the reverse order (remove the earths, close the switches in reverse) the
  same way and closes the record with one restoration step for the customers given back.

:meth:`PlannedOutageService.covering` tells the OMS that a switch opening belongs to a planned outage being executed,
so the commanded openings are not taken for an unplanned outage. Every transition is audited in the store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dms.switching.order import OrderState, StepAction, StepSpec, StepStatus, SwitchingOrder, SwitchingStep
from dms.switching.validation import StepWalk
from models.config import OperatorConfig
from models.network import NetworkModel
from models.timebase import now_ms
from oms.errors import OmsError
from oms.events import format_time_ms
from oms.outage_records import OutageRecordStore, OutageStatus, RecordStage, RestorationStep
from oms.planned_store import (
    AuditEntry,
    NotificationKind,
    PlannedNotification,
    PlannedOrigin,
    PlannedOutage,
    PlannedState,
    PlannedStore,
)
from scada.topology import TopologyError

if TYPE_CHECKING:
    from dms.switching.service import SwitchingService
    from scada.server import ControlCenter

__all__ = ["IsolationEffect", "PlannedExecution", "PlannedInputError", "PlannedNotFoundError", "PlannedOrigin",
           "PlannedOutage", "PlannedOutageError", "PlannedOutageService", "PlannedState", "PlannedStateError",
           "isolation_effect"]

log = logging.getLogger(__name__)

#: The present switch positions: (model, closed per ``model.switches``, a label of the basis).
SwitchStates = Callable[[], tuple[NetworkModel, np.ndarray, str]]
#: A switch opening reported up to this long before Start was asked (field clock ahead) still belongs to it.
CLOCK_SKEW_MS = 5_000
RECORD_SOURCE = "planned"


class PlannedOutageError(OmsError):
    """A planned-outage request cannot be done (the message names the outage and the cause)."""


class PlannedInputError(PlannedOutageError, ValueError):
    """The request itself is wrong: empty title, window ending before it starts, unknown switch..."""


class PlannedStateError(PlannedOutageError):
    """The outage's state does not allow the request (start a cancelled outage, complete before start...)."""


class PlannedNotFoundError(PlannedOutageError, LookupError):
    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, slots=True)
class IsolationEffect:
    """What opening ``switches`` (then earthing ``earths``) does to the network it was walked on."""

    switches: tuple[str, ...]  # model names
    earths: tuple[str, ...]
    loads: tuple[str, ...]  # loads de-energised
    customers: tuple[tuple[str, str], ...]  # (consumer number, load name), sorted
    feeder: str
    problems: tuple[str, ...]  # the validation's sentences, each naming its step and element
    basis: str


@dataclass(frozen=True, slots=True)
class PlannedExecution:
    """What a Start or Complete request did."""

    outage: PlannedOutage
    order: SwitchingOrder | None
    waiting_for_crew: bool  # a manual step of the order waits for the crew's report
    message: str


def _customers_of_loads(model: NetworkModel, dead: np.ndarray) -> list[tuple[str, str]]:
    """(consumer number, load name) behind the de-energised loads; a model without usage points gets the loads'
    synthetic meters ``<load>-<k>`` (as ``oms.connectivity`` numbers them)."""
    if model.customers:
        return sorted((c.consumer_number, model.loads[c.load].name) for c in model.customers
                      if c.load is not None and dead[c.load])
    return sorted((f"{ld.name}-{k}", ld.name) for i, ld in enumerate(model.loads) if dead[i]
                  for k in range(1, max(ld.customer_count, 0) + 1))


def isolation_effect(model: NetworkModel, switch_closed: np.ndarray, switches: Sequence[str],
                     earths: Sequence[str] = (), *, basis: str = "") -> IsolationEffect:
    """Walk the isolation (open each switch, then earth each element) on a copy of ``switch_closed``."""
    steps = [SwitchingStep(i, StepAction.OPEN, s.strip(), "", False) for i, s in enumerate(switches, start=1)]
    steps += [SwitchingStep(len(steps) + i, StepAction.EARTH, e.strip(), "", False)
              for i, e in enumerate(earths, start=1)]
    walk = StepWalk(model, switch_closed)
    before = walk.tp.colouring().loads["energized"].copy()
    problems: list[str] = []
    names: list[str] = []
    for step in steps:
        problems.extend(p.text() for p in walk.apply(step))
        try:
            names.append(walk.tp.element(step.target)[0].name)
        except TopologyError:
            names.append(step.target)
    after = walk.tp.colouring().loads["energized"]
    dead = before & ~after
    feeders = {f.mrid: f.name for f in model.feeders}
    feeder = ""
    for name in names[:len(switches)]:
        sw = next((s for s in model.switches if s.name == name), None)
        if sw is not None and sw.feeder_mrid:
            feeder = feeders.get(sw.feeder_mrid, sw.feeder_mrid)
            break
    return IsolationEffect(tuple(names[:len(switches)]), tuple(names[len(switches):]),
                           tuple(model.loads[i].name for i in np.nonzero(dead)[0]),
                           tuple(_customers_of_loads(model, dead)), feeder, tuple(problems), basis)


class PlannedOutageService:
    """Planned outages of one control centre; build with :meth:`for_center` or the explicit constructor."""

    def __init__(self, store: PlannedStore, switch_states: SwitchStates, *, switching: SwitchingService | None = None,
                 records: OutageRecordStore | None = None, clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self._states = switch_states
        self._switching = switching
        self._records = records
        self._clock = clock
        self._lock = threading.RLock()  # one transition at a time (requests are operator-paced)

    @classmethod
    def for_center(cls, center: ControlCenter, *, switching: SwitchingService | None = None,
                   records: OutageRecordStore | None = None,
                   data_dir: str | Path | None = None) -> PlannedOutageService:
        """On the centre's live topology; ``switching``/``records``: the DMS's (``DmsApplications.switching`` and
        ``.outages``)."""
        topology = center.topology
        if topology is None:
            raise PlannedOutageError("planned outages need a station with a network model ([network] cim)")

        def states() -> tuple[NetworkModel, np.ndarray, str]:
            snap = topology.snapshot()
            return snap.model, snap.switch_closed, f"real time (topology v{snap.version})"

        store = PlannedStore(Path(data_dir or center.data_dir) / "planned.sqlite")
        return cls(store, states, switching=switching, records=records)

    def start(self) -> None:
        """Nothing runs in the background: every transition is a request."""

    def stop(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------------------ look-ups
    def get(self, outage_id: int) -> PlannedOutage:
        try:
            return self.store.get(outage_id)
        except LookupError:
            raise PlannedNotFoundError(f"no planned outage {outage_id}") from None

    def list(self, *, state: PlannedState | None = None, active_only: bool = False) -> list[PlannedOutage]:
        return self.store.list(state=state, active_only=active_only)

    def customers(self, outage_id: int) -> tuple[str, ...]:
        self.get(outage_id)
        return self.store.customers(outage_id)

    def audit(self, outage_id: int) -> list[AuditEntry]:
        return self.store.audit(outage_id)

    def notifications(self, since_seq: int = 0, limit: int = 1000) -> list[PlannedNotification]:
        if limit < 1:
            raise PlannedInputError(f"notifications: limit must be >= 1, got {limit}")
        return self.store.notifications(since_seq, limit=limit)

    def customer_planned(self, consumer_number: str, *, now: int | None = None) -> list[PlannedOutage]:
        """The customer's planned outages not yet over (not cancelled, not completed, window not past)."""
        t = self._clock() if now is None else now
        return [o for o in self.store.outages_of_customer(consumer_number.strip())
                if o.state.active and (o.end_ms >= t or o.state not in (PlannedState.SCHEDULED, PlannedState.NOTIFIED))]

    def covering(self, switch_name: str, time_ms: int) -> PlannedOutage | None:
        """The planned outage whose switching (started, not completed at ``time_ms``) opens ``switch_name`` (model
        name or mRID), or None: such an opening is planned work, not an unplanned outage."""
        names = {switch_name}
        model = self._states()[0]
        names.update(s.name for s in model.switches if s.mrid == switch_name)
        for o in self.store.executing():
            if not names.intersection(o.switches) or time_ms < o.exec_started_ms - CLOCK_SKEW_MS:
                continue
            if o.completed_ms < 0 or time_ms <= o.completed_ms + CLOCK_SKEW_MS:
                return o
        return None

    # ------------------------------------------------------------------------------------------ planning
    def _effect(self, switches: Sequence[str], earths: Sequence[str], what: str) -> IsolationEffect:
        model, closed, basis = self._states()
        effect = isolation_effect(model, closed, switches, earths, basis=basis)
        if effect.problems:
            raise PlannedInputError(f"{what}: the isolation does not hold on {basis}: " + "; ".join(effect.problems))
        if not effect.customers:
            log.info("%s: the isolation de-energises no customer on %s", what, basis)
        return effect

    def _check_window(self, start_ms: int, end_ms: int, what: str) -> None:
        if end_ms <= start_ms:
            raise PlannedInputError(f"{what}: the window ends ({format_time_ms(end_ms)}) before it starts "
                                    f"({format_time_ms(start_ms)})")
        if end_ms <= self._clock():
            raise PlannedInputError(f"{what}: the window ending {format_time_ms(end_ms)} is already over")

    def schedule(self, *, title: str, reason: str, origin: PlannedOrigin | str, switches: Sequence[str],
                 start_ms: int, end_ms: int, operator: str, earths: Sequence[str] = (),
                 notify: bool = True) -> PlannedOutage:
        """A new planned outage with its affected customers; ``notify``: tell them now (state NOTIFIED)."""
        title = title.strip()
        what = f"planned outage {title!r}"
        if not title:
            raise PlannedInputError("a planned outage needs a title")
        if not reason.strip():
            raise PlannedInputError(f"{what}: the reason (the work to be done) is empty")
        if not operator.strip():
            raise PlannedInputError(f"{what}: the operator must be named")
        try:
            origin = PlannedOrigin(origin)
        except ValueError:
            raise PlannedInputError(f"{what}: unknown origin {origin!r} (expected one of "
                                    f"{', '.join(o.value for o in PlannedOrigin)})") from None
        if not switches:
            raise PlannedInputError(f"{what}: no switch to open: name the switches that isolate the work area")
        self._check_window(start_ms, end_ms, what)
        effect = self._effect(switches, earths, what)
        if len(set(effect.switches)) != len(effect.switches):
            raise PlannedInputError(f"{what}: a switch is named twice in {', '.join(effect.switches)}")
        t = self._clock()
        with self._lock:
            outage = PlannedOutage(0, title, reason.strip(), origin, effect.switches, effect.earths, int(start_ms),
                                   int(end_ms), PlannedState.SCHEDULED, operator, t, t, len(effect.customers),
                                   effect.feeder, effect.basis)
            audit = [AuditEntry(0, t, operator, "scheduled",
                                f"{origin.value}: open {', '.join(effect.switches)}"
                                + (f", earth {', '.join(effect.earths)}" if effect.earths else "")
                                + f"; {len(effect.customers)} customers on {len(effect.loads)} loads ({effect.basis})")]
            notes: list[PlannedNotification] = []
            if notify:
                outage = replace(outage, state=PlannedState.NOTIFIED)
                notes = self._notices(outage, [c for c, _ in effect.customers], NotificationKind.SCHEDULED, t)
                audit.append(AuditEntry(0, t, operator, "notified", f"{len(notes)} customer notifications"))
            return self.store.save(outage, customers=effect.customers, notifications=notes, audit=audit)

    def notify(self, outage_id: int, operator: str) -> PlannedOutage:
        """Tell the customers of a SCHEDULED outage (held back at scheduling)."""
        with self._lock:
            o = self.get(outage_id)
            if o.state is not PlannedState.SCHEDULED:
                raise PlannedStateError(f"planned outage {o.ref} is {o.state.value}: only a scheduled outage is "
                                        "notified (a notified one is told of changes by Reschedule/Cancel)")
            t = self._clock()
            notes = self._notices(o, self.store.customers(o.id), NotificationKind.SCHEDULED, t)
            return self.store.save(replace(o, state=PlannedState.NOTIFIED, updated_ms=t), notifications=notes,
                                   audit=[AuditEntry(o.id, t, operator, "notified",
                                                     f"{len(notes)} customer notifications")])

    def reschedule(self, outage_id: int, start_ms: int, end_ms: int, operator: str) -> PlannedOutage:
        """A new window; the customers are recomputed on the present network and told (if they were)."""
        with self._lock:
            o = self.get(outage_id)
            if o.state not in (PlannedState.SCHEDULED, PlannedState.NOTIFIED):
                raise PlannedStateError(f"planned outage {o.ref} is {o.state.value}: only a scheduled or notified "
                                        "outage can be rescheduled")
            what = f"planned outage {o.ref}"
            self._check_window(start_ms, end_ms, what)
            effect = self._effect(o.switches, o.earths, what)
            t = self._clock()
            new = replace(o, start_ms=int(start_ms), end_ms=int(end_ms), customer_count=len(effect.customers),
                          basis=effect.basis, updated_ms=t)
            notes: list[PlannedNotification] = []
            now_off = [c for c, _ in effect.customers]
            if o.state is PlannedState.NOTIFIED:
                dropped = sorted(set(self.store.customers(o.id)) - set(now_off))
                notes = (self._notices(new, now_off, NotificationKind.RESCHEDULED, t)
                         + self._notices(o, dropped, NotificationKind.CANCELLED, t))
            detail = (f"window {format_time_ms(o.start_ms)}..{format_time_ms(o.end_ms)} -> "
                      f"{format_time_ms(start_ms)}..{format_time_ms(end_ms)}; {len(now_off)} customers "
                      f"({effect.basis}); {len(notes)} notifications")
            return self.store.save(new, customers=effect.customers, notifications=notes,
                                   audit=[AuditEntry(o.id, t, operator, "rescheduled", detail)])

    def cancel(self, outage_id: int, operator: str, reason: str = "") -> PlannedOutage:
        """Cancel before any switching; the customers who were told get a cancellation."""
        with self._lock:
            o = self.get(outage_id)
            if o.state not in (PlannedState.SCHEDULED, PlannedState.NOTIFIED):
                hint = {PlannedState.STARTING: f"abort its isolation switching order {o.isolation_order} first",
                        PlannedState.IN_PROGRESS: "complete it to restore supply",
                        PlannedState.RESTORING: "complete it to restore supply"}.get(o.state, "nothing to cancel")
                raise PlannedStateError(f"planned outage {o.ref} is {o.state.value}: it cannot be cancelled ({hint})")
            t = self._clock()
            notes = (self._notices(o, self.store.customers(o.id), NotificationKind.CANCELLED, t)
                     if o.state is PlannedState.NOTIFIED else [])
            return self.store.save(replace(o, state=PlannedState.CANCELLED, updated_ms=t), notifications=notes,
                                   audit=[AuditEntry(o.id, t, operator, "cancelled",
                                                     (reason or "cancelled") + f"; {len(notes)} notifications")])

    @staticmethod
    def _notices(o: PlannedOutage, customers: Sequence[str], kind: NotificationKind,
                 t: int) -> list[PlannedNotification]:
        window = f"{format_time_ms(o.start_ms)} to {format_time_ms(o.end_ms)}"
        ref = o.ref if o.id else "{ref}"  # the store fills in the id of a new outage
        if kind is NotificationKind.SCHEDULED:
            text = f"{ref}: planned power interruption from {window} for {o.reason}."
        elif kind is NotificationKind.RESCHEDULED:
            text = f"{ref}: the planned power interruption for {o.reason} is moved to {window}."
        else:
            text = f"{ref}: the planned power interruption from {window} is cancelled."
        return [PlannedNotification(0, o.id, c, kind, o.start_ms, o.end_ms, text, t) for c in customers]

    # ------------------------------------------------------------------------------------------ execution
    def _need_switching(self, o: PlannedOutage) -> SwitchingService:
        if self._switching is None:
            raise PlannedOutageError(f"planned outage {o.ref}: no switching service is attached: it cannot be "
                                     "executed here")
        return self._switching

    def start_outage(self, outage_id: int, operator: OperatorConfig) -> PlannedExecution:
        """Run (or continue) the isolation order; IN_PROGRESS when it is completed."""
        with self._lock:
            o = self.get(outage_id)
            if o.state is PlannedState.SCHEDULED:
                raise PlannedStateError(f"planned outage {o.ref} is scheduled but its customers were not notified: "
                                        "notify them before starting")
            if o.state not in (PlannedState.NOTIFIED, PlannedState.STARTING):
                raise PlannedStateError(f"planned outage {o.ref} is {o.state.value}: only a notified outage starts")
            switching = self._need_switching(o)
            if o.state is PlannedState.NOTIFIED:
                specs = ([StepSpec(StepAction.OPEN, s, f"{o.ref}: isolate the work area") for s in o.switches]
                         + [StepSpec(StepAction.EARTH, e, f"{o.ref}: working earths") for e in o.earths])
                order = self._prepared(o, switching, f"{o.ref} isolation: {o.title}", specs, operator)
                t = self._clock()
                o = self.store.save(replace(o, state=PlannedState.STARTING, isolation_order=order.id,
                                            exec_started_ms=t, updated_ms=t),
                                    audit=[AuditEntry(o.id, t, operator.name, "start_requested",
                                                      f"isolation switching order {order.id}")])
            return self._run(o, switching, o.isolation_order, operator)

    def complete_outage(self, outage_id: int, operator: OperatorConfig) -> PlannedExecution:
        """Run (or continue) the restoration order; COMPLETED, with the outage record closed, when it is done."""
        with self._lock:
            o = self.get(outage_id)
            if o.state in (PlannedState.SCHEDULED, PlannedState.NOTIFIED, PlannedState.STARTING):
                raise PlannedStateError(f"planned outage {o.ref} is {o.state.value}: it has not started (the work "
                                        "area is not isolated), so there is nothing to complete")
            if o.state not in (PlannedState.IN_PROGRESS, PlannedState.RESTORING):
                raise PlannedStateError(f"planned outage {o.ref} is already {o.state.value}")
            switching = self._need_switching(o)
            if o.state is PlannedState.IN_PROGRESS:
                specs = ([StepSpec(StepAction.UNEARTH, e, f"{o.ref}: remove the working earths")
                          for e in reversed(o.earths)]
                         + [StepSpec(StepAction.CLOSE, s, f"{o.ref}: restore supply") for s in reversed(o.switches)])
                order = self._prepared(o, switching, f"{o.ref} restoration: {o.title}", specs, operator)
                t = self._clock()
                o = self.store.save(replace(o, state=PlannedState.RESTORING, restoration_order=order.id,
                                            updated_ms=t),
                                    audit=[AuditEntry(o.id, t, operator.name, "complete_requested",
                                                      f"restoration switching order {order.id}")])
            return self._run(o, switching, o.restoration_order, operator)

    def _prepared(self, o: PlannedOutage, switching: SwitchingService, title: str, specs: list[StepSpec],
                  operator: OperatorConfig) -> SwitchingOrder:
        """A switching order created, validated and approved on real time (aborted and refused if it does not
        validate)."""
        order = switching.create_order(title, o.reason, operator.name, specs)
        report = switching.validate(order.id, operator.name)
        if not report.ok:
            why = "; ".join(p.text() for p in report.problems)
            switching.abort(order.id, operator, f"{o.ref}: does not validate")
            self.store.save(o, audit=[AuditEntry(o.id, self._clock(), operator.name, "order_refused",
                                                 f"switching order {order.id}: {why}")])
            raise PlannedStateError(f"planned outage {o.ref}: switching order {order.id} does not validate on "
                                    f"{report.basis}: {why}")
        return switching.approve(order.id, operator)

    def _run(self, o: PlannedOutage, switching: SwitchingService, order_id: int,
             operator: OperatorConfig) -> PlannedExecution:
        isolating = o.state is PlannedState.STARTING
        order = switching.get(order_id)
        if order.state is OrderState.ABORTED:
            back = PlannedState.NOTIFIED if isolating else PlannedState.IN_PROGRESS
            t = self._clock()
            fields = {"isolation_order": 0, "exec_started_ms": -1} if isolating else {"restoration_order": 0}
            o = self.store.save(replace(o, state=back, updated_ms=t, **fields),
                                audit=[AuditEntry(o.id, t, operator.name, "order_aborted",
                                                  f"switching order {order.id} was aborted; back to {back.value}")])
            raise PlannedStateError(f"planned outage {o.ref}: switching order {order.id} was aborted; the outage is "
                                    f"{back.value} again (check the switch positions, then ask again)")
        waiting, message = False, f"switching order {order.id} is {order.state.value}"
        if order.state in (OrderState.APPROVED, OrderState.EXECUTING):
            outcomes = switching.execute(order.id, operator)
            last = outcomes[-1]
            order, waiting, message = last.order, last.waiting_for_crew, last.message
        if order.state is not OrderState.COMPLETED:
            return PlannedExecution(o, order, waiting, message)
        o = self._isolated(o, order, operator) if isolating else self._restored(o, order, operator)
        return PlannedExecution(o, order, False, f"switching order {order.id} completed: planned outage {o.ref} is "
                                                 f"{o.state.value}")

    def _isolated(self, o: PlannedOutage, order: SwitchingOrder, operator: OperatorConfig) -> PlannedOutage:
        t = self._clock()
        opened = [s.executed_ms for s in order.steps if s.action is StepAction.OPEN and s.status is StepStatus.DONE
                  and s.executed_ms is not None]
        off_ms = min(opened) if opened else t
        record_id = 0
        if self._records is not None:
            rec = self._records.open_or_update(
                source=RECORD_SOURCE, source_ref=o.ref, feeder=o.feeder, tripped_device=o.switches[0],
                isolated_boundary=o.switches, customers_interrupted=o.customer_count,
                customers_still_off=o.customer_count, started_ms=off_ms, isolated_ms=off_ms,
                notes=(f"planned outage {o.ref}: {o.title} ({o.origin.value})",), planned=True, cause=o.reason,
                stage=RecordStage.CONFIRMED)
            record_id = rec.id
        return self.store.save(replace(o, state=PlannedState.IN_PROGRESS, isolated_ms=off_ms, record_id=record_id,
                                       updated_ms=t),
                               audit=[AuditEntry(o.id, t, operator.name, "isolated",
                                                 f"switching order {order.id} completed; {o.customer_count} customers "
                                                 f"off; outage record {record_id or 'none'}")])

    def _restored(self, o: PlannedOutage, order: SwitchingOrder, operator: OperatorConfig) -> PlannedOutage:
        t = self._clock()
        closed = [s.executed_ms for s in order.steps if s.action is StepAction.CLOSE and s.status is StepStatus.DONE
                  and s.executed_ms is not None]
        on_ms = max(max(closed) if closed else t, o.isolated_ms)
        if self._records is not None and o.record_id:
            n = o.customer_count
            self._records.open_or_update(
                source=RECORD_SOURCE, source_ref=o.ref, feeder=o.feeder, tripped_device=o.switches[0],
                isolated_boundary=o.switches, customers_interrupted=n, customers_restored=n, customers_still_off=0,
                started_ms=o.isolated_ms, isolated_ms=o.isolated_ms, restored_ms=on_ms, status=OutageStatus.RESTORED,
                notes=(f"planned outage {o.ref}: {o.title} ({o.origin.value})",), stage=RecordStage.RESTORED,
                steps=(RestorationStep(on_ms, n, f"planned outage {o.ref} completed"),))
            self._records.close_record(o.record_id, f"planned work done ({o.ref})", closed_ms=on_ms)
        return self.store.save(replace(o, state=PlannedState.COMPLETED, restored_ms=on_ms, completed_ms=t,
                                       updated_ms=t),
                               audit=[AuditEntry(o.id, t, operator.name, "completed",
                                                 f"switching order {order.id} completed; {o.customer_count} customers "
                                                 "restored")])
