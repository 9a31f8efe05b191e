"""IEEE 1366 indices, Major Event Days and the CSV readers, checked against arithmetic written out by hand."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from oms.med import med_threshold
from oms.outage_records import OutageRecord, OutageStatus
from oms.reliability import (
    GroupBy,
    Interruption,
    InterruptionTable,
    ReliabilityError,
    ReliabilityOptions,
    assess,
    compute_indices,
    interruptions_from_outage_records,
)
from oms.reliability_io import InputFileError, read_customers_served, read_history, read_interruptions
from oms.reliability_report import write_report

DAY = datetime(2025, 3, 1)


def _at(hh: int, mm: int = 0, ss: int = 0, day: datetime = DAY) -> datetime:
    return day.replace(hour=hh, minute=mm, second=ss)


def _worked_case() -> list[Interruption]:
    return [
        Interruption(_at(10), _at(11), 100, feeder="F1"),  # 60 min
        Interruption(_at(12), _at(12, 30), 200, feeder="F2"),  # 30 min
        # the same customers as the first record again: none of them is a new distinct customer
        Interruption(_at(15), _at(15, 20), 50, feeder="F1", distinct_customers=0),  # 20 min
        Interruption(_at(13), _at(13, 2), 300, feeder="F2", event_id="E1"),  # momentary, reclose shot 1
        Interruption(_at(13, 3), _at(13, 4), 300, feeder="F2", event_id="E1"),  # momentary, shot 2: same event
        Interruption(_at(16), _at(16, 1), 80, feeder="F1"),  # momentary, an event of its own
        Interruption(_at(8), _at(12), 40, feeder="F1", planned=True, cause="maintenance"),  # 240 min, planned
    ]


def test_worked_case_by_hand() -> None:
    a = assess(_worked_case(), 1000)
    ix = a.indices
    # NT = 1000, one day: T = 24 h
    # ΣNi = 100 + 200 + 50 = 350                         SAIFI = 350 / 1000 = 0.35
    # Σri·Ni = 60·100 + 30·200 + 20·50 = 13,000 min      SAIDI = 13,000 / 1000 = 13.0 min
    # CAIDI = 13.0 / 0.35 = 37.142857 min
    # CN = 100 + 200 + 0 = 300                           CAIFI = 350 / 300 = 1.166667, CTAIDI = 13,000 / 300
    # ASAI = (1000·24 − 13,000/60) / (1000·24) = (24,000 − 216.6667) / 24,000 = 0.990972
    # MAIFI = (300 + 300 + 80) / 1000 = 0.68; MAIFIe = (300 + 80) / 1000 = 0.38 (E1's two shots are one event)
    assert (a.period_start, a.period_end) == (DAY, DAY + timedelta(days=1))
    assert ix.period_hours == 24.0
    assert ix.customer_interruptions == 350 and ix.customer_minutes == 13000.0 and ix.customers_interrupted == 300
    assert ix.sustained_interruptions == 3 and ix.momentary_interruptions == 3
    assert ix.saifi == pytest.approx(0.35)
    assert ix.saidi_min == pytest.approx(13.0)
    assert ix.caidi_min == pytest.approx(13.0 / 0.35) == pytest.approx(37.142857)
    assert ix.caifi == pytest.approx(350 / 300)
    assert ix.ctaidi_min == pytest.approx(13000 / 300)
    assert ix.asai == pytest.approx((24000 - 13000 / 60) / 24000) == pytest.approx(0.990972, abs=1e-6)
    assert ix.maifi == pytest.approx(0.68)
    assert ix.maifie == pytest.approx(0.38)
    # planned: 40 customers for 240 min, reported apart: SAIFI 0.04, SAIDI 9.6 min, CAIDI 240 min
    assert a.records_total == 7 and a.records_planned == 1
    assert a.planned.saifi == pytest.approx(0.04) and a.planned.saidi_min == pytest.approx(9.6)
    assert a.planned.caidi_min == pytest.approx(240.0)


def test_planned_outages_do_not_change_the_indices() -> None:
    unplanned = [r for r in _worked_case() if not r.planned]
    more_planned = _worked_case() + [Interruption(_at(1), _at(5), 900, planned=True)]
    a, b = assess(unplanned, 1000, period_start=DAY, period_end=DAY + timedelta(days=1)), assess(more_planned, 1000)
    assert a.indices == b.indices
    assert a.planned.customer_interruptions == 0
    assert b.planned.customer_interruptions == 940 and b.planned.saidi_min == pytest.approx((40 * 240 + 900 * 240)
                                                                                             / 1000)


def test_five_minute_threshold_sustained_versus_momentary() -> None:
    exactly_5 = Interruption(_at(10), _at(10, 5), 10)
    just_over = Interruption(_at(11), _at(11, 5, 1), 10)
    ix = assess([exactly_5, just_over], 100).indices
    assert ix.momentary_interruptions == 1 and ix.sustained_interruptions == 1  # ≤ 5 min is momentary
    assert ix.saifi == pytest.approx(0.1) and ix.maifi == pytest.approx(0.1)
    # a 1-minute threshold makes both sustained
    ix = assess([exactly_5, just_over], 100, options=ReliabilityOptions(momentary_threshold_s=60)).indices
    assert ix.momentary_interruptions == 0 and ix.saifi == pytest.approx(0.2) and ix.maifi == 0.0
    with pytest.raises(ReliabilityError, match="momentary threshold"):
        ReliabilityOptions(momentary_threshold_s=-1)


def test_maifie_counts_a_reclosing_sequence_once_and_lockout_as_sustained() -> None:
    shots = [Interruption(_at(9, m), _at(9, m, 20), 500, feeder="F3", event_id="R1") for m in (0, 1, 2)]
    ix = assess(shots, 1000).indices
    assert ix.maifi == pytest.approx(1.5) and ix.maifie == pytest.approx(0.5)
    # the sequence ends with a sectionaliser leaving 100 of the 500 off: those had a sustained interruption, the
    # other 400 one momentary event
    lockout = Interruption(_at(9, 3), _at(10, 3), 100, feeder="F3", event_id="R1")
    ix = assess([*shots, lockout], 1000).indices
    assert ix.maifie == pytest.approx(0.4) and ix.saifi == pytest.approx(0.1)
    # the same with customer ids: union of the shots less the customers left off
    ids = tuple(f"C{i}" for i in range(5))
    shots_ids = [Interruption(_at(9, m), _at(9, m, 20), 5, event_id="R2", customer_ids=ids) for m in (0, 1)]
    locked = Interruption(_at(9, 3), _at(10, 3), 2, event_id="R2", customer_ids=ids[:2])
    assert assess([*shots_ids, locked], 10).indices.maifie == pytest.approx(0.3)
    # without event ids every momentary interruption is its own event
    loose = [Interruption(_at(9, m), _at(9, m, 20), 500) for m in (0, 1, 2)]
    assert assess(loose, 1000).indices.maifie == pytest.approx(1.5)


def test_caifi_from_customer_ids_is_the_union() -> None:
    a = Interruption(_at(10), _at(11), 3, customer_ids=("a", "b", "c"))
    b = Interruption(_at(14), _at(14, 30), 3, customer_ids=("b", "c", "d"))
    ix = assess([a, b], 10).indices
    # ΣNi = 6, CN = |{a, b, c, d}| = 4: CAIFI = 1.5; Σri·Ni = 60·3 + 30·3 = 270: CTAIDI = 67.5 min
    assert ix.customers_interrupted == 4 and ix.caifi == pytest.approx(1.5) and ix.ctaidi_min == pytest.approx(67.5)
    # a record without ids or a distinct count counts all its customers as distinct
    ix = assess([a, Interruption(_at(15), _at(16), 5)], 10).indices
    assert ix.customers_interrupted == 8


def test_groups_with_their_own_customers_served_and_as_contributions() -> None:
    a = assess(_worked_case(), 1000, group_by=GroupBy.FEEDER, group_customers={"F1": 400, "F2": 600, "F9": 10})
    assert a.group_basis == "group"
    # F1: 100 + 50 customers, 60·100 + 20·50 = 7000 min over 400 customers
    assert a.groups["F1"].saifi == pytest.approx(150 / 400) and a.groups["F1"].saidi_min == pytest.approx(7000 / 400)
    assert a.groups["F2"].saidi_min == pytest.approx(6000 / 600) and a.groups["F2"].maifie == pytest.approx(300 / 600)
    assert a.groups["F9"].saifi == 0.0 and math.isnan(a.groups["F9"].caidi_min)
    # contributions: the group figures add up to the system's
    c = assess(_worked_case(), 1000, group_by=GroupBy.FEEDER)
    assert c.group_basis == "system"
    assert sum(g.saidi_min for g in c.groups.values()) == pytest.approx(c.indices.saidi_min)
    with pytest.raises(ReliabilityError, match="customers served unknown for feeder F2"):
        assess(_worked_case(), 1000, group_by=GroupBy.FEEDER, group_customers={"F1": 400})
    assert a.feeder_customer_minutes == {"F1": 7000.0, "F2": 6000.0}


def test_daily_series_and_period_assignment_by_start_day() -> None:
    day2 = DAY + timedelta(days=1)
    # starts on day 1 at 23:00 and lasts 2 h: all 120 min belong to day 1
    recs = [Interruption(_at(23), _at(1, day=day2), 10), Interruption(_at(6, day=day2), _at(7, day=day2), 20)]
    a = assess(recs, 100, period_start=DAY, period_end=DAY + timedelta(days=3))
    assert [d.day for d in a.daily] == [date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)]
    assert [d.saidi_min for d in a.daily] == pytest.approx([12.0, 12.0, 0.0])
    assert a.indices.period_hours == 72.0
    only_day2 = assess(recs, 100, period_start=day2, period_end=day2 + timedelta(days=1))
    assert only_day2.indices.customer_interruptions == 20 and only_day2.records_total == 1
    quiet = assess([], 100, period_start=DAY, period_end=DAY + timedelta(days=2))
    assert quiet.indices.saifi == 0.0 and quiet.indices.asai == 1.0 and len(quiet.daily) == 2
    with pytest.raises(ReliabilityError, match="not after its start"):
        assess(recs, 100, period_start=day2, period_end=DAY)


def test_two_and_a_half_beta_on_a_lognormal_history() -> None:
    rng = np.random.default_rng(1366)
    alpha, beta, days = 0.4, 1.1, 5 * 365
    saidi = np.exp(rng.normal(alpha, beta, days))
    saidi[rng.random(days) < 0.2] = 0.0  # days without interruptions
    zeros = int((saidi == 0).sum())
    t = med_threshold(saidi)
    logs = np.log(saidi[saidi > 0])
    # the method itself: α, β (n − 1) of the non-zero days' logs
    assert t.zero_days_dropped == zeros > 300 and t.history_days == days
    assert t.alpha == pytest.approx(logs.mean()) and t.beta == pytest.approx(logs.std(ddof=1))
    assert t.t_med_min == pytest.approx(math.exp(logs.mean() + 2.5 * logs.std(ddof=1)))
    # and close to the theoretical exp(α + 2.5β) = 23.3 min: the estimate's spread is ~5 % at 1,460 days
    assert t.t_med_min == pytest.approx(math.exp(alpha + 2.5 * beta), rel=0.15)
    # about 0.6 % of lognormal days exceed α + 2.5β: ~2.3 MEDs a year
    assert 0.002 < float((saidi > t.t_med_min).sum()) / (days - zeros) < 0.015
    with pytest.raises(Exception, match="at least 2"):
        med_threshold([0.0, 0.0, 3.0])


def test_major_event_days_are_excluded_and_reported() -> None:
    history = med_threshold([1.0, 2.0, 4.0, 2.0, 1.0, 0.0, 3.0, 2.0])
    assert 5.0 < history.t_med_min < 10.0  # α = 0.652, β = 0.515: T_MED = 6.96 min
    day2, day3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
    recs = [
        Interruption(_at(10), _at(11), 20, feeder="F1"),  # day 1: 1,200 / 1000 = 1.2 min
        Interruption(_at(2, day=day2), _at(14, day=day2), 900, feeder="F2"),  # day 2 (storm): 648 min ≫ T_MED
        Interruption(_at(9, day=day3), _at(9, 30, day=day3), 100, feeder="F1"),  # day 3: 3 min
    ]
    a = assess(recs, 1000, history=history, group_by=GroupBy.FEEDER)
    assert a.major_event_days == (day2.date(),)
    assert [d.major_event_day for d in a.daily] == [False, True, False]
    # with MEDs: SAIFI (20 + 900 + 100) / 1000; without: (20 + 100) / 1000, SAIDI (1200 + 3000) / 1000
    assert a.indices.saifi == pytest.approx(1.02)
    assert a.indices_excluding_med is not None
    assert a.indices_excluding_med.saifi == pytest.approx(0.12)
    assert a.indices_excluding_med.saidi_min == pytest.approx(4.2)
    assert a.groups_excluding_med["F2"].saifi == 0.0 and a.groups["F2"].saifi == pytest.approx(0.9)
    assert assess(recs, 1000).indices_excluding_med is None


def test_invalid_records_name_the_problem() -> None:
    with pytest.raises(ReliabilityError, match="end .* is before start"):
        Interruption(_at(11), _at(10), 5, feeder="F1")
    with pytest.raises(ReliabilityError, match="customers must not be negative"):
        Interruption(_at(10), _at(11), -1)
    with pytest.raises(ReliabilityError, match="2 customer ids but customers=3"):
        Interruption(_at(10), _at(11), 3, customer_ids=("a", "b"))
    with pytest.raises(ReliabilityError, match="customers served must be positive"):
        table = InterruptionTable(_worked_case())
        compute_indices(table, np.ones(len(table), dtype=bool), 0, 24.0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_interruptions_and_errors_name_file_and_line(tmp_path: Path) -> None:
    good = _write(tmp_path / "o.csv", "start,end,customers,feeder,planned,cause,event_id,customer_ids\n"
                  "2025-03-01T10:00:00,2025-03-01T11:00:00,100,F1,false,tree,,\n"
                  "\n"
                  "2025-03-01 12:00,2025-03-01 12:02,,F2,yes,,E1,a;b;c\n")
    recs = read_interruptions(good)
    assert len(recs) == 2 and recs[0].customers == 100 and not recs[0].planned
    assert recs[1].planned and recs[1].customers == 3 and recs[1].customer_ids == ("a", "b", "c")
    aware = _write(tmp_path / "utc.csv", "start,end,customers\n2025-03-01T10:00:00+05:30,2025-03-01T11:00:00+05:30,1\n")
    assert read_interruptions(aware)[0].start == datetime(2025, 3, 1, 4, 30)
    cases = {
        "start,end,customers,colour\n": r"x\.csv:1: unknown column 'colour'",
        "start,customers\n": r"x\.csv:1: missing column 'end'",
        "start,end,customers\n2025-03-01T10:00,2025-03-01T11:00,1\n2025-03-01T10:00,2025-03-01T09:00,1\n":
            r"x\.csv:3: .*end 2025-03-01T09:00:00 is before start",
        "start,end,customers\n2025-03-01T10:00,2025-03-01T11:00,-4\n": r"x\.csv:2: customers must not be negative",
        "start,end,customers\n2025-03-01T10:00,,4\n": r"x\.csv:2: end is empty",
        "start,end,customers\nyesterday,2025-03-01T11:00,4\n": r"x\.csv:2: start 'yesterday' is not an ISO 8601 time",
        "start,end,customers,planned\n2025-03-01T10:00,2025-03-01T11:00,4,maybe\n": r"x\.csv:2: planned 'maybe'",
        "start,end,customers\n2025-03-01T10:00Z,2025-03-01T11:00,4\n": r"x\.csv:2: .*mixed",
        "": r"x\.csv:1: empty file",
    }
    for text, message in cases.items():
        with pytest.raises(InputFileError, match=message):
            read_interruptions(_write(tmp_path / "x.csv", text))
    with pytest.raises(InputFileError, match="cannot read"):
        read_interruptions(tmp_path / "missing.csv")


def test_read_history_and_served(tmp_path: Path) -> None:
    h = read_history(_write(tmp_path / "h.csv", "date,saidi_min\n2024-01-01,1.0\n2024-01-02,0\n2024-01-03,4.0\n"))
    assert h.history_days == 3 and h.zero_days_dropped == 1 and h.first_day == date(2024, 1, 1)
    assert h.t_med_min == pytest.approx(math.exp(math.log(2.0) + 2.5 * np.std(np.log([1.0, 4.0]), ddof=1)))
    with pytest.raises(InputFileError, match=r"h2\.csv:3: date 2024-01-01 appears twice"):
        read_history(_write(tmp_path / "h2.csv", "date,saidi_min\n2024-01-01,1\n2024-01-01,2\n"))
    with pytest.raises(InputFileError, match=r"h3\.csv:2: saidi_min must be a finite number"):
        read_history(_write(tmp_path / "h3.csv", "date,saidi_min\n2024-01-01,-1\n"))
    with pytest.raises(InputFileError, match=r"h4\.csv: .*at least 2"):
        read_history(_write(tmp_path / "h4.csv", "date,saidi_min\n2024-01-01,1\n"))
    assert read_customers_served(_write(tmp_path / "s.csv", "name,customers_served\nF1,400\n")) == {"F1": 400}
    with pytest.raises(InputFileError, match=r"s2\.csv:2: customers_served of 'F1' must be positive"):
        read_customers_served(_write(tmp_path / "s2.csv", "name,customers_served\nF1,0\n"))


def test_report_files(tmp_path: Path) -> None:
    history = med_threshold([10.0, 20.0, 40.0, 20.0, 10.0, 30.0])  # T_MED = 78 min
    a = assess(_worked_case() + [Interruption(_at(1, day=DAY + timedelta(days=1)), _at(23, day=DAY + timedelta(days=1)),
                                              800, feeder="F4")], 1000, history=history)
    files = write_report(a, tmp_path / "report")
    for png in (files.daily_png, files.feeders_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    rows = files.daily_csv.read_text().splitlines()
    assert rows[0].startswith("date,saifi,saidi_min") and len(rows) == 3
    assert rows[1].startswith("2025-03-01,0.350000,13.0000,0.380000,350,") and rows[1].split(",")[6] == "false"
    assert rows[2].split(",")[6] == "true"  # 800 customers for 22 h: 1056 min of SAIDI, far above T_MED
    feeders = files.feeders_csv.read_text().splitlines()
    assert feeders[1].startswith("F4,") and feeders[2].startswith("F1,7000.0,7.0000")


def test_outage_records_of_the_server_become_interruptions() -> None:
    t0 = int(datetime(2025, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)
    flisr = OutageRecord(id=1, source="flisr", source_ref="run-1", feeder="F2", tripped_device="F2-CB",
                         faulted_elements=("F2-C04",), isolated_boundary=(), customers_interrupted=500,
                         customers_restored=400, customers_still_off=100, started_ms=t0, restored_ms=t0 + 90_000,
                         status=OutageStatus.CLOSED, updated_ms=t0 + 3 * 3_600_000)
    ongoing = OutageRecord(id=2, source="flisr", source_ref="run-2", feeder="F1", tripped_device="F1-CB",
                           faulted_elements=(), isolated_boundary=(), customers_interrupted=50, customers_restored=0,
                           customers_still_off=50, started_ms=t0, status=OutageStatus.OPEN, updated_ms=t0)
    recs = interruptions_from_outage_records([flisr, ongoing], utc_offset=timedelta(hours=5, minutes=30))
    assert [(r.start, r.end, r.customers) for r in recs] == [
        (datetime(2025, 3, 1, 15, 30), datetime(2025, 3, 1, 15, 31, 30), 400),
        (datetime(2025, 3, 1, 15, 30), datetime(2025, 3, 1, 18, 30), 100)]
    ix = assess(recs, 1000).indices
    # 400 restored by FLISR in 90 s: one momentary event each; 100 off for 180 min: SAIDI 18 min
    assert ix.maifie == pytest.approx(0.4) and ix.saifi == pytest.approx(0.1) and ix.saidi_min == pytest.approx(18.0)
