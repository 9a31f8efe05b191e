"""IEEE 1366-2022 distribution reliability indices from interruption records.

Definitions (Ni customers interrupted by one interruption, ri its duration in minutes, NT customers served, CN
distinct customers with at least one sustained interruption in the period):

- SAIFI = ΣNi / NT, SAIDI = Σri·Ni / NT (minutes), CAIDI = SAIDI / SAIFI (minutes),
- CAIFI = ΣNi / CN, CTAIDI = Σri·Ni / CN (minutes), ASAI = (NT·T − Σri·Ni/60) / (NT·T) with T the period in hours,
- MAIFI = ΣNmi / NT over momentary interruptions, MAIFIe = ΣNme / NT over momentary interruption *events*.

Rules this module applies (documented because the standard leaves them to the utility):

- An interruption lasting at most ``momentary_threshold_s`` (5 min by default) is momentary, a longer one sustained.
- Planned interruptions are excluded from every index and reported apart (same formulas over planned records only).
- An interruption belongs to the period (and day) in which it starts and counts with its whole duration; this is how
  IEEE 1366 assigns customer minutes to days for Major Event Days.
- CN: a record may carry the ids of the customers it interrupted (exact: CN is the size of the union over the
  records of the group and period) or a count ``distinct_customers`` of its customers not already interrupted
  earlier in the reporting period (the producer's promise); a record with neither counts all its customers as
  distinct (disjoint sets assumed: CAIFI then under-estimates, never over-estimates).
- MAIFIe: momentary records with the same ``event_id`` (one reclosing sequence) are one event; the customers of the
  event are the union of their ids (or the largest record when there are no ids) less the customers a sustained
  record of the same event left off (a sequence that ends in lock-out is a sustained interruption, not a momentary
  event). A momentary record without ``event_id`` is an event of its own.
- An index whose denominator is zero (CAIDI with no sustained interruption, CAIFI with CN = 0) is NaN (JSON null).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

import numpy as np

from oms.errors import OmsError
from oms.med import MedThreshold
from oms.outage_records import OutageRecord, OutageStatus

__all__ = [
    "DEFAULT_MOMENTARY_THRESHOLD_S", "DailyIndices", "GroupBy", "Indices", "Interruption", "InterruptionTable",
    "ReliabilityAssessment", "ReliabilityError", "ReliabilityOptions", "assess", "compute_indices", "daily_indices",
    "indices_by", "interruptions_from_outage_records",
]

DEFAULT_MOMENTARY_THRESHOLD_S = 300.0  # IEEE 1366: momentary when restored within 5 minutes


class ReliabilityError(OmsError):
    """Invalid interruption records, customer counts or period; the message names the record or group."""


class GroupBy(StrEnum):
    FEEDER = "feeder"
    SUBSTATION = "substation"
    DIVISION = "division"


@dataclass(frozen=True, slots=True)
class Interruption:
    """One interruption of supply to ``customers`` customers from ``start`` to ``end`` (naive datetimes in the
    utility's clock; days are cut at its midnight)."""

    start: datetime
    end: datetime
    customers: int
    feeder: str = ""
    substation: str = ""
    division: str = ""
    planned: bool = False
    cause: str = ""
    event_id: str = ""  # one reclosing sequence: its momentary interruptions are one MAIFIe event
    customer_ids: tuple[str, ...] = ()  # exact CN when given; len must equal customers
    distinct_customers: int = -1  # customers of this record not interrupted earlier in the period; -1: unknown

    def __post_init__(self) -> None:
        where = f"interruption starting {self.start.isoformat()}" + (f" on {self.feeder}" if self.feeder else "")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ReliabilityError(f"{where}: start and end must be naive datetimes in the utility's clock")
        if self.end < self.start:
            raise ReliabilityError(f"{where}: end {self.end.isoformat()} is before start")
        if self.customers < 0:
            raise ReliabilityError(f"{where}: customers must not be negative (got {self.customers})")
        if self.customer_ids and len(self.customer_ids) != self.customers:
            raise ReliabilityError(f"{where}: {len(self.customer_ids)} customer ids but customers={self.customers}")
        if self.distinct_customers > self.customers:
            raise ReliabilityError(f"{where}: distinct_customers {self.distinct_customers} exceeds customers "
                                   f"{self.customers}")

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class ReliabilityOptions:
    momentary_threshold_s: float = DEFAULT_MOMENTARY_THRESHOLD_S

    def __post_init__(self) -> None:
        if not (0.0 <= self.momentary_threshold_s <= 3600.0):
            raise ReliabilityError(f"momentary threshold must be between 0 and 3600 s "
                                   f"(got {self.momentary_threshold_s})")


@dataclass(frozen=True, slots=True)
class Indices:
    """IEEE 1366 indices of one set of records over one period; durations in minutes."""

    customers_served: int
    period_hours: float
    sustained_interruptions: int  # records
    customer_interruptions: int  # ΣNi
    customer_minutes: float  # Σri·Ni
    customers_interrupted: int  # CN
    momentary_interruptions: int  # records
    momentary_customer_interruptions: int  # ΣNmi
    momentary_customer_events: int  # ΣNme
    saifi: float
    saidi_min: float
    caidi_min: float
    caifi: float
    ctaidi_min: float
    asai: float
    maifi: float
    maifie: float

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain JSON-able values; NaN becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in ((name, getattr(self, name)) for name in self.__slots__)}


