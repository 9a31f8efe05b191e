"""The live OMS of a running control centre: AMI messages, trouble calls and SCADA trips of protective switches in;
outage predictions, outage records, crew work and customer/breaker status out.

``OmsService`` owns one ``OutagePredictor`` (on a connectivity that follows the live topology: rebuilt when the
feeding paths change, ``oms.connectivity.plan_rebuild``), the
shared ``OutageRecordStore`` (the one FLISR writes, passed in) and a ``CrewBoard`` (``data_dir/crews.sqlite``).
Evidence is applied as it arrives, under one lock (the predictor is single-owner); a worker thread runs ``analyse``
every ``period_s`` (and right after each submission) and opens/updates one outage record per prediction: source
``scada`` when SCADA confirmed the device open before any meter or customer reported, else ``ami``; each new outage
also becomes a work item on the crew board.

Each record follows its outage's lifecycle: predicted -> confirmed (SCADA or a meter ping) -> crew assigned -> en
route -> on site (the crew board's stages, reported from the field) -> restored -> closed, with the cause (a trip, a
command, a predicted fuse operation, or what an operator or crew enters), the ETR (``EtrRules``: the board's once a
crew is assigned, else report time + dispatch + the device kind's repair time, stretched in storm mode) and the
restoration steps (customers given back at each partial restoration). A record closes when its customers are all
back and no crew is on site, or when the crew on site reports the work done, or by an operator.

Openings of protective switches by a control-centre command (cause "return remote", or a command on the point just
before) are outages of their customers but not trips: their cause says so, and when a planned outage covers the
switch (``planned_lookup``) the prediction writes no unplanned record (the planned outage has its own).

Storm mode (``StormRules``): many active outages or an event burst; the summary (``summary``) is what operators see.

Usage (the centre's gRPC server picks the servicer up)::

    oms = OmsService(center.config, center.rtdb, center.topology, center.data_dir, store=outage_store)
    center.add_grpc_registrar(lambda server: api_servicer.register(server, center.services, oms))
    center.start(); oms.start() ... oms.stop(); center.stop()
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.config import StationConfig
from models.network import SwitchKind
from models.points import DoubleState, PointKind, Quality
from models.timebase import now_ms
from models.updates import Cause
from oms.connectivity import Connectivity, UnknownElementError, build_connectivity, plan_rebuild
from oms.crews import (
    Assignment,
    Crew,
    CrewBoard,
    CrewError,
    CrewStatus,
    OutageStage,
    WorkItem,
    make_work_item,
    required_skill,
    work_item_for_device,
)
from oms.end_device_events import oms_events_from_message
from oms.errors import OmsError
from oms.events import EventKind, OmsEvent, format_time_ms
from oms.meter_ping import MeterPinger, PingPolicy
from oms.outage_records import (
    LifecycleChange,
    LifecycleRule,
    OutageRecord,
    OutageRecordStore,
    OutageStatus,
    RecordStage,
    RestorationStep,
)
from oms.prediction import (
    IngestReport,
    OutagePredictor,
    Prediction,
    PredictionRules,
    PredictionState,
    RebaseReport,
    SingleLightOut,
    SloState,
    TimelineEntry,
)
from scada.bounded_queue import BoundedQueue
from scada.rtdb import Rtdb
from scada.topology_service import TopologyService

__all__ = ["BreakerInfo", "CustomerInfo", "EtrRules", "FeederOutages", "OmsService", "OutageSummary", "OutageWatch",
           "StormRules"]

log = logging.getLogger(__name__)

_PROTECTIVE = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER, SwitchKind.FUSE, SwitchKind.SECTIONALISER})
_BREAKERS = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER})
_UNUSABLE = int(Quality.INVALID | Quality.COMM_LOST)
_ACTIVE = (PredictionState.PREDICTED, PredictionState.CONFIRMED)
_CREW_STAGE = {OutageStage.CREW_ASSIGNED: RecordStage.CREW_ASSIGNED, OutageStage.EN_ROUTE: RecordStage.EN_ROUTE,
               OutageStage.ON_SITE: RecordStage.ON_SITE}


@dataclass(frozen=True, slots=True)
class EtrRules:
    """Estimated time of restoration before a crew is assigned (after that: the crew board's travel + repair)."""

    dispatch_s: float = 2700.0  # from the first report to a crew on site, typical for the utility
    storm_factor: float = 3.0  # in storm mode crews are shared out: ETRs stretch by this factor

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dispatch_s) and self.dispatch_s >= 0):
            raise OmsError(f"ETR rules: dispatch_s must be >= 0 (got {self.dispatch_s})")
        if not (math.isfinite(self.storm_factor) and self.storm_factor >= 1):
            raise OmsError(f"ETR rules: storm_factor must be >= 1 (got {self.storm_factor})")


@dataclass(frozen=True, slots=True)
class StormRules:
    """When the OMS is in storm mode (force majeure, EHV outage): operators get a summary, ETRs stretch."""

    active_outages: int = 20  # this many device outages and single lights out at once
    events_per_minute: int = 2000  # or this many AMI/call/SCADA events within the last minute
    customers_off: int = 5000  # or this many customers off

    def __post_init__(self) -> None:
        for name in ("active_outages", "events_per_minute", "customers_off"):
            if getattr(self, name) < 1:
                raise OmsError(f"storm rules: {name} must be >= 1 (got {getattr(self, name)})")


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    customer: str
    known: bool
    out: bool
    outage_id: str  # prediction or SLO id, "" when on supply
    device: str
    since_ms: int  # -1 when on supply
    etr_ms: int  # -1 when unknown
    text: str


