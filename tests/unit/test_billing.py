"""Billing feed: block energies from power and counter samples (exact on known profiles), quality codes, the local
day at +05:30, manual values that survive recomputation, CSV export and the after-midnight schedule, on the sample
station with a real historian."""

from __future__ import annotations

import csv
import dataclasses
import io
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from support import sample_network_config, wait_for

from models.config import StationConfig
from models.points import PointDef, PointKind, PointSource, Quality
from oms.billing import BillingError, BillingService, BillingSettings, EnergySource, UnknownFeederError, feeder_meters
from oms.billing_energy import BlockQuality, EnergySettings, counter_blocks, integrate_blocks
from scada.audit import AuditLog
from scada.changes import CHANGE_DTYPE, ChangeSet
from scada.historian import SAMPLE_DTYPE, Historian

H = 3_600_000
Q = 900_000  # a quarter hour in ms
DAY = 86_400_000
IST = timedelta(hours=5, minutes=30)


def _samples(rows: list[tuple[int, float, int]]) -> np.ndarray:
    return np.array(rows, dtype=SAMPLE_DTYPE)


# ------------------------------------------------------------------------------------------------ pure energy
def test_a_constant_power_gives_its_exact_energy_in_every_block() -> None:
    got = integrate_blocks(_samples([(-5_000, 400.0, 0)]), 0, DAY, Q)  # in force since before the day
    assert len(got) == 96
    assert np.allclose(got.kwh, 100.0)  # 400 kW for a quarter hour
    assert set(got.quality) == {BlockQuality.GOOD}


def test_a_ramp_sampled_every_minute_integrates_exactly_by_trapezoids() -> None:
    t = np.arange(0, DAY + 1, 60_000)
    s = np.zeros(len(t), dtype=SAMPLE_DTYPE)
    s["time_ms"], s["value"] = t, 960.0 * t / DAY  # 0 -> 960 kW over the day
    got = integrate_blocks(s, 0, DAY, H)
    hours = np.arange(24)
    assert np.allclose(got.kwh, 960.0 * (hours + 0.5) / 24)  # mean power of each hour, for one hour
    assert got.kwh.sum() == pytest.approx(960.0 * 24 / 2)
    assert set(got.quality) == {BlockQuality.GOOD}


def test_a_value_reported_by_exception_holds_until_the_next_sample() -> None:
    # 100 kW, then 300 kW reported at 00:40: no trapezoid across the 40 minutes the value held within its deadband
    got = integrate_blocks(_samples([(-1, 100.0, 0), (40 * 60_000, 300.0, 0)]), 0, DAY, H)
    assert got.kwh[0] == pytest.approx(100.0 * 40 / 60 + 300.0 * 20 / 60)
    assert got.kwh[1] == pytest.approx(300.0)


def test_a_bad_quality_gap_is_bridged_and_estimated_and_questionable_data_is_estimated() -> None:
    bad = int(Quality.COMM_LOST | Quality.INVALID)
    s = _samples([(-1, 100.0, 0), (16 * 60_000, 0.0, bad), (20 * 60_000, 200.0, 0),
                  (50 * 60_000, 200.0, int(Quality.QUESTIONABLE)), (60 * 60_000, 200.0, 0)])
    got = integrate_blocks(s, 0, DAY, Q)
    assert got.quality[:5] == (BlockQuality.GOOD, BlockQuality.ESTIMATED, BlockQuality.GOOD,
                               BlockQuality.ESTIMATED, BlockQuality.GOOD)
    # 00:15-00:30: 100 kW for 1 min, bridged 100 -> 200 kW over 4 min, then 200 kW for 10 min
    assert got.kwh[1] == pytest.approx((100.0 * 1 + 150.0 * 4 + 200.0 * 10) / 60)


