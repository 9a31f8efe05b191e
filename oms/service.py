"""The live OMS of a running control centre: AMI messages, trouble calls and SCADA trips of protective switches in;
outage predictions, outage records, crew work and customer/breaker status out.

``OmsService`` owns one ``OutagePredictor`` (built from the live topology: model and switch positions at start), the
shared ``OutageRecordStore`` (the one FLISR writes, passed in) and a ``CrewBoard`` (``data_dir/crews.sqlite``).
Evidence is applied as it arrives, under one lock (the predictor is single-owner); a worker thread runs ``analyse``
every ``period_s`` (and right after each submission) and opens/updates one outage record per prediction: source
``scada`` when SCADA confirmed the device open before any meter or customer reported, else ``ami``; each new outage
also becomes a work item on the crew board (its ETR is the board's once a crew is assigned).

Usage (the centre's gRPC server picks the servicer up)::

    oms = OmsService(center.config, center.rtdb, center.topology, center.data_dir, store=outage_store)
    center.add_grpc_registrar(lambda server: api_servicer.register(server, center.services, oms))
    center.start(); oms.start() ... oms.stop(); center.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.config import StationConfig
from models.network import SwitchKind
from models.points import DoubleState, PointKind, Quality
from models.timebase import now_ms
from oms.connectivity import Connectivity, UnknownElementError, build_connectivity
from oms.crews import CrewBoard, CrewError, work_item_for_device
from oms.end_device_events import oms_events_from_message
from oms.errors import OmsError
from oms.events import EventKind, OmsEvent, format_time_ms
from oms.outage_records import OutageRecord, OutageRecordStore, OutageStatus
from oms.prediction import (
    IngestReport,
    OutagePredictor,
    Prediction,
    PredictionRules,
    PredictionState,
    SingleLightOut,
    SloState,
)
from scada.rtdb import Rtdb
from scada.topology_service import TopologyService

__all__ = ["BreakerInfo", "CustomerInfo", "OmsService"]

log = logging.getLogger(__name__)

_PROTECTIVE = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER, SwitchKind.FUSE, SwitchKind.SECTIONALISER})
_BREAKERS = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER})
_UNUSABLE = int(Quality.INVALID | Quality.COMM_LOST)
_ACTIVE = (PredictionState.PREDICTED, PredictionState.CONFIRMED)


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    customer: str
    known: bool
    out: bool
    outage_id: str  # prediction or SLO id, "" when on supply
    device: str
    since_ms: int  # -1 when on supply
    etr_ms: int  # -1 unless a crew is assigned
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


class OmsService:
    """Thread-safe; ``start``/``stop`` run the RTDB watcher and the analysis worker."""

    def __init__(self, config: StationConfig, rtdb: Rtdb, topology: TopologyService, data_dir: str | Path, *,
                 store: OutageRecordStore, rules: PredictionRules | None = None,
                 clock: Callable[[], int] = now_ms, period_s: float = 1.0) -> None:
        if period_s <= 0:
            raise OmsError(f"OMS service: period_s must be > 0 (got {period_s})")
        self.config = config
        self._rtdb = rtdb
        self._topology = topology
        self._clock = clock
        self.clock = clock  # UTC epoch ms (the servicer computes expected durations with it)
        self._period_s = period_s
        self.store = store
        self.model = topology.model
        closed = {s.mrid: not s.closed for s in topology.switch_states()}
        self.connectivity: Connectivity = build_connectivity(self.model, closed)
        self.predictor = OutagePredictor(self.connectivity, rules)
        self.crews = CrewBoard(Path(data_dir) / "crews.sqlite")
        self._lock = threading.RLock()
        self._session = str(clock())  # prediction ids restart at P1 with every run: records are keyed per run
        self._record_source: dict[str, str] = {}  # prediction id -> its record's source (fixed at opening)
        self._record_id: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # prediction id -> timeline length last written
        self._work: set[str] = set()  # prediction ids with a work item on the board
        self._trip_cause: dict[str, str] = {}  # switch name -> how it opened, as seen by the OMS
        # protective switches' status points -> switch index
        self._point_switch: dict[int, int] = {}
        for p in config.points:
            if not p.kind.is_status:
                continue
            state = topology.switch_of_point(p.id)
            if state is not None and state.kind in _PROTECTIVE:
                self._point_switch[p.id] = state.index
        self._sub: Any = None
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
        self._threads = [threading.Thread(target=self._analyse_loop, name="oms-analyse", daemon=True)]
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
        for t in self._threads:
            t.join(10)
        self._threads = []
        self.crews.close()

    # ------------------------------------------------------------------------------------------ evidence in
    def submit(self, events: list[OmsEvent]) -> IngestReport:
        with self._lock:
            report = self.predictor.ingest(events)
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
        """One analysis now (the worker calls it every period); writes records and work items; returns all
        predictions."""
        now = self._clock()
        with self._lock:
            predictions, _slos = self.predictor.analyse(now)
            for p in predictions:
                if self._seen.get(p.id) != len(p.timeline):
                    self._write_record(p, now)
                    self._seen[p.id] = len(p.timeline)
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

    def record_id(self, prediction_id: str) -> int:
        with self._lock:
            return self._record_id.get(prediction_id, 0)

    def etr_ms(self, outage_id: str) -> int:
        """The crew board's ETR of a prediction/SLO, -1 without a work item or an assigned crew."""
        try:
            return self.crews.etr_ms(outage_id)
        except CrewError:
            return -1

    def other_records(self, *, active_only: bool = False) -> list[OutageRecord]:
        """Records written by other applications (FLISR)."""
        recs = self.store.list(status=OutageStatus.OPEN if active_only else None)
        return [r for r in recs if not r.source_ref.startswith(f"{self._session}-")]

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
            etr = self.etr_ms(best.id)
            return CustomerInfo(customer, True, True, best.id, best.device, best.first_event_ms, etr,
                                f"out since {_iso(best.first_event_ms)}: outage {best.id} at {best.device} "
                                f"({best.state.value}, {best.customers_off} customers off)"
                                + (f", restoration expected {_iso(etr)}" if etr >= 0 else ", no crew assigned yet"))
        slo = next((s for s in slos if s.meter == customer and s.state is SloState.OPEN), None)
        if slo is not None:
            return CustomerInfo(customer, True, True, slo.id, slo.dt, slo.first_event_ms, self.etr_ms(slo.id),
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
            etr = self.etr_ms(pred.id) if pred is not None else -1
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
                self._trip_cause[name] = f"opened {_iso(t)} (SCADA {p.name})"
            else:
                self._trip_cause.pop(name, None)
            out.append(OmsEvent(t, EventKind.SCADA_OPEN if open_ else EventKind.SCADA_CLOSE, name))
        return out

    def _write_record(self, p: Prediction, now: int) -> None:
        source = self._record_source.setdefault(p.id, "scada" if p.scada_confirmed and not (p.pons or p.calls)
                                                else "ami")
        last = p.timeline[-1] if p.timeline else None
        if p.state in _ACTIVE:
            status, restored_ms = OutageStatus.OPEN, -1
        else:
            status, restored_ms = OutageStatus.RESTORED, (last.time_ms if last else now)
        notes = tuple(f"{_iso(e.time_ms)} {e.state}: {e.note}" for e in p.timeline)
        try:
            rec = self.store.open_or_update(
                source=source, source_ref=f"{self._session}-{p.id}", feeder=p.feeder, tripped_device=p.device,
                customers_interrupted=p.customers_affected,
                customers_restored=0 if status is OutageStatus.OPEN else p.customers_affected - p.customers_off,
                customers_still_off=p.customers_off, started_ms=p.first_event_ms, restored_ms=restored_ms,
                status=status, notes=notes)
            self._record_id[p.id] = rec.id
        except Exception:  # a storage failure must not stop prediction
            log.exception("OMS: cannot write the outage record of %s", p.id)
        self._update_work(p, now)

    def _update_work(self, p: Prediction, now: int) -> None:
        try:
            if p.state in _ACTIVE and p.id not in self._work:
                item = work_item_for_device(self.model, p.id, p.device, p.device_kind,
                                            customers_affected=p.customers_affected, created_ms=now)
                self.crews.add_work(item)
                self._work.add(p.id)
                self.crews.optimise(now)
            elif p.state not in _ACTIVE and p.id in self._work:
                self.crews.remove_work(p.id, now)
                self._work.discard(p.id)
        except (CrewError, UnknownElementError) as exc:
            log.warning("OMS: crew work for %s at %s: %s", p.id, p.device, exc)


def _iso(ms: int) -> str:
    return format_time_ms(ms)
