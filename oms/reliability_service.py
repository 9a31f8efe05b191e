"""IEEE 1366 reliability indices of the server's outage records, a daily SAIDI history with its Major Event Day
threshold, and a daily report written after each local midnight.

- **Customers served** come from the network model: the customers (usage points) of each feeder, found through the
  customer's load (else its bus) and that element's feeder; a model without usage points (IEEE 123) sums the loads'
  ``customer_count``. The model carries no substation or division of its feeders (the CIM import keeps ``Feeder``
  mRID and name only), so ``feeder_areas`` maps feeder names to a :class:`FeederArea`; a feeder it does not name
  belongs to one substation and one division named after the model. An interruption on no known feeder (a bus-bar
  outage, a record without feeder) is grouped under the feeder ``""`` with the whole system's customers served.
- **Interruptions** are :func:`oms.reliability.interruptions_from_outage_records` of the store's records (merged
  records skipped, steps, planned flag) with the substation and division of their feeder filled in; the indices are
  :func:`oms.reliability.assess`, the code of ``dscada reliability``.
- **Daily history**: ``data_dir/reliability.sqlite`` keeps one row per local day (SAIDI, SAIFI, MAIFIe, customer
  interruptions and minutes of the unplanned interruptions that started that day). Rows computed from the records
  replace rows seeded from ``history_path`` (a ``date,saidi_min`` file, the ``dscada reliability --history``
  format); seeding never overwrites a computed row. T_MED for a period is the 2.5β threshold of the rows of the
  ``MED_HISTORY_YEARS`` years before the period's first day, once at least ``med_min_days`` rows exist.
- **Daily report**: a thread wakes every ``poll_s`` and, once the local clock has passed ``report_hour`` hours after
  midnight (the settle delay: late restorations and closures of the evening get in), writes the report of every day
  not yet reported (yesterday; after a stop, up to ``CATCH_UP_DAYS`` missed days) into
  ``data_dir/reports/reliability/<YYYY-MM-DD>/`` and stores that day's history row. Files: ``indices.csv`` (the
  day's indices by system, feeder, substation and division, with and without MEDs, planned apart) and the files of
  :func:`oms.reliability_report.write_report` with the last ``TREND_DAYS`` days of the history as the trend.
  An interruption still ongoing when the report is written is not in it (it counts once it is restored or closed,
  in the day it started): :meth:`ReliabilityService.daily_report` asked again later rewrites the report and the
  day's row with it.
"""

from __future__ import annotations

import csv
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from models.network import NetworkModel
from models.timebase import now_ms
from oms.med import MedThreshold, med_threshold
from oms.outage_records import OutageRecordStore
from oms.reliability import (
    DailyIndices,
    GroupBy,
    Indices,
    Interruption,
    ReliabilityAssessment,
    ReliabilityError,
    ReliabilityOptions,
    assess,
    interruptions_from_outage_records,
)
from oms.reliability_io import read_daily_saidi
from oms.reliability_report import ReportFiles, write_report
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["CATCH_UP_DAYS", "DEFAULT_REPORT_HOUR", "MED_HISTORY_YEARS", "MED_MIN_DAYS", "TREND_DAYS", "CustomersServed",
           "DailyReport", "FeederArea", "HistoryRow", "ReliabilityHistory", "ReliabilityService", "customers_served"]

log = logging.getLogger(__name__)

DEFAULT_REPORT_HOUR = 1.0  # local hours after midnight: the previous day's late restorations and closures are in
MED_HISTORY_YEARS = 5  # IEEE 1366: T_MED from the five previous years
MED_MIN_DAYS = 365  # fewer history rows: no T_MED (a few weeks of data make a meaningless threshold)
TREND_DAYS = 30  # days of history in the report's daily SAIDI chart
CATCH_UP_DAYS = 31  # missed reports written after a stop, at most
_DEFAULT_OPTIONS = ReliabilityOptions()
_RECORDS_LIMIT = 10_000_000  # store.list() default limit is 1000: the indices need every record of the period


