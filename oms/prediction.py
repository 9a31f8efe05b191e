"""Outage prediction from AMI notifications, trouble calls and SCADA switch changes.

``OutagePredictor(connectivity)`` takes events in batches (``ingest``); every event gets exactly one ``Outcome``
(applied, duplicate, unknown meter, ...), counted and kept when it was not applied, so nothing is lost silently.
The predictor's state is who is off now (per meter) and which telemetered devices are open; ``analyse`` turns it
into predictions, vectorised over meters and devices:

* a predictable device (protective switch, DT, power transformer, source) *passes* on meter evidence when at least
  ``min_meters`` of its downstream meters report and they are at least ``min_share`` of its customers (reports
  explained by a SCADA-open device below it do not count: three breakers seen tripping are three outages); the
  reports are spread (meters directly below it report, or at least two and at least ``min_child_share`` of its
  predictable children have reports: a few blown fuses are not a breaker outage); and no meter below it reported a
  restoration after its earliest outage report (it is energised). It also passes when SCADA reports it open, when
  its only predictable child feeds the same customers and passes, or when it has ``escalate_min_children`` or more
  predictable children and all pass on evidence (thousands of PONs of an EHV/substation outage become one);
* the predicted device of a group is the most upstream passing device, moved down through devices that feed exactly
  the same customers to the most downstream protective one (the fuse, not the DT behind it; the incomer breaker, not
  the grid supply above it);
* meters off but not under a prediction for ``slo_hold_s`` are single lights out (SLO), not a device outage (the
  hold keeps the first meters of a storm from flooding the operator as SLOs before their neighbours report).

Predictions are keyed by device: as evidence arrives they are created, merged into a new upstream prediction,
confirmed by SCADA, and restored (fully, or partially when meters below stay off: a nested outage then re-emerges as
its own prediction — step restoration). Every change is an entry in the prediction's timeline, stamped with event
time, so a replay is deterministic.

The network changes under a running OMS (FLISR or an operator moves a normally-open point; GIS replaces the model):
``rebase(connectivity)`` swaps in a connectivity rebuilt for it (``oms.connectivity.plan_rebuild`` says when) and
carries the state over by name: meters by meter number, SCADA-open devices and predictions by device name (same ids),
SLOs by meter; what cannot be carried is counted in its ``RebaseReport`` and noted in the timelines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from oms.connectivity import NO_DEVICE, Connectivity
from oms.errors import OmsError
from oms.events import EventKind, OmsEvent

__all__ = [
    "IngestReport",
    "OutagePredictor",
    "Outcome",
    "Prediction",
    "PredictionRules",
    "PredictionState",
    "RebaseReport",
    "SingleLightOut",
    "SloState",
    "TimelineEntry",
]

_NEVER = np.iinfo(np.int64).max
_FOLLOW_COALESCE_MS = 60_000  # straggler restorations within this of the last step extend it


class Outcome(StrEnum):
    """What happened to one event; every event gets exactly one."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # a PON of a meter already off, a PRN of one already restored, a repeated call/SCADA
    UNKNOWN = "unknown"  # meter, customer or switch not in the model
    NOT_SUPPLIED = "not_supplied"  # a meter no source feeds in the as-operated model (behind an open point)
    PRN_WITHOUT_PON = "prn_without_pon"  # restoration of a meter believed on: kept as "energised" evidence
    PRN_BEFORE_PON = "prn_before_pon"  # clock skew: PRN stamped before its PON; paired, meter taken as restored


class PredictionState(StrEnum):
    PREDICTED = "predicted"
    CONFIRMED = "confirmed"  # SCADA reports the device open, or a meter ping below it reads dead
    RESTORED = "restored"  # fully, or partially when customers_off > 0 (they are under a nested prediction/SLO)
    MERGED = "merged"  # folded into an upstream prediction (merged_into)
    CLOSED = "closed"  # ended without restoration evidence: its device left the network model (rebase)


class SloState(StrEnum):
    OPEN = "open"
    RESTORED = "restored"
    MERGED = "merged"  # became part of a device prediction
    CLOSED = "closed"  # its meter left the model or now sits behind an open point (rebase)


