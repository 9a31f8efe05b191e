"""Live topology: switch positions from the RTDB drive the topology processor; colouring, islands and traces are
published to subscribers and answered to queries.

One RTDB subscriber (``topology``, status points bound to switches only) feeds ``TopologyProcessor.set_switch`` for
the switches whose points changed, then builds the colouring once per change set and publishes a
:class:`TopologyUpdate` (a version number, the switches that changed, the rows of the colouring that changed, and an
immutable :class:`TopologySnapshot`) to its own bounded subscribers. A subscriber that falls behind gets one full
update in place of its backlog, never a gap.

Binding of points to switches (``bind_switch_points``): a status point whose ``element`` is a switch's mRID or name is
its position when the point was derived from a CIM ``Pos`` measurement, or, written by hand, when it is a double point;
a hand-written single point counts only when it is the switch's only status point (a fuse), because protection-trip
and local/remote flags name their breaker too. Double: ON = closed, OFF = open; intermediate/faulty keep the last
state, marked uncertain. Invalid or communication-lost quality keeps the last state, marked uncertain; a not-topical
value is used but marked uncertain. A switch with several points (one per phase) is closed when any phase reads
closed, and uncertain when its phases disagree. A switch without a usable point keeps the model's state or an
operator's manual state (audited, and kept across restarts in a ``ManualStateStore``); a fresh valid field value
replaces a manual state.

Thread safety: the processor is touched only under one lock (the worker, manual states, look-aheads and traces);
snapshots are immutable and swapped atomically, so readers never wait for the worker.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from models.config import OperatorConfig, StationConfig
from models.measurement_points import Quantity
from models.network import NetworkModel, SwitchKind
from models.points import DoubleState, PointKind, Quality
from models.timebase import now_ms
from models.topology import BranchKind
from scada.bounded_queue import BoundedQueue
from scada.changes import ChangeSet, Subscription
from scada.errors import ScadaError, StorageError
from scada.rtdb import Rtdb
from scada.sqlite_store import SqliteStore
from scada.topology import (
    ClosingEffect,
    Colouring,
    ElementKind,
    OpeningEffect,
    TopologyError,
    TopologyProcessor,
    TraceStep,
)

__all__ = [
    "ElementTrace",
    "IslandSummary",
    "ManualStateStore",
    "SwitchState",
    "SwitchStateSource",
    "TopologyService",
    "TopologyServiceError",
    "TopologySnapshot",
    "TopologySubscription",
    "TopologyUpdate",
    "UnknownElementError",
    "UpdateCause",
    "bind_switch_points",
]

log = logging.getLogger(__name__)

_LOST = int(Quality.INVALID | Quality.COMM_LOST)  # the value says nothing about the switch now
_DOUBTFUL = int(Quality.NOT_TOPICAL | Quality.QUESTIONABLE)  # used, but the state is flagged uncertain
_POLL_S = 0.5


class TopologyServiceError(ScadaError):
    """A topology request cannot be done as asked (e.g. a manual state on a switch whose field position is valid)."""


class UnknownElementError(TopologyServiceError):
    """The network model has no element (or no switch) of that name or mRID."""


class SwitchStateSource(StrEnum):
    MODEL = "model"  # the network model's state: no usable point yet
    TELEMETRY = "telemetry"
    MANUAL = "manual"  # set by an operator


class UpdateCause(StrEnum):
    START = "start"
    TELEMETRY = "telemetry"
    MANUAL = "manual"
    MODEL = "model"  # the network model was replaced
    MARKING = "marking"  # an element was marked or unmarked (faulted, earthed): displays redraw from a full update


class AuditSink(Protocol):
    def record(self, **fields: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class SwitchState:
    index: int  # into model.switches
    mrid: str
    name: str
    kind: SwitchKind
    closed: bool
    uncertain: bool
    source: SwitchStateSource
    points: tuple[str, ...]  # names of the bound position points


@dataclass(frozen=True, slots=True)
class IslandSummary:
    id: int
    energized: bool
    source_mrids: tuple[str, ...]  # more than one: sources in parallel
    feeder_mrid: str | None  # the one feeder feeding it (the source bus's, or the only one), else None
    feeder_mrids: tuple[str, ...]  # every feeder feeding some of its buses (a substation island: all its feeders)
    buses: int
    loads: int
    customers: int
    uncertain: bool  # a switch on its boundary or inside it has an uncertain state


@dataclass(frozen=True, slots=True, eq=False)
class TopologySnapshot:
    """The colouring at one version. Arrays are read-only; ``switch_*`` follow ``model.switches``."""

    version: int
    model: NetworkModel
    colouring: Colouring
    switch_closed: np.ndarray  # bool
    switch_uncertain: np.ndarray  # bool
    switch_source: tuple[SwitchStateSource, ...]
    islands: tuple[IslandSummary, ...]  # ordered by id
    switch_points: tuple[tuple[str, ...], ...]  # names of each switch's position points

    def switch_states(self) -> tuple[SwitchState, ...]:
        """Every switch as it was at this version."""
        return tuple(
            SwitchState(i, sw.mrid, sw.name, sw.kind, bool(self.switch_closed[i]), bool(self.switch_uncertain[i]),
                        self.switch_source[i], self.switch_points[i])
            for i, sw in enumerate(self.model.switches)
        )

    def deenergized_loads(self) -> np.ndarray:
        """Indices (into model.loads) of the loads without supply."""
        return np.nonzero(~self.colouring.loads["energized"])[0]


@dataclass(frozen=True, slots=True, eq=False)
class TopologyUpdate:
    """One published change. ``full``: a whole colouring (first message, model replaced, or a subscriber's backlog
    replaced); the ``changed_*`` rows and bus/load lists are then empty. Indices are into the snapshot's model."""

    version: int
    full: bool
    cause: UpdateCause
    switches: tuple[SwitchState, ...]  # switches whose state, certainty or source changed
    changed_buses: np.ndarray  # indices of colouring rows that changed
    changed_branches: np.ndarray
    changed_loads: np.ndarray
    energized_buses: tuple[int, ...]
    deenergized_buses: tuple[int, ...]
    energized_loads: tuple[int, ...]
    deenergized_loads: tuple[int, ...]
    islands_changed: bool
    snapshot: TopologySnapshot