@dataclass(frozen=True, slots=True)
class FeederArea:
    substation: str
    division: str


@dataclass(frozen=True, slots=True)
class CustomersServed:
    system: int
    feeder: Mapping[str, int]
    substation: Mapping[str, int]
    division: Mapping[str, int]

    def of(self, group_by: GroupBy) -> dict[str, int]:
        return dict({GroupBy.FEEDER: self.feeder, GroupBy.SUBSTATION: self.substation,
                     GroupBy.DIVISION: self.division}[group_by])


def customers_served(model: NetworkModel, areas: Mapping[str, FeederArea] | None = None) -> CustomersServed:
    """Customers served per feeder (by name), substation and division of ``model`` (see the module text)."""
    names = {f.mrid: f.name for f in model.feeders}
    per_feeder: dict[str, int] = {}
    if model.customers:
        for c in model.customers:
            mrid = model.loads[c.load].feeder_mrid if c.load is not None else None
            if mrid is None and c.bus is not None:
                mrid = model.buses[c.bus].feeder_mrid
            name = names.get(mrid or "", "")
            per_feeder[name] = per_feeder.get(name, 0) + 1
    else:
        for load in model.loads:
            name = names.get(load.feeder_mrid or "", "")
            per_feeder[name] = per_feeder.get(name, 0) + max(0, load.customer_count)
    system = sum(per_feeder.values())
    if system <= 0:
        raise ReliabilityError(f"network {model.name!r} serves no customers (no usage points, no load customer "
                               "counts): the indices need customers served")
    default = FeederArea(model.name, model.name)
    sub: dict[str, int] = {}
    div: dict[str, int] = {}
    for name, n in per_feeder.items():
        area = (areas or {}).get(name, default)
        sub[area.substation] = sub.get(area.substation, 0) + n
        div[area.division] = div.get(area.division, 0) + n
    per_feeder.pop("", None)  # customers on no feeder count in the system, substation and division only
    return CustomersServed(system, dict(sorted(per_feeder.items())), dict(sorted(sub.items())),
                           dict(sorted(div.items())))


@dataclass(frozen=True, slots=True)
class HistoryRow:
    day: date
    saidi_min: float
    saifi: float  # NaN for a seeded row (the history file has SAIDI only)
    maifie: float
    customer_interruptions: int
    customer_minutes: float
    source: str  # "records" or "seed"


class ReliabilityHistory(SqliteStore):
    """One row per local day of daily SAIDI (and the reports written), in ``reliability.sqlite``."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS daily_saidi (
        day TEXT PRIMARY KEY,
        saidi_min REAL NOT NULL,
        saifi REAL,
        maifie REAL,
        customer_interruptions INTEGER NOT NULL DEFAULT 0,
        customer_minutes REAL NOT NULL DEFAULT 0,
        source TEXT NOT NULL,
        computed_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS reports (
        day TEXT PRIMARY KEY,
        directory TEXT NOT NULL,
        written_ms INTEGER NOT NULL
    );
    """

    def seed(self, rows: Mapping[date, float], when_ms: int) -> int:
        """Seeded rows replace older seeded rows, never rows computed from the records; returns rows written."""
        try:
            with self.conn() as c:
                cur = c.executemany(
                    "INSERT INTO daily_saidi (day, saidi_min, saifi, maifie, source, computed_ms) "
                    "VALUES (?, ?, NULL, NULL, 'seed', ?) ON CONFLICT(day) DO UPDATE SET "
                    "saidi_min = excluded.saidi_min, computed_ms = excluded.computed_ms "
                    "WHERE daily_saidi.source = 'seed'",
                    [(d.isoformat(), float(v), when_ms) for d, v in sorted(rows.items())])
                return cur.rowcount
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot seed the daily SAIDI history: {exc}") from exc

    def put(self, row: HistoryRow, when_ms: int) -> None:
        try:
            with self.conn() as c:
                c.execute("INSERT OR REPLACE INTO daily_saidi VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (row.day.isoformat(), row.saidi_min, _nullable(row.saifi), _nullable(row.maifie),
                           row.customer_interruptions, row.customer_minutes, row.source, when_ms))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store the daily SAIDI of {row.day}: {exc}") from exc

    def rows(self, first: date, last: date) -> list[HistoryRow]:
        """Rows from ``first`` to ``last`` inclusive, oldest first."""
        try:
            got = self.conn().execute(
                "SELECT day, saidi_min, saifi, maifie, customer_interruptions, customer_minutes, source "
                "FROM daily_saidi WHERE day >= ? AND day <= ? ORDER BY day", (first.isoformat(), last.isoformat()))
            return [HistoryRow(date.fromisoformat(d), s, math.nan if f is None else f, math.nan if m is None else m,
                               ci, cmi, src) for d, s, f, m, ci, cmi, src in got.fetchall()]
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the daily SAIDI history: {exc}") from exc

    def mark_reported(self, day: date, directory: Path, when_ms: int) -> None:
        try:
            with self.conn() as c:
                c.execute("INSERT OR REPLACE INTO reports VALUES (?, ?, ?)", (day.isoformat(), str(directory),
                                                                              when_ms))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot note the report of {day}: {exc}") from exc

    def last_reported(self) -> date | None:
        try:
            row = self.conn().execute("SELECT max(day) FROM reports").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the reports written: {exc}") from exc
        return date.fromisoformat(row[0]) if row and row[0] else None