@dataclass(frozen=True, slots=True)
class DailyIndices:
    day: date
    saifi: float
    saidi_min: float
    maifie: float
    customer_interruptions: int
    customer_minutes: float
    major_event_day: bool


class InterruptionTable:
    """The records as numpy columns, built once; every index is a masked reduction over them."""

    def __init__(self, records: Sequence[Interruption], options: ReliabilityOptions = ReliabilityOptions()) -> None:
        self.records = tuple(records)
        self.options = options
        n = len(self.records)
        self.start = np.array([r.start for r in self.records], dtype="datetime64[s]").reshape(n)
        self.end = np.array([r.end for r in self.records], dtype="datetime64[s]").reshape(n)
        self.duration_min = (self.end - self.start).astype(np.int64) / 60.0
        self.customers = np.array([r.customers for r in self.records], dtype=np.int64).reshape(n)
        self.planned = np.array([r.planned for r in self.records], dtype=bool).reshape(n)
        self.momentary = self.duration_min * 60.0 <= options.momentary_threshold_s
        self.day = self.start.astype("datetime64[D]")
        self._keys = {g: np.array([getattr(r, g.value) for r in self.records], dtype=object).reshape(n)
                      for g in GroupBy}

    def __len__(self) -> int:
        return len(self.records)

    def group_values(self, group_by: GroupBy) -> np.ndarray:
        return self._keys[group_by]

    def in_period(self, period_start: datetime, period_end: datetime) -> np.ndarray:
        return (self.start >= np.datetime64(period_start, "s")) & (self.start < np.datetime64(period_end, "s"))

    def on_days(self, days: Iterable[date]) -> np.ndarray:
        wanted = np.array(sorted(days), dtype="datetime64[D]")
        return np.isin(self.day, wanted)


def _distinct_customers(table: InterruptionTable, idx: np.ndarray) -> int:
    ids: set[str] = set()
    counted = 0
    for i in idx:
        r = table.records[i]
        if r.customer_ids:
            ids.update(r.customer_ids)
        else:
            counted += r.distinct_customers if r.distinct_customers >= 0 else r.customers
    return len(ids) + counted


def _momentary_events(table: InterruptionTable, mom_idx: np.ndarray, sus_idx: np.ndarray) -> int:
    events: dict[str, list[int]] = {}
    for i in mom_idx:
        key = table.records[i].event_id or f"#record-{i}"
        events.setdefault(key, []).append(int(i))
    sustained_by_event: dict[str, list[int]] = {}
    for i in sus_idx:
        if table.records[i].event_id in events:
            sustained_by_event.setdefault(table.records[i].event_id, []).append(int(i))
    total = 0
    for key, members in events.items():
        locked = sustained_by_event.get(key, [])
        recs = [table.records[i] for i in members]
        locked_recs = [table.records[i] for i in locked]
        if all(r.customer_ids for r in recs) and all(r.customer_ids for r in locked_recs):
            ids = set().union(*(r.customer_ids for r in recs)) - set().union(*(r.customer_ids for r in locked_recs))
            total += len(ids)
        else:
            total += max(0, max(r.customers for r in recs) - sum(r.customers for r in locked_recs))
    return total


