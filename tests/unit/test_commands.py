"""Server-side command checks and the SBO state machine, with an in-process field that answers like an RTU."""

import threading

import pytest

from models.commands import ControlAction, ControlRequest, ControlResult, ControlStatus
from models.config import OperatorConfig, Role, parse_station_config
from models.points import DoubleState
from models.updates import Cause, LinkEvent, UpdateBatch, new_update_rows
from scada.commands import CommandService, FeedbackStatus, RefusalReason
from scada.errors import CommandRefused
from scada.rtdb import Rtdb

CONFIG = """
[station]
name = "t"
[[rtus]]
name = "R1"
common_address = 1
addresses = ["127.0.0.1:2404"]
[[points]]
name = "CB"
kind = "double"
rtu = "R1"
address = 1
type = "M_DP_TB_1"
control = { type = "double", address = 11, timeout_s = 1, feedback_timeout_s = 1 }
[[points]]
name = "I"
kind = "analog"
rtu = "R1"
address = 2
type = "M_ME_TF_1"
[[points]]
name = "SP"
kind = "setpoint"
rtu = "R1"
address = 3
type = "M_ME_NC_1"
control = { type = "setpoint_float", address = 13, mode = "direct", timeout_s = 1 }
"""

OP = OperatorConfig("op", Role.OPERATOR, "op-token-123")
OP2 = OperatorConfig("op2", Role.OPERATOR, "op2-token-123")
VIEWER = OperatorConfig("v", Role.VIEWER, "viewer-token")


class Field:
    """Answers like an outstation: positive confirmation, and on execute the breaker really moves."""

    def __init__(self, rtdb: Rtdb) -> None:
        self.rtdb = rtdb
        self.answer = ControlStatus.SUCCESS
        self.move = True
        self.silent = False
        self.requests: list[ControlRequest] = []
        self.service: CommandService | None = None

    def send_control(self, req: ControlRequest) -> bool:
        self.requests.append(req)
        if not self.silent:
            threading.Timer(0.01, self._answer, args=(req,)).start()
        return True

    def _answer(self, req: ControlRequest) -> None:
        assert self.service is not None
        self.service.on_control_result(ControlResult(req.request_id, self.answer, "field says so"))
        if self.answer is ControlStatus.SUCCESS and self.move and req.action in (ControlAction.EXECUTE,
                                                                                 ControlAction.DIRECT):
            rows = new_update_rows(1)
            rows[0] = (req.point, req.value, 0, 1, Cause.RETURN_REMOTE)
            self.rtdb.ingest(UpdateBatch("field", rows, 0))


class Tags:
    def __init__(self) -> None:
        self.on: set[str] = set()

    def blocking(self, point):
        return [f"HOLD on {point.name}"] if point.name in self.on else []


class Audit:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def record(self, **fields):
        self.rows.append(fields)


@pytest.fixture
def env():
    rtdb = Rtdb(parse_station_config(CONFIG))
    rtdb.start()
    rows = new_update_rows(1)
    rows[0] = (0, DoubleState.OFF, 0, 1, Cause.INTERROGATED)
    rtdb.ingest(UpdateBatch("t", rows, 0))
    rtdb.ingest(LinkEvent("t", "R1", True))
    assert rtdb.flush()
    field, tags, audit = Field(rtdb), Tags(), Audit()
    svc = CommandService(rtdb, field, tags=tags, audit=audit)
    field.service = svc
    yield svc, field, tags, audit, rtdb
    rtdb.stop()


def refused(fn, *args) -> RefusalReason:
    with pytest.raises(CommandRefused) as ei:
        fn(*args)
    return ei.value.reason


def test_sbo_round_trip_with_feedback(env) -> None:
    svc, field, _, audit, rtdb = env
    sel = svc.select(0, DoubleState.ON, OP)
    assert sel.status is ControlStatus.SUCCESS and sel.action is ControlAction.SELECT
    out = svc.operate(0, DoubleState.ON, OP)
    assert out.status is ControlStatus.SUCCESS and out.feedback is FeedbackStatus.CONFIRMED
    assert [r.action for r in field.requests] == [ControlAction.SELECT, ControlAction.EXECUTE]
    assert rtdb.snapshot([0])[0]["value"] == DoubleState.ON
    assert [a["outcome"] for a in audit.rows] == ["sent", "answered", "sent", "answered"]
    # the selection was consumed
    assert refused(svc.operate, 0, DoubleState.ON, OP) is RefusalReason.NOT_SELECTED


def test_refusals_before_the_field(env) -> None:
    svc, field, tags, audit, rtdb = env
    assert refused(svc.select, 99, 2, OP) is RefusalReason.UNKNOWN_POINT
    assert refused(svc.select, 1, 2, OP) is RefusalReason.NOT_CONTROLLABLE
    assert refused(svc.select, 0, 7, OP) is RefusalReason.INVALID_VALUE
    assert refused(svc.select, 0, 2, VIEWER) is RefusalReason.NOT_AUTHORISED
    assert refused(svc.operate, 0, 2, OP) is RefusalReason.NOT_SELECTED
    tags.on.add("CB")
    assert refused(svc.select, 0, 2, OP) is RefusalReason.TAGGED
    tags.on.clear()
    svc.add_interlock(lambda p, a, v: "would parallel two sources" if v == 2 else None)
    assert refused(svc.select, 0, 2, OP) is RefusalReason.INTERLOCKED
    assert field.requests == []
    assert all(a["outcome"] == "refused" for a in audit.rows) and len(audit.rows) == 7
    rtdb.ingest(LinkEvent("t", "R1", False))
    assert rtdb.flush()
    assert refused(svc.select, 0, 1, OP) is RefusalReason.LINK_DOWN


def test_selection_belongs_to_its_operator(env) -> None:
    svc, *_ = env
    svc.select(0, 2, OP)
    assert refused(svc.select, 0, 2, OP2) is RefusalReason.SELECTED_BY_OTHER
    assert refused(svc.operate, 0, 2, OP2) is RefusalReason.SELECTED_BY_OTHER
    assert refused(svc.operate, 0, 1, OP) is RefusalReason.INVALID_VALUE
    assert svc.cancel(0, OP).action is ControlAction.CANCEL
    assert refused(svc.operate, 0, 2, OP) is RefusalReason.NOT_SELECTED


def test_field_refusal_timeout_and_missing_feedback(env) -> None:
    svc, field, *_ = env
    field.answer = ControlStatus.REFUSED_BY_FIELD
    assert svc.select(0, 2, OP).status is ControlStatus.REFUSED_BY_FIELD
    assert refused(svc.operate, 0, 2, OP) is RefusalReason.NOT_SELECTED  # a refused select selects nothing
    field.answer = ControlStatus.SUCCESS
    field.move = False
    svc.select(0, 2, OP)
    assert svc.operate(0, 2, OP).feedback is FeedbackStatus.NOT_CONFIRMED
    field.silent = True
    out = svc.operate(2, 42.0, OP)  # direct set-point
    assert out.status is ControlStatus.TIMEOUT and "within 1 s" in out.field_detail


def test_direct_point_refuses_select(env) -> None:
    svc, *_ = env
    assert refused(svc.select, 2, 10.0, OP) is RefusalReason.INVALID_VALUE