def _nullable(v: float) -> float | None:
    return None if math.isnan(v) else v


@dataclass(frozen=True, slots=True)
class DailyReport:
    day: date
    directory: Path
    indices_csv: Path
    files: ReportFiles
    assessment: ReliabilityAssessment  # the day, grouped by feeder
    major_event_day: bool

    def paths(self) -> tuple[Path, ...]:
        return (self.indices_csv, *self.files.all())


@dataclass(frozen=True, slots=True)
class _Clock:
    utc_offset: timedelta
    now_ms: Callable[[], int] = field(default=now_ms)

    def local(self, ms: int) -> datetime:
        return (datetime.fromtimestamp(ms / 1000.0, UTC) + self.utc_offset).replace(tzinfo=None)

    def utc_ms(self, local: datetime) -> int:
        return int(round((local - self.utc_offset).replace(tzinfo=UTC).timestamp() * 1000))


class ReliabilityService:
    """The server's reliability indices (see the module text); ``start()``/``stop()`` run the daily report thread.
    ``clock`` (UTC epoch ms) is injectable so tests move through midnights without waiting for them."""

    def __init__(self, store: OutageRecordStore, model: NetworkModel, data_dir: str | Path, *,
                 utc_offset: timedelta = timedelta(0), options: ReliabilityOptions = _DEFAULT_OPTIONS,
                 history_path: str | Path | None = None, report_hour: float = DEFAULT_REPORT_HOUR,
                 feeder_areas: Mapping[str, FeederArea] | None = None, med_min_days: int = MED_MIN_DAYS,
                 clock: Callable[[], int] = now_ms, poll_s: float = 30.0) -> None:
        if not (0.0 <= report_hour < 24.0):
            raise ReliabilityError(f"reliability report hour must be within [0, 24) (got {report_hour})")
        if abs(utc_offset) > timedelta(hours=14):
            raise ReliabilityError(f"reliability UTC offset {utc_offset} is beyond ±14 h")
        if med_min_days < 2:
            raise ReliabilityError(f"med_min_days must be at least 2 (got {med_min_days})")
        if poll_s <= 0:
            raise ReliabilityError(f"poll_s must be positive (got {poll_s})")
        self.store = store
        self.model = model
        self.options = options
        self.areas = dict(feeder_areas or {})
        self.served = customers_served(model, self.areas)
        self.report_hour = report_hour
        self.med_min_days = med_min_days
        self.poll_s = poll_s
        self.data_dir = Path(data_dir)
        self.reports_dir = self.data_dir / "reports" / "reliability"
        self._clock = _Clock(utc_offset, clock)
        self._default_area = FeederArea(model.name, model.name)
        seed = read_daily_saidi(history_path) if history_path is not None else {}  # a bad file fails before opening
        self.history = ReliabilityHistory(self.data_dir / "reliability.sqlite")
        self._report_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if seed:
            seeded = self.history.seed(seed, clock())
            log.info("reliability: %d days of daily SAIDI seeded from %s", seeded, history_path)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="reliability-reports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None
        self.history.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
            except Exception:  # a failed report must not end the thread: it is tried again at the next poll
                log.exception("reliability: daily report failed")
            self._stop.wait(self.poll_s)

    # ------------------------------------------------------------------------------------------ time
    def local_now(self) -> datetime:
        return self._clock.local(self._clock.now_ms())

    def local_time(self, ms: int) -> datetime:
        return self._clock.local(ms)

    def utc_ms(self, local: datetime) -> int:
        return self._clock.utc_ms(local)

    # ------------------------------------------------------------------------------------------ indices
    def interruptions(self, since: datetime | None = None) -> list[Interruption]:
        """Interruptions of the records started at or after local ``since`` (all when None), with the substation
        and division of their feeder."""
        since_ms = None if since is None else self.utc_ms(since)
        records = self.store.list(include_merged=False, since_ms=since_ms, limit=_RECORDS_LIMIT)
        out = []
        for i in interruptions_from_outage_records(records, utc_offset=self._clock.utc_offset):
            area = self.areas.get(i.feeder, self._default_area)
            out.append(replace(i, substation=area.substation, division=area.division))
        return out

    def med_threshold(self, first_day: date) -> MedThreshold | None:
        """T_MED from the history rows of the ``MED_HISTORY_YEARS`` years before ``first_day``; None when fewer
        than ``med_min_days`` rows (or fewer than two days with SAIDI > 0) exist."""
        rows = self.history.rows(first_day - timedelta(days=365 * MED_HISTORY_YEARS), first_day - timedelta(days=1))
        if len(rows) < self.med_min_days or sum(1 for r in rows if r.saidi_min > 0) < 2:
            return None
        return med_threshold([r.saidi_min for r in rows], [r.day for r in rows])

    def assess(self, start: datetime, end: datetime, group_by: GroupBy | None = None) -> ReliabilityAssessment:
        """Indices of the interruptions started in [start, end) (local naive datetimes), each group over its own
        customers served, with and without the Major Event Days of the T_MED before ``start``."""
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ReliabilityError("reliability period: start and end must be naive datetimes in the utility's clock")
        records = self.interruptions(since=start)
        served = None
        if group_by is not None:
            served = self.served.of(group_by)
            for name in {getattr(i, group_by.value) for i in records} - served.keys():
                served[name] = self.served.system  # no feeder (a bus-bar outage) or one the model lacks
        return assess(records, self.served.system, period_start=start, period_end=end,
                      history=self.med_threshold(start.date()), group_by=group_by, group_customers=served,
                      options=self.options)

    # ------------------------------------------------------------------------------------------ daily report
    def run_due(self) -> list[DailyReport]:
        """Write the reports that are due by the clock (see the module text); returns those written."""
        now = self.local_now()
        last_due = now.date() - timedelta(days=1)
        if now - datetime.combine(now.date(), time.min) < timedelta(hours=self.report_hour):
            last_due -= timedelta(days=1)
        done = self.history.last_reported()
        first = last_due if done is None else max(done + timedelta(days=1),
                                                  last_due - timedelta(days=CATCH_UP_DAYS - 1))
        written = []
        day = first
        while day <= last_due and not self._stop.is_set():
            written.append(self.daily_report(day))
            day += timedelta(days=1)
        return written

    def report_dir(self, day: date) -> Path:
        return self.reports_dir / day.isoformat()

    def daily_report(self, day: date) -> DailyReport:
        """Write the report of local ``day`` from the records as they are now (a late restoration or closure since
        the scheduled report is in) and, once the day is over, store its history row. Today's report is partial;
        a day after today is refused."""
        today = self.local_now().date()
        if day > today:
            raise ReliabilityError(f"reliability report of {day}: the day has not begun (today is {today})")
        with self._report_lock:
            folder = self.report_dir(day)
            start = datetime.combine(day, time.min)
            end = start + timedelta(days=1)
            a = self.assess(start, end, GroupBy.FEEDER)
            indices_csv = folder / "indices.csv"
            med_day = day in a.major_event_days
            ix = a.indices
            complete = day < today
            if complete:
                self.history.put(HistoryRow(day, ix.saidi_min, ix.saifi, ix.maifie, ix.customer_interruptions,
                                            ix.customer_minutes, "records"), self._clock.now_ms())
            trend = self._trend(day, a)
            files = write_report(a, folder, trend=trend)
            extra = [self.assess(start, end, g) for g in (GroupBy.SUBSTATION, GroupBy.DIVISION)]
            _write_indices_csv(indices_csv, a, extra)
            if complete:
                self.history.mark_reported(day, folder, self._clock.now_ms())
            log.info("reliability: report of %s written to %s (SAIDI %.3f min%s)", day, folder, ix.saidi_min,
                     ", Major Event Day" if med_day else "")
            return DailyReport(day, folder, indices_csv, files, a, med_day)

    def _trend(self, day: date, a: ReliabilityAssessment) -> list[DailyIndices]:
        rows = {r.day: r for r in self.history.rows(day - timedelta(days=TREND_DAYS - 1), day)}
        t_med = a.med.t_med_min if a.med is not None else math.inf
        out = []
        for k in range(TREND_DAYS):
            d = day - timedelta(days=TREND_DAYS - 1 - k)
            if d == day:  # the day itself from its assessment (an incomplete day has no row yet)
                ix = a.indices
                out.append(DailyIndices(d, ix.saifi, ix.saidi_min, ix.maifie, ix.customer_interruptions,
                                        ix.customer_minutes, ix.saidi_min > t_med))
            elif d in rows:
                r = rows[d]
                out.append(DailyIndices(d, r.saifi, r.saidi_min, r.maifie, r.customer_interruptions,
                                        r.customer_minutes, r.saidi_min > t_med))
        return out