@dataclass(frozen=True, slots=True)
class PredictionRules:
    min_meters: int = 2
    min_share: float = 0.3
    min_child_share: float = 0.5
    escalate_min_children: int = 2
    clock_skew_limit_s: float = 300.0  # |event time - head-end receipt| beyond this: the source clock is wrong
    prn_pairing_s: float = 300.0  # a PRN stamped at most this long before a PON pairs with it (clock skew)
    nested_margin_s: float = 60.0  # meters off up to this long before a device opened count as off because of it
    slo_hold_s: float = 120.0  # a lone meter off is an SLO only after this long (its neighbours report meanwhile)

    def __post_init__(self) -> None:
        if self.min_meters < 1:
            raise OmsError(f"prediction rules: min_meters must be >= 1 (got {self.min_meters})")
        for name in ("min_share", "min_child_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise OmsError(f"prediction rules: {name} must be within 0..1 (got {value})")
        if self.escalate_min_children < 2:
            raise OmsError(f"prediction rules: escalate_min_children must be >= 2 (got {self.escalate_min_children})")
        if self.slo_hold_s < 0:
            raise OmsError(f"prediction rules: slo_hold_s must be >= 0 (got {self.slo_hold_s})")
        if self.nested_margin_s < 0:
            raise OmsError(f"prediction rules: nested_margin_s must be >= 0 (got {self.nested_margin_s})")
        for name in ("clock_skew_limit_s", "prn_pairing_s"):
            if getattr(self, name) <= 0:
                raise OmsError(f"prediction rules: {name} must be > 0 (got {getattr(self, name)})")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    time_ms: int
    state: str
    customers_off: int
    note: str


@dataclass(frozen=True, slots=True)
class Prediction:
    id: str
    device: str
    device_kind: str
    feeder: str
    state: PredictionState
    customers_affected: int  # customers fed by the device
    customers_off: int  # now (after a partial restoration: those still off below it)
    first_event_ms: int
    last_event_ms: int
    pons: int
    calls: int
    prns: int  # meters back on since the first event (PRN, or presumed when SCADA closed the device)
    scada_confirmed: bool
    merged_into: str  # prediction id, "" unless MERGED
    timeline: tuple[TimelineEntry, ...]


@dataclass(frozen=True, slots=True)
class SingleLightOut:
    id: str
    meter: str
    load: str
    dt: str  # the nearest device above the meter (its DT when the model has one)
    state: SloState
    first_event_ms: int
    last_event_ms: int
    pons: int
    calls: int
    merged_into: str
    timeline: tuple[TimelineEntry, ...]


@dataclass(frozen=True, slots=True)
class IngestReport:
    """Outcomes of one batch; ``clock_corrected`` counts events re-stamped with their receipt time (they are also
    in ``counts`` under the outcome they then had)."""

    total: int
    counts: Mapping[Outcome, int]
    clock_corrected: int
    unknown_refs: tuple[str, ...]  # distinct unknown ids of the batch, first 20


@dataclass(frozen=True, slots=True)
class RebaseReport:
    """What ``OutagePredictor.rebase`` carried over and what it could not."""

    reason: str
    meters_kept: int
    meters_added: int  # new meters, taken as on supply
    meters_dropped: int  # no longer in the model: their state is gone
    dropped_off: int  # of those, meters that were off
    dropped_meters: tuple[str, ...]  # the first 20 dropped meter numbers
    meters_dark: int  # off-or-on meters now behind an open point (events for them answer NOT_SUPPLIED)
    presumed_energised: int  # meters off that the new paths supply again (PRNs or pings confirm)
    open_devices_dropped: tuple[str, ...]  # SCADA-open devices not in the new tree (their opening is forgotten)
    predictions_kept: tuple[str, ...]  # active prediction ids re-attached to their device in the new tree
    predictions_recounted: tuple[str, ...]  # of those, ids whose downstream customer count changed
    predictions_parked: tuple[str, ...]  # device still in the model but de-energised by switching: kept active
    predictions_closed: tuple[str, ...]  # device gone from the model: CLOSED with a timeline note
    slos_closed: tuple[str, ...]
    elapsed_ms: float


@dataclass(slots=True)
class _Record:  # mutable working copy of a Prediction
    id: str
    device: int
    state: PredictionState
    customers_affected: int
    customers_off: int
    first_ms: int
    last_ms: int
    pons: int = 0
    calls: int = 0
    prns: int = 0
    confirmed: bool = False
    merged_into: str = ""
    gone: tuple[str, str, str] = ()  # (device, kind, feeder) while its device is not in the tree (rebase)
    timeline: list[TimelineEntry] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # restored partially: lone meters still off (by meter number)
    follow_back: int = 0  # customers in the last straggler step (coalesced while notices trickle in)

    def log(self, time_ms: int, note: str) -> None:
        self.timeline.append(TimelineEntry(int(time_ms), self.state.value, int(self.customers_off), note))


@dataclass(slots=True)
class _Slo:
    id: str
    meter: int
    state: SloState
    first_ms: int
    last_ms: int
    pons: int = 0
    calls: int = 0
    merged_into: str = ""
    gone: tuple[str, str, str] = ()  # (meter, load, dt) once closed by a rebase
    timeline: list[TimelineEntry] = field(default_factory=list)

    def log(self, time_ms: int, note: str) -> None:
        self.timeline.append(TimelineEntry(int(time_ms), self.state.value, 1 if self.state is SloState.OPEN else 0,
                                           note))


class OutagePredictor:
    """Not thread-safe: one owner feeds it (the OMS service thread, or a replay)."""

    # Per-meter and per-device state arrays: ``rebase`` carries exactly these over by meter number / device name.
    _METER_STATE = ("_out", "_out_ms", "_on_ms", "_last_ms", "_orphan_prn_ms", "_pons", "_calls", "_prns", "_called",
                    "_ponned", "_pinged_ms")
    _DEVICE_STATE = ("_open", "_open_ms")

    def __init__(self, connectivity: Connectivity, rules: PredictionRules | None = None) -> None:
        self.conn = connectivity
        self.rules = rules or PredictionRules()
        m, d = len(connectivity.meter_ids), connectivity.n_devices
        self._out = np.zeros(m, dtype=bool)
        self._out_ms = np.full(m, _NEVER, dtype=np.int64)
        self._on_ms = np.full(m, -1, dtype=np.int64)
        self._last_ms = np.full(m, -1, dtype=np.int64)
        self._orphan_prn_ms = np.full(m, -1, dtype=np.int64)
        self._pons = np.zeros(m, dtype=np.int64)
        self._calls = np.zeros(m, dtype=np.int64)
        self._prns = np.zeros(m, dtype=np.int64)
        self._called = np.zeros(m, dtype=bool)  # called during its present outage
        self._ponned = np.zeros(m, dtype=bool)  # sent a PON during its present outage
        self._pinged_ms = np.full(m, -1, dtype=np.int64)  # last read dead by a ping (counts while >= its _out_ms)
        self.pings_off = 0  # PING_OFF events applied (0: analysis skips the ping confirmation)
        self._open = np.zeros(d, dtype=bool)
        self._open_ms = np.full(d, _NEVER, dtype=np.int64)
        self._closed_at: dict[str, int] = {}  # device name -> when SCADA last saw it close (kept by name on rebase)
        self._clock_ms = -1
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.clock_corrected = 0
        self.presumed_restored = 0  # meters taken as back on when SCADA closed their device
        self.not_applied: list[tuple[OmsEvent, Outcome]] = []  # every event that changed nothing, in order
        self._records: list[_Record] = []
        self._record_by_id: dict[str, _Record] = {}  # every record by id, kept with _records: O(1) ``prediction``
        self._active: dict[int, _Record] = {}
        self._partial: list[_Record] = []  # restored with customers still off below: followed until all are back
        self._by_device: dict[int, _Record] = {}
        self._slos: list[_Slo] = []
        self._slo_by_id: dict[str, _Slo] = {}  # every SLO by id, kept with _slos: O(1) ``slo``
        self._active_slo: dict[int, _Slo] = {}
        self._parked: dict[str, _Record] = {}  # active predictions whose device is de-energised by switching
        self._index(connectivity)

    def _index(self, connectivity: Connectivity) -> None:
        """Static aggregation indices: (device, load) pairs of every chain, and the predictable-children counts."""
        d = connectivity.n_devices
        chain = connectivity.load_chain
        valid = chain >= 0
        self._pair_dev = chain[valid].astype(np.int64)
        self._pair_load = np.nonzero(valid)[0]
        self._supplied_load = chain[:, 0] >= 0
        counted = connectivity.predictable & (connectivity.customers > 0) & (connectivity.pparent >= 0)
        self._child_mask = counted
        self._n_children = np.bincount(connectivity.pparent[counted], minlength=d)
        self._depth_order = np.argsort(connectivity.depth, kind="stable")
        self._only_child = self._identical_children(connectivity.parent, connectivity.parent >= 0)
        self._only_pchild = self._identical_children(connectivity.pparent, counted)

    # ---------------------------------------------------------------- ingest

    def ingest(self, events: Iterable[OmsEvent]) -> IngestReport:
        """Apply a batch in event-time order (stable for equal times); returns what happened to each kind."""
        limit_ms = int(self.rules.clock_skew_limit_s * 1000)
        batch: list[tuple[int, int, OmsEvent]] = []
        corrected = 0
        for seq, ev in enumerate(events):
            t = ev.time_ms
            if ev.received_ms >= 0 and abs(t - ev.received_ms) > limit_ms:
                t = ev.received_ms  # the source clock is wrong: the head-end's receipt time is the better stamp
                corrected += 1
            batch.append((t, seq, ev))
        batch.sort(key=lambda item: (item[0], item[1]))
        counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        unknown: dict[str, None] = {}
        for t, _seq, ev in batch:
            outcome = self._apply(t, ev)
            counts[outcome] += 1
            if outcome is not Outcome.APPLIED:
                self.not_applied.append((ev, outcome))
                if outcome is Outcome.UNKNOWN and len(unknown) < 20:
                    unknown[ev.ref] = None
            self._clock_ms = max(self._clock_ms, t)
        for k, v in counts.items():
            self.counts[k] += v
        self.clock_corrected += corrected
        return IngestReport(len(batch), counts, corrected, tuple(unknown))

    def _apply(self, t: int, ev: OmsEvent) -> Outcome:
        if ev.kind in (EventKind.SCADA_OPEN, EventKind.SCADA_CLOSE):
            return self._apply_scada(t, ev)
        m = self.conn.meter_index.get(ev.ref)
        if m is None:
            return Outcome.UNKNOWN
        load = int(self.conn.meter_load[m])
        if load < 0 or not self._supplied_load[load]:
            return Outcome.NOT_SUPPLIED
        if ev.kind in (EventKind.PING_OFF, EventKind.PING_ON):
            return self._apply_ping(m, t, ev.kind is EventKind.PING_OFF)
        pairing_ms = int(self.rules.prn_pairing_s * 1000)
        if ev.kind is EventKind.PRN:
            if self._out[m]:
                self._out[m] = False
                self._called[m] = self._ponned[m] = False
                self._prns[m] += 1
                self._last_ms[m] = max(self._last_ms[m], t)
                if t < self._out_ms[m]:  # stamped before its own PON: skewed clock
                    self._on_ms[m] = self._out_ms[m]
                    return Outcome.PRN_BEFORE_PON
                self._on_ms[m] = t
                return Outcome.APPLIED
            if self._on_ms[m] >= 0 and self._orphan_prn_ms[m] < 0 and self._prns[m] > 0:
                return Outcome.DUPLICATE
            self._orphan_prn_ms[m] = t
            self._on_ms[m] = max(self._on_ms[m], t)
            return Outcome.PRN_WITHOUT_PON
        if ev.kind is EventKind.PON:
            if self._out[m]:
                if not self._ponned[m]:  # a call came first: the PON is new evidence
                    self._ponned[m] = True
                    self._pons[m] += 1
                    self._out_ms[m] = min(self._out_ms[m], t)
                    return Outcome.APPLIED
                return Outcome.DUPLICATE
            orphan = int(self._orphan_prn_ms[m])
            if orphan >= 0 and 0 <= t - orphan <= pairing_ms:
                self._orphan_prn_ms[m] = -1
                self._pons[m] += 1
                self._prns[m] += 1
                self._on_ms[m] = t  # a completed outage whose notifications came with skewed stamps
                return Outcome.PRN_BEFORE_PON
            self._start_outage(m, t)
            self._ponned[m] = True
            self._pons[m] += 1
            return Outcome.APPLIED
        # trouble call
        if self._called[m]:
            return Outcome.DUPLICATE
        self._calls[m] += 1
        self._called[m] = True
        if not self._out[m]:
            self._start_outage(m, t)
        return Outcome.APPLIED

    def _apply_ping(self, m: int, t: int, dead: bool) -> Outcome:
        """A meter read by the OMS. Dead: the meter is off (from now if nothing said so before) and confirms the
        prediction above it. Energised: a meter believed off is back (like a PRN); one believed on is energised
        evidence at ``t`` (like a PRN without PON, but the head-end's clock is trusted: no skew pairing)."""
        if dead:
            if self._out[m] and self._pinged_ms[m] >= self._out_ms[m]:
                return Outcome.DUPLICATE
            if not self._out[m]:
                self._start_outage(m, t)
            self._pinged_ms[m] = max(t, int(self._out_ms[m]))
            self.pings_off += 1
            return Outcome.APPLIED
        if self._out[m]:
            self._out[m] = False
            self._called[m] = self._ponned[m] = False
            self._prns[m] += 1
            self._on_ms[m] = max(t, int(self._out_ms[m]))
        else:
            self._on_ms[m] = max(int(self._on_ms[m]), t)
        self._last_ms[m] = max(self._last_ms[m], t)
        return Outcome.APPLIED

    def _start_outage(self, m: int, t: int) -> None:
        self._out[m] = True
        self._out_ms[m] = t
        self._orphan_prn_ms[m] = -1
        self._last_ms[m] = max(self._last_ms[m], t)

    def _apply_scada(self, t: int, ev: OmsEvent) -> Outcome:
        d = self.conn.device_index.get(ev.ref)
        if d is None:
            return Outcome.UNKNOWN
        if ev.kind is EventKind.SCADA_OPEN:
            if self._open[d]:
                return Outcome.DUPLICATE
            self._open[d] = True
            self._open_ms[d] = t
            return Outcome.APPLIED
        if not self._open[d]:
            return Outcome.DUPLICATE
        opened_ms = int(self._open_ms[d]) - int(self.rules.nested_margin_s * 1000)  # meter clocks lag SCADA's
        self._open[d] = False
        self._open_ms[d] = _NEVER
        self._closed_at[self.conn.devices[d].name] = t
        # Supply is back below the device, except below another device still open: meters that went off since it
        # opened are taken as restored now (the head-end's PRNs or a meter ping confirm it later); meters off since
        # before it opened stay off (a nested outage: a blown fuse below a breaker that tripped later).
        loads = self.conn.downstream_loads(d)
        still_dark = np.zeros(len(self.conn.load_names), dtype=bool)
        for other in np.flatnonzero(self._open):
            if self.conn.is_ancestor(d, int(other)):
                still_dark[self.conn.downstream_loads(int(other))] = True
        back = np.zeros(len(self.conn.load_names), dtype=bool)
        back[loads] = True
        back &= ~still_dark
        meters = np.flatnonzero(self._out & back[self.conn.meter_load] & (self._out_ms >= opened_ms))
        self._out[meters] = False
        self._called[meters] = self._ponned[meters] = False
        self._on_ms[meters] = t
        self.presumed_restored += len(meters)
        return Outcome.APPLIED

    # ---------------------------------------------------------------- network changes

    def rebase(self, connectivity: Connectivity, *, reason: str = "network changed", time_ms: int | None = None,
               presume_energised: bool = True) -> RebaseReport:
        """Swap in a connectivity built from new switch positions or a new model, carrying the state over by name.

        Meters by meter number (gone: state dropped and counted; new: on supply); SCADA-open devices by name;
        predictions by device name: an active one whose device is in the new tree stays active with the same id (its
        customers recounted; the next ``analyse`` re-derives it: it may merge, restore or move), one whose device is
        still in the model but de-energised by switching is parked (active, re-attached by a later rebase), one whose
        device left the model is CLOSED; SLOs by meter. With ``presume_energised``, meters off that the new feeding
        paths supply again (they were behind an open point) are taken as restored at ``time_ms`` unless an active
        prediction above them in the new tree still explains them; PRNs or meter pings confirm. ``reason`` goes into
        the timelines."""
        t0 = time.perf_counter()
        old, new = self.conn, connectivity
        now = self._clock_ms if time_ms is None else max(int(time_ms), self._clock_ms)
        fresh = OutagePredictor(new, self.rules)  # state arrays at their defaults and the new static indices

        m_map = np.fromiter((new.meter_index.get(x, -1) for x in old.meter_ids), dtype=np.int64,
                            count=len(old.meter_ids))
        keep = m_map >= 0
        src, dst = np.flatnonzero(keep), m_map[keep]
        dropped = np.flatnonzero(~keep)
        dropped_off = int(self._out[dropped].sum())
        old_ml = old.meter_load
        was_supplied = np.zeros(len(new.meter_ids), dtype=bool)
        was_supplied[dst] = (old_ml[src] >= 0) & self._supplied_load[np.maximum(old_ml[src], 0)]
        for name in self._METER_STATE:
            array = getattr(fresh, name)
            array[dst] = getattr(self, name)[src]
            setattr(self, name, array)
        d_map = np.fromiter((new.device_index.get(dev.name, -1) for dev in old.devices), dtype=np.int64,
                            count=old.n_devices)
        lost_open = tuple(old.devices[int(d)].name for d in np.flatnonzero(self._open & (d_map < 0)))
        d_keep = d_map >= 0
        for name in self._DEVICE_STATE:
            array = getattr(fresh, name)
            array[d_map[d_keep]] = getattr(self, name)[np.flatnonzero(d_keep)]
            setattr(self, name, array)
        self.conn = new
        self._index(new)

        in_model = ({sw.name for sw in new.model.switches} | {tr.name for tr in new.model.transformers}
                    | {s.name for s in new.model.sources})
        kept: list[str] = []
        recounted: list[str] = []
        parked: list[str] = []
        closed: list[str] = []
        active_before = list(self._active.values()) + list(self._parked.values())
        live = {id(rec) for rec in active_before}
        self._active, self._parked = {}, {}
        self._by_device = {int(new.device_index[r_name]): rec for rec in self._by_device.values()
                           if (r_name := self._record_device_name(rec, old)) in new.device_index}
        for rec in self._records:  # finished records keep naming their device whatever the tree
            if id(rec) in live:
                continue
            name = self._record_device_name(rec, old)
            d = new.device_index.get(name)
            if d is not None:
                rec.device, rec.gone = int(d), ()
            else:
                if not rec.gone:
                    dev = old.devices[rec.device]
                    rec.gone = (dev.name, dev.kind.value, dev.feeder)
                rec.device = NO_DEVICE
        for rec in active_before:
            name = self._record_device_name(rec, old)
            d = new.device_index.get(name)
            if d is not None:
                rec.device, rec.gone = int(d), ()
                self._active[int(d)] = rec
                self._by_device[int(d)] = rec
                kept.append(rec.id)
                n = int(new.customers[d])
                if n != rec.customers_affected:
                    rec.log(now, f"{reason}: {name} now feeds {n} customers (was {rec.customers_affected})")
                    rec.customers_affected = rec.customers_off = n
                    recounted.append(rec.id)
                continue
            if not rec.gone:
                dev = old.devices[rec.device]
                rec.gone = (dev.name, dev.kind.value, dev.feeder)
            rec.device = NO_DEVICE
            if name in in_model:
                self._parked[name] = rec
                parked.append(rec.id)
                rec.log(now, f"{reason}: {name} is de-energised by switching; kept open until it is supplied again")
            else:
                rec.state = PredictionState.CLOSED
                closed.append(rec.id)
                rec.log(now, f"closed: {reason}: device {name} is no longer in network model {new.model_name!r}")

        ml = new.meter_load
        supplied = (ml >= 0) & self._supplied_load[np.maximum(ml, 0)]
        woken = np.zeros(0, dtype=np.int64)
        if presume_energised:
            candidates = self._out & supplied & ~was_supplied  # new meters start on: never candidates
            if candidates.any() and self._active:
                held = np.isin(new.load_chain, np.fromiter(self._active, dtype=np.int32, count=len(self._active)))
                candidates &= ~held.any(axis=1)[np.maximum(ml, 0)]
            woken = np.flatnonzero(candidates)
            self._out[woken] = False
            self._called[woken] = self._ponned[woken] = False
            self._on_ms[woken] = now
            self.presumed_restored += len(woken)

        slos_closed: list[str] = []
        active_slo = list(self._active_slo.values())
        self._active_slo = {}
        for slo in self._slos:
            if slo.gone:
                continue
            m = int(m_map[slo.meter])
            if slo.state is not SloState.OPEN:
                if m < 0:
                    slo.gone = self._slo_names(slo, old)
                slo.meter = m
                continue
            if m >= 0 and supplied[m]:
                slo.meter = m
                continue
            slo.gone = self._slo_names(slo, old)
            slo.meter = m
            slo.state = SloState.CLOSED
            why = "no longer in the network model" if m < 0 else "now behind an open point"
            slo.log(now, f"closed: {reason}: meter {slo.gone[0]} is {why}")
            slos_closed.append(slo.id)
        for slo in active_slo:
            if slo.state is SloState.OPEN:
                self._active_slo[slo.meter] = slo
        self._clock_ms = now
        return RebaseReport(
            reason=reason, meters_kept=len(dst), meters_added=len(new.meter_ids) - len(dst),
            meters_dropped=len(dropped), dropped_off=dropped_off,
            dropped_meters=tuple(old.meter_ids[int(m)] for m in dropped[:20]), meters_dark=int((~supplied).sum()),
            presumed_energised=len(woken), open_devices_dropped=lost_open, predictions_kept=tuple(kept),
            predictions_recounted=tuple(recounted), predictions_parked=tuple(parked),
            predictions_closed=tuple(closed), slos_closed=tuple(slos_closed),
            elapsed_ms=(time.perf_counter() - t0) * 1000.0)

    @staticmethod
    def _record_device_name(rec: _Record, conn: Connectivity) -> str:
        return rec.gone[0] if rec.gone else conn.devices[rec.device].name

    @staticmethod
    def _slo_names(slo: _Slo, conn: Connectivity) -> tuple[str, str, str]:
        load = int(conn.meter_load[slo.meter])
        dt = int(conn.load_chain[load, 0]) if load >= 0 else NO_DEVICE
        return (conn.meter_ids[slo.meter], conn.load_names[load] if load >= 0 else "",
                conn.devices[dt].name if dt >= 0 else "")

    # ---------------------------------------------------------------- analysis

    def _identical_children(self, parent: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """For each device, its only child (under ``parent`` among ``mask``) feeding exactly the same customers,
        else NO_DEVICE."""
        c = self.conn
        only = np.full(c.n_devices, NO_DEVICE, dtype=np.int32)
        fed = np.flatnonzero((c.customers > 0) & mask)
        n_fed_children = np.bincount(parent[fed], minlength=c.n_devices)
        for child in fed:
            p = int(parent[child])
            if n_fed_children[p] == 1 and c.customers[child] == c.customers[p]:
                only[p] = child
        return only

    def analyse(self, now_ms: int | None = None) -> tuple[list[Prediction], list[SingleLightOut]]:
        """Update predictions and SLOs from the present state; returns all of them (active and finished).
        ``now_ms`` is the time of the analysis (default: the latest event time seen); it stamps the timelines and
        decides which lone meters have been off for ``slo_hold_s``."""
        c, r = self.conn, self.rules
        n_loads, n_dev = len(c.load_names), c.n_devices
        ml = c.meter_load
        out = self._out & (ml >= 0) & self._supplied_load[np.maximum(ml, 0)]  # dark by switching: no evidence
        on = ~self._out & (self._on_ms >= 0) & (ml >= 0)
        out_load = np.bincount(ml[out], minlength=n_loads)
        first_load = np.full(n_loads, _NEVER, dtype=np.int64)
        np.minimum.at(first_load, ml[out], self._out_ms[out])
        on_load = np.full(n_loads, -1, dtype=np.int64)
        np.maximum.at(on_load, ml[on], self._on_ms[on])
        pons_load = np.bincount(ml[out], weights=self._pons[out], minlength=n_loads)
        calls_load = np.bincount(ml[out], weights=self._called[out], minlength=n_loads)
        last_load = np.full(n_loads, -1, dtype=np.int64)
        np.maximum.at(last_load, ml[out], self._last_ms[out])

        pd, pl = self._pair_dev, self._pair_load
        dev_out = np.bincount(pd, weights=out_load[pl], minlength=n_dev)
        dev_pons = np.bincount(pd, weights=pons_load[pl], minlength=n_dev)
        dev_calls = np.bincount(pd, weights=calls_load[pl], minlength=n_dev)
        dev_first = np.full(n_dev, _NEVER, dtype=np.int64)
        np.minimum.at(dev_first, pd, first_load[pl])
        dev_on = np.full(n_dev, -1, dtype=np.int64)
        np.maximum.at(dev_on, pd, on_load[pl])
        dev_last = np.full(n_dev, -1, dtype=np.int64)
        np.maximum.at(dev_last, pd, last_load[pl])

        # Meter evidence for a device counts only reports that no SCADA-open device below it explains: three feeder
        # breakers seen tripping are three outages, not one at the transformer above them.
        open_dev = np.flatnonzero(self._open)
        if len(open_dev):
            explained = np.isin(c.load_chain, open_dev).any(axis=1)
            free = np.bincount(pd, weights=np.where(explained, 0, out_load)[pl], minlength=n_dev)
        else:
            free = dev_out
        share = free / np.maximum(c.customers, 1)
        # Spread: reports under one child alone point at that child, not at its parent; a parent needs reports
        # of its own (meters under no predictable child) or several reporting children.
        reporting_children = np.bincount(c.pparent[self._child_mask & (free > 0)], minlength=n_dev)
        child_out = np.bincount(c.pparent[self._child_mask], weights=free[self._child_mask], minlength=n_dev)
        child_ok = ((self._n_children == 0) | (free > child_out)
                    | ((reporting_children >= 2) & (reporting_children >= r.min_child_share * self._n_children)))
        evidence = (c.predictable & (free >= r.min_meters) & (share >= r.min_share) & child_ok
                    & (dev_on < dev_first))
        passing = evidence | self._open
        # Bottom-up: a device whose only predictable child feeds exactly its customers passes with it (evidence
        # cannot tell them apart: _descend picks between them); one all of whose (several) children pass is out.
        passing_children = np.zeros(n_dev, dtype=np.int64)
        for d in self._depth_order[::-1]:
            d = int(d)
            twin = int(self._only_pchild[d])
            if not evidence[d] and c.predictable[d] and (
                    (twin >= 0 and evidence[twin])
                    or (self._n_children[d] >= r.escalate_min_children and passing_children[d] == self._n_children[d])):
                evidence[d] = passing[d] = True
            p = int(c.pparent[d])
            if evidence[d] and p >= 0 and self._child_mask[d]:  # SCADA-open children are explained already
                passing_children[p] += 1
        above = np.zeros(n_dev, dtype=bool)
        for d in self._depth_order:
            p = int(c.parent[d])
            above[d] = p >= 0 and (passing[p] or above[p])
        chosen: dict[int, int] = {}  # predicted device -> the maximal passing device it stands for
        for d in np.flatnonzero(passing & ~above):
            chosen[self._descend(int(d))] = int(d)
        now = self._clock_ms if now_ms is None else max(int(now_ms), self._clock_ms)
        self._clock_ms = now

        for d in chosen:
            self._upsert(d, now, int(dev_out[d]), int(dev_first[d]), int(dev_last[d]), int(dev_pons[d]),
                         int(dev_calls[d]))
        covered_load = np.isin(c.load_chain, np.fromiter(chosen.values(), dtype=np.int32, count=len(chosen)))
        covered_load = covered_load.any(axis=1)
        for d, rec in list(self._active.items()):
            if d in chosen:
                continue
            owner = next((self._active[x] for x in chosen if x in self._active and c.is_ancestor(x, d)), None)
            if owner is not None:
                self._merge(rec, owner, now)
                continue
            # Still off below: the whole customer count of each nested outage showing again (its silent meters
            # too, so nobody is counted back here and off there) and the lone meters off, not yet SLOs.
            nested = sum(o.customers_off for x, o in self._active.items() if x != d and c.is_ancestor(d, x))
            below = np.isin(ml, c.downstream_loads(d))
            lone = np.flatnonzero(out & below & ~covered_load[np.maximum(ml, 0)])
            self._restore(rec, now, nested + len(lone))
            if len(lone):  # followed: their restoration notices may only be late
                rec.waiting = [c.meter_ids[int(m)] for m in lone]
                self._partial.append(rec)
        self._follow_partial(now)
        hold_ms = int(r.slo_hold_s * 1000)
        lone = out & ~covered_load[np.maximum(ml, 0)]
        # A meter already an SLO stays one; a new one waits for the hold time.
        held = np.zeros_like(lone)
        held[list(self._active_slo)] = True
        slo_meters = np.flatnonzero(lone & (held | (self._out_ms <= now - hold_ms)))
        self._update_slos(slo_meters, now)
        return self.predictions(), self.slos()

    def _descend(self, d: int) -> int:
        """Move down through devices feeding the same customers to the most downstream protective (or open) one."""
        c = self.conn
        best, cur = d, d
        if self._open[d]:
            return d
        while True:
            nxt = int(self._only_child[cur])
            if nxt == NO_DEVICE:
                return best
            cur = nxt
            if self._open[cur]:
                return cur
            if c.protective[cur]:
                best = cur

    def _upsert(self, d: int, now: int, off: int, first: int, last: int, pons: int, calls: int) -> None:
        c = self.conn
        rec = self._active.get(d)
        if rec is None:
            old = self._by_device.get(d)
            # a device SCADA saw open: its outage began then (meters off well before are a nested outage's)
            first_ms = int(self._open_ms[d]) if self._open[d] else min(first, int(self._open_ms[d]))
            if old is not None and old.state is PredictionState.MERGED:
                rec = old  # a nested outage showing again after its upstream one was restored
                rec.state = PredictionState.PREDICTED
                rec.customers_off = int(c.customers[d])
                rec.merged_into = ""
                rec.log(now, f"active again: upstream restored, {off} meters still report off")
            else:
                rec = _Record(f"P{len(self._records) + 1}", d, PredictionState.PREDICTED, int(c.customers[d]),
                              int(c.customers[d]), first_ms if first_ms != _NEVER else now, last)
                self._records.append(rec)
                self._record_by_id[rec.id] = rec
                self._by_device[d] = rec
                if not self._open[d]:  # SCADA-only outages are logged once, as confirmed, below
                    rec.log(now, f"predicted: {off} of {int(c.customers[d])} meters report off")
            self._active[d] = rec
            for other_d, other in list(self._active.items()):
                if other_d != d and c.is_ancestor(d, other_d):
                    self._merge(other, rec, now)
            for slo in list(self._active_slo.values()):
                load = int(c.meter_load[slo.meter])
                if (c.load_chain[load] == d).any():
                    slo.state = SloState.MERGED
                    slo.merged_into = rec.id
                    slo.log(now, f"part of outage {rec.id} at {c.devices[d].name}")
                    del self._active_slo[slo.meter]
        rec.last_ms = max(rec.last_ms, last, int(self._open_ms[d]) if self._open[d] else -1)
        if first != _NEVER and not self._open[d]:
            rec.first_ms = min(rec.first_ms, first)
        rec.pons, rec.calls = max(rec.pons, pons), max(rec.calls, calls)
        if self._open[d] and not rec.confirmed:
            rec.confirmed = True
            rec.state = PredictionState.CONFIRMED
            rec.first_ms = min(rec.first_ms, int(self._open_ms[d]))
            rec.log(now, f"confirmed: SCADA reports the device open ({off} meters report off)")
        if rec.state is PredictionState.PREDICTED and self.pings_off:
            below = np.isin(c.meter_load, c.downstream_loads(d))
            dead = int((below & self._out & (self._pinged_ms >= self._out_ms)).sum())
            if dead:
                rec.state = PredictionState.CONFIRMED
                rec.log(now, f"confirmed by meter ping: {dead} meters below read dead ({off} meters report off)")

    def _merge(self, rec: _Record, into: _Record, now: int) -> None:
        rec.state = PredictionState.MERGED
        rec.merged_into = into.id
        rec.log(now, f"merged into {into.id} at {self.conn.devices[into.device].name}")
        into.log(now, f"absorbed {rec.id} at {self.conn.devices[rec.device].name}")
        if not self._open[into.device]:  # a SCADA-open device's outage began when it opened
            into.first_ms = min(into.first_ms, rec.first_ms)
        into.pons, into.calls = max(into.pons, rec.pons), max(into.calls, rec.calls)
        del self._active[rec.device]

    def _follow_partial(self, now: int) -> None:
        """A partial restoration's lone stragglers (not a nested outage's: that one has its own prediction): a meter
        whose restoration notice comes late is a later step of this outage. One that never comes back becomes a
        single light out with its own record, and is no longer followed here."""
        c = self.conn
        slo_meters = set(self._active_slo)
        for rec in list(self._partial):
            if rec.state is not PredictionState.RESTORED:
                self._partial.remove(rec)
                continue
            back, still = [], []
            for meter in rec.waiting:
                m = c.meter_index.get(meter)
                if m is None or m in slo_meters:
                    continue  # left the model, or a single light out now (its own record)
                (still if self._out[m] else back).append(m)
            if back:
                at = min(max(int(self._on_ms[back].max()), rec.timeline[-1].time_ms if rec.timeline else
                             rec.first_ms), now)
                rec.customers_off = max(0, rec.customers_off - len(back))
                n = len(back)
                last = rec.timeline[-1] if rec.timeline else None
                if rec.follow_back and last is not None and at - last.time_ms <= _FOLLOW_COALESCE_MS:
                    n += rec.follow_back  # notices trickling in: one step per minute, not one per message
                    rec.timeline.pop()
                rec.follow_back = n
                rec.log(at, f"{n} more customers back" + (f"; {rec.customers_off} still off below"
                                                          if rec.customers_off else ": all back"))
            rec.waiting = [c.meter_ids[m] for m in still]
            if not rec.waiting:
                self._partial.remove(rec)

    def _restore(self, rec: _Record, now: int, still_off: int) -> None:
        d = rec.device
        c = self.conn
        loads = c.downstream_loads(d)
        back = np.isin(c.meter_load, loads) & ~self._out & (self._on_ms >= rec.first_ms)
        rec.prns = int(back.sum())
        rec.state = PredictionState.RESTORED
        rec.customers_off = still_off
        restored = rec.customers_affected - still_off
        note = f"restored {restored} of {rec.customers_affected} customers"
        if still_off:
            note += f"; {still_off} still off below (notices to come, a nested outage or single lights out)"
        # stamped with when supply came back, as the evidence says: SCADA saw the device close, else the meters'
        # own restoration stamps (median: robust to a skewed clock); the analysis time when neither is known
        closed = self._closed_at.get(c.devices[d].name, -1)
        if closed >= rec.first_ms:
            at = closed
        elif back.any():
            at = int(np.median(self._on_ms[back]))
        else:
            at = now
        rec.log(min(max(at, rec.first_ms), now), note)
        del self._active[d]

    def _update_slos(self, meters: np.ndarray, now: int) -> None:
        c = self.conn
        current = set(int(m) for m in meters)
        for m in current:
            slo = self._active_slo.get(m)
            if slo is None:
                slo = _Slo(f"S{len(self._slos) + 1}", m, SloState.OPEN, int(self._out_ms[m]), int(self._last_ms[m]))
                self._slos.append(slo)
                self._slo_by_id[slo.id] = slo
                self._active_slo[m] = slo
                dt = c.load_chain[c.meter_load[m], 0]
                slo.log(now, f"single light out: meter off while {c.devices[int(dt)].name} is energised")
            slo.last_ms = int(self._last_ms[m])
            slo.pons, slo.calls = int(self._pons[m]), int(self._calls[m])
        for m, slo in list(self._active_slo.items()):
            if m not in current:
                slo.state = SloState.RESTORED
                slo.last_ms = max(slo.last_ms, int(self._on_ms[m]))
                slo.log(now, "restored")
                del self._active_slo[m]

    # ---------------------------------------------------------------- results

    def predictions(self, *, active_only: bool = False) -> list[Prediction]:
        return [self._prediction_of(rec) for rec in self._records
                if not active_only or rec.state in (PredictionState.PREDICTED, PredictionState.CONFIRMED)]

    def slos(self, *, active_only: bool = False) -> list[SingleLightOut]:
        return [self._slo_of(slo) for slo in self._slos if not active_only or slo.state is SloState.OPEN]

    def prediction(self, prediction_id: str) -> Prediction | None:
        """The prediction with this id as it is now (whatever its state), None for an unknown id; O(1)."""
        rec = self._record_by_id.get(prediction_id)
        return None if rec is None else self._prediction_of(rec)

    def slo(self, slo_id: str) -> SingleLightOut | None:
        """The single light out with this id as it is now (whatever its state), None for an unknown id; O(1)."""
        slo = self._slo_by_id.get(slo_id)
        return None if slo is None else self._slo_of(slo)

    @property
    def active_counts(self) -> tuple[int, int]:
        """(active predictions, open SLOs): the lengths of ``predictions(active_only=True)`` and
        ``slos(active_only=True)`` in O(1). Active records are exactly those attached to a device or parked (rebase),
        open SLOs those keyed by their meter."""
        return len(self._active) + len(self._parked), len(self._active_slo)

    def _prediction_of(self, rec: _Record) -> Prediction:
        if rec.gone:
            name, kind, feeder = rec.gone
        else:
            dev = self.conn.devices[rec.device]
            name, kind, feeder = dev.name, dev.kind.value, dev.feeder
        return Prediction(rec.id, name, kind, feeder, rec.state, rec.customers_affected, rec.customers_off,
                          rec.first_ms, rec.last_ms, rec.pons, rec.calls, rec.prns, rec.confirmed, rec.merged_into,
                          tuple(rec.timeline))

    def _slo_of(self, slo: _Slo) -> SingleLightOut:
        c = self.conn
        if slo.gone:
            meter, load_name, dt_name = slo.gone
        else:
            load = int(c.meter_load[slo.meter])
            dt = int(c.load_chain[load, 0])
            meter, load_name = c.meter_ids[slo.meter], c.load_names[load]
            dt_name = c.devices[dt].name if dt >= 0 else ""  # behind an open point now
        return SingleLightOut(slo.id, meter, load_name, dt_name, slo.state, slo.first_ms, slo.last_ms, slo.pons,
                              slo.calls, slo.merged_into, tuple(slo.timeline))

    def off_mask(self) -> np.ndarray:
        """Per meter (``conn.meter_ids`` order): believed off now (a copy; the ping plan reads it)."""
        return self._out.copy()

    @property
    def meters_off(self) -> int:
        return int(self._out.sum())