def test_a_block_without_usable_data_is_missing_and_a_partly_covered_one_is_scaled() -> None:
    s = _samples([(-1, 100.0, 0), (10 * 60_000, 0.0, int(Quality.COMM_LOST)), (100 * 60_000, 100.0, 0)])
    got = integrate_blocks(s, 0, DAY, Q)  # 80 min without data: too long to bridge (1 h)
    assert got.quality[:8] == (BlockQuality.ESTIMATED,) + (BlockQuality.MISSING,) * 5 + (BlockQuality.ESTIMATED,
                                                                                          BlockQuality.GOOD)
    assert np.isnan(got.kwh[1:6]).all()
    assert got.kwh[0] == pytest.approx(25.0) and got.kwh[6] == pytest.approx(25.0)  # covered mean power x 15 min
    none = integrate_blocks(np.zeros(0, dtype=SAMPLE_DTYPE), 0, DAY, Q)
    assert set(none.quality) == {BlockQuality.MISSING}


def test_a_counter_roll_over_is_exact_and_a_reset_is_estimated() -> None:
    rows = [(k * Q, (99_000.0 + 250.0 * k) % 100_000.0, 0) for k in range(97)]  # wraps at 100 000 kWh after 4 blocks
    got = counter_blocks(_samples(rows), 0, DAY, Q)
    assert np.allclose(got.kwh, 250.0) and set(got.quality) == {BlockQuality.GOOD}
    assert rows[3][1] == 99_750.0 and rows[4][1] == 0.0
    # a reset to zero between two reads: the counts since the reset, estimated
    rows = [(k * Q, 5_000.0 + 250.0 * k if k < 10 else 100.0 + 250.0 * (k - 10), 0) for k in range(97)]
    got = counter_blocks(_samples(rows), 0, DAY, Q)
    assert got.quality[9] is BlockQuality.ESTIMATED and got.kwh[9] == pytest.approx(100.0)
    assert got.quality[10] is BlockQuality.GOOD and got.kwh[10] == pytest.approx(250.0)
    # a configured modulus (a 16-bit register in kWh): the roll-over is exact
    rows = [(k * Q, (65_000.0 + 250.0 * k) % 65_536.0, 0) for k in range(97)]
    got = counter_blocks(_samples(rows), 0, DAY, Q, EnergySettings(counter_modulus_kwh=65_536.0))
    assert np.allclose(got.kwh, 250.0) and set(got.quality) == {BlockQuality.GOOD}
    # reads off the block edges are interpolated (estimated); outside the reads: missing
    got = counter_blocks(_samples([(7 * 60_000, 0.0, 0), (67 * 60_000, 600.0, 0)]), 0, 2 * H, Q)
    assert got.quality == (BlockQuality.MISSING,) + (BlockQuality.ESTIMATED,) * 3 + (BlockQuality.MISSING,) * 4
    assert np.allclose(got.kwh[1:4], 150.0) and np.isnan(got.kwh[4:]).all()


# ------------------------------------------------------------------------------------------------ the service
class _Clock:
    def __init__(self, t_ms: int) -> None:
        self.t_ms = t_ms
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            return self.t_ms


class _Station:
    def __init__(self, tmp_path: Path, config: StationConfig, day: date) -> None:
        self.config = config
        self.historian = Historian(tmp_path / "historian.sqlite", config.points)
        self.audit = AuditLog(tmp_path / "audit.sqlite")
        self.day = day
        start = datetime(day.year, day.month, day.day, tzinfo=UTC) - IST
        self.start_ms = int(start.timestamp() * 1000)
        self.clock = _Clock(self.start_ms + DAY + 2 * H)
        assert config.network is not None
        self.billing = BillingService(config, self.historian, config.network, tmp_path, IST,
                                      settings=BillingSettings(settle_delay_s=600.0), audit=self.audit,
                                      clock=self.clock)
        self.seq = 0

    def feed(self, point: int, rows: list[tuple[int, float]], quality: int = 0) -> None:
        cs = np.zeros(len(rows), dtype=CHANGE_DTYPE)
        cs["point"] = point
        cs["source_time_ms"] = [t for t, _ in rows]
        cs["recv_time_ms"] = [t for t, _ in rows]
        cs["value"] = [v for _, v in rows]
        cs["quality"] = quality
        cs["seq"] = np.arange(self.seq + 1, self.seq + 1 + len(rows))
        self.seq += len(rows)
        assert self.historian.process(ChangeSet(cs, False, 0.0)) == len(rows)

    def close(self) -> None:
        self.billing.stop()
        self.historian.close()
        self.audit.close()


