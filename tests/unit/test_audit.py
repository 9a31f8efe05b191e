import math
import sqlite3

import pytest

from scada.audit import AuditError, AuditLog, AuditOutcome


def _attempt(log: AuditLog, **over):
    fields = dict(operator="alice", role="operator", point=3, point_name="F1.CB.pos", action="select", value=2.0,
                  outcome="sent", request_id=7)
    fields.update(over)
    return log.record(**fields)


@pytest.fixture
def log(tmp_path):
    a = AuditLog(tmp_path / "audit.sqlite")
    try:
        yield a
    finally:
        a.close()


def test_record_attempt_and_answer_as_separate_rows(log):
    sent = _attempt(log, time_ms=1_000)
    answer = _attempt(log, time_ms=1_040, outcome=AuditOutcome.ANSWERED, reason="success", field_status="success",
                      field_detail="ACT_CON positive", elapsed_ms=40.5)
    assert sent.id and answer.id > sent.id
    assert sent.outcome is AuditOutcome.SENT and answer.outcome is AuditOutcome.ANSWERED
    got = log.query(request_id=7, newest_first=False)
    assert got == [sent, answer]
    assert got[1].field_detail == "ACT_CON positive" and got[1].elapsed_ms == 40.5


def test_the_command_service_call_shape_is_accepted(log):
    # exactly the keywords scada.commands.CommandService._audit_record passes
    e = log.record(operator="bob", role="viewer", point=-1, point_name="", action="execute", value=float("nan"),
                   outcome="refused", reason="unknown_point", field_status="", field_detail="no point 99",
                   elapsed_ms=0.0, request_id=0)
    (got,) = log.query()
    assert math.isnan(got.value) and math.isnan(e.value)  # NaN stored as NULL and read back as NaN
    assert (got.id, got.point, got.outcome, got.reason, got.field_detail) == (
        e.id, -1, AuditOutcome.REFUSED, "unknown_point", "no point 99")


def test_query_filters_and_order(log):
    for k in range(10):
        _attempt(log, time_ms=1_000 + k * 100, operator="alice" if k % 2 else "bob", point=k % 3,
                 outcome="refused" if k % 4 == 0 else "sent", request_id=k)
    assert [e.time_ms for e in log.query()] == [1_000 + k * 100 for k in reversed(range(10))]
    assert [e.request_id for e in log.query(start_ms=1_200, end_ms=1_500, newest_first=False)] == [2, 3, 4]
    assert {e.operator for e in log.query(operator="bob")} == {"bob"} and len(log.query(operator="bob")) == 5
    assert [e.request_id for e in log.query(point=1, newest_first=False)] == [1, 4, 7]
    assert [e.request_id for e in log.query(point=0, operator="alice")] == [9, 3]
    assert [e.request_id for e in log.query(limit=3)] == [9, 8, 7]
    assert log.query(limit=0) == []


def test_unknown_outcome_is_refused_naming_the_command(log):
    with pytest.raises(AuditError, match="'select' on 'F1.CB.pos' by 'alice'.*'maybe'"):
        _attempt(log, outcome="maybe")
    assert log.query() == []


def test_rows_cannot_be_changed_or_deleted(log):
    e = _attempt(log)
    c = log.conn()
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        with c:
            c.execute("UPDATE audit SET operator = 'mallory' WHERE id = ?", (e.id,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        with c:
            c.execute("DELETE FROM audit")
    assert log.query() == [e]


def test_audit_survives_restart(tmp_path):
    path = tmp_path / "audit.sqlite"
    a = AuditLog(path)
    try:
        first = _attempt(a, time_ms=5)
    finally:
        a.close()
    a = AuditLog(path)
    try:
        second = _attempt(a, time_ms=6)
        assert a.query(newest_first=False) == [first, second]
    finally:
        a.close()
