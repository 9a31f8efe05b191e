"""The DS transfer-set engine (iccp.tase2.transfer_sets) on explicit clocks: attribute writes and enabling checks,
interval/integrity periods, RBE with and without AllChangesReported, buffer time, TLE, critical acknowledgement."""

from __future__ import annotations

import pytest
from open61850.data import BoolData, IntData, VisibleStringData

from iccp.mms.codec import DataAccessCode
from iccp.tase2.bilateral import TransferSetLimits
from iccp.tase2.mapping import RtdbValue
from iccp.tase2.model import DSConditions, DSTransferSet, ObjectName, Scope, TransferReportHeader
from iccp.tase2.transfer_sets import ReportEntry, TransferSetEngine, TransferSetError
from models.points import Quality

DOMAIN = "DSO1"
MEMBERS = (*TransferReportHeader.NAMES, "A", "B", "C")
DATA_SETS = {ObjectName(Scope.ICC, DOMAIN, "DS1"): MEMBERS}
T0 = 1_000_000.0


def lookup(name: ObjectName) -> tuple[str, ...] | None:
    return DATA_SETS.get(name)


def v(x: float) -> RtdbValue:
    return RtdbValue(x, Quality.GOOD, -1)


def engine(**limits: int) -> TransferSetEngine:
    e = TransferSetEngine(DOMAIN, TransferSetLimits(**{"min_interval_s": 1, "min_integrity_s": 1, **limits}),
                          header_names=TransferReportHeader.NAMES, ack_timeout_s=2.0, ack_retries=1)
    e.add("DSTransferSet01")
    return e


def start(e: TransferSetEngine, now: float = T0, name: str = "DSTransferSet01", **attrs: object) -> None:
    value = DSTransferSet(ObjectName(Scope.ICC, DOMAIN, "DS1"), **attrs).encode()  # type: ignore[arg-type]
    assert e.write(name, (), value, now, lookup) is None
    assert e.write(name, ("Status",), BoolData(True), now, lookup) is None


def test_attributes_by_component_and_enabling_checks() -> None:
    e = engine(min_interval_s=5)
    ts = "DSTransferSet01"
    assert e.write(ts, ("Interval",), IntData(10), T0, lookup) is None
    assert e.write(ts, ("Status",), BoolData(True), T0, lookup) is DataAccessCode.OBJECT_VALUE_INVALID  # no data set
    name = ObjectName(Scope.ICC, DOMAIN, "DS1").encode()
    assert e.write(ts, ("DataSetName",), name, T0, lookup) is None
    # an allocated transfer set requests no condition until the client writes DSConditionsRequested
    assert e.write(ts, ("Status",), BoolData(True), T0, lookup) is DataAccessCode.OBJECT_VALUE_INVALID
    assert e.write(ts, ("DSConditionsRequested",), DSTransferSet(ObjectName(Scope.ICC, DOMAIN, "DS1")).encode()
                   .members[6], T0, lookup) is None
    assert e.write(ts, ("Interval",), IntData(2), T0, lookup) is None
    assert e.write(ts, ("Status",), BoolData(True), T0, lookup) is DataAccessCode.OBJECT_VALUE_INVALID  # below 5 s
    assert e.write(ts, ("Interval",), IntData(5), T0, lookup) is None
    assert e.write(ts, ("Status",), BoolData(True), T0, lookup) is None
    assert e.enabled(ts)
    decoded = DSTransferSet.decode(e.value(ts))
    assert decoded.status and decoded.interval_s == 5
    assert e.write(ts, ("Interval",), IntData(9), T0, lookup) is DataAccessCode.OBJECT_ATTRIBUTE_INCONSISTENT
    assert e.write(ts, ("Interval",), VisibleStringData("x"), T0, lookup) is DataAccessCode.TYPE_INCONSISTENT
    assert e.write(ts, ("Nope",), IntData(1), T0, lookup) is DataAccessCode.OBJECT_NON_EXISTENT
    with pytest.raises(TransferSetError):
        e.write("DSTransferSet02", (), IntData(1), T0, lookup)


def test_interval_and_integrity_periods_combine_and_skip_missed_periods() -> None:
    e = engine()
    start(e, interval_s=2, integrity_check_s=6, conditions=DSConditions.INTERVAL | DSConditions.INTEGRITY)
    assert e.next_deadline() == T0 + 2
    assert e.due(T0 + 1.9) == []
    (r,) = e.due(T0 + 2)
    assert r.conditions == DSConditions.INTERVAL and r.whole and [x.member for x in r.entries] == ["A", "B", "C"]
    e.due(T0 + 4)
    (r,) = e.due(T0 + 6)
    assert r.conditions == DSConditions.INTERVAL | DSConditions.INTEGRITY
    (r,) = e.due(T0 + 15)  # the loop was late: one report, then the next boundary after now
    assert e.next_deadline() == T0 + 16


def test_start_time_in_the_future_delays_the_first_period() -> None:
    e = engine()
    start(e, start_time_s=int(T0) + 100, interval_s=10, conditions=DSConditions.INTERVAL)
    assert e.next_deadline() == T0 + 110