@dataclass(frozen=True, slots=True)
class ElementTrace:
    """An element traced to the source that feeds it, with what it supplies downstream."""

    element: TraceStep
    energized: bool
    source: TraceStep | None
    feeder_mrid: str | None
    feeder_name: str
    distribution_transformer: TraceStep | None  # the nearest one on the path towards the source (or the element)
    steps: tuple[TraceStep, ...]  # element first, then the branches crossed, the source last
    downstream_loads: tuple[TraceStep, ...]  # loads supplied through the element (a load: itself)
    customers: tuple[str, ...]  # consumer numbers of those loads' usage points
    customer_count: int  # usage points, or the loads' customer counts when the model has no usage points


def bind_switch_points(config: StationConfig, model: NetworkModel) -> dict[int, tuple[int, ...]]:
    """Switch index -> ids of the status points giving its position (rules in the module docstring)."""
    key: dict[str, int] = {sw.name: i for i, sw in enumerate(model.switches)}
    key.update({sw.mrid: i for i, sw in enumerate(model.switches)})
    bound: dict[int, list[int]] = {}
    singles: dict[int, list[int]] = {}
    for p in config.points:
        if not p.kind.is_status or not p.element or p.element not in key:
            continue
        sw = key[p.element]
        binding = config.binding(p)
        if binding is not None:
            if binding.quantity is Quantity.SWITCH_POSITION:
                bound.setdefault(sw, []).append(p.id)
        elif p.kind is PointKind.DOUBLE:
            bound.setdefault(sw, []).append(p.id)
        else:
            singles.setdefault(sw, []).append(p.id)
    for sw, ids in singles.items():
        if sw not in bound and len(ids) == 1:
            bound[sw] = ids
        elif sw not in bound:
            names = ", ".join(config.points[i].name for i in ids)
            log.warning("switch %s: several single points (%s) and no double point; none taken as its position",
                        model.switches[sw].name, names)
    return {sw: tuple(ids) for sw, ids in sorted(bound.items())}


def _point_state(kind: PointKind, value: float, quality: int) -> tuple[bool | None, bool]:
    """(closed or None when the point says nothing usable, uncertain) of one position point."""
    if quality & _LOST or not np.isfinite(value):
        return None, True
    if kind is PointKind.DOUBLE:
        if value == DoubleState.ON:
            return True, bool(quality & _DOUBTFUL)
        if value == DoubleState.OFF:
            return False, bool(quality & _DOUBTFUL)
        return None, True  # intermediate (travelling) or indeterminate (faulty contacts)
    return bool(value), bool(quality & _DOUBTFUL)


