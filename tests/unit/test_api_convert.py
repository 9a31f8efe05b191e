"""Conversions between server types and the protobuf messages, and that the committed generated code is current."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.commands import ControlAction, ControlStatus
from models.points import ControlMode, PointKind, Priority, Quality
from models.samples import load_sample_station
from models.updates import Cause
from scada.alarm_rules import Alarm, AlarmEvent, AlarmEventKind, AlarmKind, AlarmState
from scada.api import codegen, convert
from scada.api.protos import scada_pb2 as pb
from scada.changes import CHANGE_DTYPE
from scada.commands import CommandOutcome, FeedbackStatus
from scada.historian import BUCKET_DTYPE, SAMPLE_DTYPE, HistoryResult
from scada.soe import SoeEntry

ENUMS = [
    (ControlStatus, "CONTROL_STATUS"),
    (FeedbackStatus, "FEEDBACK_STATUS"),
    (AlarmState, "ALARM_STATE"),
    (AlarmEventKind, "ALARM_EVENT_KIND"),
    (PointKind, "POINT_KIND"),
]


@pytest.mark.parametrize(("enum", "prefix"), ENUMS, ids=[p for _, p in ENUMS])
def test_every_enum_member_round_trips(enum, prefix) -> None:
    numbers = set()
    for member in enum:
        n = convert.enum_to_pb(member, prefix)
        assert n != 0, f"{member} must not map to UNSPECIFIED"
        assert convert.enum_from_pb(n, prefix, enum) is member
        numbers.add(n)
    assert len(numbers) == len(enum)
    with pytest.raises(ValueError, match=enum.__name__):
        convert.enum_from_pb(0, prefix, enum)


def test_numeric_enums_match_python() -> None:
    for cause in Cause:
        assert pb.Cause.Value(f"CAUSE_{cause.name}") == cause.value
    for prio in Priority:
        assert pb.Priority.Value(f"PRIORITY_{prio.name}") == prio.value
    assert convert.priority_from_pb(0) is None and convert.priority_from_pb(2) is Priority.HIGH
    with pytest.raises(ValueError, match="priority 9"):
        convert.priority_from_pb(9)


def test_point_definition() -> None:
    config = load_sample_station()
    cb = convert.point_definition(config.point("SHN/F1/CB"))
    assert (cb.name, cb.kind, cb.controllable, cb.control_mode, cb.control_type, cb.rtu) == (
        "SHN/F1/CB", pb.POINT_KIND_DOUBLE, True, pb.CONTROL_MODE_SBO, "double", "RTU-SHN")
    v = convert.point_definition(config.point("SHN/BUS11/V"))
    assert (v.controllable, v.control_mode, v.control_type, v.units) == (False, pb.CONTROL_MODE_UNSPECIFIED, "", "kV")
    assert convert.point_kind(v) is PointKind.ANALOG
    tap = config.point("SHN/TR1/TAP")
    assert tap.control is not None and tap.control.mode is ControlMode.DIRECT
    assert convert.point_definition(tap).control_mode == pb.CONTROL_MODE_DIRECT


def _rows(n: int) -> np.ndarray:
    rows = np.zeros(n, dtype=CHANGE_DTYPE)
    rows["point"] = np.arange(n) % 3
    rows["value"] = np.arange(n) * 1.5
    rows["value"][0] = np.nan
    rows["quality"] = [int(Quality.INVALID | Quality.COMM_LOST), 0, int(Quality.NOT_TOPICAL)] * (n // 3) + \
        [0] * (n % 3)
    rows["source_time_ms"] = -1
    rows["source_time_ms"][1:] = 1_700_000_000_000 + np.arange(1, n)
    rows["recv_time_ms"] = 1_700_000_000_999
    rows["seq"] = np.arange(1, n + 1)
    rows["cause"] = Cause.SPONTANEOUS
    rows["prev_value"] = np.nan
    return rows


def test_point_values_round_trip() -> None:
    rows = _rows(6)
    msgs = convert.point_values(rows, ["A", "B", "C"])
    assert [m.name for m in msgs] == ["A", "B", "C", "A", "B", "C"]
    assert math.isnan(msgs[0].value) and list(msgs[0].quality_names) == ["INVALID", "COMM_LOST"]
    assert msgs[1].quality == 0 and list(msgs[1].quality_names) == []
    assert list(msgs[2].quality_names) == ["NOT_TOPICAL"]
    assert (msgs[0].source_time_ms, msgs[5].source_time_ms, msgs[5].seq) == (-1, 1_700_000_000_005, 6)
    assert msgs[3].cause == pb.CAUSE_SPONTANEOUS
    back = convert.point_value_rows(msgs)
    for col in ("point", "quality", "source_time_ms", "recv_time_ms", "seq", "cause"):
        assert np.array_equal(back[col], rows[col]), col
    assert np.array_equal(back["value"], rows["value"], equal_nan=True)
    assert convert.point_value_rows([]).dtype == CHANGE_DTYPE


def test_snapshot_chunks() -> None:
    empty = convert.snapshot_updates(np.zeros(0, dtype=CHANGE_DTYPE), [])
    assert len(empty) == 1 and empty[0].snapshot and empty[0].end_of_snapshot and not empty[0].values
    chunks = convert.snapshot_updates(_rows(5), ["A", "B", "C"], chunk=2)
    assert [len(c.values) for c in chunks] == [2, 2, 1]
    assert all(c.snapshot for c in chunks) and [c.end_of_snapshot for c in chunks] == [False, False, True]


def test_control_result() -> None:
    out = CommandOutcome(7, 1, "SHN/F1/CB", ControlAction.EXECUTE, 1.0, ControlStatus.TIMEOUT, "no answer",
                         FeedbackStatus.NOT_APPLICABLE, 1001.5)
    res = convert.control_result(out)
    assert (res.request_id, res.point_name, res.action, res.status, res.feedback, res.elapsed_ms) == (
        7, "SHN/F1/CB", "execute", pb.CONTROL_STATUS_TIMEOUT, pb.FEEDBACK_STATUS_NOT_APPLICABLE, 1001.5)
    assert convert.control_status(res) is ControlStatus.TIMEOUT


def _alarm(**kw) -> Alarm:
    base = dict(id=3, key="state:1:1", point=1, point_name="SHN/F1/CB", kind=AlarmKind.STATE, condition="state=1",
                priority=Priority.HIGH, text="Feeder breaker open", value=1.0, state=AlarmState.ACTIVE_UNACKED,
                raised_ms=1000, updated_ms=1000, cleared_ms=None, acked_by=None, acked_ms=None,
                shelved_until_ms=None, shelved_by=None, shelve_reason=None, occurrences=1)
    base.update(kw)
    return Alarm(**base)


def test_alarm_optionals_and_shelving() -> None:
    a = convert.alarm(_alarm(), now_ms=2000)
    assert (a.cleared_ms, a.acked_ms, a.shelved_until_ms, a.acked_by, a.shelved) == (-1, -1, -1, "", False)
    assert (a.priority, a.state, a.kind) == (pb.PRIORITY_HIGH, pb.ALARM_STATE_ACTIVE_UNACKED, "state")
    s = convert.alarm(_alarm(shelved_until_ms=5000, shelved_by="op", shelve_reason="known"), now_ms=2000)
    assert s.shelved and (s.shelved_until_ms, s.shelved_by) == (5000, "op")
    assert not convert.alarm(_alarm(shelved_until_ms=5000), now_ms=5000).shelved  # expired at the instant
    ev = convert.alarm_event(AlarmEvent(AlarmEventKind.CLEARED, _alarm(cleared_ms=1500), 1500), 2000)
    assert (ev.kind, ev.time_ms, ev.alarm.cleared_ms) == (pb.ALARM_EVENT_KIND_CLEARED, 1500, 1500)


def test_soe_and_history() -> None:
    e = convert.soe_entry(SoeEntry(9, 1, "SHN/F1/CB", 1.0, 2.0, Quality.TIME_INVALID, -1, 1234, Cause.SPONTANEOUS))
    assert (e.seq, e.value, e.prev_value, e.quality, list(e.quality_names), e.source_time_ms, e.cause) == (
        9, 1.0, 2.0, int(Quality.TIME_INVALID), ["TIME_INVALID"], -1, pb.CAUSE_SPONTANEOUS)

    samples = np.array([(1000, 1.0, 0), (2000, 2.0, 4)], dtype=SAMPLE_DTYPE)
    raw = convert.history(HistoryResult(5, "P", 0, 3000, 0, samples, np.zeros(0, BUCKET_DTYPE),
                                        np.zeros(0, SAMPLE_DTYPE)), "MW")
    assert raw.bucket_s == 0 and raw.units == "MW" and not raw.buckets
    assert [(s.time_ms, s.value, s.quality) for s in raw.samples] == [(1000, 1.0, 0), (2000, 2.0, 4)]
    buckets = np.array([(0, 1.0, 2.0, 1.5, 2.0, 4, 2)], dtype=BUCKET_DTYPE)
    agg = convert.history(HistoryResult(5, "P", 0, 3000, 2500, np.zeros(0, SAMPLE_DTYPE), buckets,
                                        np.zeros(0, SAMPLE_DTYPE)), "MW")
    assert agg.bucket_s == 2.5 and not agg.samples
    b = agg.buckets[0]
    assert (b.start_ms, b.min, b.max, b.mean, b.last, b.quality, b.count) == (0, 1.0, 2.0, 1.5, 2.0, 4, 2)


@pytest.mark.timeout(60)
def test_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    root = codegen.repo_root()
    target = tmp_path / codegen.PROTO_RELATIVE
    target.parent.mkdir(parents=True)
    shutil.copy(root / codegen.PROTO_RELATIVE, target)
    for generated in codegen.generate(tmp_path):
        committed = root / generated.relative_to(tmp_path)
        assert generated.read_text() == committed.read_text(), (
            f"{committed} is stale: run python -m scada.api.codegen")