def compute_indices(table: InterruptionTable, mask: np.ndarray, customers_served: int, period_hours: float) -> Indices:
    """Indices over the records selected by ``mask`` (planned records must already be excluded or selected alone)."""
    if customers_served <= 0:
        raise ReliabilityError(f"customers served must be positive (got {customers_served})")
    if period_hours <= 0:
        raise ReliabilityError(f"period must be longer than zero (got {period_hours} h)")
    sustained = mask & ~table.momentary
    momentary = mask & table.momentary
    sus_idx = np.flatnonzero(sustained)
    mom_idx = np.flatnonzero(momentary)
    ni = int(table.customers[sustained].sum())
    cmi = float((table.customers[sustained] * table.duration_min[sustained]).sum())
    cn = _distinct_customers(table, sus_idx)
    nmi = int(table.customers[momentary].sum())
    nme = _momentary_events(table, mom_idx, sus_idx)
    nt = float(customers_served)
    saifi = ni / nt
    saidi = cmi / nt
    nan = float("nan")
    return Indices(
        customers_served=int(customers_served), period_hours=float(period_hours),
        sustained_interruptions=len(sus_idx), customer_interruptions=ni, customer_minutes=cmi,
        customers_interrupted=cn, momentary_interruptions=len(mom_idx), momentary_customer_interruptions=nmi,
        momentary_customer_events=nme, saifi=saifi, saidi_min=saidi, caidi_min=saidi / saifi if ni else nan,
        caifi=ni / cn if cn else nan, ctaidi_min=cmi / cn if cn else nan,
        asai=(nt * period_hours - cmi / 60.0) / (nt * period_hours), maifi=nmi / nt, maifie=nme / nt)


def indices_by(table: InterruptionTable, mask: np.ndarray, group_by: GroupBy, customers_served: Mapping[str, int],
               period_hours: float) -> dict[str, Indices]:
    """Indices per group (feeder, substation or division) with each group's own customers served. Every group that
    has records in ``mask`` must be in ``customers_served``; groups served but without records get zero indices."""
    keys = table.group_values(group_by)
    present = sorted({str(k) for k in keys[mask]})
    missing = [k or "(blank)" for k in present if k not in customers_served]
    if missing:
        raise ReliabilityError(f"customers served unknown for {group_by.value} {', '.join(missing)}")
    return {name: compute_indices(table, mask & (keys == name), customers_served[name], period_hours)
            for name in sorted(set(present) | set(customers_served))}


def daily_indices(table: InterruptionTable, mask: np.ndarray, customers_served: int, first_day: date, last_day: date,
                  major_event_days: frozenset[date] = frozenset()) -> tuple[DailyIndices, ...]:
    """One row per day from ``first_day`` to ``last_day`` inclusive (days without interruptions included)."""
    out = []
    day = first_day
    while day <= last_day:
        ix = compute_indices(table, mask & (table.day == np.datetime64(day, "D")), customers_served, 24.0)
        out.append(DailyIndices(day=day, saifi=ix.saifi, saidi_min=ix.saidi_min, maifie=ix.maifie,
                                customer_interruptions=ix.customer_interruptions,
                                customer_minutes=ix.customer_minutes, major_event_day=day in major_event_days))
        day += timedelta(days=1)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ReliabilityAssessment:
    """Everything the CLI, the report and the server show for one period."""

    period_start: datetime
    period_end: datetime  # exclusive
    momentary_threshold_s: float
    records_total: int
    records_planned: int
    indices: Indices  # unplanned, Major Event Days included
    planned: Indices  # planned interruptions alone, reported apart
    med: MedThreshold | None
    major_event_days: tuple[date, ...]
    indices_excluding_med: Indices | None  # None without a history
    group_by: GroupBy | None
    group_basis: str  # "group": each group's own customers served; "system": contributions to the system indices
    groups: Mapping[str, Indices] = field(default_factory=dict)
    groups_excluding_med: Mapping[str, Indices] = field(default_factory=dict)
    feeder_customer_minutes: Mapping[str, float] = field(default_factory=dict)  # unplanned, for "worst feeders"
    daily: tuple[DailyIndices, ...] = ()