@pytest.fixture
def station(tmp_path: Path) -> Iterator[_Station]:
    s = _Station(tmp_path, sample_network_config(tmp_path), date(2026, 3, 10))
    try:
        yield s
    finally:
        s.close()


def _phases(s: _Station, feeder: str) -> tuple[int, ...]:
    return next(m for m in s.billing.meters if m.feeder == feeder).power_points


def test_every_sample_feeder_is_integrated_from_its_three_head_phases(station: _Station) -> None:
    meters = station.billing.meters
    assert [m.feeder for m in meters] == ["F1", "F2", "F3", "F4", "F5", "F6"]
    for m in meters:
        assert not m.counter_points
        assert sorted(station.config.points[p].name for p in m.power_points) == [
            f"{m.feeder}-CB.P.ph_A", f"{m.feeder}-CB.P.ph_B", f"{m.feeder}-CB.P.ph_C"]


def test_the_local_day_at_0530_starts_at_1830_utc_and_its_blocks_follow(station: _Station) -> None:
    s = station
    midnight = s.start_ms  # 2026-03-09T18:30Z
    assert datetime.fromtimestamp(midnight / 1000, tz=UTC).isoformat() == "2026-03-09T18:30:00+00:00"
    for k, p in enumerate(_phases(s, "F1")):
        # 100 kW per phase on the evening before, 200 + 10 k kW from local midnight to the next local midnight
        s.feed(p, [(midnight - 3 * H, 100.0), (midnight, 200.0 + 10 * k), (midnight + DAY, 50.0)])
    energy = s.billing.compute_day(s.day)
    f1 = next(f for f in energy.feeders if f.feeder == "F1")
    assert len(f1.blocks) == 96 and f1.blocks[0].start_ms == midnight
    assert all(b.kwh == pytest.approx(630.0 / 4) for b in f1.blocks)  # 630 kW for a quarter hour
    assert f1.total_kwh == pytest.approx(630.0 * 24) and f1.quality is BlockQuality.GOOD
    assert {b.source for b in f1.blocks} == {EnergySource.INTEGRATED}
    hours = s.billing.daily_energy(s.day, "F1", 60).feeders[0]
    assert len(hours.blocks) == 24 and all(b.kwh == pytest.approx(630.0) for b in hours.blocks)
    f2 = next(f for f in energy.feeders if f.feeder == "F2")  # no samples at all
    assert f2.quality is BlockQuality.MISSING and f2.total_kwh is None
    assert s.billing.local_day(midnight) == s.day and s.billing.local_day(midnight - 1) == s.day - timedelta(days=1)


def test_an_hour_with_an_estimated_quarter_is_estimated_and_with_a_missing_one_missing(station: _Station) -> None:
    s = station
    t0 = s.start_ms
    for p in _phases(s, "F1"):
        s.feed(p, [(t0 - H, 100.0)])
        s.feed(p, [(t0 + 20 * 60_000, 0.0)], quality=int(Quality.COMM_LOST))  # 10 min gap, bridged
        s.feed(p, [(t0 + 30 * 60_000, 100.0)])
        s.feed(p, [(t0 + 2 * H, 0.0)], quality=int(Quality.COMM_LOST))  # 2 h gap: not bridged
        s.feed(p, [(t0 + 4 * H, 100.0)])
    s.billing.compute_day(s.day)
    hours = s.billing.daily_energy(s.day, "F1", 60).feeders[0].blocks
    assert hours[0].quality is BlockQuality.ESTIMATED and hours[0].kwh == pytest.approx(300.0)
    assert hours[1].quality is BlockQuality.GOOD
    assert hours[2].quality is BlockQuality.MISSING and hours[2].kwh is None
    assert hours[3].quality is BlockQuality.MISSING and hours[4].quality is BlockQuality.GOOD


