"""Switching orders against the live sample station: the simulators (IEC 104, Modbus, IEC 61850, DNP3) behind the
control centre, orders created, validated, simulated, approved and executed over gRPC; telemetered steps go out as
real DNP3 select/operate commands, manual steps are recorded from the crew's report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from support import sample_network_config, wait_for

from dms.api.protos import switching_pb2 as pb
from dms.api.protos import switching_pb2_grpc as pb_grpc
from dms.api.switching_servicer import register
from dms.network_state import NetworkState
from dms.switching import OrderState, StepAction, StepRefusedError, StepSpec, StepStatus, SwitchingService
from models.config import OperatorConfig, Role
from rtu_sim.simulator import RtuSimulator
from scada.server import ControlCenter
from scada.tags import TagKind
from scada.topology_service import SwitchStateSource

OPERATOR = (("authorization", "Bearer operator-demo-token"),)
VIEWER = (("authorization", "Bearer viewer-demo-token"),)
ENGINEER = (("authorization", "Bearer engineer-demo-token"),)
CREW_DESK = OperatorConfig("desk", Role.OPERATOR, "")
USED = ("F2-RMU06-LBS2", "F1-RMU08-LBS2", "F5-RMU03-LBS2")
RPC_TIMEOUT_S = 90.0


@dataclass
class Live:
    center: ControlCenter
    switching: SwitchingService
    stub: pb_grpc.SwitchingOrdersStub
    studies: dict[int, NetworkState]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("switching")
    config = sample_network_config(folder)
    sim = RtuSimulator(config, seed=5)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    studies: dict[int, NetworkState] = {}

    def study_state(study_id: int) -> NetworkState:
        if study_id not in studies:
            raise LookupError(f"no study {study_id}")
        return studies[study_id]

    switching = SwitchingService.for_center(center, study_state=study_state)
    center.add_grpc_registrar(lambda server: register(server, center.services, switching))
    sim.start()
    channel = None
    try:
        center.start()
        switching.start()
        ids = [config.point(f"{name}.Pos").id for name in USED]
        wait_for(lambda: all(r["quality"] == 0 for r in center.rtdb.snapshot(ids)), 90, "good switch positions")
        assert center.topology is not None
        wait_for(lambda: all(center.topology.switch_state(n).source is SwitchStateSource.TELEMETRY for n in USED),
                 30, "the topology taking the telemetered positions")
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        yield Live(center, switching, pb_grpc.SwitchingOrdersStub(channel), studies)
    finally:
        if channel is not None:
            channel.close()
        switching.stop()
        center.stop()
        sim.stop()


def _spec(action: int, target: str, note: str = "") -> pb.StepSpec:
    return pb.StepSpec(action=action, target=target, note=note)


def test_an_order_runs_remote_steps_and_records_the_crew(live: Live) -> None:
    stub, topo = live.stub, live.center.topology
    assert topo is not None
    order = stub.CreateOrder(pb.CreateOrderRequest(title="Cable F2-C07 outage", purpose="joint repair", steps=[
        _spec(pb.STEP_ACTION_OPEN, "F2-RMU06-LBS2", "open the ring at RMU06"),
        _spec(pb.STEP_ACTION_CLOSE, "F1-RMU08-LBS2", "back-feed the F2 tail from F1"),
        _spec(pb.STEP_ACTION_OPEN, "F2-RMU07-LBS1", "crew at RMU07"),
        _spec(pb.STEP_ACTION_EARTH, "F2-C07", "earths at both ends")]), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert order.state == pb.ORDER_STATE_DRAFT and order.author == "operator"
    assert [s.telemetered for s in order.steps] == [True, True, False, False]

    sim = stub.Simulate(pb.SimulateRequest(order_id=order.id), metadata=VIEWER, timeout=RPC_TIMEOUT_S)
    assert sim.ok, sim
    assert sim.steps[0].customers_off > 0 and list(sim.steps[0].deenergised_loads) == ["F2-RMU07-LOAD",
                                                                                       "F2-RMU08-LOAD"]
    assert sim.steps[1].customers_on == sim.steps[0].customers_off and sim.steps[1].customers_without_supply == 0
    # in a study where the ring is already open at RMU06 the first step has nothing to do
    live.studies[1] = live.switching.live_state().with_switches({"F2-RMU06-LBS2": False}).replace(label="study 1")
    with pytest.raises(grpc.RpcError) as err:  # a study needs the STUDY permission
        stub.Simulate(pb.SimulateRequest(order_id=order.id, study_id=1), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    in_study = stub.Simulate(pb.SimulateRequest(order_id=order.id, study_id=1), metadata=ENGINEER,
                             timeout=RPC_TIMEOUT_S)
    assert in_study.basis == "study 1" and [(p.step, p.kind) for p in in_study.problems] == [(1, "already_in_state")]
    assert in_study.steps[0].customers_off == 0 and in_study.steps[1].customers_on == sim.steps[0].customers_off
    with pytest.raises(grpc.RpcError) as err:
        stub.Simulate(pb.SimulateRequest(order_id=order.id, study_id=7), metadata=ENGINEER, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.RpcError) as err:
        stub.Approve(pb.OrderRef(order_id=order.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "validate it first" in err.value.details()
    checked = stub.Validate(pb.OrderRef(order_id=order.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert checked.ok and checked.order.state == pb.ORDER_STATE_VALIDATED
    with pytest.raises(grpc.RpcError) as err:
        stub.Approve(pb.OrderRef(order_id=order.id), metadata=VIEWER, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    approved = stub.Approve(pb.OrderRef(order_id=order.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert approved.state == pb.ORDER_STATE_APPROVED and approved.approved_by == "operator"

    ran = stub.Execute(pb.OrderRef(order_id=order.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert [(r.step, r.executed, r.waiting_for_crew) for r in ran.results] == [(1, True, False), (2, True, False),
                                                                                (3, False, True)], ran
    assert ran.order.state == pb.ORDER_STATE_EXECUTING
    assert not topo.switch_state("F2-RMU06-LBS2").closed and topo.switch_state("F1-RMU08-LBS2").closed
    assert "topology confirmed" in ran.order.steps[0].detail

    with pytest.raises(grpc.RpcError) as err:  # steps are done in order
        stub.RecordManualStep(pb.RecordManualStepRequest(order_id=order.id, step=4), metadata=OPERATOR,
                              timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "not the next step" in err.value.details()
    done_at = 1_800_000_000_000
    after3 = stub.RecordManualStep(pb.RecordManualStepRequest(order_id=order.id, step=3, done_at_ms=done_at,
                                                              detail="opened by J. Rao"),
                                   metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert after3.steps[2].status == pb.STEP_STATUS_DONE and after3.steps[2].executed_ms == done_at
    state = topo.switch_state("F2-RMU07-LBS1")
    assert not state.closed and state.source is SwitchStateSource.MANUAL
    final = stub.RecordManualStep(pb.RecordManualStepRequest(order_id=order.id, step=4), metadata=OPERATOR,
                                  timeout=RPC_TIMEOUT_S)
    assert final.state == pb.ORDER_STATE_COMPLETED
    assert [t.kind for t in live.center.tags.active("F2-C07")] == [TagKind.CLEARANCE]

    # the earthed cable now refuses an order that would re-energize it
    reclose = stub.CreateOrder(pb.CreateOrderRequest(title="Close RMU06 again", steps=[
        _spec(pb.STEP_ACTION_CLOSE, "F2-RMU06-LBS2")]), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    refused = stub.Validate(pb.OrderRef(order_id=reclose.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert not refused.ok and [(p.step, p.kind) for p in refused.problems] == [(1, "closes_onto_earthed")]
    assert "F2-C07" in refused.problems[0].reason and refused.order.state == pb.ORDER_STATE_DRAFT

    # export for work-force management and import it back as a new draft
    doc = json.loads(stub.Export(pb.OrderRef(order_id=order.id), metadata=VIEWER, timeout=RPC_TIMEOUT_S).json)
    actions = [a for g in doc["SwitchingPlan"]["SwitchingStepGroups"] for a in g["SwitchingActions"]]
    assert [a["dscada:status"] for a in actions] == ["done"] * 4 and all(a["executedDateTime"] for a in actions)
    again = stub.ImportOrder(pb.PlanDocument(json=json.dumps(doc)), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert again.state == pb.ORDER_STATE_DRAFT and again.id != order.id
    assert [(s.action, s.target, s.telemetered, s.status) for s in again.steps] == [
        (s.action, s.target, s.telemetered, pb.STEP_STATUS_PENDING) for s in final.steps]
    listed = stub.ListOrders(pb.ListOrdersRequest(state=pb.ORDER_STATE_COMPLETED), metadata=VIEWER,
                             timeout=RPC_TIMEOUT_S)
    assert order.id in [o.id for o in listed.orders]
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOrder(pb.OrderRef(order_id=99_999), metadata=VIEWER, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    parallel = stub.CreateOrder(pb.CreateOrderRequest(title="F3-F4 transfer", steps=[
        _spec(pb.STEP_ACTION_CLOSE, "F3-RMU08-LBS2")]), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    bad = stub.Validate(pb.OrderRef(order_id=parallel.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert [(p.step, p.kind) for p in bad.problems] == [(1, "parallels_sources")]
    aborted = stub.Abort(pb.AbortRequest(order_id=reclose.id, reason="cable still earthed"), metadata=OPERATOR,
                         timeout=RPC_TIMEOUT_S)
    assert aborted.state == pb.ORDER_STATE_ABORTED and aborted.steps[0].status == pb.STEP_STATUS_SKIPPED
    with pytest.raises(grpc.RpcError) as err:
        stub.Abort(pb.AbortRequest(order_id=reclose.id), metadata=OPERATOR, timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "already aborted" in err.value.details()


def test_a_failing_step_stops_the_order(live: Live) -> None:
    svc, center = live.switching, live.center
    order = svc.create_order("F5 RMU03 exercise", "operate test", "desk", [
        StepSpec(StepAction.OPEN, "F5-RMU03-LBS2"), StepSpec(StepAction.CLOSE, "F5-RMU03-LBS2")])
    assert svc.validate(order.id, "desk").ok
    svc.approve(order.id, CREW_DESK)
    with pytest.raises(StepRefusedError, match="telemetered"):  # a remote step is no crew report
        svc.record_manual_step(order.id, 1, CREW_DESK)
    first = svc.execute_next_step(order.id, CREW_DESK)
    assert first.executed and first.order.steps[0].status is StepStatus.DONE, first.message
    hold = center.tags.place("F5-RMU03-LBS2.Pos", TagKind.HOLD, "supervisor", "crew on site")
    stopped = svc.execute(order.id, CREW_DESK)
    last = stopped[-1]
    assert not last.executed and last.order.state is OrderState.EXECUTING
    step2 = last.order.steps[1]
    assert step2.status is StepStatus.FAILED and "tagged" in step2.detail, step2
    assert svc.get(order.id).steps[1].status is StepStatus.FAILED  # persisted
    alarm = next(a for a in center.alarms.list() if "switching-order" in a.key and f"order {order.id}" in a.text)
    assert alarm.cleared_ms is None and "stopped" in alarm.text
    # with the hold removed, running it again retries the failed step and completes the order
    center.tags.remove(hold.id, "supervisor", "crew left")
    retried = svc.execute_next_step(order.id, CREW_DESK)
    assert retried.executed and retried.order.state is OrderState.COMPLETED, retried.message
    assert center.topology is not None and center.topology.switch_state("F5-RMU03-LBS2").closed
    assert center.alarms.get(alarm.id).cleared_ms is not None
    audit = [e for e in center.audit.query(limit=200) if e.action == "switching_order"
             and e.point_name == f"switching order {order.id}"]
    assert {"created", "validated", "approved", "step_done", "step_failed", "completed"} <= {e.reason for e in audit}
