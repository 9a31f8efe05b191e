"""One outage's whole life through the OutageService on the sample station (no adapters): last gasps predict a fuse,
the crew added over gRPC is assigned, travels, arrives and reports the work done, the record follows every stage
with its ETR, cause and restoration step, operators watch it stream and see it in the summary, closing early is
refused, and the closed record gives the IEEE 1366 figures by hand. Also: a breaker opened by a command is switching,
not a trip; and a storm of last gasps puts the service in storm mode with one outage instead of a flood."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import OmsCentre, oms_centre, wait_for

from dms.api.protos import oms_pb2 as pb
from models.end_device_events import EndDeviceEvent, EndDeviceEventCode, EndDeviceEvents, format_end_device_events
from models.points import DoubleState, PointKind
from models.timebase import now_ms
from models.updates import Cause, UpdateBatch, new_update_rows
from oms.crews import required_skill
from oms.reliability import assess, interruptions_from_outage_records
from scada.server import ControlCenter

OPERATOR = (("authorization", "Bearer operator-demo-token"),)
VIEWER = (("authorization", "Bearer viewer-demo-token"),)
FUSE = "F1-RMU01-TEE"  # 24 customers behind one DT
MIN = 60_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OmsCentre]:
    with oms_centre(tmp_path, with_commands=True, period_s=0.2) as centre:
        yield centre


def _send(stub: Any, meters: list[str], code: EndDeviceEventCode, t_ms: int, tag: str) -> pb.IngestReply:
    events = tuple(EndDeviceEvent(f"{tag}-{i}", t_ms + 10 * i, code, m) for i, m in enumerate(meters))
    text = json.dumps(format_end_device_events(EndDeviceEvents(t_ms + 2000, "head-end-test", events, tag)))
    return stub.SubmitMeterEvents(pb.SubmitMeterEventsRequest(end_device_events_json=text), metadata=OPERATOR)


def _record(stub: Any, record_id: int) -> pb.OutageRecord:
    return stub.GetRecord(pb.RecordRequest(record_id=record_id), metadata=VIEWER)


def _stage(stub: Any, record_id: int, stage: str) -> pb.OutageRecord | None:
    r = _record(stub, record_id)
    return r if r.stage == stage else None


def test_one_outage_from_last_gasp_to_indices(server: OmsCentre) -> None:
    oms, stub = server.oms, server.stub
    meters = [m for m in oms.connectivity.meter_ids if FUSE in {d.name for d in oms.connectivity.chain(m)}]
    seen: list[pb.Outage] = []
    watch = stub.WatchOutages(pb.WatchOutagesRequest(include_snapshot=True), metadata=VIEWER)

    def read() -> None:
        try:
            for o in watch:
                seen.append(o)
        except grpc.RpcError as exc:  # the test cancels the stream at its end
            assert exc.code() is grpc.StatusCode.CANCELLED, exc

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        t0 = now_ms() - 90 * MIN  # the fault happened an hour and a half ago (meter clocks say so)
        _send(stub, meters[:18], EndDeviceEventCode.POWER_OFF, t0, "pon")
        outage = wait_for(lambda: next((o for o in stub.ListOutages(pb.ListOutagesRequest(active_only=True),
                                                                     metadata=VIEWER).outages if o.device == FUSE),
                                       None), 10, f"a prediction at {FUSE}")
        rid = outage.record_id
        rec = wait_for(lambda: _stage(stub, rid, "predicted"), 5, "the record predicted")
        assert rec.cause == f"fuse {FUSE} operated (predicted from 18 last gasps)" and not rec.planned
        # no crew on the board: the ETR comes from the rules (dispatch 45 min + fuse repair 45 min)
        assert rec.etr_ms == t0 + 90 * MIN and rec.crew == ""

        summary = stub.OutageSummary(pb.OutageSummaryRequest(), metadata=VIEWER)
        assert (summary.active_outages, summary.customers_off, summary.outages_waiting_for_crew) == (1, 24, 1)
        assert summary.feeders[0].feeder == "F1" and summary.largest[0].device == FUSE and not summary.storm

        sw = next(s for s in oms.model.switches if s.name == FUSE)
        bus = oms.model.buses[sw.from_bus]
        now = now_ms()
        crew = stub.AddCrew(pb.Crew(id="C1", name="line crew 1", x=bus.x + 0.02, y=bus.y, shift_start_ms=now - MIN,
                                    shift_end_ms=now + 480 * MIN, skills=[required_skill(oms.model, FUSE).value]),
                            metadata=OPERATOR)
        assert crew.status == "available"
        rec = wait_for(lambda: _stage(stub, rid, "crew_assigned"), 5, "the crew assigned in the record")
        board = stub.ListCrews(pb.ListCrewsRequest(), metadata=VIEWER)
        assert rec.crew == "C1" and board.assignments[0].crew_id == "C1" and rec.etr_ms == board.assignments[0].etr_ms
        with pytest.raises(grpc.RpcError) as exc:  # a crew cannot arrive before it set off
            stub.ReportCrewStatus(pb.CrewStatusReport(crew_id="C1", status="on_site"), metadata=OPERATOR)
        assert exc.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "en_route" in exc.value.details()
        with pytest.raises(grpc.RpcError) as exc:
            stub.ReportCrewStatus(pb.CrewStatusReport(crew_id="C9", status="en_route"), metadata=OPERATOR)
        assert exc.value.code() is grpc.StatusCode.NOT_FOUND and "C9" in exc.value.details()

        assert stub.ReportCrewStatus(pb.CrewStatusReport(crew_id="C1", status="en_route"),
                                     metadata=OPERATOR).stage == "en_route"
        wait_for(lambda: _stage(stub, rid, "en_route"), 5, "en route in the record")
        on_site_ms = now_ms()
        assert stub.ReportCrewStatus(pb.CrewStatusReport(crew_id="C1", status="on_site", time_ms=on_site_ms),
                                     metadata=OPERATOR).stage == "on_site"
        rec = wait_for(lambda: _stage(stub, rid, "on_site"), 5, "on site in the record")
        assert rec.etr_ms == on_site_ms + 45 * MIN  # on site: the fuse's repair time from now
        status = stub.CustomerStatus(pb.CustomerStatusRequest(customers=[meters[20]]), metadata=VIEWER).customers[0]
        assert status.out and status.etr_ms == rec.etr_ms

        with pytest.raises(grpc.RpcError) as exc:  # customers are still off
            stub.CloseRecord(pb.CloseRecordRequest(record_id=rid, note="done?"), metadata=OPERATOR)
        assert exc.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "24 customers off" in exc.value.details()
        with pytest.raises(grpc.RpcError) as exc:
            stub.UpdateRecord(pb.UpdateRecordRequest(record_id=rid, cause="bird"), metadata=VIEWER)
        assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED
        updated = stub.UpdateRecord(pb.UpdateRecordRequest(record_id=rid, cause="fuse blown: bird contact on DT"),
                                    metadata=OPERATOR)
        assert updated.cause == "fuse blown: bird contact on DT"

        # the crew replaces the fuse: the meters come back 80 min after the fault
        _send(stub, meters[:18], EndDeviceEventCode.POWER_ON, t0 + 80 * MIN, "prn")
        rec = wait_for(lambda: _stage(stub, rid, "restored"), 5, "the record restored")
        assert rec.status == "restored" and [s.customers for s in rec.steps] == [24]  # closes with the crew's word
        done = stub.ReportCrewStatus(pb.CrewStatusReport(crew_id="C1", status="available"), metadata=OPERATOR)
        assert done.stage == "restored" and done.crew.status == "available"
        rec = wait_for(lambda: _stage(stub, rid, "closed"), 5, "the record closed by the crew's report")
        assert rec.status == "closed" and rec.cause == "fuse blown: bird contact on DT" and rec.closed_ms >= t0
        assert any("crew C1 reports the work done" in n for n in rec.notes)
        assert stub.ListRecords(pb.ListRecordsRequest(status="closed"), metadata=VIEWER).records[0].id == rid

        wait_for(lambda: any(o.id == outage.id and o.state == "restored" for o in seen), 5, "the stream")
        assert [o.state for o in seen if o.id == outage.id][0] == "predicted"
    finally:
        watch.cancel()
        reader.join(5)

    # the indices from the record: 24 customers for one step (the PRNs' time), one sustained interruption
    interruptions = interruptions_from_outage_records([server.store.get(rid)])
    assert len(interruptions) == 1 and interruptions[0].customers == 24 and not interruptions[0].planned
    step_min = (interruptions[0].end - interruptions[0].start).total_seconds() / 60
    result = assess(interruptions, 2257)
    assert result.indices.saifi == pytest.approx(24 / 2257)
    assert result.indices.saidi_min == pytest.approx(24 * step_min / 2257, abs=1e-3)  # times kept to the second


def _feed(center: ControlCenter, point: int, value: float, t_ms: int, cause: Cause) -> None:
    rows = new_update_rows(1)
    rows[0] = (point, value, 0, t_ms, cause)
    center.rtdb.ingest(UpdateBatch("test", rows, 0))
    assert center.rtdb.flush(5)


def test_a_breaker_opened_by_command_is_switching_not_a_trip(server: OmsCentre) -> None:
    center, stub = server.center, server.stub
    assert center.topology is not None
    point = next(p for p in center.config.points if p.kind.is_status
                 and (s := center.topology.switch_of_point(p.id)) is not None and s.name == "F4-CB")
    closed, opened = ((DoubleState.ON, DoubleState.OFF) if point.kind is PointKind.DOUBLE else (1, 0))
    t0 = now_ms()
    _feed(center, point.id, closed, t0 - 5000, Cause.SPONTANEOUS)
    _feed(center, point.id, opened, t0, Cause.RETURN_REMOTE)
    f4 = wait_for(lambda: next((b for b in stub.BreakerStatus(pb.BreakerStatusRequest(), metadata=VIEWER).breakers
                                if b.name == "F4-CB" and b.outage_id), None), 10, "F4-CB's outage")
    assert "command" in f4.cause and "trip" not in f4.cause.split(":")[0]
    rec = wait_for(lambda: (o := next((o for o in stub.ListOutages(pb.ListOutagesRequest(active_only=True),
                                                                   metadata=VIEWER).outages if o.device == "F4-CB"),
                                      None)) and o.record_id and _record(stub, o.record_id), 10, "its record")
    assert "by a control-centre command" in rec.cause and rec.stage == "confirmed"


def test_a_storm_of_last_gasps_is_one_outage_and_storm_mode(server: OmsCentre) -> None:
    oms, stub = server.oms, server.stub
    meters = list(oms.connectivity.meter_ids)  # every meter of the sample network: both grid supplies are lost
    t0 = now_ms()
    started = time.monotonic()
    for k in range(0, len(meters), 500):  # a head-end forwards in batches
        _send(stub, meters[k:k + 500], EndDeviceEventCode.POWER_OFF, t0 + k, f"storm{k}")
    summary = wait_for(lambda: (s := stub.OutageSummary(pb.OutageSummaryRequest(top=5), metadata=VIEWER))
                       .active_outages and s, 10, "the storm's outage")
    took_s = time.monotonic() - started
    assert summary.storm and "events in the last minute" in summary.storm_reason
    # one outage per grid supply point (the substation has two), no single lights out: a summary, not a flood
    assert summary.active_outages == len(oms.model.sources) == 2 and summary.single_lights_out == 0
    assert summary.meters_off == len(meters) and summary.customers_off == len(meters)
    assert sum(o.customers_off for o in summary.largest) == len(meters) and summary.text.startswith("STORM MODE")
    assert {o.device_kind for o in summary.largest} <= {"source", "transformer", "breaker"}
    assert took_s < 10


def test_a_nested_outage_is_restored_in_two_steps_and_counted_once(server: OmsCentre) -> None:
    """A fuse blows on F1 (its meters report), then F1-CB trips: the fuse's outage folds into the breaker's. The
    breaker closes: the breaker's record gives back everyone but the fuse's customers (step one), the fuse's outage
    shows again with its own record from its own start; the crew replaces the fuse (step two). The indices count
    every customer once, each for their own time off."""
    center, oms, stub = server.center, server.oms, server.stub
    assert center.topology is not None
    fuse_meters = [m for m in oms.connectivity.meter_ids if FUSE in {d.name for d in oms.connectivity.chain(m)}]
    f1_customers = oms.connectivity.device("F1-CB").customers
    point = next(p for p in center.config.points if p.kind.is_status
                 and (s := center.topology.switch_of_point(p.id)) is not None and s.name == "F1-CB")
    closed, opened = ((DoubleState.ON, DoubleState.OFF) if point.kind is PointKind.DOUBLE else (1, 0))
    t0 = now_ms() - 120 * MIN
    _feed(center, point.id, closed, t0 - MIN, Cause.SPONTANEOUS)
    _send(stub, fuse_meters[:20], EndDeviceEventCode.POWER_OFF, t0, "fuse")
    fuse = wait_for(lambda: next((p for p in oms.predictions(active_only=True) if p.device == FUSE), None), 10,
                    "the fuse outage")
    _feed(center, point.id, opened, t0 + 30 * MIN, Cause.SPONTANEOUS)  # the breaker trips half an hour later
    breaker = wait_for(lambda: next((p for p in oms.predictions(active_only=True) if p.device == "F1-CB"), None),
                       10, "the breaker outage")
    wait_for(lambda: server.store.get(oms.record_id(fuse.id)).merged_into == oms.record_id(breaker.id), 10,
             "the fuse's record folded into the breaker's")
    _feed(center, point.id, closed, t0 + 60 * MIN, Cause.SPONTANEOUS)  # step one: the breaker closes
    wait_for(lambda: server.store.get(oms.record_id(breaker.id)).status.value == "closed", 10,
             "the breaker's record closed")
    again = wait_for(lambda: next((p for p in oms.predictions(active_only=True) if p.device == FUSE), None), 10,
                     "the fuse outage showing again")
    assert again.id == fuse.id and again.first_event_ms == t0
    assert server.store.get(oms.record_id(fuse.id)).merged_into == 0
    _send(stub, fuse_meters[:20], EndDeviceEventCode.POWER_ON, t0 + 100 * MIN, "fixed")  # step two
    wait_for(lambda: server.store.get(oms.record_id(fuse.id)).status.value == "closed", 10,
             "the fuse's record closed")
    breaker_rec = server.store.get(oms.record_id(breaker.id))
    fuse_rec = server.store.get(oms.record_id(fuse.id))
    assert [s.customers for s in breaker_rec.steps] == [f1_customers - len(fuse_meters)]
    assert [s.customers for s in fuse_rec.steps] == [len(fuse_meters)]
    interruptions = interruptions_from_outage_records(server.store.list())
    assert sum(i.customers for i in interruptions) == f1_customers  # each customer once
    minutes = sorted(((i.end - i.start).total_seconds() / 60, i.customers) for i in interruptions)
    # the fuse's customers: from the fuse (t0) to its repair (t0 + 100 min); the rest from the trip (t0 + 30) to the
    # breaker closing (t0 + 60 min); the analysis stamps steps when it sees them, so allow a few seconds
    assert minutes[0][1] == f1_customers - len(fuse_meters) and abs(minutes[0][0] - 30) < 0.2
    assert minutes[1][1] == len(fuse_meters) and abs(minutes[1][0] - 100) < 0.2
