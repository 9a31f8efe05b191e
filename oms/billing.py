"""Billing feed (seed: "Daily Energy Values"): the energy of every feeder per local day in 15-minute (96) and
one-hour (24) blocks, each with a quality code, stored daily in ``data_dir/billing.sqlite`` and exported as CSV.

Where a feeder's head has an energy counter (a COUNTER point in kWh, Wh or MWh bound to the feeder's head breaker
or to the feeder itself) the blocks come from the counter; elsewhere, and for blocks the counter cannot give, the
feeder-head active power (the P points of the head breaker, summed over phases) is integrated from the historian.
How samples become block energies and qualities: ``oms.billing_energy``. An hour is the sum of its four quarters and
takes the worst of their qualities (an hour with an estimated quarter is estimated, with a missing one missing).

The utility's day is local time at a fixed UTC offset (``utc_offset``, e.g. +05:30; no daylight saving). After each
local midnight plus ``settle_delay_s`` (late field data and historian writes) the service computes and stores the
previous day; ``compute_day`` recomputes any day on demand. An operator's manual value (CONTROL permission) is kept
with who, when and why, audited, and never overwritten by a recomputation: it replaces the computed block when read.

CSV export (``export_csv``), one row per block, header first:
``day`` local date; ``feeder`` feeder name; ``resolution_min`` 15 or 60; ``start_local`` block start in local time
(ISO 8601 with offset); ``start_utc`` block start in UTC (ISO 8601, Z); ``kwh`` energy into the feeder in kWh, empty
when missing; ``quality`` good | estimated | missing | manual; ``source`` counter | integrated | manual | mixed | none;
``operator`` and ``reason`` of a manual value (else empty).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path

import numpy as np

from dms.live_state import feeder_head_points
from models.config import StationConfig
from models.network import NetworkModel
from models.points import PointKind
from models.timebase import now_ms
from oms.billing_energy import BlockQuality, BlockSeries, EnergySettings, counter_blocks, integrate_blocks, worst
from oms.billing_store import BillingStore, ManualValue, StoredBlock
from oms.errors import OmsError
from scada.audit import AuditLog
from scada.historian import SAMPLE_DTYPE, Historian

__all__ = [
    "BillingError",
    "BillingService",
    "BillingSettings",
    "BlockQuality",
    "DailyEnergy",
    "EnergyBlock",
    "EnergySource",
    "FeederDay",
    "FeederMeters",
    "Resolution",
    "UnknownFeederError",
    "feeder_meters",
]

log = logging.getLogger(__name__)

_MS_PER_MIN = 60_000
_POWER_KW_PER_UNIT = {"kW": 1.0, "W": 1e-3, "MW": 1e3}
_ENERGY_KWH_PER_UNIT = {"kWh": 1.0, "Wh": 1e-3, "MWh": 1e3}


class BillingError(OmsError):
    """A billing request that cannot be answered as asked (unknown feeder, misaligned block, future day)."""


class UnknownFeederError(BillingError, LookupError):
    """No feeder of that name or mRID in the network model."""


class EnergySource(StrEnum):
    COUNTER = "counter"  # difference of an energy counter
    INTEGRATED = "integrated"  # feeder-head active power integrated over time
    MANUAL = "manual"  # entered by an operator
    MIXED = "mixed"  # an hour built from quarters of different sources
    NONE = "none"  # the feeder has no meter at all


class Resolution(StrEnum):
    MIN_15 = "15"
    MIN_60 = "60"

    @property
    def minutes(self) -> int:
        return int(self.value)

    @classmethod
    def of(cls, minutes: int) -> Resolution:
        try:
            return cls(str(int(minutes)))
        except ValueError:
            raise BillingError(f"billing resolution must be 15 or 60 minutes, not {minutes}") from None


@dataclass(frozen=True, slots=True)
class BillingSettings:
    settle_delay_s: float = 900.0  # after local midnight, before the previous day is computed
    catch_up_days: int = 3  # days before the due one also computed if they never were after settling (downtime)
    energy: EnergySettings = field(default_factory=EnergySettings)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.settle_delay_s) and self.settle_delay_s >= 0):
            raise ValueError(f"billing settings: settle_delay_s must be a non-negative number, not "
                             f"{self.settle_delay_s}")
        if not 0 <= self.catch_up_days <= 31:
            raise ValueError(f"billing settings: catch_up_days must be 0..31, not {self.catch_up_days}")


@dataclass(frozen=True, slots=True)
class FeederMeters:
    """What measures a feeder's energy: counters (kWh) and per-phase active-power points (kW) at its head."""

    feeder_mrid: str
    feeder: str  # name
    counter_points: tuple[int, ...]
    power_points: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EnergyBlock:
    feeder: str
    resolution_min: int
    start_ms: int  # UTC epoch ms
    kwh: float | None  # None when missing
    quality: BlockQuality
    source: EnergySource
    operator: str = ""  # a manual value's operator
    reason: str = ""
    entered_ms: int = -1