@dataclass(frozen=True, slots=True)
class BreakerInfo:
    name: str
    kind: str
    feeder: str
    closed: bool
    uncertain: bool
    changed_ms: int  # field time of the position point, -1 if unknown
    cause: str
    outage_id: str
    etr_ms: int


@dataclass(frozen=True, slots=True)
class FeederOutages:
    feeder: str
    outages: int
    customers_off: int


@dataclass(frozen=True, slots=True)
class OutageSummary:
    storm: bool
    storm_reason: str
    active_outages: int
    confirmed: int
    single_lights_out: int
    customers_off: int
    meters_off: int
    events_last_minute: int
    events_total: int
    crews_busy: int
    crews_available: int
    waiting_for_crew: int
    feeders: tuple[FeederOutages, ...]
    largest: tuple[Prediction, ...]
    text: str


class OutageWatch(BoundedQueue["Prediction | SingleLightOut"]):
    """A subscriber's queue of changed outages; when it overflows the newest state of each outage is kept."""

    def _overflow(self, backlog: list[Prediction | SingleLightOut],
                  item: Prediction | SingleLightOut) -> list[Prediction | SingleLightOut]:
        latest = {o.id: o for o in [*backlog, item]}
        return list(latest.values())[-self.max_pending:]


class OmsService:
    """Thread-safe; ``start``/``stop`` run the RTDB watcher and the analysis worker."""

    def __init__(self, config: StationConfig, rtdb: Rtdb, topology: TopologyService, data_dir: str | Path, *,
                 store: OutageRecordStore, rules: PredictionRules | None = None,
                 clock: Callable[[], int] = now_ms, period_s: float = 1.0, commands: Any = None,
                 etr: EtrRules | None = None, storm: StormRules | None = None, command_grace_s: float = 5.0,
                 headend_url: str | None = None) -> None:
        if period_s <= 0:
            raise OmsError(f"OMS service: period_s must be > 0 (got {period_s})")
        self.config = config
        self._rtdb = rtdb
        self._topology = topology
        self._clock = clock
        self.clock = clock  # UTC epoch ms (the servicer computes expected durations with it)
        self._period_s = period_s
        self.store = store
        self.etr_rules = etr or EtrRules()
        self.storm_rules = storm or StormRules()
        self.model = topology.model
        live_open = np.zeros(len(self.model.switches), dtype=bool)
        for st in topology.switch_states():
            live_open[st.index] = not st.closed
        # built against the normal states: a protective device already open at start is evidence (``start``
        # submits it), not a normally open point behind which its customers would count as unsupplied
        plan = plan_rebuild(None, self.model, live_open)
        self.connectivity: Connectivity = build_connectivity(self.model, plan.switch_open)
        self._initial_evidence = plan.evidence
        self.predictor = OutagePredictor(self.connectivity, rules)
        self.rebases: list[RebaseReport] = []  # the latest few, for operators and tests
        self._stage_changes: deque[tuple[str, OutageStage, int]] = deque()
        self.crews = CrewBoard(Path(data_dir) / "crews.sqlite", on_stage=self._on_crew_stage)
        #: ``(switch name, time_ms) -> description`` of a planned outage opening that switch, or None
        self.planned_lookup: Callable[[str, int], str | None] | None = None
        self._lock = threading.RLock()
        self._session = str(clock())  # prediction ids restart at P1 with every run: records are keyed per run
        self._record_source: dict[str, str] = {}  # outage id -> its record's source (fixed at opening)
        self._record_id: dict[str, int] = {}
        self._seen: dict[str, tuple[int, Any]] = {}  # outage id -> (timeline length, last entry) last written
        self._work: set[str] = set()  # outage ids with a work item on the board
        self._planned: dict[str, str] = {}  # prediction id -> the planned outage covering it
        self._folded: set[str] = set()  # prediction ids whose record this service folded into an upstream one
        self._trip_cause: dict[str, str] = {}  # switch name -> how it opened, as seen by the OMS
        self._commanded_open: set[str] = set()  # switches opened by a control-centre command
        self._events: deque[tuple[float, int]] = deque()  # (monotonic s, events) of the last minute
        self._events_total = 0
        self._watches: list[OutageWatch] = []
        self._command_grace_s = command_grace_s
        # meter pings through the AMI head-end: confirm predicted outages, check restorations
        self._pings = PingPolicy(MeterPinger(_read_url(headend_url))) if headend_url else None
        self._last_command: dict[int, float] = {}  # point id -> monotonic time of its last command
        if commands is not None:
            commands.add_outcome_listener(lambda o: self._last_command.__setitem__(int(o.point), time.monotonic()))
        # protective switches' status points -> switch index
        self._point_switch: dict[int, int] = {}
        for p in config.points:
            if not p.kind.is_status:
                continue
            state = topology.switch_of_point(p.id)
            if state is not None and state.kind in _PROTECTIVE:
                self._point_switch[p.id] = state.index
        self._sub: Any = None
        self._topo_sub: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        if self._point_switch:
            self._sub = self._rtdb.subscribe("oms", points=sorted(self._point_switch), status_only=True,
                                             max_pending=1024)
        snapshot, self._topo_sub = self._topology.subscribe("oms-connectivity", max_pending=64)
        if self._initial_evidence:
            now = self._clock()
            self.submit([OmsEvent(now, EventKind.SCADA_OPEN, name) for name in self._initial_evidence])
            self._initial_evidence = ()
        self._follow(snapshot, "at start")  # anything that moved since the constructor
        self._threads = [threading.Thread(target=self._analyse_loop, name="oms-analyse", daemon=True),
                         threading.Thread(target=self._topology_loop, name="oms-topology", daemon=True)]
        if self._sub is not None:
            self._threads.append(threading.Thread(target=self._watch_loop, name="oms-scada", daemon=True))
        for t in self._threads:
            t.start()
        log.info("OMS: %d meters, %d devices, watching %d protective switch points", len(self.connectivity.meter_ids),
                 self.connectivity.n_devices, len(self._point_switch))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._sub is not None:
            self._rtdb.unsubscribe(self._sub)
            self._sub = None
        if self._topo_sub is not None:
            self._topology.unsubscribe(self._topo_sub)
            self._topo_sub = None
        for t in self._threads:
            t.join(10)
        self._threads = []
        self.crews.close()

    # ------------------------------------------------------------------------------------------ evidence in
    def submit(self, events: list[OmsEvent]) -> IngestReport:
        with self._lock:
            report = self.predictor.ingest(events)
            self._events.append((time.monotonic(), len(events)))
            self._events_total += len(events)
        self._wake.set()
        return report

    def submit_end_device_events(self, message: Mapping[str, Any] | str | bytes) -> IngestReport:
        """An EndDeviceEvents message (dict or JSON); AmiMessageError names a malformed event."""
        return self.submit(oms_events_from_message(message))

    def submit_call(self, customer: str, time_ms: int, text: str = "") -> IngestReport:
        """A trouble call; UnknownElementError (a LookupError) for a consumer number the model lacks."""
        if customer not in self.connectivity.meter_index:
            raise UnknownElementError(f"trouble call refused: no customer with consumer number {customer!r} in "
                                      f"network {self.connectivity.model_name!r}")
        return self.submit([OmsEvent(int(time_ms) if time_ms > 0 else self._clock(), EventKind.CALL, customer, text)])

    def submit_scada(self, switch: str, open_: bool, time_ms: int) -> IngestReport:
        """A telemetered switch position change (also fed from the RTDB by ``start``)."""
        self.connectivity.device(switch)
        kind = EventKind.SCADA_OPEN if open_ else EventKind.SCADA_CLOSE
        return self.submit([OmsEvent(int(time_ms), kind, switch)])

    # ------------------------------------------------------------------------------------------ results out
    def analyse(self) -> list[Prediction]:
        """One analysis now (the worker calls it every period); writes records and work items, moves records along
        the crews' stages and tells watchers what changed; returns all predictions."""
        now = self._clock()
        changed: list[Prediction | SingleLightOut] = []
        with self._lock:
            predictions, slos = self.predictor.analyse(now)
            # merged ones last: their record folds into the upstream outage's, which must exist by then
            for p in sorted(predictions, key=lambda p: p.state is PredictionState.MERGED):
                mark = (len(p.timeline), p.timeline[-1] if p.timeline else None)  # an entry may be extended
                if self._seen.get(p.id) != mark:
                    self._write_record(p, now)
                    self._seen[p.id] = mark
                    changed.append(p)
            for slo in slos:
                mark = (len(slo.timeline), slo.timeline[-1] if slo.timeline else None)
                if self._seen.get(slo.id) != mark:
                    self._write_slo_record(slo, now)
                    self._seen[slo.id] = mark
                    changed.append(slo)
            self._apply_crew_stages()
            watches = list(self._watches)
            plans = self._pings.plan(self.predictor, predictions) if self._pings is not None else {}
        for w in watches:
            for o in changed:
                w.offer(o)
        if plans:  # the head-end is read outside the lock: evidence keeps coming in meanwhile
            events = self._pings.read(plans, self._clock()) if self._pings is not None else []
            if events:
                self.submit(events)
        return predictions
    def predictions(self, *, active_only: bool = False) -> list[Prediction]:
        with self._lock:
            return self.predictor.predictions(active_only=active_only)

    def slos(self, *, active_only: bool = False) -> list[SingleLightOut]:
        with self._lock:
            return self.predictor.slos(active_only=active_only)

    @property
    def meters_off(self) -> int:
        with self._lock:
            return self.predictor.meters_off

    def source_of(self, p: Prediction) -> str:
        """Who found the outage: "planned" (switching of a planned outage), "scada" (a telemetered device opened
        before any meter or caller reported) or "ami"."""
        with self._lock:
            if p.id in self._planned:
                return "planned"
            return self._record_source.get(p.id) or ("scada" if p.scada_confirmed and not (p.pons or p.calls)
                                                      else "ami")

    def record_id(self, prediction_id: str) -> int:
        with self._lock:
            return self._record_id.get(prediction_id, 0)

    def etr_ms(self, outage_id: str) -> int:
        """The crew board's ETR of a prediction/SLO, -1 without a work item or an assigned crew."""
        try:
            return self.crews.etr_ms(outage_id)
        except CrewError:
            return -1

    def estimated_restoration_ms(self, outage_id: str) -> int:
        """The ETR customers are told: the crew board's once a crew is assigned, else by ``EtrRules`` (first report
        + dispatch + the device kind's repair time, times the storm factor in storm mode); -1 for no such outage."""
        board = self.etr_ms(outage_id)
        if board >= 0:
            return board
        with self._lock:
            found = self._outage(outage_id)
        if found is None:
            return -1
        kind = found.device_kind if isinstance(found, Prediction) else "meter"
        try:
            repair_s = self.crews.repair.repair_s(kind)
        except CrewError:
            repair_s = self.crews.repair.repair_s("switch")
        factor = self.etr_rules.storm_factor if self.storm()[0] else 1.0
        return int(found.first_event_ms + (self.etr_rules.dispatch_s + repair_s) * factor * 1000)

    def storm(self) -> tuple[bool, str]:
        """(storm mode?, why)."""
        with self._lock:
            active = sum(self.predictor.active_counts)  # O(1): ETRs ask this once per outage listed
            off = self.predictor.meters_off
            recent = self._recent_events()
        r = self.storm_rules
        reasons = []
        if active >= r.active_outages:
            reasons.append(f"{active} outages active (storm at {r.active_outages})")
        if recent >= r.events_per_minute:
            reasons.append(f"{recent} events in the last minute (storm at {r.events_per_minute})")
        if off >= r.customers_off:
            reasons.append(f"{off} meters off (storm at {r.customers_off})")
        return bool(reasons), "; ".join(reasons)

    def summary(self, top: int = 10) -> OutageSummary:
        """What an operator sees: counts, the feeders with customers off, the largest outages."""
        with self._lock:
            active = self.predictor.predictions(active_only=True)
            slos = self.predictor.slos(active_only=True)
            meters_off = self.predictor.meters_off
            recent = self._recent_events()
            total = self._events_total
        storm, why = self.storm()
        feeders: dict[str, list[int]] = {}
        for p in active:
            f = feeders.setdefault(p.feeder, [0, 0])
            f[0] += 1
            f[1] += p.customers_off
        rows = tuple(FeederOutages(k, v[0], v[1]) for k, v in sorted(feeders.items(), key=lambda kv: -kv[1][1]))
        crews = self.crews.crews()
        busy = sum(1 for c in crews if c.outage_id)
        available = sum(1 for c in crews if c.status is CrewStatus.AVAILABLE)
        waiting = len(self.crews.waiting())
        off = sum(p.customers_off for p in active) + len(slos)
        largest = tuple(sorted(active, key=lambda p: (-p.customers_off, p.id))[:max(1, top)])
        confirmed = sum(1 for p in active if p.state is PredictionState.CONFIRMED)
        text = (f"{'STORM MODE: ' if storm else ''}{_n(len(active), 'outage')} ({confirmed} confirmed), "
                f"{_n(len(slos), 'single light')} out, {_n(off, 'customer')} off; {waiting} waiting for a crew, "
                f"{_n(busy, 'crew')} busy, {available} available")
        return OutageSummary(storm, why, len(active), confirmed, len(slos), off, meters_off, recent, total, busy,
                             available, waiting, rows, largest, text)

    def watch(self, max_pending: int = 1000) -> OutageWatch:
        """A queue of every outage (prediction or SLO) whose state changes from now on."""
        w = OutageWatch("oms-watch", max_pending)
        with self._lock:
            self._watches.append(w)
        return w

    def unwatch(self, w: OutageWatch) -> None:
        w.close()
        with self._lock:
            if w in self._watches:
                self._watches.remove(w)

    def other_records(self, *, active_only: bool = False) -> list[OutageRecord]:
        """Records written by other applications (FLISR, planned outages), less those that are the canonical record
        of one of the OMS's own outages (one trip shows once)."""
        recs = self.store.list(status=OutageStatus.OPEN if active_only else None, include_merged=False)
        with self._lock:
            ours = set(self._record_id.values())
        return [r for r in recs if not r.source_ref.startswith(f"{self._session}-") and r.id not in ours]

    # ------------------------------------------------------------------------------------------ records
    def update_record(self, record_id: int, *, cause: str = "", note: str = "", operator: str = "") -> OutageRecord:
        """An operator's or crew's cause/note on a record (the canonical one of a merged trip)."""
        who = f"{operator}: " if operator else ""
        return self.store.set_lifecycle(record_id, cause=cause or None,
                                        note=f"{_iso(self._clock())} {who}{note}" if note else
                                        (f"{_iso(self._clock())} {who}cause set to {cause!r}" if cause else ""))

    def close_record(self, record_id: int, *, note: str = "", closed_ms: int = 0, cause: str = "",
                     operator: str = "") -> OutageRecord:
        """Close a record by hand (repair done); refused while its customers are still off by the OMS's account."""
        rec = self.store.canonical(record_id)
        with self._lock:
            for oid, rid in self._record_id.items():
                if rid != rec.id and self.store.canonical(rid).id != rec.id:
                    continue
                o = self._outage(oid)
                if o is not None and _is_active(o):
                    off = o.customers_off if isinstance(o, Prediction) else 1
                    raise OmsError(f"outage record {rec.id}: outage {oid} at {_device(o)} still has {off} customers "
                                   "off; restore them (or let the meters report) before closing")
        when = closed_ms if closed_ms > 0 else self._clock()
        text = f"{_iso(when)} closed" + (f" by {operator}" if operator else "") + (f": {note}" if note else "")
        return self.store.close_record(rec.id, text, closed_ms=when, cause=cause or None)

    # ------------------------------------------------------------------------------------------ crews
    def add_crew(self, crew: Crew) -> Crew:
        added = self.crews.add_crew(crew)
        self._reoptimise()
        return added

    def report_crew_status(self, crew_id: str, status: CrewStatus | str, time_ms: int = 0, *,
                           location: tuple[float, float] | None = None) -> OutageStage | None:
        """A field report; moves the crew's outage (and its record) along. Available after on site = work done."""
        stage = self.crews.report_status(crew_id, status, time_ms if time_ms > 0 else self._clock(),
                                         location=location)
        if CrewStatus(status) in (CrewStatus.AVAILABLE, CrewStatus.OFF_SHIFT):
            self._reoptimise()
        self._wake.set()
        return stage

    def assignments(self) -> list[Assignment]:
        return self.crews.assignments()

    def waiting_work(self) -> list[WorkItem]:
        return self.crews.waiting()

    def customer_status(self, customer: str) -> CustomerInfo:
        c = self.connectivity
        m = c.meter_index.get(customer)
        if m is None:
            return CustomerInfo(customer, False, False, "", "", -1, -1, f"no customer {customer!r} in network "
                                f"{c.model_name!r}")
        chain = {d.name for d in c.chain(customer)}
        with self._lock:
            active = self.predictor.predictions(active_only=True)
            slos = self.predictor.slos(active_only=True)
        # the most downstream active prediction above the meter (nested outages: the one a crew fixes first)
        best = max((p for p in active if p.device in chain), key=lambda p: c.device(p.device).depth, default=None)
        if best is not None:
            etr = self.estimated_restoration_ms(best.id)
            return CustomerInfo(customer, True, True, best.id, best.device, best.first_event_ms, etr,
                                f"out since {_iso(best.first_event_ms)}: outage {best.id} at {best.device} "
                                f"({best.state.value}, {best.customers_off} customers off)"
                                + (f", restoration expected {_iso(etr)}" if etr >= 0 else ""))
        slo = next((s for s in slos if s.meter == customer and s.state is SloState.OPEN), None)
        if slo is not None:
            return CustomerInfo(customer, True, True, slo.id, slo.dt, slo.first_event_ms,
                                self.estimated_restoration_ms(slo.id),
                                f"out since {_iso(slo.first_event_ms)}: single light out below {slo.dt}")
        return CustomerInfo(customer, True, False, "", "", -1, -1, "on supply: no outage known")

    def breaker_status(self) -> list[BreakerInfo]:
        """Every breaker and recloser: position, field time of its last change, why it is open, ETR."""
        snap = self._rtdb.snapshot()
        changed: dict[int, int] = {}
        for pid, sw in self._point_switch.items():
            t = int(snap["source_time_ms"][pid])
            if t <= 0:
                t = int(snap["recv_time_ms"][pid])
            changed[sw] = max(changed.get(sw, -1), t)
        with self._lock:
            active = {p.device: p for p in self.predictor.predictions(active_only=True)}
        feeders = {f.mrid: f.name for f in self.model.feeders}
        out = []
        for s in self._topology.switch_states():
            if s.kind not in _BREAKERS:
                continue
            sw = self.model.switches[s.index]
            pred = active.get(s.name)
            etr = self.estimated_restoration_ms(pred.id) if pred is not None else -1
            if s.closed:
                cause = "closed"
            elif pred is not None:
                cause = (f"{self._trip_cause.get(s.name, 'open')}: outage {pred.id}, {pred.customers_off} customers "
                         f"off ({pred.state.value})")
            else:
                cause = self._trip_cause.get(s.name, "open (no outage predicted: normally open or opened by command)")
            out.append(BreakerInfo(s.name, s.kind.value.lower(), feeders.get(sw.feeder_mrid or "", ""), s.closed,
                                   s.uncertain, changed.get(s.index, -1), cause, pred.id if pred is not None else "",
                                   etr))
        return out

    # ------------------------------------------------------------------------------------------ internals
    def _analyse_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._period_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.analyse()
            except Exception:  # the worker must survive one bad analysis
                log.exception("OMS: analysis failed")

    def _topology_loop(self) -> None:
        while not self._stop.is_set():
            sub = self._topo_sub
            upd = sub.get(timeout_s=0.5) if sub is not None else None
            if upd is None:
                continue
            try:
                self._follow(upd.snapshot, f"topology v{upd.version} {upd.cause.value}")
            except Exception:
                log.exception("OMS: following topology v%d failed", upd.version)

    def _follow(self, snapshot: Any, why: str) -> None:
        """Rebuild the connectivity when the feeding paths changed (a tie closed, a section opened, a new model);
        a protective device opening is evidence (the RTDB watcher submits it), not a rebuild."""
        plan = plan_rebuild(self.connectivity, snapshot.model, ~snapshot.switch_closed)
        if not plan.needed:
            return
        t = time.perf_counter()
        conn = build_connectivity(snapshot.model, plan.switch_open)
        reason = f"{why}: " + (", ".join(plan.feeding_changes) or "model replaced")
        with self._lock:
            report = self.predictor.rebase(conn, reason=reason, time_ms=self._clock())
            self.connectivity = conn
            if plan.model_changed:
                self.model = snapshot.model
                self._point_switch = {}
                for p in self.config.points:
                    state = self._topology.switch_of_point(p.id) if p.kind.is_status else None
                    if state is not None and state.kind in _PROTECTIVE:
                        self._point_switch[p.id] = state.index
            self.rebases = [*self.rebases[-9:], report]
        log.info("OMS: connectivity rebuilt in %.1f ms (%s): %d meters kept, %d dark, %d presumed back, %d dropped",
                 (time.perf_counter() - t) * 1000, reason, report.meters_kept, report.meters_dark,
                 report.presumed_energised, report.meters_dropped)
        self._wake.set()

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            sub = self._sub
            cs = sub.get(timeout_s=0.5) if sub is not None else None
            if cs is None:
                continue
            try:
                events = self._scada_events(cs.rows)
                if events:
                    self.submit(events)
            except Exception:
                log.exception("OMS: handling a SCADA change set failed")

    def _scada_events(self, rows: np.ndarray) -> list[OmsEvent]:
        out = []
        for r in rows:
            sw = self._point_switch.get(int(r["point"]))
            if sw is None or int(r["quality"]) & _UNUSABLE:
                continue
            p = self.config.points[int(r["point"])]
            if p.kind is PointKind.DOUBLE:
                open_, closed = r["value"] == DoubleState.OFF, r["value"] == DoubleState.ON
            else:
                open_, closed = r["value"] == 0, r["value"] == 1
            if not (open_ or closed):
                continue  # intermediate/faulty double point: no evidence
            name = self.model.switches[sw].name
            t = int(r["source_time_ms"]) if r["source_time_ms"] > 0 else int(r["recv_time_ms"])
            if open_:
                commanded = (int(r["cause"]) == Cause.RETURN_REMOTE
                             or self._last_command.get(p.id, -math.inf) >= time.monotonic() - self._command_grace_s)
                planned = self.planned_lookup(name, t) if self.planned_lookup is not None else None
                if planned:
                    self._trip_cause[name] = f"opened {_iso(t)} for planned outage {planned}"
                elif commanded:
                    self._trip_cause[name] = f"opened {_iso(t)} by a control-centre command (switching, not a trip)"
                else:
                    self._trip_cause[name] = f"trip {_iso(t)} (SCADA {p.name})"
            else:
                self._trip_cause.pop(name, None)
            out.append(OmsEvent(t, EventKind.SCADA_OPEN if open_ else EventKind.SCADA_CLOSE, name))
        return out

    def _write_record(self, p: Prediction, now: int) -> None:
        planned = self._planned.get(p.id)
        if planned is None and self.planned_lookup is not None and p.scada_confirmed:
            planned = self.planned_lookup(p.device, p.first_event_ms)
            if planned:
                self._planned[p.id] = planned
        if planned:  # the planned outage keeps its own record: no unplanned one for its switching
            return
        if p.state is PredictionState.CLOSED:  # its device left the network model (rebase)
            self._end_without_restoration(p.id, p.timeline[-1].note if p.timeline else "closed", now)
            return
        source = self._record_source.setdefault(p.id, "scada" if p.scada_confirmed and not (p.pons or p.calls)
                                                else "ami")
        last = p.timeline[-1] if p.timeline else None
        if p.state in _ACTIVE:
            status, restored_ms = OutageStatus.OPEN, -1
        else:
            status, restored_ms = OutageStatus.RESTORED, (last.time_ms if last else now)
        notes = tuple(_entry(e) for e in p.timeline)
        stage = {PredictionState.PREDICTED: RecordStage.PREDICTED, PredictionState.CONFIRMED: RecordStage.CONFIRMED
                 }.get(p.state, RecordStage.RESTORED)
        first = p.id not in self._record_id
        if first and p.state is PredictionState.MERGED:
            return  # folded into an upstream outage before it was ever written: that record counts its customers
        # After a partial restoration the customers still off belong to the nested outage's (or SLO's) own record.
        still_off = p.customers_off if p.state in _ACTIVE else 0
        merged = p.state is PredictionState.MERGED
        # folded into an upstream outage's record, or unfolded when it shows again after that one's restoration
        # (a record the store merged with FLISR's record of the same trip stays merged)
        into = self._record_id.get(p.merged_into, 0) if merged else 0
        unfold = not into and p.id in self._folded
        try:  # one transaction: source fields, fold and lifecycle
            lifecycle = None
            if not merged:  # a merged one: the upstream outage's record carries the lifecycle
                # once a crew works on it the crew board's stages lead: the prediction only moves the record on
                rule = LifecycleRule.ALWAYS if self._crew_stage(p.id) is None or stage is RecordStage.RESTORED \
                    else LifecycleRule.IF_LATER_STAGE
                lifecycle = LifecycleChange(stage, self.estimated_restoration_ms(p.id) if p.state in _ACTIVE else
                                            restored_ms, rule=rule)
            rec = self.store.open_or_update(
                source=source, source_ref=f"{self._session}-{p.id}", feeder=p.feeder, tripped_device=p.device,
                customers_interrupted=p.customers_affected,
                customers_restored=0 if status is OutageStatus.OPEN else p.customers_affected - p.customers_off,
                customers_still_off=still_off, started_ms=p.first_event_ms, restored_ms=restored_ms,
                status=status, notes=notes, cause=self._cause(p) if first else None,
                steps=_steps(p.customers_affected, p.timeline),
                merged_into=into if into else (0 if unfold else None), lifecycle=lifecycle)
            self._record_id[p.id] = rec.id
            if into:
                self._folded.add(p.id)
            elif unfold:
                self._folded.discard(p.id)
            if merged:  # the upstream outage's crew covers it; its record stays open
                # (it may show again when the upstream one is restored)
                if p.id in self._work and self._crew_stage(p.id) is not OutageStage.ON_SITE:
                    self.crews.remove_work(p.id, now)
                    self._work.discard(p.id)
                return
        except Exception:  # a storage failure must not stop prediction
            log.exception("OMS: cannot write the outage record of %s", p.id)
        self._update_work(p.id, p.state in _ACTIVE, now, lambda: work_item_for_device(
            self.model, p.id, p.device, p.device_kind, customers_affected=p.customers_affected, created_ms=now))

    def _write_slo_record(self, slo: SingleLightOut, now: int) -> None:
        last = slo.timeline[-1] if slo.timeline else None
        active = slo.state is SloState.OPEN
        if slo.state is SloState.MERGED and slo.id not in self._record_id:
            return  # became part of a device outage before it was ever an SLO record
        if slo.state is SloState.CLOSED:  # its meter left the model or sits behind an open point now
            self._end_without_restoration(slo.id, slo.timeline[-1].note if slo.timeline else "closed", now)
            return
        restored_ms = -1 if active else (last.time_ms if last else now)
        try:  # one transaction: source fields and lifecycle
            lifecycle = None  # with a crew working on it, the crew board's ETR stands
            if not active:
                lifecycle = LifecycleChange(RecordStage.RESTORED, restored_ms)
            elif self._crew_stage(slo.id) is None:
                lifecycle = LifecycleChange(etr_ms=self.estimated_restoration_ms(slo.id))
            rec = self.store.open_or_update(
                source="slo", source_ref=f"{self._session}-{slo.id}", feeder=self._feeder_of_meter(slo.meter),
                tripped_device=slo.meter, customers_interrupted=1, customers_restored=0 if active else 1,
                customers_still_off=1 if active else 0, started_ms=slo.first_event_ms, restored_ms=restored_ms,
                status=OutageStatus.OPEN if active else OutageStatus.RESTORED,
                notes=tuple(_entry(e) for e in slo.timeline),
                cause=f"single light out: meter {slo.meter} below {slo.dt}" if slo.id not in self._record_id else None,
                steps=() if active else (RestorationStep(restored_ms, 1, "meter back on"),), lifecycle=lifecycle)
            self._record_id[slo.id] = rec.id
        except Exception:
            log.exception("OMS: cannot write the outage record of %s", slo.id)

        def item() -> WorkItem:
            bus = self.model.buses[self.model.loads[self.connectivity.meter_load[
                self.connectivity.meter(slo.meter)]].bus]
            return make_work_item(slo.id, device=slo.meter, device_kind="meter", location=(bus.x, bus.y),
                                  skill=required_skill(self.model, slo.dt), customers_affected=1, created_ms=now)

        self._update_work(slo.id, active, now, item)

    def _update_work(self, outage_id: str, active: bool, now: int, item: Callable[[], WorkItem]) -> None:
        """Active: a work item on the board. Over: the work is removed (the record closes) unless a crew is on site
        (then the crew's "work done" report closes it)."""
        try:
            if active and outage_id not in self._work:
                self.crews.add_work(item())
                self._work.add(outage_id)
                self.crews.optimise(now)
            elif not active and outage_id in self._work:
                if self._crew_stage(outage_id) is OutageStage.ON_SITE:
                    return
                self.crews.remove_work(outage_id, now)
                self._work.discard(outage_id)
                self.crews.optimise(now)
                self._close_restored(outage_id, "all customers restored, no crew on site")
            elif not active and outage_id not in self._work:
                self._close_restored(outage_id, "all customers restored")
        except (CrewError, UnknownElementError) as exc:
            log.warning("OMS: crew work for %s: %s", outage_id, exc)

    def _end_without_restoration(self, outage_id: str, why: str, now: int) -> None:
        try:
            if outage_id in self._work and self._crew_stage(outage_id) is not OutageStage.ON_SITE:
                self.crews.remove_work(outage_id, now)
                self._work.discard(outage_id)
            rid = self._record_id.get(outage_id)
            if rid is not None and self.store.canonical(rid).status is not OutageStatus.CLOSED:
                self.store.close_record(rid, f"{_iso(now)} closed without restoration evidence: {why}",
                                        closed_ms=max(now, self.store.canonical(rid).started_ms))
        except (CrewError, LookupError) as exc:
            log.warning("OMS: ending %s: %s", outage_id, exc)

    def _close_restored(self, outage_id: str, why: str) -> None:
        o = self._outage(outage_id)
        rid = self._record_id.get(outage_id)
        if o is None or rid is None:
            return
        # partially restored: the customers still off are the nested outage's or SLO's, with their own record
        rec = self.store.canonical(rid)
        if rec.status is OutageStatus.CLOSED or rec.source == "flisr":
            return  # FLISR's record closes with the repair of its faulted section (crew or operator)
        when = o.timeline[-1].time_ms
        self.store.close_record(rid, f"{_iso(when)} closed: {why}", closed_ms=max(when, rec.started_ms))

    def _on_crew_stage(self, outage_id: str, stage: OutageStage, time_ms: int) -> None:
        self._stage_changes.append((outage_id, stage, time_ms))  # under the board's lock: only queue it
        self._wake.set()

    def _apply_crew_stages(self) -> None:
        while self._stage_changes:
            oid, stage, t = self._stage_changes.popleft()
            rid = self._record_id.get(oid)
            if rid is None:
                continue
            try:
                a = next((x for x in self.crews.assignments(include_restored=True) if x.outage_id == oid), None)
                crew = a.crew_id if a is not None else ""
                if stage in _CREW_STAGE:
                    self.store.set_lifecycle(rid, stage=_CREW_STAGE[stage], crew=crew,
                                             etr_ms=a.etr_ms if a is not None else None,
                                             note=f"{_iso(t)} {stage.value.replace('_', ' ')}" +
                                             (f": crew {crew}" if crew else ""))
                elif stage is OutageStage.WAITING:
                    o = self._outage(oid)
                    back = RecordStage.CONFIRMED if isinstance(o, Prediction) and o.scada_confirmed else \
                        RecordStage.PREDICTED
                    self.store.set_lifecycle(rid, stage=back, crew="", etr_ms=self.estimated_restoration_ms(oid),
                                             note=f"{_iso(t)} crew released, waiting for a crew")
                else:  # RESTORED: the crew reports the work done
                    self._crew_done(oid, rid, crew, t)
            except Exception:
                log.exception("OMS: crew stage %s of %s not recorded", stage.value, oid)

    def _crew_done(self, oid: str, rid: int, crew: str, t: int) -> None:
        o = self._outage(oid)
        if oid in self._work:
            self.crews.remove_work(oid, t)
            self._work.discard(oid)
        if o is not None and _is_active(o):
            self.store.set_lifecycle(rid, note=f"{_iso(t)} crew {crew} reports the work done, but "
                                               f"{getattr(o, 'customers_off', 1)} customers are still off")
            return
        rec = self.store.canonical(rid)
        if rec.status is not OutageStatus.CLOSED:
            self.store.close_record(rid, f"{_iso(t)} closed: crew {crew} reports the work done",
                                    closed_ms=max(t, rec.started_ms))

    def _crew_stage(self, outage_id: str) -> OutageStage | None:
        try:
            stage = self.crews.stage(outage_id)
        except CrewError:
            return None
        return None if stage is OutageStage.WAITING else stage

    def _reoptimise(self) -> None:
        try:
            self.crews.optimise(self._clock())
        except CrewError as exc:
            log.warning("OMS: crew assignment failed: %s", exc)
        self._wake.set()

    def _recent_events(self) -> int:
        cut = time.monotonic() - 60.0
        while self._events and self._events[0][0] < cut:
            self._events.popleft()
        return sum(n for _, n in self._events)

    def _outage(self, outage_id: str) -> Prediction | SingleLightOut | None:
        """The outage as it is now, any state; O(1) (the predictor keeps its outages by id)."""
        return self.predictor.prediction(outage_id) or self.predictor.slo(outage_id)

    def _feeder_of_meter(self, meter: str) -> str:
        for d in self.connectivity.chain(meter):
            if d.feeder:
                return d.feeder
        return ""

    def _cause(self, p: Prediction) -> str:
        if p.scada_confirmed and p.device in self._trip_cause:
            return self._trip_cause[p.device]
        evidence = ", ".join(x for x in (f"{p.pons} last gasps" if p.pons else "", f"{p.calls} calls" if p.calls
                                         else "") if x) or "SCADA"
        return f"{p.device_kind} {p.device} operated (predicted from {evidence})"