def test_a_manual_value_is_audited_and_survives_recomputation(station: _Station) -> None:
    s = station
    t0 = s.start_ms
    for p in _phases(s, "F3"):
        s.feed(p, [(t0 - H, 40.0)])
        s.feed(p, [(t0 + 6 * H, 0.0)], quality=int(Quality.COMM_LOST))
        s.feed(p, [(t0 + 9 * H, 40.0)])
    s.billing.compute_day(s.day)
    target = t0 + 7 * H  # a missing quarter (the link was down 06:00-09:00)
    before = s.billing.daily_energy(s.day, "F3").feeders[0].blocks[28]
    assert before.start_ms == target and before.quality is BlockQuality.MISSING
    got = s.billing.enter_manual_value("F3", target, 31.5, "read from the substation meter", "alice", role="operator")
    assert got.quality is BlockQuality.MANUAL and got.kwh == 31.5 and got.operator == "alice"
    s.billing.compute_day(s.day)  # a recomputation replaces every computed block, never a manual one
    again = s.billing.daily_energy(s.day, "F3").feeders[0].blocks[28]
    assert (again.kwh, again.quality, again.source, again.operator, again.reason) == (
        31.5, BlockQuality.MANUAL, EnergySource.MANUAL, "alice", "read from the substation meter")
    hour = s.billing.daily_energy(s.day, "F3", 60).feeders[0].blocks[7]
    assert hour.quality is BlockQuality.MISSING  # its other quarters are still missing
    (entry,) = s.audit.query(operator="alice")
    assert entry.action == "billing_manual_value" and entry.value == 31.5 and "F3" in entry.point_name
    assert "substation meter" in entry.field_detail and "was missing" in entry.field_detail
    log = s.billing.manual_log("F3")
    assert len(log) == 1 and log[0][4] == "alice" and log[0][7] is None and log[0][8] == "missing"


def test_manual_values_are_refused_with_reasons(station: _Station) -> None:
    b, t0 = station.billing, station.start_ms
    with pytest.raises(UnknownFeederError, match="no feeder 'F9'"):
        b.enter_manual_value("F9", t0, 1.0, "x", "alice")
    with pytest.raises(BillingError, match="15-minute boundary"):
        b.enter_manual_value("F1", t0 + 60_000, 1.0, "x", "alice")
    with pytest.raises(BillingError, match="60-minute boundary"):
        b.enter_manual_value("F1", t0 + Q, 1.0, "x", "alice", resolution=60)
    with pytest.raises(BillingError, match="reason is required"):
        b.enter_manual_value("F1", t0, 1.0, " ", "alice")
    with pytest.raises(BillingError, match="has not ended"):
        b.enter_manual_value("F1", station.clock(), 1.0, "x", "alice")
    with pytest.raises(BillingError, match="has not begun"):
        b.compute_day(station.day + timedelta(days=2))
    with pytest.raises(BillingError, match="15 or 60"):
        b.daily_energy(station.day, None, 30)


def test_a_counter_at_the_feeder_head_is_preferred_to_the_integrated_power(tmp_path: Path) -> None:
    base = sample_network_config(tmp_path)
    assert base.network is not None
    head = next(sw for sw in base.network.switches if sw.name == "F2-CB")
    counter = PointDef(len(base.points), "F2-CB.Energy", PointKind.COUNTER,
                       PointSource("iec104", base.rtus[0].name, 1, 99_001, "M_IT_TB_1"), units="MWh",
                       element=head.mrid)
    config = dataclasses.replace(base, points=base.points + (counter,), sim=base.sim + (base.sim[0],))
    meters = {m.feeder: m for m in feeder_meters(config, base.network)}
    assert meters["F2"].counter_points == (counter.id,) and not meters["F1"].counter_points
    s = _Station(tmp_path, config, date(2026, 3, 10))
    try:
        t0 = s.start_ms
        # 0.5 MWh a quarter hour (2 MW) for the first 12 h, rolling over at 1000 MWh; then no reads
        s.feed(counter.id, [(t0 + k * Q, (998.0 + 0.5 * k) % 1000.0) for k in range(49)])
        for p in _phases(s, "F2"):
            s.feed(p, [(t0 - H, 100.0)])  # the power: 300 kW all day
        f2 = s.billing.compute_day(s.day).feeders[1]
        assert f2.feeder == "F2"
        assert all(b.kwh == pytest.approx(500.0) and b.source is EnergySource.COUNTER
                   and b.quality is BlockQuality.GOOD for b in f2.blocks[:48])
        # after the counter's last read the integrated power fills in
        assert all(b.kwh == pytest.approx(75.0) and b.source is EnergySource.INTEGRATED for b in f2.blocks[49:])
    finally:
        s.close()


