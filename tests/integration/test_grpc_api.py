"""The operator API over real gRPC on 127.0.0.1: a real RTDB, real SQLite stores in tmp_path, and an in-process
field that answers commands like an RTU. Values are fed with rtdb.ingest."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from support import sample_config_on_free_ports, wait_for

from models.commands import ControlAction, ControlRequest, ControlResult, ControlStatus
from models.config import StationConfig
from models.points import DoubleState, Quality
from models.updates import Cause, LinkEvent, UpdateBatch, new_update_rows
from scada.alarms import AlarmManager
from scada.api.client import ClientError, ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.api.server import SERVICE_NAMES, build_grpc_server
from scada.audit import AuditLog
from scada.auth import Authenticator
from scada.client_cli import main as cli_main
from scada.commands import CommandService
from scada.historian import Historian
from scada.rtdb import Rtdb
from scada.services import Services
from scada.soe import SoeJournal
from scada.tags import TagStore

OPERATOR = "operator-demo-token"
VIEWER = "viewer-demo-token"
FAST_CB = 'control = { type = "double", address = 6002, mode = "sbo", timeout_s = 1, feedback_timeout_s = 1 }'


class Field:
    """Answers like an outstation: positive confirmation after 10 ms, and on execute the status really moves."""

    def __init__(self, rtdb: Rtdb) -> None:
        self.rtdb = rtdb
        self.silent = False
        self.service: CommandService | None = None
        self._timers: list[threading.Timer] = []

    def send_control(self, req: ControlRequest) -> bool:
        if not self.silent:
            t = threading.Timer(0.01, self._answer, args=(req,))
            self._timers.append(t)
            t.start()
        return True

    def _answer(self, req: ControlRequest) -> None:
        assert self.service is not None
        self.service.on_control_result(ControlResult(req.request_id, ControlStatus.SUCCESS, "positive confirmation"))
        if req.action in (ControlAction.EXECUTE, ControlAction.DIRECT):
            rows = new_update_rows(1)
            rows[0] = (req.point, req.value, 0, time.time_ns() // 1_000_000, Cause.RETURN_REMOTE)
            self.rtdb.ingest(UpdateBatch("field", rows, 0))

    def join(self) -> None:
        for t in self._timers:
            t.join(2)


@dataclass
class Api:
    config: StationConfig
    services: Services
    server: grpc.Server
    address: str
    field: Field
    historian_sub: object

    def client(self, token: str = OPERATOR) -> ScadaClient:
        return ScadaClient(self.address, token, timeout_s=5.0)

    def feed(self, *values: tuple[str, float, int, int]) -> None:
        """Ingest (name, value, quality, source_time_ms) rows as one batch, wait until applied, run the historian."""
        rows = new_update_rows(len(values))
        for i, (name, value, quality, t_ms) in enumerate(values):
            rows[i] = (self.config.point(name).id, value, quality, t_ms, Cause.SPONTANEOUS)
        self.services.rtdb.ingest(UpdateBatch("test", rows, time.time_ns() // 1_000_000))
        self.drain()

    def drain(self) -> None:
        """Wait until the RTDB applied everything queued, then run the historian over the published changes."""
        assert self.services.rtdb.flush(5.0)
        while (cs := self.historian_sub.get(timeout_s=0)) is not None:  # type: ignore[attr-defined]
            self.services.historian.process(cs)

    def grpc_subscribers(self) -> list[str]:
        return [name for name, _, _ in self.services.rtdb.stats().subscribers if name.startswith("grpc:")]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    config, _ = sample_config_on_free_ports(
        tmp_path, replace={'control = { type = "double", address = 6002, mode = "sbo" }': FAST_CB})
    data = tmp_path / "data"
    soe = SoeJournal(data / "soe.sqlite", config.points)
    rtdb = Rtdb(config, soe=soe)
    alarms = AlarmManager(config, data / "alarms.sqlite")
    historian = Historian(data / "historian.sqlite", config.points)
    tags = TagStore(data / "tags.sqlite")
    audit = AuditLog(data / "audit.sqlite")
    field = Field(rtdb)
    commands = CommandService(rtdb, field, tags=tags, audit=audit)
    field.service = commands
    services = Services(config, rtdb, commands, alarms, soe, historian, tags, audit, Authenticator(config))
    server = None
    try:
        rtdb.start()
        alarms.start(rtdb.subscribe("alarms", max_pending=1024))
        hist_sub = rtdb.subscribe("historian", max_pending=1024)
        for rtu in config.rtus:
            rtdb.ingest(LinkEvent("test", rtu.name, True))
        assert rtdb.flush(5.0)
        server, port = build_grpc_server(services, "127.0.0.1:0")
        server.start()
        yield Api(config, services, server, f"127.0.0.1:{port}", field, hist_sub)
    finally:
        if server is not None:
            server.stop(grace=None).wait(5)
        field.join()
        alarms.stop()
        rtdb.stop()
        for store in (soe, historian, tags, audit):
            store.close()


def _code(exc_info: pytest.ExceptionInfo[ClientError]) -> grpc.StatusCode:
    return exc_info.value.code


# ------------------------------------------------------------------------------------------------ points


@pytest.mark.timeout(60)
def test_list_and_read_points(api: Api) -> None:
    with api.client(VIEWER) as c:
        defs = {d.name: d for d in c.list_points()}
        assert len(defs) == len(api.config.points)
        cb = defs["SHN/F1/CB"]
        assert cb.kind == pb.POINT_KIND_DOUBLE and cb.controllable and cb.control_mode == pb.CONTROL_MODE_SBO
        assert cb.rtu == "RTU-SHN" and cb.control_type == "double"
        assert defs["SHN/BUS11/V"].units == "kV" and not defs["SHN/BUS11/V"].controllable
        assert [d.name for d in c.list_points("bus11/")] == ["SHN/BUS11/V", "SHN/BUS11/F"]

        t_ms = 1_700_000_000_123
        api.feed(("SHN/BUS11/V", 11.02, 0, t_ms), ("SHN/F1/CB", DoubleState.ON, int(Quality.NOT_TOPICAL), -1))
        v, cb_val = c.read(["SHN/BUS11/V", api.config.point("SHN/F1/CB").id])
        assert (v.name, v.value, v.quality, v.source_time_ms, v.cause) == (
            "SHN/BUS11/V", 11.02, 0, t_ms, pb.CAUSE_SPONTANEOUS)
        assert v.recv_time_ms > 0 and v.seq > 0
        assert cb_val.value == 2 and list(cb_val.quality_names) == ["NOT_TOPICAL"] and cb_val.source_time_ms == -1
        assert len(c.read()) == len(api.config.points)

        with pytest.raises(ClientError) as ei:
            c.read(["SHN/BUS11/V", "NO/SUCH/POINT"])
        assert _code(ei) == grpc.StatusCode.NOT_FOUND and "'NO/SUCH/POINT'" in ei.value.message
        with pytest.raises(ClientError) as ei:
            c.read([99_999])
        assert _code(ei) == grpc.StatusCode.NOT_FOUND and "99999" in ei.value.message


@pytest.mark.timeout(60)
def test_subscribe_snapshot_then_changes(api: Api) -> None:
    names = ["SHN/BUS11/V", "SHN/F1/CB"]
    with api.client(VIEWER) as c:
        stream = c.subscribe(names)
        first = next(stream)
        assert first.snapshot and first.end_of_snapshot
        assert sorted(v.name for v in first.values) == sorted(names)
        # nothing reported yet: invalid and communication lost, never "good" by default
        assert all(set(v.quality_names) == {"INVALID", "COMM_LOST"} and np.isnan(v.value) for v in first.values)

        t_ms = 1_700_000_000_500
        api.feed(("SHN/BUS11/V", 10.9, int(Quality.QUESTIONABLE | Quality.SUBSTITUTED), t_ms),
                 ("SHN/F2/CB", 2, 0, t_ms))  # not subscribed: must not arrive
        upd = next(stream)
        assert not upd.snapshot and upd.dropped == 0
        assert [(v.name, v.value, v.quality, tuple(v.quality_names), v.source_time_ms, v.cause) for v in upd.values] \
            == [("SHN/BUS11/V", 10.9, int(Quality.QUESTIONABLE | Quality.SUBSTITUTED),
                 ("QUESTIONABLE", "SUBSTITUTED"), t_ms, pb.CAUSE_SPONTANEOUS)]
        api.feed(("SHN/F1/CB", 1, 0, t_ms + 7))
        upd = next(stream)
        assert [(v.name, v.value, v.quality, v.source_time_ms) for v in upd.values] == [("SHN/F1/CB", 1, 0, t_ms + 7)]
        assert upd.values[0].seq > 0 and upd.values[0].recv_time_ms > 0
        assert len(api.grpc_subscribers()) == 1
        stream.cancel()
        assert list(stream) == []
        wait_for(lambda: not api.grpc_subscribers(), 5, "the stream's RTDB subscription to be removed after cancel")


@pytest.mark.timeout(60)
def test_stream_ends_when_server_stops(api: Api) -> None:
    c = api.client(VIEWER)
    try:
        stream = c.subscribe()
        first = next(stream)
        assert first.snapshot and len(first.values) == len(api.config.points)
        wait_for(lambda: api.grpc_subscribers(), 5, "the stream's subscription")
        api.server.stop(grace=0.2).wait(5)
        with pytest.raises(ClientError) as ei:
            next(stream)
        assert _code(ei) in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        wait_for(lambda: not api.grpc_subscribers(), 5, "the stream's RTDB subscription to be removed at stop")
    finally:
        c.close()


# ------------------------------------------------------------------------------------------------ auth, health


@pytest.mark.timeout(60)
def test_authentication_and_permissions(api: Api) -> None:
    with ScadaClient(api.address, "") as anon, pytest.raises(ClientError) as ei:
        anon.list_points()
    assert _code(ei) == grpc.StatusCode.UNAUTHENTICATED and "token" in ei.value.message
    with ScadaClient(api.address, "not-a-known-token") as bad, pytest.raises(ClientError) as ei:
        bad.read(["SHN/BUS11/V"])
    assert _code(ei) == grpc.StatusCode.UNAUTHENTICATED
    with api.client(VIEWER) as viewer:
        with pytest.raises(ClientError) as ei:
            viewer.operate("SHN/F1/CB", 1)
        assert _code(ei) == grpc.StatusCode.PERMISSION_DENIED
        assert "viewer" in ei.value.message and "(role viewer)" in ei.value.message and "operate" in ei.value.message
        with pytest.raises(ClientError) as ei:
            viewer.acknowledge(None)
        assert _code(ei) == grpc.StatusCode.PERMISSION_DENIED and "acknowledge" in ei.value.message
        with pytest.raises(ClientError) as ei:
            viewer.place_tag("SHN/F1/CB", "hold", "work")
        assert _code(ei) == grpc.StatusCode.PERMISSION_DENIED
    # a stream refuses before its first message
    with ScadaClient(api.address, "nope-nope") as bad, pytest.raises(ClientError) as ei:
        next(bad.subscribe())
    assert _code(ei) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.timeout(60)
def test_health_and_reflection(api: Api) -> None:
    with ScadaClient(api.address, "") as c:  # no token needed for health
        assert c.health() == "SERVING"
        assert all(c.health(name) == "SERVING" for name in SERVICE_NAMES)
    channel = grpc.insecure_channel(api.address)
    try:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    finally:
        channel.close()
    assert {"dscada.v1.PointService", "dscada.v1.ControlService", "dscada.v1.AlarmService",
            "dscada.v1.HistoryService", "grpc.health.v1.Health"} <= services


# ------------------------------------------------------------------------------------------------ controls


@pytest.mark.timeout(60)
def test_select_operate_cancel_and_refusals(api: Api) -> None:
    api.feed(("SHN/F1/CB", DoubleState.ON, 0, -1))
    with api.client() as c:
        sel = c.select("SHN/F1/CB", DoubleState.OFF)
        assert sel.status == pb.CONTROL_STATUS_SUCCESS and sel.action == "select" and sel.request_id > 0
        op = c.operate("SHN/F1/CB", DoubleState.OFF)
        assert (op.status, op.feedback, op.point_name, op.action) == (
            pb.CONTROL_STATUS_SUCCESS, pb.FEEDBACK_STATUS_CONFIRMED, "SHN/F1/CB", "execute")
        assert op.elapsed_ms > 0 and op.request_id > sel.request_id
        assert c.read(["SHN/F1/CB"])[0].value == DoubleState.OFF

        with pytest.raises(ClientError) as ei:  # the selection was used up
            c.operate("SHN/F1/CB", DoubleState.ON)
        assert _code(ei) == grpc.StatusCode.FAILED_PRECONDITION and ei.value.refusal == "not_selected"
        assert "SHN/F1/CB" in ei.value.message

        c.select("SHN/F1/CB", DoubleState.ON)
        cancel = c.cancel("SHN/F1/CB")
        assert cancel.status == pb.CONTROL_STATUS_SUCCESS and cancel.action == "cancel"

        with pytest.raises(ClientError) as ei:
            c.select("SHN/F1/CB", 7)
        assert _code(ei) == grpc.StatusCode.INVALID_ARGUMENT and ei.value.refusal == "invalid_value"
        with pytest.raises(ClientError) as ei:
            c.select("SHN/BUS11/V", 1)
        assert _code(ei) == grpc.StatusCode.FAILED_PRECONDITION and "not controllable" in ei.value.message
        with pytest.raises(ClientError) as ei:
            c.operate("NO/SUCH/CB", 1)
        assert _code(ei) == grpc.StatusCode.NOT_FOUND and "'NO/SUCH/CB'" in ei.value.message

        tag = c.place_tag("SHN/F1/CB", "hold", "line work on F1")
        assert (tag.target, tag.kind, tag.operator) == ("SHN/F1/CB", "hold", "operator") and tag.id > 0
        assert [t.id for t in c.tags()] == [tag.id]
        with pytest.raises(ClientError) as ei:
            c.select("SHN/F1/CB", DoubleState.ON)
        assert _code(ei) == grpc.StatusCode.FAILED_PRECONDITION and ei.value.refusal == "tagged"
        assert "line work on F1" in ei.value.message
        assert c.remove_tag(tag.id, "work done").id == tag.id
        assert c.tags() == []
        with pytest.raises(ClientError) as ei:
            c.remove_tag(tag.id)
        assert _code(ei) == grpc.StatusCode.FAILED_PRECONDITION and "already removed" in ei.value.message
        with pytest.raises(ClientError) as ei:
            c.place_tag("NO/SUCH/THING", "hold", "x")
        assert _code(ei) == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ClientError) as ei:
            c.place_tag("SHN/F1/CB", "sticky", "x")
        assert _code(ei) == grpc.StatusCode.INVALID_ARGUMENT and "sticky" in ei.value.message

        audit = c.audit(point="SHN/F1/CB")
        outcomes = {(e.action, e.outcome) for e in audit}
        assert ("execute", "answered") in outcomes and ("execute", "refused") in outcomes
        assert all(e.operator == "operator" for e in audit)


@pytest.mark.timeout(60)
def test_field_timeout_is_a_result_not_an_error(api: Api) -> None:
    api.field.silent = True
    with api.client() as c:
        t0 = time.monotonic()
        res = c.select("SHN/F1/CB", DoubleState.OFF)  # timeout_s = 1 in this configuration
        assert res.status == pb.CONTROL_STATUS_TIMEOUT and "no answer" in res.field_detail
        assert 1.0 <= time.monotonic() - t0 < 5.0


# ------------------------------------------------------------------------------------------------ alarms


@pytest.mark.timeout(60)
def test_alarms_list_stream_ack_shelve(api: Api) -> None:
    with api.client() as c:
        stream = c.stream_alarms()
        done = next(stream)
        assert done.kind == pb.ALARM_EVENT_KIND_SNAPSHOT_DONE  # no alarms yet
        api.feed(("SHN/F1/CB", DoubleState.OFF, 0, 1_700_000_000_000))  # configured state alarm: high priority
        raised = next(stream)
        assert raised.kind == pb.ALARM_EVENT_KIND_RAISED and raised.alarm.point_name == "SHN/F1/CB"
        alarm_id = raised.alarm.id

        listed = wait_for(lambda: c.alarms(), 5, "the alarm to be listed")
        assert [(a.id, a.priority, a.state) for a in listed] == [
            (alarm_id, pb.PRIORITY_HIGH, pb.ALARM_STATE_ACTIVE_UNACKED)]
        assert c.alarms(min_priority=1) == []  # critical only

        acked = c.acknowledge([alarm_id])
        assert [(a.id, a.state, a.acked_by) for a in acked] == [(alarm_id, pb.ALARM_STATE_ACTIVE_ACKED, "operator")]
        assert next(stream).kind == pb.ALARM_EVENT_KIND_ACKNOWLEDGED

        shelved = c.shelve(alarm_id, 60, "known fault")
        assert shelved.shelved and shelved.shelve_reason == "known fault" and shelved.shelved_by == "operator"
        assert c.alarms() == [] and [a.id for a in c.alarms(include_shelved=True)] == [alarm_id]
        assert not c.unshelve(alarm_id).shelved and [a.id for a in c.alarms()] == [alarm_id]
        stream.cancel()

        with pytest.raises(ClientError) as ei:
            c.acknowledge([424242])
        assert _code(ei) == grpc.StatusCode.NOT_FOUND and "424242" in ei.value.message
        with pytest.raises(ClientError) as ei:
            c.shelve(alarm_id, 0, "x")
        assert _code(ei) == grpc.StatusCode.INVALID_ARGUMENT

        api.feed(("SHN/F1/CB", DoubleState.ON, 0, 1_700_000_001_000))  # back to normal, acked -> closed
        wait_for(lambda: not c.alarms(include_shelved=True), 5, "the acknowledged alarm to close")
        assert [a.state for a in c.alarms(include_closed=True)] == [pb.ALARM_STATE_CLOSED]


# ------------------------------------------------------------------------------------------------ history


@pytest.mark.timeout(60)
def test_soe_and_history_queries(api: Api) -> None:
    t0 = 1_700_000_000_000
    for i in range(4):
        api.feed(("SHN/F1/CB", DoubleState.OFF if i % 2 == 0 else DoubleState.ON, 0, t0 + i * 1000),
                 ("SHN/BUS11/V", 11.0 + i * 0.1, 0, t0 + i * 1000))
    with api.client(VIEWER) as c:
        soe = c.soe(points=["SHN/F1/CB"])
        assert [e.source_time_ms for e in soe] == [t0 + 3000, t0 + 2000, t0 + 1000, t0]  # newest first
        assert [e.value for e in soe] == [2, 1, 2, 1] and soe[-1].cause == pb.CAUSE_SPONTANEOUS
        assert [e.source_time_ms for e in c.soe(limit=2, oldest_first=True)] == [t0, t0 + 1000]
        assert c.soe(start_ms=t0 + 2500) [0].source_time_ms == t0 + 3000

        raw = c.history("SHN/BUS11/V", start_ms=t0, end_ms=t0 + 10_000)
        assert raw.bucket_s == 0 and raw.units == "kV" and not raw.buckets
        assert [s.time_ms for s in raw.samples] == [t0, t0 + 1000, t0 + 2000, t0 + 3000]
        assert [round(s.value, 3) for s in raw.samples] == [11.0, 11.1, 11.2, 11.3]
        agg = c.history("SHN/BUS11/V", start_ms=t0, end_ms=t0 + 4000, bucket_s=2)
        assert agg.bucket_s == 2 and [(b.start_ms, b.count) for b in agg.buckets] == [(t0, 2), (t0 + 2000, 2)]
        b = agg.buckets[1]
        assert (round(b.min, 3), round(b.max, 3), round(b.mean, 3), round(b.last, 3)) == (11.2, 11.3, 11.25, 11.3)
        assert len(c.history("SHN/BUS11/V", start_ms=t0, end_ms=t0 + 4000, max_points=1).buckets) == 1
        with pytest.raises(ClientError) as ei:
            c.history("SHN/BUS11/V", start_ms=t0 + 5, end_ms=t0)
        assert _code(ei) == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.timeout(60)
def test_cli_points_table_and_errors(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.feed(("SHN/F1/CB", DoubleState.ON, 0, -1), ("SHN/F2/CB", DoubleState.OFF, int(Quality.INVALID), -1),
             ("SHN/BUS11/V", 11.04, 0, time.time_ns() // 1_000_000))
    base = ["--address", api.address, "--token", VIEWER]
    assert cli_main([*base, "points", "--filter", "SHN/"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.split()[1:2] and "SHN/" in line}
    assert "CLOSED" in lines["SHN/F1/CB"] and "OPEN" in lines["SHN/F2/CB"] and "INVALID" in lines["SHN/F2/CB"]
    assert "11.04" in lines["SHN/BUS11/V"] and "kV" in lines["SHN/BUS11/V"]

    assert cli_main(["--address", api.address, "--token", OPERATOR, "operate", "NO/SUCH/CB", "close"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NO/SUCH/CB" in err[0] and "unknown point" in err[0]

    assert cli_main([*base, "operate", "SHN/F1/CB", "open"]) == 2
    assert "may not operate" in capsys.readouterr().err

    assert cli_main(["--address", api.address, "--token", OPERATOR, "operate", "SHN/F1/CB", "open"]) == 2
    err = capsys.readouterr().err
    assert "refused (not_selected)" in err and "SHN/F1/CB" in err


@pytest.mark.timeout(60)
def test_cli_commands_alarms_soe_history_tags(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.feed(("SHN/F1/CB", DoubleState.ON, 0, -1))
    op = ["--address", api.address, "--token", OPERATOR]
    assert cli_main([*op, "select", "SHN/F1/CB", "open"]) == 0
    assert "success" in capsys.readouterr().out.lower()
    assert cli_main([*op, "operate", "SHN/F1/CB", "open"]) == 0
    out = capsys.readouterr().out.lower()
    assert "success" in out and "confirmed" in out
    api.drain()

    wait_for(lambda: api.services.alarms.list(), 5, "the breaker-open alarm")
    assert cli_main([*op, "alarms"]) == 0
    out = capsys.readouterr().out
    assert "SHN/F1/CB = OPEN" in out and "active unacked" in out, out
    alarm_id = api.services.alarms.list()[0].id
    assert cli_main([*op, "ack", str(alarm_id)]) == 0
    assert "acknowledged 1" in capsys.readouterr().out
    assert cli_main([*op, "shelve", str(alarm_id), "--minutes", "5", "--reason", "known"]) == 0
    assert "shelved" in capsys.readouterr().out
    assert cli_main([*op, "alarms", "--all"]) == 0
    assert "shelved" in capsys.readouterr().out.lower()

    assert cli_main([*op, "soe", "--last", "5"]) == 0
    assert "OPEN" in capsys.readouterr().out
    assert cli_main([*op, "history", "SHN/F1/CB", "--minutes", "5"]) == 0
    assert "OPEN" in capsys.readouterr().out
    assert cli_main([*op, "history", "SHN/F1/CB", "--minutes", "5", "--buckets", "3"]) == 0
    capsys.readouterr()

    assert cli_main([*op, "tag", "SHN/F2/CB", "--kind", "hold", "--reason", "men at work"]) == 0
    assert "tag" in capsys.readouterr().out
    tag_id = api.services.tags.active()[0].id
    assert cli_main([*op, "tags"]) == 0
    assert "men at work" in capsys.readouterr().out
    assert cli_main([*op, "select", "SHN/F2/CB", "close"]) == 2
    assert "refused (tagged)" in capsys.readouterr().err
    assert cli_main([*op, "untag", str(tag_id)]) == 0
    capsys.readouterr()

    api.field.silent = True
    assert cli_main([*op, "select", "SHN/F1/CB", "close"]) == 1  # the field did not answer: shown, exit 1
    assert "timeout" in capsys.readouterr().out.lower()


@pytest.mark.timeout(60)
def test_cli_watch_exits_after_seconds(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.feed(("SHN/BUS11/V", 11.07, 0, -1))
    t0 = time.monotonic()
    assert cli_main(["--address", api.address, "--token", VIEWER, "watch", "SHN/BUS11/V", "--seconds", "1"]) == 0
    assert 0.9 <= time.monotonic() - t0 < 6
    assert "11.07" in capsys.readouterr().out
    wait_for(lambda: not api.grpc_subscribers(), 5, "watch's subscription to be removed")