@dataclass(frozen=True, slots=True)
class FeederDay:
    feeder: str
    resolution_min: int
    blocks: tuple[EnergyBlock, ...]

    @property
    def total_kwh(self) -> float | None:
        """The day's energy; None if any block is missing."""
        if any(b.kwh is None for b in self.blocks):
            return None
        return float(sum(b.kwh for b in self.blocks if b.kwh is not None))

    @property
    def quality(self) -> BlockQuality:
        return worst([b.quality for b in self.blocks])


@dataclass(frozen=True, slots=True)
class DailyEnergy:
    day: date
    utc_offset: timedelta
    start_ms: int
    end_ms: int
    computed_ms: int  # when the stored blocks were computed
    feeders: tuple[FeederDay, ...]


def feeder_meters(config: StationConfig, model: NetworkModel) -> tuple[FeederMeters, ...]:
    """Every feeder of ``model`` with its energy counters and head active-power points (either may be empty)."""
    power = feeder_head_points(config, model)
    out = []
    for feeder in model.feeders:
        p_points = power.get(feeder.mrid, ())
        heads = {b.element_mrid for pid in p_points if (b := config.binding(config.points[pid])) is not None}
        heads |= {sw.name for sw in model.switches if sw.mrid in heads}
        names = heads | {feeder.mrid, feeder.name}
        counters = []
        for p in config.points:
            if p.kind is not PointKind.COUNTER:
                continue
            b = config.binding(p)
            if p.element in names or (b is not None and b.element_mrid in names):
                if p.units not in _ENERGY_KWH_PER_UNIT:
                    raise BillingError(f"energy counter {p.name!r} of feeder {feeder.name}: units {p.units!r} are "
                                       f"not one of {', '.join(_ENERGY_KWH_PER_UNIT)}")
                counters.append(p.id)
        for pid in p_points:
            p = config.points[pid]
            if p.units not in _POWER_KW_PER_UNIT:
                raise BillingError(f"active-power point {p.name!r} of feeder {feeder.name}: units {p.units!r} are "
                                   f"not one of {', '.join(_POWER_KW_PER_UNIT)}")
        out.append(FeederMeters(feeder.mrid, feeder.name, tuple(counters), tuple(p_points)))
    return tuple(out)


def _sum(series: Sequence[BlockSeries]) -> BlockSeries:
    kwh = np.sum([s.kwh for s in series], axis=0)  # NaN (missing) in any series stays NaN
    quality = tuple(worst([s.quality[k] for s in series]) for k in range(len(series[0])))
    return BlockSeries(series[0].start_ms, kwh, quality)


