"""A planned outage end to end on the live sample station: the RTU simulators behind the control centre, the outage
scheduled over gRPC with its customers and notifications, started (the isolation order's telemetered opening goes
out as a real DNP3 select/operate, the working earth waits for the crew's report), recorded as a planned
interruption, completed by the reverse order, and a cancelled outage refused a start."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from support import sample_network_config, wait_for

from dms.api.protos import oms_planned_pb2 as pb
from dms.api.protos import oms_planned_pb2_grpc as pb_grpc
from dms.switching import SwitchingService
from models.config import OperatorConfig, Role
from models.timebase import now_ms
from oms import planned_servicer
from oms.outage_records import OutageRecordStore, OutageStatus, RecordStage
from oms.planned import PlannedOutageService
from oms.reliability import interruptions_from_outage_records
from rtu_sim.simulator import RtuSimulator
from scada.server import ControlCenter
from scada.tags import TagKind
from scada.topology import TopologyProcessor
from scada.topology_service import SwitchStateSource

OPERATOR = (("authorization", "Bearer operator-demo-token"),)
VIEWER = (("authorization", "Bearer viewer-demo-token"),)
CREW_DESK = OperatorConfig("desk", Role.OPERATOR, "")
SWITCH = "F2-RMU06-LBS2"  # telemetered (DNP3): opening it takes the F2 tail off
CABLE = "F2-C07"
RPC_TIMEOUT_S = 90.0
HOUR_MS = 3_600_000

@dataclass
class Live:
    center: ControlCenter
    switching: SwitchingService
    planned: PlannedOutageService
    records: OutageRecordStore
    stub: pb_grpc.PlannedOutagesStub


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    config = sample_network_config(tmp_path_factory.mktemp("planned"))
    sim = RtuSimulator(config, seed=7)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    switching = SwitchingService.for_center(center)
    records = OutageRecordStore(center.data_dir / "outages.sqlite")
    planned = PlannedOutageService.for_center(center, switching=switching, records=records)
    center.add_grpc_registrar(lambda server: planned_servicer.register(server, center.services, planned))
    sim.start()
    channel = None
    try:
        center.start()
        switching.start()
        planned.start()
        point = config.point(f"{SWITCH}.Pos").id
        wait_for(lambda: center.rtdb.snapshot([point])[0]["quality"] == 0, 90, f"a good {SWITCH} position")
        assert center.topology is not None
        wait_for(lambda: center.topology.switch_state(SWITCH).source is SwitchStateSource.TELEMETRY, 30,
                 "the topology taking the telemetered position")
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        yield Live(center, switching, planned, records, pb_grpc.PlannedOutagesStub(channel))
    finally:
        if channel is not None:
            channel.close()
        planned.stop()
        switching.stop()
        records.close()
        center.stop()
        sim.stop()


def _schedule(live: Live, title: str, metadata: tuple = OPERATOR) -> pb.PlannedOutage:
    t = now_ms()
    return live.stub.Schedule(pb.ScheduleRequest(
        title=title, reason="cable joint repair on F2-C07", origin=pb.PLANNED_ORIGIN_ASSET_MANAGEMENT,
        switches=[SWITCH], earths=[CABLE], start_ms=t + HOUR_MS, end_ms=t + 3 * HOUR_MS),
        metadata=metadata, timeout=RPC_TIMEOUT_S)


def test_a_planned_outage_is_announced_executed_and_recorded(live: Live) -> None:
    stub, topo = live.stub, live.center.topology
    assert topo is not None
    with pytest.raises(grpc.RpcError) as err:
        _schedule(live, "viewer tries", VIEWER)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    tp = TopologyProcessor(topo.model)  # the independent count: customers on the buses only SWITCH feeds
    for sw, closed in zip(topo.model.switches, topo.snapshot().switch_closed, strict=True):
        tp.set_switch(sw.mrid, bool(closed))
    tail = {c.consumer_number for c in topo.model.customers if c.bus in set(tp.downstream_buses(SWITCH))}

    o = _schedule(live, "RMU06 cable joint")
    assert o.state == pb.PLANNED_STATE_NOTIFIED and o.customer_count == len(tail) > 50 and o.created_by == "operator"
    got = stub.Get(pb.PlannedRef(id=o.id), metadata=VIEWER, timeout=RPC_TIMEOUT_S)
    assert set(got.customers) == tail and [a.action for a in got.audit] == ["scheduled", "notified"]
    feed = stub.Notifications(pb.NotificationsRequest(since_seq=0), metadata=VIEWER, timeout=RPC_TIMEOUT_S)
    assert {n.consumer_number for n in feed.notifications} == tail and feed.last_seq == feed.notifications[-1].seq
    assert all(n.kind == pb.PLANNED_NOTICE_KIND_SCHEDULED and n.outage_id == o.id for n in feed.notifications)
    empty = stub.Notifications(pb.NotificationsRequest(since_seq=feed.last_seq), metadata=VIEWER,
                               timeout=RPC_TIMEOUT_S)
    assert list(empty.notifications) == [] and empty.last_seq == feed.last_seq
    mine = stub.CustomerPlanned(pb.CustomerPlannedRequest(customer=sorted(tail)[0]), metadata=VIEWER,
                                timeout=RPC_TIMEOUT_S)
    assert [x.id for x in mine.outages] == [o.id]

    with pytest.raises(grpc.RpcError) as err:
        stub.Complete(pb.PlannedRef(id=o.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "has not started" in err.value.details()

    # Start: the opening goes out through SCADA, the earth waits for the crew
    started = stub.Start(pb.PlannedRef(id=o.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert started.waiting_for_crew and started.outage.state == pb.PLANNED_STATE_STARTING, started
    assert not topo.switch_state(SWITCH).closed
    covering = live.planned.covering(SWITCH, now_ms())
    assert covering is not None and covering.id == o.id  # the OMS will not take this opening for a fault
    live.switching.record_manual_step(started.order_id, 2, CREW_DESK, detail="earths applied by J. Rao")
    isolated = stub.Start(pb.PlannedRef(id=o.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert isolated.outage.state == pb.PLANNED_STATE_IN_PROGRESS and isolated.outage.record_id > 0, isolated
    assert [t.kind for t in live.center.tags.active(CABLE)] == [TagKind.CLEARANCE]
    rec = live.records.get(isolated.outage.record_id)
    assert (rec.source, rec.planned, rec.stage, rec.cause) == ("planned", True, RecordStage.CONFIRMED,
                                                               "cable joint repair on F2-C07")
    assert rec.customers_interrupted == len(tail) and rec.status is OutageStatus.OPEN

    # Complete: the earths come off (crew), then the switch closes through SCADA
    first = stub.Complete(pb.PlannedRef(id=o.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert first.waiting_for_crew and first.outage.state == pb.PLANNED_STATE_RESTORING, first
    live.switching.record_manual_step(first.order_id, 1, CREW_DESK)
    done = stub.Complete(pb.PlannedRef(id=o.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert done.outage.state == pb.PLANNED_STATE_COMPLETED, done
    assert topo.switch_state(SWITCH).closed and live.center.tags.active(CABLE) == []
    rec = live.records.get(rec.id)
    assert rec.status is OutageStatus.CLOSED and rec.steps[0].customers == len(tail)
    cuts = interruptions_from_outage_records([rec])
    assert len(cuts) == 1 and cuts[0].planned and cuts[0].customers == len(tail)
    assert live.planned.covering(SWITCH, now_ms() + 60_000) is None
    actions = [a.action for a in stub.Get(pb.PlannedRef(id=o.id), metadata=VIEWER, timeout=RPC_TIMEOUT_S).audit]
    assert actions == ["scheduled", "notified", "start_requested", "isolated", "complete_requested", "completed"]

    # a cancelled outage cannot start; its customers were told of the cancellation
    other = _schedule(live, "postponed work")
    stub.Cancel(pb.CancelPlannedRequest(id=other.id, reason="crew unavailable"), metadata=OPERATOR,
                timeout=RPC_TIMEOUT_S)
    with pytest.raises(grpc.RpcError) as err:
        stub.Start(pb.PlannedRef(id=other.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "cancelled" in err.value.details()
    notes = stub.Notifications(pb.NotificationsRequest(since_seq=feed.last_seq), metadata=VIEWER,
                               timeout=RPC_TIMEOUT_S).notifications
    assert [n.kind for n in notes].count(pb.PLANNED_NOTICE_KIND_CANCELLED) == len(tail)
    listed = stub.List(pb.ListPlannedRequest(state=pb.PLANNED_STATE_COMPLETED), metadata=VIEWER,
                       timeout=RPC_TIMEOUT_S)
    assert [x.id for x in listed.outages] == [o.id]
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(pb.PlannedRef(id=999), metadata=VIEWER, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