class ManualStateStore(SqliteStore):
    """Operators' manual switch states, by switch mRID, so that a restart keeps them (until the field reports)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS manual_switch_states (
        switch_mrid TEXT PRIMARY KEY,
        switch_name TEXT NOT NULL,
        closed INTEGER NOT NULL,
        operator TEXT NOT NULL,
        reason TEXT NOT NULL,
        time_ms INTEGER NOT NULL
    );
    """

    def load(self) -> dict[str, bool]:
        try:
            rows = self.conn().execute("SELECT switch_mrid, closed FROM manual_switch_states").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read manual switch states: {exc}") from exc
        return {mrid: bool(closed) for mrid, closed in rows}

    def put(self, mrid: str, name: str, closed: bool, operator: str, reason: str) -> None:
        self._write("INSERT OR REPLACE INTO manual_switch_states VALUES (?, ?, ?, ?, ?, ?)",
                    (mrid, name, int(closed), operator, reason, now_ms()), name)

    def delete(self, mrid: str) -> None:
        self._write("DELETE FROM manual_switch_states WHERE switch_mrid = ?", (mrid,), mrid)

    def _write(self, sql: str, args: tuple, switch: str) -> None:
        try:
            with self.conn() as c:
                c.execute(sql, args)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store the manual state of switch {switch!r}: {exc}") from exc


class TopologySubscription(BoundedQueue[TopologyUpdate]):
    """A bounded queue of topology updates; on overflow the backlog becomes one full update of the newest state."""

    def __init__(self, name: str, max_pending: int) -> None:
        super().__init__(name, max_pending)
        self.resyncs = 0  # times the backlog was replaced by a full update

    def _overflow(self, backlog: list[TopologyUpdate], item: TopologyUpdate) -> list[TopologyUpdate]:
        self.resyncs += 1
        return [_as_full(item)]


_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False


def _as_full(update: TopologyUpdate, cause: UpdateCause | None = None) -> TopologyUpdate:
    return dataclasses.replace(update, full=True, cause=cause or update.cause, changed_buses=_EMPTY,
                               changed_branches=_EMPTY, changed_loads=_EMPTY, energized_buses=(),
                               deenergized_buses=(), energized_loads=(), deenergized_loads=(), islands_changed=True)


class _Bound:
    """The network model with its processor and the point binding (replaced whole by ``replace_model``)."""

    def __init__(self, config: StationConfig, model: NetworkModel) -> None:
        self.model = model
        self.tp = TopologyProcessor(model)
        self.points_of_switch = bind_switch_points(config, model)
        n_points = len(config.points)
        self.switch_of_point = np.full(n_points, -1, dtype=np.int32)
        for sw, ids in self.points_of_switch.items():
            self.switch_of_point[list(ids)] = sw
        self.point_ids = np.nonzero(self.switch_of_point >= 0)[0].astype(np.int32)
        self.point_names = tuple(tuple(config.points[p].name for p in self.points_of_switch.get(i, ()))
                                 for i in range(len(model.switches)))
        self.source = [SwitchStateSource.MODEL] * len(model.switches)
        self.uncertain = np.zeros(len(model.switches), dtype=np.bool_)
        self.manual: dict[int, bool] = {}
        st = self.tp.static
        self.dt_mrids = frozenset(
            st.branch_mrid[b] for b in range(st.n_branches) if st.branch_kind[b] is BranchKind.DISTRIBUTION_TRANSFORMER
        )
        self.load_customers = np.array([x.customer_count for x in model.loads], dtype=np.int64)
        self.customers_of_load: dict[int, list[str]] = {}
        for c in model.customers:
            if c.load is not None:
                self.customers_of_load.setdefault(c.load, []).append(c.consumer_number)
        if model.customers:  # usage points are the customers when the model has them
            counts = np.zeros(len(model.loads), dtype=np.int64)
            for load, numbers in self.customers_of_load.items():
                counts[load] = len(numbers)
            self.load_customers = counts
        self.load_bus = np.array([x.bus for x in model.loads], dtype=np.int64)
        self.feeder_index = {f.mrid: f for f in model.feeders}