def _iso(ms: int) -> str:
    return format_time_ms(ms)


def _entry(e: TimelineEntry) -> str:
    """A timeline entry as a record note: "<ISO time> <state>: <note>" (the state once)."""
    note = e.note.removeprefix(f"{e.state}: ")
    return f"{_iso(e.time_ms)} {e.state}: {note}"


def _read_url(headend_url: str) -> str:
    """The head-end's meter-read resource (``[oms] headend_url`` may name the server or the resource)."""
    url = headend_url.rstrip("/")
    return url if url.endswith("/meter-readings") else url + "/meter-readings"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _is_active(o: Prediction | SingleLightOut) -> bool:
    return o.state in _ACTIVE if isinstance(o, Prediction) else o.state is SloState.OPEN


def _device(o: Prediction | SingleLightOut) -> str:
    return o.device if isinstance(o, Prediction) else o.meter


def _steps(affected: int, timeline: tuple[TimelineEntry, ...]) -> tuple[RestorationStep, ...]:
    """Restoration steps of a prediction: each fall of its customers-off count. A merge into an upstream outage
    hands its customers on (the steps start again if it shows again after the upstream restoration)."""
    steps: list[RestorationStep] = []
    off = affected
    for e in timeline:
        if e.state == PredictionState.MERGED.value:
            steps, off = [], affected
            continue
        if e.customers_off < off:
            steps.append(RestorationStep(e.time_ms, off - e.customers_off, e.note))
        off = e.customers_off
    return tuple(steps)