_INDEX_FIELDS = ("saifi", "saidi_min", "caidi_min", "caifi", "ctaidi_min", "asai", "maifi", "maifie",
                 "customers_served", "customer_interruptions", "customer_minutes", "customers_interrupted",
                 "sustained_interruptions", "momentary_interruptions")


def _row(scope: str, name: str, basis: str, ix: Indices) -> list[str]:
    def fmt(v: float | int) -> str:
        if isinstance(v, int):
            return str(v)
        return "" if math.isnan(v) else f"{v:.6g}"

    return [scope, name, basis, *(fmt(getattr(ix, f)) for f in _INDEX_FIELDS)]


def _write_indices_csv(path: Path, by_feeder: ReliabilityAssessment, others: Sequence[ReliabilityAssessment]) -> None:
    """``scope,name,basis,<indices>``: basis ``unplanned`` (MEDs included), ``unplanned_excluding_med`` (only with a
    T_MED) or ``planned``; an undefined index (CAIDI without interruptions) is empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["scope", "name", "basis", *_INDEX_FIELDS])
        w.writerow(_row("system", "", "unplanned", by_feeder.indices))
        if by_feeder.indices_excluding_med is not None:
            w.writerow(_row("system", "", "unplanned_excluding_med", by_feeder.indices_excluding_med))
        w.writerow(_row("system", "", "planned", by_feeder.planned))
        for a in (by_feeder, *others):
            scope = a.group_by.value if a.group_by is not None else "system"
            for name, ix in a.groups.items():
                w.writerow(_row(scope, name, "unplanned", ix))
                if name in a.groups_excluding_med:
                    w.writerow(_row(scope, name, "unplanned_excluding_med", a.groups_excluding_med[name]))