class BillingService:
    """Computes, stores and serves the daily energy values; ``start`` runs the after-midnight computation."""

    def __init__(self, config: StationConfig, historian: Historian, model: NetworkModel, data_dir: str | Path,
                 utc_offset: timedelta = timedelta(0), *, settings: BillingSettings | None = None,
                 audit: AuditLog | None = None, clock: Callable[[], int] = now_ms) -> None:
        if not timedelta(hours=-14) <= utc_offset <= timedelta(hours=14) or utc_offset % timedelta(minutes=15):
            raise BillingError(f"billing UTC offset {utc_offset} must be whole quarter hours within +-14 h")
        self.config = config
        self.historian = historian
        self.model = model
        self.utc_offset = utc_offset
        self.tz = timezone(utc_offset)
        self.settings = settings or BillingSettings()
        self.audit = audit
        self.clock = clock
        self.meters = feeder_meters(config, model)
        self._kw_per_unit = {pid: _POWER_KW_PER_UNIT[config.points[pid].units]
                             for m in self.meters for pid in m.power_points}
        self._kwh_per_unit = {pid: _ENERGY_KWH_PER_UNIT[config.points[pid].units]
                              for m in self.meters for pid in m.counter_points}
        self.store = BillingStore(Path(data_dir) / "billing.sqlite")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    # ---------------------------------------------------------------------------------------------- time
    def day_window(self, day: date) -> tuple[int, int]:
        """[start, end) of a local day in UTC epoch ms."""
        start = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)

    def local_day(self, t_ms: int) -> date:
        return datetime.fromtimestamp(t_ms / 1000, tz=self.tz).date()

    def local_text(self, t_ms: int) -> str:
        return datetime.fromtimestamp(t_ms / 1000, tz=self.tz).isoformat(timespec="minutes")

    def _meter(self, feeder: str) -> FeederMeters:
        for m in self.meters:
            if feeder in (m.feeder, m.feeder_mrid):
                return m
        raise UnknownFeederError(f"billing: no feeder {feeder!r} in network {self.model.name!r} (feeders: "
                                 f"{', '.join(m.feeder for m in self.meters)})")

    # ---------------------------------------------------------------------------------------------- compute
    def _samples(self, point: int, start_ms: int, end_ms: int) -> np.ndarray:
        e = self.settings.energy
        ahead_ms = int(max(e.interpolate_max_s, e.bridge_max_s, e.counter_edge_tolerance_s) * 1000) + 1
        inside = self.historian.query(point, start_ms, end_ms)
        after = self.historian.query(point, end_ms, end_ms + ahead_ms)
        return np.concatenate([inside.previous, inside.samples, after.samples]).astype(SAMPLE_DTYPE)

    def _feeder_quarters(self, m: FeederMeters, start_ms: int, end_ms: int) -> tuple[BlockSeries, list[EnergySource]]:
        block_ms = 15 * _MS_PER_MIN
        e = self.settings.energy
        n = (end_ms - start_ms) // block_ms
        power = counter = None
        if m.power_points:
            power = _sum([integrate_blocks(self._samples(p, start_ms, end_ms), start_ms, end_ms, block_ms, e,
                                           kw_per_unit=self._kw_per_unit[p]) for p in m.power_points])
        if m.counter_points:
            counter = _sum([counter_blocks(self._samples(p, start_ms, end_ms), start_ms, end_ms, block_ms, e,
                                           kwh_per_unit=self._kwh_per_unit[p]) for p in m.counter_points])
        if counter is None and power is None:
            starts = np.arange(start_ms, end_ms, block_ms, dtype=np.int64)
            return BlockSeries(starts, np.full(n, np.nan), (BlockQuality.MISSING,) * n), [EnergySource.NONE] * n
        if counter is None:
            assert power is not None
            return power, [EnergySource.INTEGRATED] * n
        if power is None:
            return counter, [EnergySource.COUNTER] * n
        # the counter first; a block it cannot give comes from the integrated power
        use_power = np.array([c is BlockQuality.MISSING and p is not BlockQuality.MISSING
                              for c, p in zip(counter.quality, power.quality, strict=True)])
        kwh = np.where(use_power, power.kwh, counter.kwh)
        quality = tuple(p if u else c for u, c, p in zip(use_power, counter.quality, power.quality, strict=True))
        sources = [EnergySource.INTEGRATED if u else EnergySource.COUNTER for u in use_power]
        return BlockSeries(counter.start_ms, kwh, quality), sources

    def compute_day(self, day: date) -> DailyEnergy:
        """Compute every feeder's blocks of local ``day`` from the historian and store them (replacing an earlier
        computation; manual values are untouched)."""
        start_ms, end_ms = self.day_window(day)
        now = self.clock()
        if start_ms > now:
            raise BillingError(f"billing day {day.isoformat()} has not begun (local time {self.utc_offset})")
        stored: list[StoredBlock] = []
        for m in self.meters:
            series, sources = self._feeder_quarters(m, start_ms, end_ms)
            unfinished = series.start_ms + 15 * _MS_PER_MIN > now  # today: blocks not yet over have no value
            if unfinished.any():
                series = BlockSeries(series.start_ms, np.where(unfinished, np.nan, series.kwh),
                                     tuple(BlockQuality.MISSING if u else q
                                           for u, q in zip(unfinished, series.quality, strict=True)))
            quarters = [StoredBlock(m.feeder, 15, int(series.start_ms[k]),
                                    None if math.isnan(series.kwh[k]) else float(series.kwh[k]), series.quality[k],
                                    sources[k].value) for k in range(len(series))]
            stored += quarters
            stored += [_hour(m.feeder, quarters[4 * h: 4 * h + 4]) for h in range(len(quarters) // 4)]
        with self._lock:
            self.store.replace_day(day.isoformat(), int(self.utc_offset.total_seconds() // 60), now, stored)
        log.info("billing: computed %s for %d feeders", day.isoformat(), len(self.meters))
        return self.daily_energy(day, compute_if_absent=False)

    # ---------------------------------------------------------------------------------------------- read
    def daily_energy(self, day: date, feeder: str | None = None, resolution: Resolution | int = Resolution.MIN_15,
                     *, compute_if_absent: bool = True) -> DailyEnergy:
        """The stored blocks of ``day`` with manual values applied (computing the day first if never computed)."""
        res = resolution if isinstance(resolution, Resolution) else Resolution.of(resolution)
        wanted = self._meter(feeder).feeder if feeder else None
        computed = self.store.computed(day.isoformat())
        if computed is None:
            if not compute_if_absent:
                raise BillingError(f"billing day {day.isoformat()} has not been computed")
            return self.daily_energy(self.compute_day(day).day, feeder, res, compute_if_absent=False)
        start_ms, end_ms = self.day_window(day)
        manual = {(v.feeder, v.resolution_min, v.start_ms): v for v in self.store.manual(start_ms, end_ms)}
        by_feeder: dict[str, list[StoredBlock]] = {}
        for b in self.store.blocks(day.isoformat(), 15):
            by_feeder.setdefault(b.feeder, []).append(b)
        out = []
        for m in self.meters:
            if wanted is not None and m.feeder != wanted:
                continue
            quarters = [_merged(b, manual.get((b.feeder, 15, b.start_ms))) for b in by_feeder.get(m.feeder, [])]
            if res is Resolution.MIN_15:
                blocks = tuple(quarters)
            else:
                blocks = tuple(_merged_hour(m.feeder, quarters[4 * h: 4 * h + 4],
                                            manual.get((m.feeder, 60, quarters[4 * h].start_ms)))
                               for h in range(len(quarters) // 4))
            out.append(FeederDay(m.feeder, res.minutes, blocks))
        return DailyEnergy(day, self.utc_offset, start_ms, end_ms, computed, tuple(out))

    def enter_manual_value(self, feeder: str, start_ms: int, kwh: float, reason: str, operator: str, *,
                           role: str = "", resolution: Resolution | int = Resolution.MIN_15) -> EnergyBlock:
        """Store an operator's value for one block (it survives every recomputation) and audit it."""
        res = resolution if isinstance(resolution, Resolution) else Resolution.of(resolution)
        m = self._meter(feeder)
        block_ms = res.minutes * _MS_PER_MIN
        offset_ms = int(self.utc_offset.total_seconds() * 1000)
        if (start_ms + offset_ms) % block_ms:
            raise BillingError(f"manual value of {m.feeder}: block start {self.local_text(start_ms)} is not on a "
                               f"{res.minutes}-minute boundary of the local day")
        if not math.isfinite(kwh):
            raise BillingError(f"manual value of {m.feeder} at {self.local_text(start_ms)}: kWh must be a number, "
                               f"not {kwh}")
        if not reason.strip():
            raise BillingError(f"manual value of {m.feeder} at {self.local_text(start_ms)}: a reason is required")
        now = self.clock()
        if start_ms + block_ms > now:
            raise BillingError(f"manual value of {m.feeder}: block {self.local_text(start_ms)} has not ended yet")
        day = self.local_day(start_ms)
        before = self.daily_energy(day, m.feeder, res)
        old = next((b for b in before.feeders[0].blocks if b.start_ms == start_ms), None)
        value = ManualValue(m.feeder, res.minutes, int(start_ms), float(kwh), operator, reason.strip(), now)
        self.store.put_manual(value, old.kwh if old else None, old.quality.value if old else "")
        if self.audit is not None:
            was = "missing" if old is None or old.kwh is None else f"{old.kwh:.3f} kWh {old.quality.value}"
            self.audit.record(operator=operator, role=role, point=-1,
                              point_name=f"billing {m.feeder} {res.minutes} min {self.local_text(start_ms)}",
                              action="billing_manual_value", value=float(kwh), outcome="answered",
                              reason="manual_value", field_detail=f"{reason.strip()} (was {was})", time_ms=now)
        return _merged(StoredBlock(m.feeder, res.minutes, int(start_ms), None, BlockQuality.MISSING,
                                   EnergySource.NONE.value), value)

    def manual_log(self, feeder: str | None = None) -> list[tuple]:
        return self.store.manual_log(self._meter(feeder).feeder if feeder else None)

    def export_csv(self, day: date, resolution: Resolution | int | None = None) -> str:
        """The day's blocks as CSV (columns in the module doc); both resolutions when ``resolution`` is None."""
        resolutions = [Resolution.MIN_15, Resolution.MIN_60] if resolution is None else [
            resolution if isinstance(resolution, Resolution) else Resolution.of(resolution)]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["day", "feeder", "resolution_min", "start_local", "start_utc", "kwh", "quality", "source",
                    "operator", "reason"])
        for res in resolutions:
            energy = self.daily_energy(day, None, res)
            for fd in energy.feeders:
                for b in fd.blocks:
                    utc = datetime.fromtimestamp(b.start_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    w.writerow([day.isoformat(), fd.feeder, fd.resolution_min, self.local_text(b.start_ms), utc,
                                "" if b.kwh is None else f"{b.kwh:.3f}", b.quality.value, b.source.value,
                                b.operator, b.reason])
        return buf.getvalue()

    # ---------------------------------------------------------------------------------------------- schedule
    def due_day(self, t_ms: int | None = None) -> date:
        """The latest local day whose end plus the settle delay has passed at ``t_ms``."""
        t = self.clock() if t_ms is None else t_ms
        return self.local_day(t - int(self.settings.settle_delay_s * 1000)) - timedelta(days=1)

    def run_due(self) -> list[date]:
        """Compute the due day, and the ``catch_up_days`` before it, where never computed after they settled (a
        server down over midnight catches up); returns the days computed, oldest first."""
        due = self.due_day()
        done = []
        for back in range(self.settings.catch_up_days, -1, -1):
            day = due - timedelta(days=back)
            settled_ms = self.day_window(day)[1] + int(self.settings.settle_delay_s * 1000)
            computed = self.store.computed(day.isoformat())
            if computed is None or computed < settled_ms:
                self.compute_day(day)
                done.append(day)
        return done

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="billing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_due()
                self.last_error = ""
            except Exception as exc:  # the schedule must survive one bad day; the error is kept for operators
                self.last_error = str(exc)
                log.exception("billing: computing the due day failed")
            next_ms = self.day_window(self.due_day() + timedelta(days=2))[0] + int(self.settings.settle_delay_s
                                                                                     * 1000)
            # wake at least once a minute: a wall-clock step must not make the computation late by a day
            self._stop.wait(min(60.0, max(1.0, (next_ms - self.clock()) / 1000)))


def _hour(feeder: str, quarters: Sequence[StoredBlock]) -> StoredBlock:
    missing = any(q.kwh is None for q in quarters)
    sources = {q.source for q in quarters}
    return StoredBlock(feeder, 60, quarters[0].start_ms, None if missing else sum(q.kwh or 0.0 for q in quarters),
                       worst([q.quality for q in quarters]), sources.pop() if len(sources) == 1 else "mixed")


def _merged(b: StoredBlock, manual: ManualValue | None) -> EnergyBlock:
    if manual is not None:
        return EnergyBlock(b.feeder, manual.resolution_min, b.start_ms, manual.kwh, BlockQuality.MANUAL,
                           EnergySource.MANUAL, manual.operator, manual.reason, manual.entered_ms)
    return EnergyBlock(b.feeder, b.resolution_min, b.start_ms, b.kwh, b.quality, EnergySource(b.source))


def _merged_hour(feeder: str, quarters: Sequence[EnergyBlock], manual: ManualValue | None) -> EnergyBlock:
    if manual is not None:
        return EnergyBlock(feeder, 60, quarters[0].start_ms, manual.kwh, BlockQuality.MANUAL, EnergySource.MANUAL,
                           manual.operator, manual.reason, manual.entered_ms)
    missing = any(q.kwh is None for q in quarters)
    sources = {q.source for q in quarters}
    return EnergyBlock(feeder, 60, quarters[0].start_ms, None if missing else sum(q.kwh or 0.0 for q in quarters),
                       worst([q.quality for q in quarters]), sources.pop() if len(sources) == 1 else EnergySource.MIXED)
