"""The server's reliability service: outage records (restoration steps, planned, merged, closed, ongoing) in an
OutageRecordStore give the indices of a hand computation on the sample network; the report thread writes
yesterday's report once the injected clock passes midnight + the settle delay, and catches up missed days; a seeded
daily-SAIDI history gives the 2.5β T_MED and Major Event Days."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from support import wait_for

from models.network import NetworkModel
from models.sample_network import build_sample_network
from oms.med import med_threshold
from oms.outage_records import OutageRecordStore, OutageStatus, RestorationStep
from oms.reliability import GroupBy, ReliabilityError
from oms.reliability_io import InputFileError
from oms.reliability_service import FeederArea, HistoryRow, ReliabilityService, customers_served

OFFSET = timedelta(hours=5, minutes=30)  # the sample station is in India
DAY = date(2026, 3, 10)
NT = 2257  # customers of the sample network: F1 510, F2 432, F3 284, F4 473, F5 160, F6 398


def ms(day: date, hh: int, mm: int = 0) -> int:
    """UTC epoch ms of a local time of the utility."""
    local = datetime(day.year, day.month, day.day, hh, mm)
    return int((local - OFFSET).replace(tzinfo=UTC).timestamp() * 1000)


class FakeClock:
    def __init__(self, t_ms: int) -> None:
        self.t_ms = t_ms

    def __call__(self) -> int:
        return self.t_ms


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return build_sample_network()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutageRecordStore]:
    s = OutageRecordStore(tmp_path / "outages.sqlite")
    yield s
    s.close()


def fill_day(store: OutageRecordStore, day: date) -> None:
    """The worked case of :func:`test_indices_equal_a_hand_computation`."""
    # F1 breaker trip seen by FLISR: 420 customers off at 10:00, 300 back at 11:00 and 100 at 13:00 (steps), the
    # last 20 after the repair, closed at 15:00.
    flisr = store.open_or_update(source="flisr", source_ref=f"run-{day}", feeder="F1", tripped_device="F1-CB",
                                 customers_interrupted=420, customers_restored=400, customers_still_off=20,
                                 started_ms=ms(day, 10), restored_ms=ms(day, 13), status=OutageStatus.RESTORED,
                                 steps=(RestorationStep(ms(day, 11), 300, "FLISR"),
                                        RestorationStep(ms(day, 13), 100, "crew")))
    # the OMS's SCADA-confirmed prediction of the same trip: merged into the FLISR record, not counted twice
    scada = store.open_or_update(source="scada", source_ref=f"p-{day}", feeder="F1", tripped_device="F1-CB",
                                 customers_interrupted=420, customers_restored=420, started_ms=ms(day, 10) + 20_000,
                                 restored_ms=ms(day, 11), status=OutageStatus.RESTORED)
    assert scada.merged_into == flisr.id
    store.close_record(flisr.id, "repaired", closed_ms=ms(day, 15))
    # planned maintenance on F2: 100 customers for 2 h, reported apart
    store.open_or_update(source="planned", source_ref=f"m-{day}", feeder="F2", tripped_device="F2-RMU03-LBS1",
                         customers_interrupted=100, customers_restored=100, started_ms=ms(day, 9),
                         restored_ms=ms(day, 11), status=OutageStatus.RESTORED, planned=True,
                         steps=(RestorationStep(ms(day, 11), 100, "work done"),))
    # F3 recloser: 50 customers for 2 minutes, momentary
    store.open_or_update(source="scada", source_ref=f"r-{day}", feeder="F3", tripped_device="F3-REC",
                         customers_interrupted=50, customers_restored=50, started_ms=ms(day, 16),
                         restored_ms=ms(day, 16, 2), status=OutageStatus.RESTORED,
                         steps=(RestorationStep(ms(day, 16, 2), 50, "reclosed"),))
    # F4 fuse restored without steps: 40 customers for 30 minutes
    store.open_or_update(source="ami", source_ref=f"f-{day}", feeder="F4", tripped_device="F4-RMU02-TEE",
                         customers_interrupted=40, customers_restored=40, started_ms=ms(day, 18),
                         restored_ms=ms(day, 18, 30), status=OutageStatus.RESTORED)
    # F4: still off, not counted until restored
    store.open_or_update(source="ami", source_ref=f"o-{day}", feeder="F4", tripped_device="F4-RMU05-TEE",
                         customers_interrupted=30, customers_still_off=30, started_ms=ms(day, 22))


def service(store: OutageRecordStore, model: NetworkModel, data_dir: Path, clock: FakeClock,
            **kw: object) -> ReliabilityService:
    return ReliabilityService(store, model, data_dir, utc_offset=OFFSET, clock=clock, **kw)  # type: ignore[arg-type]


def test_customers_served_come_from_the_model(model: NetworkModel) -> None:
    served = customers_served(model, {"F1": FeederArea("SS-A", "North"), "F2": FeederArea("SS-A", "North"),
                                      "F3": FeederArea("SS-B", "North")})
    assert served.system == NT
    assert served.feeder == {"F1": 510, "F2": 432, "F3": 284, "F4": 473, "F5": 160, "F6": 398}
    assert served.substation == {"SS-A": 942, "SS-B": 284, "sample_network": 1031}
    assert served.division == {"North": 1226, "sample_network": 1031}


def test_indices_equal_a_hand_computation(store: OutageRecordStore, model: NetworkModel, tmp_path: Path) -> None:
    fill_day(store, DAY)
    fill_day(store, DAY + timedelta(days=1))  # another day: outside the period
    rel = service(store, model, tmp_path, FakeClock(ms(DAY + timedelta(days=3), 12)))
    try:
        start = datetime(DAY.year, DAY.month, DAY.day)
        a = rel.assess(start, start + timedelta(days=1), GroupBy.FEEDER)
        # sustained unplanned: 300 x 60 min + 100 x 180 min + 20 x 300 min (repair) + 40 x 30 min
        ni = 300 + 100 + 20 + 40  # 460
        cmi = 300 * 60 + 100 * 180 + 20 * 300 + 40 * 30  # 43,200 customer minutes
        ix = a.indices
        assert (ix.customer_interruptions, ix.customer_minutes, ix.sustained_interruptions) == (ni, cmi, 4)
        assert ix.saifi == pytest.approx(ni / NT)  # 0.2038
        assert ix.saidi_min == pytest.approx(cmi / NT)  # 19.14 min
        assert ix.caidi_min == pytest.approx(cmi / ni)  # 93.9 min
        assert ix.caifi == pytest.approx(1.0)  # no customer ids: CN = ΣNi
        assert ix.ctaidi_min == pytest.approx(cmi / ni)
        assert ix.asai == pytest.approx(1 - (cmi / 60) / (NT * 24))
        assert ix.maifi == pytest.approx(50 / NT) and ix.maifie == pytest.approx(50 / NT)
        assert a.planned.customer_interruptions == 100 and a.planned.saidi_min == pytest.approx(100 * 120 / NT)
        # records in the period: 3 F1 parts, planned, momentary, F4 fuse (the merged and the ongoing ones are not)
        assert (a.records_total, a.records_planned) == (6, 1)
        assert a.med is None and a.indices_excluding_med is None  # no history yet
        f1, f3, f4 = a.groups["F1"], a.groups["F3"], a.groups["F4"]
        assert f1.saifi == pytest.approx(420 / 510) and f1.saidi_min == pytest.approx(42_000 / 510)
        assert f3.maifie == pytest.approx(50 / 284) and f3.saifi == 0
        assert f4.saidi_min == pytest.approx(1200 / 473)
        assert a.groups["F2"].customer_interruptions == 0  # planned only
        assert set(a.groups) == {"F1", "F2", "F3", "F4", "F5", "F6"}
        by_sub = rel.assess(start, start + timedelta(days=1), GroupBy.SUBSTATION)
        assert by_sub.groups["sample_network"].saidi_min == pytest.approx(cmi / NT)
        with pytest.raises(ReliabilityError, match="naive"):
            rel.assess(start.replace(tzinfo=UTC), start + timedelta(days=1))
    finally:
        rel.stop()


def test_scheduler_writes_yesterdays_report_after_midnight(store: OutageRecordStore, model: NetworkModel,
                                                           tmp_path: Path) -> None:
    clock = FakeClock(ms(DAY, 8))
    fill_day(store, DAY)
    rel = service(store, model, tmp_path, clock, report_hour=1.0, poll_s=0.02)
    folder = tmp_path / "reports" / "reliability"
    rel.start()
    try:
        # the first start writes the report of the day before (empty)
        wait_for(lambda: (folder / str(DAY - timedelta(days=1)) / "indices.csv").exists(), 20, "first report")
        clock.t_ms = ms(DAY + timedelta(days=1), 0, 30)  # past midnight, within the settle delay: not yet
        assert rel.run_due() == []
        assert not (folder / str(DAY)).exists()
        clock.t_ms = ms(DAY + timedelta(days=1), 1, 5)
        wait_for(lambda: rel.history.last_reported() == DAY, 20, "the report of the day")
        day_dir = folder / str(DAY)
        names = sorted(p.name for p in day_dir.iterdir())
        assert names == ["daily_indices.csv", "daily_saidi.png", "feeders.csv", "indices.csv", "worst_feeders.png"]
        assert (day_dir / "daily_saidi.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rows = {(r["scope"], r["name"], r["basis"]): r for r in csv.DictReader((day_dir / "indices.csv").open())}
        assert float(rows[("system", "", "unplanned")]["saidi_min"]) == pytest.approx(43_200 / NT, rel=1e-5)
        assert float(rows[("system", "", "planned")]["saifi"]) == pytest.approx(100 / NT, rel=1e-5)
        assert float(rows[("feeder", "F1", "unplanned")]["saifi"]) == pytest.approx(420 / 510, rel=1e-5)
        assert rows[("feeder", "F5", "unplanned")]["caidi_min"] == ""  # undefined without interruptions
        assert ("substation", "sample_network", "unplanned") in rows
        assert ("division", "sample_network", "unplanned") in rows
        trend = list(csv.DictReader((day_dir / "daily_indices.csv").open()))
        assert [t["date"] for t in trend] == [str(DAY - timedelta(days=1)), str(DAY)]
        hist = rel.history.rows(DAY - timedelta(days=1), DAY)
        assert [(h.day, h.source) for h in hist] == [(DAY - timedelta(days=1), "records"), (DAY, "records")]
        assert hist[1].saidi_min == pytest.approx(43_200 / NT) and hist[0].saidi_min == 0.0
        # a stop of three days: the missed days are written at the next poll, each once
        clock.t_ms = ms(DAY + timedelta(days=4), 2)
        wait_for(lambda: rel.history.last_reported() == DAY + timedelta(days=3), 20, "catch-up reports")
        assert rel.run_due() == []
        assert sorted(p.name for p in folder.iterdir()) == [str(DAY + timedelta(days=k)) for k in range(-1, 4)]
    finally:
        rel.stop()


def test_daily_report_on_demand(store: OutageRecordStore, model: NetworkModel, tmp_path: Path) -> None:
    clock = FakeClock(ms(DAY, 20))
    fill_day(store, DAY)
    rel = service(store, model, tmp_path, clock)
    try:
        today = rel.daily_report(DAY)  # today's so far: written, but no history row (the day is not over)
        assert today.assessment.indices.customer_interruptions == 460
        assert rel.history.rows(DAY, DAY) == [] and rel.history.last_reported() is None
        with pytest.raises(ReliabilityError, match="has not begun"):
            rel.daily_report(DAY + timedelta(days=1))
    finally:
        rel.stop()


def _history_csv(path: Path, first: date, values: np.ndarray) -> None:
    lines = ["date,saidi_min"] + [f"{first + timedelta(days=k)},{v:.6f}" for k, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_seeded_history_gives_t_med_and_major_event_days(store: OutageRecordStore, model: NetworkModel,
                                                         tmp_path: Path) -> None:
    rng = np.random.default_rng(1366)
    mu, sigma, n = 0.5, 1.0, 3 * 365
    values = rng.lognormal(mu, sigma, n)
    values[rng.random(n) < 0.2] = 0.0  # days without interruptions: dropped by the method
    first = DAY - timedelta(days=n)
    path = tmp_path / "history.csv"
    _history_csv(path, first, values)
    fill_day(store, DAY)  # SAIDI 19.14 min
    rel = service(store, model, tmp_path / "data", FakeClock(ms(DAY + timedelta(days=1), 12)), history_path=path)
    try:
        med = rel.med_threshold(DAY)
        assert med is not None
        expected = med_threshold(values, [first + timedelta(days=k) for k in range(n)])
        assert med.t_med_min == pytest.approx(expected.t_med_min)
        assert med.zero_days_dropped == int((values == 0).sum()) and med.history_days == n
        assert med.t_med_min == pytest.approx(math.exp(mu + 2.5 * sigma), rel=0.15)  # 20.1 min in theory
        # a day above T_MED is a Major Event Day: excluded from the indices without MEDs
        t_med = med.t_med_min
        start = datetime(DAY.year, DAY.month, DAY.day)
        a = rel.assess(start, start + timedelta(days=1))
        assert (DAY in a.major_event_days) == (43_200 / NT > t_med)
        if a.major_event_days:
            assert a.indices_excluding_med is not None and a.indices_excluding_med.saidi_min == 0.0
        # a bigger day is certainly one
        for k in range(5):
            store.open_or_update(source="ami", source_ref=f"storm-{k}", feeder="F6", tripped_device=f"F6-{k}",
                                 customers_interrupted=398, customers_restored=398, started_ms=ms(DAY, 1 + k),
                                 restored_ms=ms(DAY, 1 + k) + 600 * 60_000, status=OutageStatus.RESTORED)
        a = rel.assess(start, start + timedelta(days=1), GroupBy.FEEDER)
        assert a.major_event_days == (DAY,)
        assert a.indices_excluding_med is not None and a.indices_excluding_med.saidi_min == 0.0
        assert a.groups_excluding_med["F6"].saidi_min == 0.0 and a.groups["F6"].saidi_min > 0
        # a row computed from the records is not overwritten by seeding again
        rel.history.put(HistoryRow(first, 99.0, 0.5, 0.0, 10, 990.0, "records"), 0)
        rel.history.seed({first: 1.0, first + timedelta(days=1): 2.0}, 0)
        got = rel.history.rows(first, first + timedelta(days=1))
        assert [(r.saidi_min, r.source) for r in got] == [(99.0, "records"), (2.0, "seed")]
    finally:
        rel.stop()


def test_too_short_history_gives_no_t_med(store: OutageRecordStore, model: NetworkModel, tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    _history_csv(path, DAY - timedelta(days=30), np.full(30, 2.0) + np.arange(30))
    rel = service(store, model, tmp_path / "data", FakeClock(ms(DAY, 12)), history_path=path)
    try:
        assert rel.med_threshold(DAY) is None  # 30 days < 365
    finally:
        rel.stop()
    rel = service(store, model, tmp_path / "data", FakeClock(ms(DAY, 12)), med_min_days=30)
    try:
        assert rel.med_threshold(DAY) is not None  # the seeded rows were kept in reliability.sqlite
    finally:
        rel.stop()


def test_bad_history_file_and_options_are_refused(store: OutageRecordStore, model: NetworkModel,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    path.write_text("date,saidi_min\n2026-01-01,-3\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"history\.csv:2: saidi_min must be"):
        service(store, model, tmp_path / "data", FakeClock(ms(DAY, 12)), history_path=path)
    with pytest.raises(ReliabilityError, match="report hour"):
        service(store, model, tmp_path / "data", FakeClock(ms(DAY, 12)), report_hour=25.0)