def test_rbe_reports_only_changed_members_latest_value() -> None:
    e = engine()
    start(e, conditions=DSConditions.CHANGE, rbe=True)
    assert not e.on_changes([("Z", v(1))], T0)  # not a member
    assert e.on_changes([("B", v(1)), ("A", v(2)), ("B", v(3))], T0)
    (r,) = e.due(T0)
    assert r.conditions == DSConditions.CHANGE and not r.whole
    assert r.entries == (ReportEntry("B", v(3)), ReportEntry("A", v(2)))
    assert e.due(T0 + 1) == []


def test_all_changes_reported_keeps_every_change_in_order() -> None:
    e = engine()
    start(e, conditions=DSConditions.CHANGE, rbe=True, all_changes_reported=True)
    e.on_changes([("B", v(1)), ("A", v(2)), ("B", v(3))], T0)
    (r,) = e.due(T0)
    assert [(x.member, x.value.value) for x in r.entries] == [("B", 1), ("A", 2), ("B", 3)]


def test_buffer_time_collects_changes_from_the_first_one() -> None:
    e = engine()
    start(e, conditions=DSConditions.CHANGE, rbe=True, buffer_time_s=3)
    e.on_changes([("A", v(1))], T0)
    e.on_changes([("C", v(2))], T0 + 2)
    assert e.next_deadline() == T0 + 3
    assert e.due(T0 + 2.9) == []
    (r,) = e.due(T0 + 3)
    assert [x.member for x in r.entries] == ["A", "C"] and r.detected_s == T0 + 3


def test_change_without_rbe_reports_the_whole_data_set() -> None:
    e = engine()
    start(e, conditions=DSConditions.CHANGE, rbe=False)
    e.on_changes([("C", v(2))], T0)
    (r,) = e.due(T0)
    assert r.whole and r.conditions == DSConditions.CHANGE and all(x.value is None for x in r.entries)


def test_an_interval_report_absorbs_buffered_changes_unless_all_changes_reported() -> None:
    e = engine()
    start(e, interval_s=1, buffer_time_s=5, conditions=DSConditions.INTERVAL | DSConditions.CHANGE, rbe=True)
    e.on_changes([("A", v(1))], T0 + 0.5)
    (r,) = e.due(T0 + 1)
    assert r.conditions == DSConditions.INTERVAL
    later = e.due(T0 + 5.5)
    assert [x.conditions for x in later] == [DSConditions.INTERVAL]  # no change report: the change was absorbed
    e2 = engine()
    start(e2, interval_s=1, buffer_time_s=5, all_changes_reported=True, rbe=True,
          conditions=DSConditions.INTERVAL | DSConditions.CHANGE)
    e2.on_changes([("A", v(1))], T0 + 0.5)
    e2.due(T0 + 1)
    reports = e2.due(T0 + 5.5)
    assert any(r.conditions == DSConditions.CHANGE and r.entries == (ReportEntry("A", v(1)),) for r in reports)


def test_tle_drops_reports_handed_over_too_late() -> None:
    e = engine()
    start(e, interval_s=1, tle_s=2, conditions=DSConditions.INTERVAL)
    (r,) = e.due(T0 + 1)
    assert r.deadline_s == T0 + 3
    assert not e.expired(r, T0 + 2.5)
    assert e.expired(r, T0 + 3.5) and e.stats.tle_expired == 1


def test_critical_reports_retransmit_then_alarm_and_acks_clear_them() -> None:
    alarms: list[tuple[str, str]] = []
    e = engine()
    e.on_alarm = lambda ts, text: alarms.append((ts, text))
    start(e, conditions=DSConditions.CHANGE, rbe=True, critical=True)
    e.on_changes([("A", v(1))], T0)
    (r,) = e.due(T0)
    assert r.critical and e.outstanding("DSTransferSet01") == 1
    assert e.acknowledge("DSTransferSet01") and e.outstanding("DSTransferSet01") == 0
    e.on_changes([("A", v(2))], T0 + 1)
    e.due(T0 + 1)
    assert e.next_deadline() == T0 + 3  # ack time-out
    (again,) = e.due(T0 + 3)
    assert again.attempt == 1 and again.entries == (ReportEntry("A", v(2)),)
    assert e.due(T0 + 5) == [] and e.stats.critical_unacked == 1 and alarms[0][0] == "DSTransferSet01"
    assert not e.acknowledge("DSTransferSet01")


def test_disable_and_cleanup() -> None:
    e = engine(max_transfer_sets=2)
    e.add("DSTransferSet02")
    with pytest.raises(TransferSetError):
        e.add("DSTransferSet03")
    start(e, interval_s=1, conditions=DSConditions.INTERVAL)
    assert e.uses(ObjectName(Scope.ICC, DOMAIN, "DS1"))
    assert e.write("DSTransferSet01", ("Status",), BoolData(False), T0, lookup) is None
    assert e.next_deadline() is None and not e.uses(ObjectName(Scope.ICC, DOMAIN, "DS1"))
    assert sorted(e.remove_all()) == ["DSTransferSet01", "DSTransferSet02"] and e.names == []