class TopologyService:
    """Live topology of one station. ``start`` subscribes to the RTDB and publishes the first full colouring."""

    def __init__(self, rtdb: Rtdb, model: NetworkModel, *, audit: AuditSink | None = None,
                 manual_store: ManualStateStore | None = None, max_pending: int = 256,
                 name: str = "topology") -> None:
        self._rtdb = rtdb
        self._config = rtdb.config
        self._audit = audit
        self._manual_store = manual_store
        self._max_pending = max_pending
        self._name = name
        self._lock = threading.RLock()
        self._b = _Bound(self._config, model)
        n = len(self._config.points)
        self._value = np.full(n, np.nan)
        self._quality = np.full(n, _LOST, dtype=np.uint16)
        self._seq = np.full(n, -1, dtype=np.int64)  # last applied RTDB seq per point: stale rows never regress
        self._sub: Subscription | None = None
        self.applied_seq = -1  # RTDB sequence of the last row processed (tests and diagnostics wait on it)
        self._subscribers: list[TopologySubscription] = []
        self._version = 0
        self._snapshot: TopologySnapshot | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if manual_store is not None:
            self._restore_manual(manual_store.load())
        self._apply_switches(set(self._b.points_of_switch) | set(self._b.manual))
        self._publish(UpdateCause.START, (), full=True)

    def _restore_manual(self, manual: dict[str, bool]) -> None:
        """Manual states by switch mRID onto the current model (states of switches it no longer has are dropped)."""
        for i, sw in enumerate(self._b.model.switches):
            if sw.mrid in manual:
                self._b.manual[i] = manual[sw.mrid]

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Subscribe to the bound points (snapshot first, no gap) and start the worker thread."""
        if self._thread is not None:
            return
        with self._lock:
            self._resubscribe(UpdateCause.START)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._sub is not None:
                self._rtdb.unsubscribe(self._sub)
                self._sub = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            for s in self._subscribers:
                s.close()
            self._subscribers.clear()

    def _resubscribe(self, cause: UpdateCause) -> None:
        """(Re)subscribe to the current binding's points and apply their current values. Caller holds the lock."""
        if self._sub is not None:
            self._rtdb.unsubscribe(self._sub)
        snap, self._sub = self._rtdb.subscribe_with_snapshot(
            self._name, points=self._b.point_ids.tolist(), max_pending=self._max_pending)
        self._take_rows(snap)
        self.applied_seq = max(self.applied_seq, int(snap["seq"].max()) if len(snap) else -1)
        # every bound or manually dressed switch, changed or not
        changed = self._apply_switches(set(self._b.points_of_switch) | set(self._b.manual))
        self._publish(cause, changed, full=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sub = self._sub
            if sub is None:
                break
            cs = sub.get(timeout_s=_POLL_S)
            if cs is None:
                continue
            try:
                self.process(cs)
            except Exception:  # the topology must survive one bad change set
                log.exception("topology service failed on a change set")

    # ------------------------------------------------------------------------------------------ updates
    def process(self, cs: ChangeSet) -> TopologyUpdate | None:
        """Apply one RTDB change set; returns the published update, or None when no switch changed."""
        with self._lock:
            try:
                touched = self._take_rows(cs.rows)
                changed = self._apply_switches(touched) if touched else ()
                return self._publish(UpdateCause.TELEMETRY, changed) if changed else None
            finally:
                self.applied_seq = max(self.applied_seq, cs.last_seq)

    def _take_rows(self, rows: np.ndarray) -> set[int]:
        """Store the rows of bound points that are newer than what was applied; returns the switches touched."""
        b = self._b
        points = rows["point"].astype(np.int64)
        sw = b.switch_of_point[points]
        keep = (sw >= 0) & (rows["seq"] > self._seq[points])
        if not keep.any():
            return set()
        r = rows[keep]
        p = points[keep]
        self._value[p] = r["value"]
        self._quality[p] = r["quality"]
        self._seq[p] = r["seq"]
        return {int(x) for x in sw[keep]}

    def _apply_switches(self, switches: set[int]) -> tuple[int, ...]:
        """Re-derive the state of the switches from their points; returns those whose state, certainty or source
        changed. Caller holds the lock."""
        b = self._b
        changed = []
        for i in sorted(switches):
            closed, uncertain = self._telemetry_state(i)
            source = SwitchStateSource.TELEMETRY
            if closed is None:
                if i in b.manual:
                    closed, source = b.manual[i], SwitchStateSource.MANUAL
                else:  # nothing usable: the last state stays, from wherever it came
                    source = b.source[i]
            elif b.manual.pop(i, None) is not None:  # the field speaks again: it wins over the operator's dressing
                if self._manual_store is not None:
                    self._manual_store.delete(b.model.switches[i].mrid)
            was = (b.tp.switch_closed(b.model.switches[i].mrid), bool(b.uncertain[i]), b.source[i])
            if closed is not None:
                b.tp.set_switch(b.model.switches[i].mrid, closed)
            b.uncertain[i] = uncertain and source is not SwitchStateSource.MANUAL
            b.source[i] = source
            if (b.tp.switch_closed(b.model.switches[i].mrid), bool(b.uncertain[i]), b.source[i]) != was:
                changed.append(i)
        return tuple(changed)

    def _telemetry_state(self, i: int) -> tuple[bool | None, bool]:
        ids = self._b.points_of_switch.get(i, ())
        if not ids:
            return None, False
        states = [_point_state(self._config.points[p].kind, float(self._value[p]), int(self._quality[p]))
                  for p in ids]
        known = [c for c, _u in states if c is not None]
        if not known:
            return None, True
        uncertain = any(u for _c, u in states) or len(set(known)) > 1
        return any(known), uncertain

    def _publish(self, cause: UpdateCause, switches: tuple[int, ...], *, full: bool = False) -> TopologyUpdate:
        """Build the new snapshot, diff it with the last one and hand the update to every subscriber."""
        b = self._b
        old = self._snapshot
        colouring = b.tp.colouring()
        closed = b.tp.switch_closed_array()
        uncertain = b.uncertain.copy()
        for arr in (closed, uncertain):
            arr.flags.writeable = False
        self._version += 1
        snapshot = TopologySnapshot(self._version, b.model, colouring, closed, uncertain, tuple(b.source),
                                    self._islands(colouring, uncertain), b.point_names)
        states = tuple(self._switch_state(i) for i in switches)
        if full or old is None or old.model is not b.model:
            update = _as_full(TopologyUpdate(self._version, True, cause, states, _EMPTY, _EMPTY, _EMPTY, (), (), (),
                                             (), True, snapshot))
        else:
            oc, nc = old.colouring, colouring
            bus_e, old_bus_e = nc.buses["energized"], oc.buses["energized"]
            load_e, old_load_e = nc.loads["energized"], oc.loads["energized"]
            branch_changed = oc.branches != nc.branches
            branch_changed[b.tp.static.switch_branch] |= old.switch_uncertain != uncertain
            update = TopologyUpdate(
                version=self._version, full=False, cause=cause, switches=states,
                changed_buses=np.nonzero(oc.buses != nc.buses)[0],
                changed_branches=np.nonzero(branch_changed)[0],
                changed_loads=np.nonzero(oc.loads != nc.loads)[0],
                energized_buses=tuple(np.nonzero(bus_e & ~old_bus_e)[0].tolist()),
                deenergized_buses=tuple(np.nonzero(~bus_e & old_bus_e)[0].tolist()),
                energized_loads=tuple(np.nonzero(load_e & ~old_load_e)[0].tolist()),
                deenergized_loads=tuple(np.nonzero(~load_e & old_load_e)[0].tolist()),
                islands_changed=[(x.id, x.source_mrids, x.buses, x.uncertain) for x in old.islands]
                != [(x.id, x.source_mrids, x.buses, x.uncertain) for x in snapshot.islands],
                snapshot=snapshot,
            )
        self._snapshot = snapshot
        for s in self._subscribers:
            s.offer(update)
        return update

    def _islands(self, colouring: Colouring, uncertain: np.ndarray) -> tuple[IslandSummary, ...]:
        """Per island: sources, feeder, bus/load/customer counts, vectorised over the colouring."""
        b = self._b
        bus_island = colouring.buses["island"]
        ids, bus_counts = np.unique(bus_island, return_counts=True)
        load_island = colouring.loads["island"]
        size = int(ids.max()) + 1 if len(ids) else 0
        loads = np.bincount(load_island, minlength=size) if len(load_island) else np.zeros(size, dtype=np.int64)
        customers = (np.bincount(load_island, weights=b.load_customers, minlength=size) if len(load_island)
                     else np.zeros(size))
        doubtful = np.zeros(size, dtype=np.bool_)
        if uncertain.any():
            st = b.tp.static
            sw_branch = st.switch_branch[uncertain]
            doubtful[bus_island[st.branch_from[sw_branch]]] = True
            doubtful[bus_island[st.branch_to[sw_branch]]] = True
        sources = b.tp.island_sources()
        fed = colouring.buses["feeder"] >= 0
        pairs = np.unique(np.stack([bus_island[fed], colouring.buses["feeder"][fed]]), axis=1)
        feeders_of: dict[int, list[str]] = {}
        for island, feeder in pairs.T.tolist():
            feeders_of.setdefault(island, []).append(b.model.feeders[feeder].mrid)
        out = []
        for island, count in zip(ids.tolist(), bus_counts.tolist(), strict=True):
            src = sources.get(island, ())
            feeders = tuple(feeders_of.get(island, ()))
            feeder = b.tp.source_feeder(src[0]) if src else None
            if feeder is None and len(feeders) == 1:
                feeder = feeders[0]
            out.append(IslandSummary(island, bool(src), src, feeder, feeders, int(count), int(loads[island]),
                                     int(customers[island]), bool(doubtful[island])))
        return tuple(out)

    def _switch_state(self, i: int) -> SwitchState:
        b = self._b
        sw = b.model.switches[i]
        return SwitchState(i, sw.mrid, sw.name, sw.kind, b.tp.switch_closed(sw.mrid), bool(b.uncertain[i]),
                           b.source[i], b.point_names[i])

    def set_manual_switch_state(self, switch: str, closed: bool, operator: OperatorConfig, reason: str = ""
                                ) -> SwitchState:
        """An operator's state for a switch without usable telemetry (a manual switch, or its RTU is down);
        audited. Refused (TopologyServiceError) for an unknown switch or one whose field position is valid."""
        with self._lock:
            b = self._b
            try:
                i = b.tp.switch_index(switch)
            except TopologyError as exc:
                self._audit_manual(operator, switch, closed, "refused", str(exc))
                raise UnknownElementError(str(exc)) from None
            sw = b.model.switches[i]
            telemetry, _uncertain = self._telemetry_state(i)
            if telemetry is not None:
                points = ", ".join(self._config.points[p].name for p in b.points_of_switch[i])
                why = (f"switch {sw.name!r} is telemetered by {points} and its position is valid; a manual state is "
                       "only for switches without a usable field position")
                self._audit_manual(operator, sw.name, closed, "refused", why)
                raise TopologyServiceError(why)
            if self._manual_store is not None:  # stored first: what the operator saw applied survives a restart
                self._manual_store.put(sw.mrid, sw.name, closed, operator.name, reason)
            b.manual[i] = closed
            changed = self._apply_switches({i})
            self._audit_manual(operator, sw.name, closed, "answered",
                               f"manual switch state {'closed' if closed else 'open'}" + (f": {reason}" if reason
                                                                                          else ""))
            self._publish(UpdateCause.MANUAL, changed or (i,))
            return self._switch_state(i)

    def _audit_manual(self, operator: OperatorConfig, switch: str, closed: bool, outcome: str, detail: str) -> None:
        if self._audit is None:
            return
        self._audit.record(operator=operator.name, role=operator.role.value, point=-1, point_name=switch,
                           action="manual_switch_state", value=1.0 if closed else 0.0, outcome=outcome,
                           reason="manual_state" if outcome != "refused" else "invalid_value",
                           field_detail=detail)

    def replace_model(self, model: NetworkModel) -> TopologyUpdate:
        """Swap in a new network model (a GIS update) without a restart: rebuild the processor and the binding,
        re-apply the live point values and manual states that still name a switch, publish a full colouring."""
        with self._lock:
            old = self._b
            manual = {old.model.switches[i].mrid: closed for i, closed in old.manual.items()}
            self._b = _Bound(self._config, model)
            self._restore_manual(manual)
            self._seq[:] = -1  # re-take every bound point's current value from the RTDB
            if self._thread is not None:
                self._resubscribe(UpdateCause.MODEL)
            else:
                self._apply_switches(set(range(len(model.switches))))
                self._publish(UpdateCause.MODEL, (), full=True)
            assert self._snapshot is not None
            log.info("topology: network model replaced by %s (%d buses, %d switches)", model.name,
                     len(model.buses), len(model.switches))
            return _as_full(TopologyUpdate(self._version, True, UpdateCause.MODEL, (), _EMPTY, _EMPTY, _EMPTY,
                                           (), (), (), (), True, self._snapshot))

    def republish(self, cause: UpdateCause) -> TopologyUpdate:
        """Publish a full update of the unchanged topology, for something drawn with it that changed (markings)."""
        with self._lock:
            return self._publish(cause, (), full=True)

    # ------------------------------------------------------------------------------------------ subscribers
    def subscribe(self, name: str, *, max_pending: int = 64) -> tuple[TopologySnapshot, TopologySubscription]:
        """The current snapshot and a subscription continuing exactly after it."""
        sub = TopologySubscription(name, max_pending)
        with self._lock:
            assert self._snapshot is not None
            self._subscribers.append(sub)
            return self._snapshot, sub

    def unsubscribe(self, sub: TopologySubscription) -> None:
        sub.close()
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    # ------------------------------------------------------------------------------------------ queries
    @property
    def model(self) -> NetworkModel:
        return self._b.model

    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> TopologySnapshot:
        snap = self._snapshot
        assert snap is not None
        return snap

    def switch_states(self) -> tuple[SwitchState, ...]:
        return self.snapshot().switch_states()

    def switch_state(self, switch: str) -> SwitchState:
        with self._lock:
            return self._switch_state(self._switch(switch))

    def switch_of_point(self, point: int) -> SwitchState | None:
        """The switch whose position the point gives, None for other points."""
        with self._lock:
            b = self._b
            if not 0 <= point < len(b.switch_of_point) or b.switch_of_point[point] < 0:
                return None
            return self._switch_state(int(b.switch_of_point[point]))

    def find_switch(self, name_or_mrid: str) -> SwitchState | None:
        with self._lock:
            try:
                return self._switch_state(self._b.tp.switch_index(name_or_mrid))
            except TopologyError:
                return None

    def element_buses(self, element: str) -> tuple[TraceStep, tuple[int, ...]] | None:
        """An element's identity and buses, None when the model has no such element."""
        with self._lock:
            try:
                return self._b.tp.element(element)
            except TopologyError:
                return None

    def opening_effect(self, switch: str) -> OpeningEffect:
        with self._lock:
            return self._b.tp.opening_effect(self._b.model.switches[self._switch(switch)].mrid)

    def closing_effect(self, switch: str) -> ClosingEffect:
        with self._lock:
            return self._b.tp.closing_effect(self._b.model.switches[self._switch(switch)].mrid)

    def _switch(self, switch: str) -> int:
        try:
            return self._b.tp.switch_index(switch)
        except TopologyError as exc:
            raise UnknownElementError(str(exc)) from None

    def trace(self, element: str) -> ElementTrace:
        """Trace an element to its source, with feeder, distribution transformer and the customers it supplies."""
        with self._lock:
            b = self._b
            try:
                t = b.tp.trace(element)
                downstream = b.tp.downstream_buses(element)
            except TopologyError as exc:
                raise UnknownElementError(str(exc)) from None
            m = b.model
            if t.element.kind is ElementKind.LOAD:
                loads = [next(i for i, x in enumerate(m.loads) if x.mrid == t.element.mrid)]
            else:
                loads = np.nonzero(np.isin(b.load_bus, np.asarray(downstream, dtype=np.int64)))[0].tolist()
        dt = next((s for s in t.steps if s.mrid in b.dt_mrids), None)
        source = t.steps[-1] if t.energized else None
        feeder = b.feeder_index.get(t.feeder_mrid or "")
        customers = tuple(n for i in loads for n in b.customers_of_load.get(i, ()))
        return ElementTrace(
            element=t.element, energized=t.energized, source=source, feeder_mrid=t.feeder_mrid,
            feeder_name=feeder.name if feeder is not None else "", distribution_transformer=dt, steps=t.steps,
            downstream_loads=tuple(TraceStep(ElementKind.LOAD, m.loads[i].mrid, m.loads[i].name) for i in loads),
            customers=customers, customer_count=int(b.load_customers[loads].sum()) if loads else 0,
        )

    def islands(self) -> tuple[IslandSummary, ...]:
        return self.snapshot().islands

