"""The live OMS over gRPC on the sample station (no adapters): an AMI EndDeviceEvents message with last gasps of most
meters behind one fuse predicts that fuse, its customers read as out with the crew's ETR, an unknown caller is
refused by name, and the restoration notifications restore it; a breaker trip in the RTDB is a SCADA outage."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import OmsCentre, oms_centre

from dms.api.protos import oms_pb2 as pb
from models.end_device_events import (
    EndDeviceEvent,
    EndDeviceEventCode,
    EndDeviceEvents,
    format_end_device_events,
)
from models.points import DoubleState, PointKind
from models.timebase import now_ms
from models.updates import Cause, UpdateBatch, new_update_rows
from oms.crews import Crew, CrewSkill, required_skill
from scada.server import ControlCenter

OPERATOR = (("authorization", "Bearer operator-demo-token"),)
VIEWER = (("authorization", "Bearer viewer-demo-token"),)
FUSE = "F1-RMU01-TEE"  # 24 customers behind one DT


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OmsCentre]:
    with oms_centre(tmp_path) as centre:
        yield centre


def _message(meters: list[str], code: EndDeviceEventCode, t_ms: int, tag: str) -> str:
    events = tuple(EndDeviceEvent(f"{tag}-{i}", t_ms + 10 * i, code, m, reason="test") for i, m in enumerate(meters))
    return json.dumps(format_end_device_events(EndDeviceEvents(t_ms + 2000, "head-end-test", events, tag)))


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def _active_at(stub: Any, device: str) -> pb.Outage | None:
    reply = stub.ListOutages(pb.ListOutagesRequest(active_only=True), metadata=VIEWER)
    return next((o for o in reply.outages if o.device == device), None)


def test_last_gasps_predict_the_fuse_and_restorations_restore_it(server: OmsCentre) -> None:
    oms, stub = server.oms, server.stub
    meters = [m for m in oms.connectivity.meter_ids if FUSE in {d.name for d in oms.connectivity.chain(m)}]
    assert len(meters) == 24
    # a crew that can reach it, so the customers get an ETR
    sw = next(s for s in oms.model.switches if s.name == FUSE)
    bus = oms.model.buses[sw.from_bus]
    t0 = now_ms()
    oms.crews.add_crew(Crew("C1", "crew one", (bus.x + 0.01, bus.y), t0 - 3_600_000, t0 + 8 * 3_600_000,
                            frozenset({CrewSkill(required_skill(oms.model, FUSE))})))

    reporting = meters[:18]  # three quarters report: a last gasp is lost now and then
    reply = stub.SubmitMeterEvents(pb.SubmitMeterEventsRequest(
        end_device_events_json=_message(reporting, EndDeviceEventCode.POWER_OFF, t0, "pon")), metadata=OPERATOR)
    assert reply.total == 18 and reply.applied == 18 and not reply.unknown_refs

    outage = _wait(f"a prediction at {FUSE}", lambda: _active_at(stub, FUSE), 10.0)
    assert outage.state == "predicted" and outage.source == "ami" and outage.customers_affected == 24
    assert outage.pons == 18 and outage.started_ms == t0
    assert outage.record_id > 0
    record = server.store.get(outage.record_id)
    assert record.tripped_device == FUSE and record.status.value == "open" and record.source == "ami"

    status = stub.CustomerStatus(pb.CustomerStatusRequest(customers=[meters[20], "170099999999"]), metadata=VIEWER)
    silent, unknown = status.customers
    assert silent.known and silent.out and silent.device == FUSE and silent.since_ms == t0  # out without a PON
    assert silent.outage_id == outage.id
    assert silent.etr_ms > t0 and "restoration expected" in silent.text  # the crew was assigned
    assert not unknown.known and "170099999999" in unknown.text

    with pytest.raises(grpc.RpcError) as exc:
        stub.SubmitTroubleCall(pb.SubmitTroubleCallRequest(customer="170099999999", text="no power"),
                               metadata=OPERATOR)
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND and "170099999999" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:  # reading is not enough to submit evidence
        stub.SubmitTroubleCall(pb.SubmitTroubleCallRequest(customer=meters[20]), metadata=VIEWER)
    assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED
    call = stub.SubmitTroubleCall(pb.SubmitTroubleCallRequest(customer=meters[20], text="no power"),
                                  metadata=OPERATOR)
    assert call.applied == 1

    breakers = stub.BreakerStatus(pb.BreakerStatusRequest(), metadata=VIEWER).breakers
    f1 = next(b for b in breakers if b.name == "F1-CB")
    assert f1.closed and f1.kind == "breaker" and not f1.outage_id  # a fuse outage leaves the feeder breaker in

    stub.SubmitMeterEvents(pb.SubmitMeterEventsRequest(
        end_device_events_json=_message(reporting, EndDeviceEventCode.POWER_ON, t0 + 60_000, "prn")),
        metadata=OPERATOR)
    _wait(f"{FUSE} restored", lambda: _active_at(stub, FUSE) is None, 10.0)
    everything = stub.ListOutages(pb.ListOutagesRequest(), metadata=VIEWER).outages
    restored = next(o for o in everything if o.id == outage.id)
    assert restored.state == "restored" and restored.prns == 18
    assert any("restored" in line for line in restored.timeline)
    # no crew was on site: the record closes with the restoration; its one step gives 23 back, the caller is
    # still off (handed to a single-light-out record of its own)
    rec = _wait("the record closed", lambda: (r := server.store.get(outage.record_id)).status.value == "closed"
                and r, 5.0)
    assert rec.stage.value == "closed" and rec.closed_ms >= t0 + 60_000 and rec.customers_still_off == 0
    assert [s.customers for s in rec.steps] == [23] and rec.steps[0].time_ms == rec.closed_ms
    assert not oms.crews.assignments()  # the crew was released
    back = stub.CustomerStatus(pb.CustomerStatusRequest(customers=[meters[0]]), metadata=VIEWER).customers[0]
    assert back.known and not back.out and back.since_ms == -1


def test_a_malformed_message_is_refused_by_field(server: OmsCentre) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        server.stub.SubmitMeterEvents(pb.SubmitMeterEventsRequest(end_device_events_json='{"Header": {}}'),
                                      metadata=OPERATOR)
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT and exc.value.details()


def _feed(center: ControlCenter, point: int, value: float, t_ms: int) -> None:
    rows = new_update_rows(1)
    rows[0] = (point, value, 0, t_ms, Cause.SPONTANEOUS)
    center.rtdb.ingest(UpdateBatch("test", rows, 0))
    assert center.rtdb.flush(5)


def test_a_breaker_trip_in_the_rtdb_is_a_scada_outage_with_its_trip_time(server: OmsCentre) -> None:
    center, stub = server.center, server.stub
    assert center.topology is not None
    point = next(p for p in center.config.points if p.kind.is_status
                 and (s := center.topology.switch_of_point(p.id)) is not None and s.name == "F1-CB")
    closed, opened = ((DoubleState.ON, DoubleState.OFF) if point.kind is PointKind.DOUBLE else (1, 0))
    t0 = now_ms()
    _feed(center, point.id, closed, t0 - 5000)
    _feed(center, point.id, opened, t0)
    outage = _wait("a SCADA outage at F1-CB", lambda: _active_at(stub, "F1-CB"), 10.0)
    assert outage.state == "confirmed" and outage.source == "scada" and outage.started_ms == t0
    assert outage.customers_affected == server.oms.connectivity.device("F1-CB").customers > 100
    f1 = _wait("F1-CB open in the breaker status", lambda: next(
        (b for b in stub.BreakerStatus(pb.BreakerStatusRequest(), metadata=VIEWER).breakers
         if b.name == "F1-CB" and not b.closed), None), 5.0)
    assert f1.changed_ms == t0 and f1.outage_id == outage.id and "trip" in f1.cause and point.name in f1.cause
    _feed(center, point.id, closed, t0 + 30_000)
    _wait("F1-CB restored", lambda: _active_at(stub, "F1-CB") is None, 10.0)
