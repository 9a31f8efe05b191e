"""Live FLISR on the sample network with the physics-driven simulators and all four front ends: a cable fault trips
the feeder breaker, the FRTUs' fault passage indicators pick up (DNP3), FLISR locates the faulted section, isolates it
and restores the healthy sections through the SCADA command path (IEC 61850 breaker, DNP3 ring switches), and the
OMS outage record follows. Each scenario uses its own feeder and puts the network back to normal afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from support import sample_network_config, wait_for

from dms.api.flisr_servicer import register
from dms.api.protos import flisr_pb2 as fpb
from dms.api.protos import flisr_pb2_grpc as fpb_grpc
from dms.flisr.plan import FlisrMode, StepPurpose, SwitchAction
from dms.flisr.runs import FlisrRun, RunState, StepStatus
from dms.flisr.service import FlisrService
from models.config import OperatorConfig, Role, StationConfig
from models.measurement_points import Quantity
from models.points import DoubleState, PointKind
from models.timebase import now_ms
from oms.outage_records import OutageRecordStore, OutageStatus
from rtu_sim.simulator import RtuSimulator
from scada.commands import FeedbackStatus
from scada.server import ControlCenter
from scada.tags import TagKind

pytestmark = pytest.mark.slow

AUTH = (("authorization", "Bearer operator-demo-token"),)
ALICE = OperatorConfig("alice", Role.OPERATOR, "")


@dataclass
class Live:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    flisr: FlisrService
    outages: OutageRecordStore
    stub: Any


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("flisr")
    config = sample_network_config(folder)
    sim = RtuSimulator(config, seed=5)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    outages = OutageRecordStore(center.data_dir / "outages.sqlite")
    flisr = FlisrService.from_center(center, mode=FlisrMode.AUTOMATIC, recorder=outages)
    center.add_grpc_registrar(lambda server: register(server, center.services, flisr))
    sim.start()
    channel = None
    try:
        center.start()
        flisr.start()
        monitored = [p.id for p in config.points if p.kind is not PointKind.COMMAND
                     and p.source.frontend != "calculated"]  # no estimator runs here: DMS-SE stays COMM_LOST
        wait_for(lambda: not center.rtdb.snapshot(monitored)["quality"].any(), 90, "every point good after start")
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        yield Live(config, sim, center, flisr, outages, fpb_grpc.FlisrServiceStub(channel))
    finally:
        if channel is not None:
            channel.close()
        flisr.stop()
        center.stop()
        sim.stop()
        outages.close()


def _run_for(live: Live, breaker: str, since_id: int, timeout_s: float = 60) -> FlisrRun:
    return wait_for(lambda: next((r for r in live.flisr.runs() if r.id > since_id and r.tripped_switch == breaker),
                                 None), timeout_s, f"a FLISR run for the trip of {breaker}")


def _last_id(live: Live) -> int:
    runs = live.flisr.runs(limit=1)
    return runs[0].id if runs else 0


def _command(live: Live, switch: str, close: bool) -> None:
    point = next(p for p in live.config.points if p.control is not None and p.name == f"{switch}.Pos")
    value = DoubleState.ON if close else DoubleState.OFF
    for attempt in (1, 2):  # as an operator would: one retry of a command the field did not confirm
        live.center.commands.select(point.id, value, ALICE)
        out = live.center.commands.operate(point.id, value, ALICE)
        if out.status.value == "success" and out.feedback is not FeedbackStatus.NOT_CONFIRMED:
            return
        assert attempt == 1, f"switching {switch} back failed: {out}"


def _back_to_normal(live: Live) -> None:
    """Clear the faults, the FLISR markings and the FPIs, and switch every switch back to its normal position."""
    live.sim.clear_fault()
    tags = live.center.tags
    for tag in tags.active():
        if tag.kind is TagKind.FAULTED or tag.operator == "test":
            tags.remove(tag.id, "test", "scenario over")
    model = live.center.topology.model
    snap = live.center.topology.snapshot()
    to_open = [s.name for i, s in enumerate(model.switches) if s.open and snap.switch_closed[i]]
    to_close = [s.name for i, s in enumerate(model.switches) if not s.open and not snap.switch_closed[i]]
    for name in to_open:
        _command(live, name, False)
    for name in to_close:
        _command(live, name, True)
    live.sim.reset_fpis()
    fpis = [p.id for p in live.config.points if (b := live.config.binding(p)) and b.quantity is
            Quantity.FAULT_INDICATOR]
    wait_for(lambda: not live.center.rtdb.snapshot(fpis)["value"].any(), 20, "every FPI reset")
    wait_for(lambda: not len(live.center.topology.snapshot().deenergized_loads()), 20, "every load supplied")


def _dead_loads(live: Live) -> set[str]:
    snap = live.center.topology.snapshot()
    return {snap.model.loads[i].name for i in snap.deenergized_loads()}


def test_automatic_fault_isolation_and_restoration(live: Live) -> None:
    live.flisr.set_mode(FlisrMode.AUTOMATIC, ALICE)
    since = _last_id(live)
    fault = live.sim.place_fault("F2-C04")
    assert fault.tripped == ("F2-CB",)
    run = _run_for(live, "F2-CB", since)
    run = wait_for(lambda: (r := live.flisr.run(run.id)).state.final and r, 60, "the run to finish")
    try:
        assert run.state is RunState.COMPLETED, f"{run.error} / {[(s.switch, s.outcome) for s in run.steps]}"
        assert run.plan is not None and "F2-C04" in run.plan.fault.faulted_elements
        assert all(s.status in (StepStatus.DONE, StepStatus.ALREADY) for s in run.steps)
        assert any(s.purpose is StepPurpose.RESTORE_DOWNSTREAM and s.action is SwitchAction.CLOSE
                   for s in run.plan.restoration)
        # healthy sections re-energised per the live colouring; only the faulted section's DTs stay dead
        dead = _dead_loads(live)
        assert dead and all(name.startswith("F2-RMU04") or name.startswith("F2-RMU05") for name in dead), dead
        assert "F2-RMU01-LOAD" not in dead and "F2-RMU08-LOAD" not in dead
        record = live.outages.get(run.outage_record_id)
        assert record.status is OutageStatus.RESTORED and record.tripped_device == "F2-CB"
        assert record.customers_interrupted == run.customers_interrupted > 0
        assert record.customers_restored == run.customers_restored > 0
        assert record.customers_still_off == run.customers_still_off > 0
        assert record.isolated_ms >= record.started_ms and record.restored_ms >= record.isolated_ms
        took = run.trip_to_restored_s
        assert took is not None
        print(f"\nF2-C04: trip -> customers restored {took:.1f} s ({run.customers_restored} of "
              f"{run.customers_interrupted} customers; {len(run.steps)} steps; plan {run.plan.plan_ms:.0f} ms)")
        assert took < 30
    finally:
        _back_to_normal(live)


def test_semi_automatic_over_grpc(live: Live) -> None:
    stub = live.stub
    assert stub.SetMode(fpb.SetFlisrModeRequest(mode=fpb.FLISR_MODE_SEMI_AUTOMATIC), metadata=AUTH).mode == \
        fpb.FLISR_MODE_SEMI_AUTOMATIC
    preview = stub.PlanForFault(fpb.FlisrPlanForFaultRequest(line="F5-C04"), metadata=AUTH)
    assert preview.fault.tripped_switch == "F5-CB" and "F5-C04" in preview.fault.faulted_elements
    since = _last_id(live)
    updates: list[Any] = []
    stream = stub.WatchRuns(fpb.WatchFlisrRunsRequest(recent=1), metadata=AUTH)
    try:
        live.sim.place_fault("F5-C04")
        for upd in stream:
            updates.append(upd)
            if upd.id > since and upd.state == fpb.FLISR_RUN_STATE_AWAITING_APPROVAL:
                break
        run_id = updates[-1].id
        run = stub.GetRun(fpb.GetFlisrRunRequest(id=run_id), metadata=AUTH)
        assert [s.switch_name for s in run.plan.isolation] == [s.switch_name for s in preview.isolation]
        isolation = {s.number for s in run.plan.isolation}
        assert all(s.status == fpb.FLISR_STEP_STATUS_DONE for s in run.steps if s.number in isolation)
        assert all(s.status == fpb.FLISR_STEP_STATUS_PENDING for s in run.steps if s.number not in isolation)
        time.sleep(1.0)  # restoration waits for the operator
        assert stub.GetRun(fpb.GetFlisrRunRequest(id=run_id), metadata=AUTH).state == \
            fpb.FLISR_RUN_STATE_AWAITING_APPROVAL
        assert live.center.topology.find_switch("F5-CB").closed is False
        approved = stub.Approve(fpb.FlisrRunActionRequest(id=run_id), metadata=AUTH)
        assert approved.state == fpb.FLISR_RUN_STATE_RESTORING
        for upd in stream:
            if upd.id == run_id and upd.state in (fpb.FLISR_RUN_STATE_COMPLETED, fpb.FLISR_RUN_STATE_FAILED):
                break
        assert upd.state == fpb.FLISR_RUN_STATE_COMPLETED, upd.error
        assert upd.customers_restored > 0 and upd.trip_to_restored_s > 0
        with pytest.raises(grpc.RpcError) as err:
            stub.Approve(fpb.FlisrRunActionRequest(id=run_id), metadata=AUTH)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as err:
            stub.GetRun(fpb.GetFlisrRunRequest(id=99999), metadata=AUTH)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        viewer = (("authorization", "Bearer viewer-demo-token"),)
        with pytest.raises(grpc.RpcError) as err:
            stub.Approve(fpb.FlisrRunActionRequest(id=run_id), metadata=viewer)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        stream.cancel()
        _back_to_normal(live)


def test_a_step_the_field_refuses_fails_the_run(live: Live) -> None:
    live.flisr.set_mode(FlisrMode.AUTOMATIC, ALICE)
    plan = live.flisr.plan_for_fault("F1-C04")
    tie = next(s.switch for s in plan.restoration if s.purpose is StepPurpose.RESTORE_DOWNSTREAM)
    live.sim.block(f"{tie}.Pos")  # the FRTU refuses every command on it (blocked at the device)
    since = _last_id(live)
    try:
        live.sim.place_fault("F1-C04")
        run = _run_for(live, "F1-CB", since)
        run = wait_for(lambda: (r := live.flisr.run(run.id)).state.final and r, 60, "the run to finish")
        assert run.state is RunState.FAILED
        failed = next(s for s in run.steps if s.status is StepStatus.FAILED)
        assert failed.switch == tie and "refused" in failed.outcome, failed.outcome
        assert all(s.status is StepStatus.SKIPPED for s in run.steps[run.steps.index(failed) + 1:])
        assert live.center.topology.find_switch(tie).closed is False  # the sequence stopped there
        alarm = next(a for a in live.center.alarms.list(include_closed=True) if a.condition == f"flisr:run:{run.id}")
        assert tie in alarm.text
        assert live.outages.get(run.outage_record_id).status is OutageStatus.OPEN
    finally:
        live.sim.block(f"{tie}.Pos", False)
        _back_to_normal(live)


def test_a_tagged_tie_is_left_out_of_the_plan(live: Live) -> None:
    """A hold tag on the tie: FLISR does not plan it (the run restores upstream and says why), instead of failing."""
    live.flisr.set_mode(FlisrMode.AUTOMATIC, ALICE)
    tie = next(s.switch for s in live.flisr.plan_for_fault("F1-C04").restoration
               if s.purpose is StepPurpose.RESTORE_DOWNSTREAM)
    tag = live.center.tags.place(f"{tie}.Pos", TagKind.HOLD, "test", "crew on site")
    try:
        plan = live.flisr.plan_for_fault("F1-C04")
        assert tie not in {s.switch for s in plan.steps}
        assert any(tie in n and "not used" in n for n in plan.notes)
    finally:
        live.center.tags.remove(tag.id, "test", "crew gone")


def test_manual_mode_executes_nothing_before_approval(live: Live) -> None:
    live.flisr.set_mode(FlisrMode.MANUAL, ALICE)
    since = _last_id(live)
    t0 = now_ms()
    try:
        live.sim.place_fault("F6-C04")
        run = _run_for(live, "F6-CB", since)
        wait_for(lambda: live.flisr.run(run.id).plan is not None or live.flisr.run(run.id).state.final, 30,
                 "the plan")
        time.sleep(2.0)
        run = live.flisr.run(run.id)
        assert run.state is RunState.PLANNED and run.plan is not None and run.plan.steps
        assert all(s.status is StepStatus.PENDING for s in run.steps)
        sent = [e for e in live.center.audit.query(start_ms=t0, operator="dms:flisr")
                if e.action in ("select", "execute", "direct")]
        assert sent == []
        rejected = live.flisr.reject(run.id, ALICE, "test over")
        assert rejected.state is RunState.REJECTED
    finally:
        _back_to_normal(live)