def assess(records: Sequence[Interruption], customers_served: int, *, period_start: datetime | None = None,
           period_end: datetime | None = None, history: MedThreshold | None = None, group_by: GroupBy | None = None,
           group_customers: Mapping[str, int] | None = None,
           options: ReliabilityOptions = ReliabilityOptions()) -> ReliabilityAssessment:
    """Indices for the period (default: midnight of the first record's day to midnight after the last one's), with
    and without the Major Event Days that ``history`` (a T_MED) identifies in it, per group when asked. Without
    ``group_customers`` the group indices use the system's customers served: each group's contribution."""
    if not records and (period_start is None or period_end is None):
        raise ReliabilityError("no interruption records and no period given")
    table = InterruptionTable(records, options)
    if period_start is None:
        period_start = datetime.combine(min(r.start for r in records).date(), datetime.min.time())
    if period_end is None:
        period_end = datetime.combine(max(r.start for r in records).date() + timedelta(days=1), datetime.min.time())
    if period_end <= period_start:
        raise ReliabilityError(f"period end {period_end.isoformat()} is not after its start {period_start.isoformat()}")
    hours = (period_end - period_start).total_seconds() / 3600.0
    in_period = table.in_period(period_start, period_end)
    unplanned = in_period & ~table.planned
    first_day = period_start.date()
    last_day = (period_end - timedelta(microseconds=1)).date()
    daily = daily_indices(table, unplanned, customers_served, first_day, last_day)
    meds: tuple[date, ...] = ()
    without_med = None
    if history is not None:
        meds = tuple(d.day for d in daily if d.saidi_min > history.t_med_min)
        daily = tuple(DailyIndices(d.day, d.saifi, d.saidi_min, d.maifie, d.customer_interruptions,
                                   d.customer_minutes, d.day in meds) for d in daily)
        without_med = compute_indices(table, unplanned & ~table.on_days(meds), customers_served, hours)
    group_customers_given = group_customers is not None
    groups: dict[str, Indices] = {}
    groups_wo: dict[str, Indices] = {}
    if group_by is not None:
        if group_customers is None:  # each group's contribution to the system indices
            names = {str(k) for k in table.group_values(group_by)[unplanned]}
            group_customers = dict.fromkeys(names, customers_served)
        groups = indices_by(table, unplanned, group_by, group_customers, hours)
        if history is not None:
            groups_wo = indices_by(table, unplanned & ~table.on_days(meds), group_by, group_customers, hours)
    feeders = table.group_values(GroupBy.FEEDER)
    sustained = unplanned & ~table.momentary
    cmi_by_feeder: dict[str, float] = {}
    for name, cmi in zip(feeders[sustained], table.customers[sustained] * table.duration_min[sustained], strict=True):
        cmi_by_feeder[str(name)] = cmi_by_feeder.get(str(name), 0.0) + float(cmi)
    return ReliabilityAssessment(
        period_start=period_start, period_end=period_end, momentary_threshold_s=options.momentary_threshold_s,
        records_total=int(in_period.sum()), records_planned=int((in_period & table.planned).sum()),
        indices=compute_indices(table, unplanned, customers_served, hours),
        planned=compute_indices(table, in_period & table.planned, customers_served, hours), med=history,
        major_event_days=meds, indices_excluding_med=without_med, group_by=group_by,
        group_basis="group" if group_customers_given else "system", groups=groups,
        groups_excluding_med=groups_wo,
        feeder_customer_minutes=dict(sorted(cmi_by_feeder.items(), key=lambda kv: -kv[1])), daily=daily)


def interruptions_from_outage_records(records: Iterable[OutageRecord], *,
                                      utc_offset: timedelta = timedelta(0)) -> list[Interruption]:
    """Interruptions of the server's outage records (times shifted by ``utc_offset`` into the utility's clock).

    A record's restoration steps say when which number of customers got supply back (a partial restoration is a
    step). A record without steps (FLISR's own): its ``customers_restored`` were off from ``started_ms`` to
    ``restored_ms``. Its ``customers_still_off`` when it was closed were off until ``closed_ms`` (the repair; an
    older record without it: ``updated_ms``); customers handed to a nested outage's own record are not in it.
    Records merged into another (one trip seen by FLISR and the OMS) are skipped; customers of a record not yet
    restored or closed are ongoing and not counted. Planned records stay planned (IEEE 1366 reports them apart)."""
    def clock(ms: int) -> datetime:
        return (datetime.fromtimestamp(ms / 1000.0, UTC) + utc_offset).replace(tzinfo=None)

    out: list[Interruption] = []
    for r in records:
        if r.started_ms < 0 or r.merged_into:
            continue
        # Parts are disjoint sets of customers, so they get different event ids: a FLISR restoration within the
        # momentary threshold is a momentary event for the restored customers whatever the rest went through.
        ref = f"{r.source}/{r.source_ref}"

        def part(end_ms: int, customers: int, suffix: str, r: OutageRecord = r, ref: str = ref) -> None:
            if customers > 0 and end_ms >= r.started_ms:
                out.append(Interruption(clock(r.started_ms), clock(end_ms), customers, feeder=r.feeder,
                                        planned=r.planned, cause=r.cause or r.tripped_device, event_id=ref + suffix))

        if r.steps:
            for k, step in enumerate(r.steps):
                part(step.time_ms, step.customers, f"/step-{k + 1}")
        elif r.restored_ms >= r.started_ms:
            part(r.restored_ms, r.customers_restored, "")
        if r.status is OutageStatus.CLOSED:
            part(r.closed_ms if r.closed_ms >= 0 else r.updated_ms, r.customers_still_off, "/repair")
    return out