def test_the_csv_export_has_one_documented_row_per_block(station: _Station) -> None:
    s = station
    for p in _phases(s, "F1"):
        s.feed(p, [(s.start_ms - H, 100.0)])
    s.billing.enter_manual_value("F2", s.start_ms + H, 12.0, "estimate from the DT meters", "bob", resolution=60)
    rows = list(csv.DictReader(io.StringIO(s.billing.export_csv(s.day))))
    assert len(rows) == 6 * (96 + 24)
    assert list(rows[0]) == ["day", "feeder", "resolution_min", "start_local", "start_utc", "kwh", "quality", "source",
                             "operator", "reason"]
    first = rows[0]
    assert (first["day"], first["feeder"], first["resolution_min"], first["start_local"], first["start_utc"],
            first["kwh"], first["quality"], first["source"]) == (
        "2026-03-10", "F1", "15", "2026-03-10T00:00+05:30", "2026-03-09T18:30:00Z", "75.000", "good", "integrated")
    manual = [r for r in rows if r["operator"]]
    assert len(manual) == 1 and manual[0]["resolution_min"] == "60" and manual[0]["kwh"] == "12.000"
    assert manual[0]["quality"] == "manual" and manual[0]["start_local"] == "2026-03-10T01:00+05:30"
    assert {r["quality"] for r in rows if r["feeder"] == "F4"} == {"missing"}
    assert all(r["kwh"] == "" for r in rows if r["quality"] == "missing")


def test_the_schedule_computes_the_previous_day_after_local_midnight_and_settling(station: _Station) -> None:
    s = station
    b = s.billing
    next_midnight = s.start_ms + DAY
    s.clock.t_ms = next_midnight + 300_000  # 00:05 local: still settling
    assert b.due_day() == s.day - timedelta(days=1)
    s.clock.t_ms = next_midnight + 700_000  # 00:11:40 local: the day has settled
    assert b.due_day() == s.day
    b.start()
    wait_for(lambda: b.store.computed(s.day.isoformat()) is not None, 15.0, "the scheduled computation")
    assert b.store.computed((s.day - timedelta(days=3)).isoformat()) is not None  # caught up after a downtime
    assert b.store.computed((s.day - timedelta(days=4)).isoformat()) is None
    assert b.run_due() == []  # computed once, after it settled
    assert b.last_error == ""


def test_today_has_values_only_for_the_blocks_already_over(station: _Station) -> None:
    s = station
    for p in _phases(s, "F1"):
        s.feed(p, [(s.start_ms - H, 100.0)])
    s.clock.t_ms = s.start_ms + 10 * H + 5 * 60_000  # 10:05 local
    f1 = s.billing.compute_day(s.day).feeders[0].blocks
    assert all(b.quality is BlockQuality.GOOD for b in f1[:40])
    assert all(b.quality is BlockQuality.MISSING and b.kwh is None for b in f1[40:])
    s.clock.t_ms = s.start_ms + DAY + 20 * 60_000  # 00:20 the next day: settled, the scheduled run recomputes it
    assert s.day in s.billing.run_due()
    assert s.billing.daily_energy(s.day, "F1").feeders[0].quality is BlockQuality.GOOD
