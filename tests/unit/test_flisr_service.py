"""The live FLISR service on the sample network without simulators: a real RTDB, topology service, command service,
alarm manager, audit log and tag store; the only stand-in is the protocol adapter, which answers every command
positively and reports the new switch position (as a field device would) into the RTDB."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import sample_network_config, wait_for

from dms.flisr.plan import FaultLocation, FlisrMode, FlisrPlan, StepPurpose, SwitchAction, SwitchingStep
from dms.flisr.runs import RunState, StepStatus
from dms.flisr.service import FlisrService, FlisrServiceError, FlisrSettings
from models.commands import ControlAction, ControlRequest, ControlResult, ControlStatus
from models.config import OperatorConfig, Role, StationConfig
from models.measurement_points import Quantity
from models.points import DoubleState, PointKind
from models.timebase import now_ms
from models.updates import Cause, LinkEvent, UpdateBatch, new_update_rows
from oms.outage_records import OutageRecordStore, OutageStatus
from scada.alarms import AlarmManager
from scada.audit import AuditLog
from scada.commands import CommandService
from scada.interlocks import TopologyInterlocks
from scada.rtdb import Rtdb
from scada.tags import TagKind, TagStore
from scada.topology_service import TopologyService

OPERATOR = OperatorConfig("alice", Role.OPERATOR, "")
FAST = FlisrSettings(settle_s=0.3, command_grace_s=1.0, confirm_timeout_s=5.0)


class FieldAdapter:
    """Answers like a protocol adapter: positive confirmation, then (for an execute) the new position, reported
    spontaneously. ``refuse`` names points the field refuses."""

    def __init__(self, rtdb: Rtdb) -> None:
        self.rtdb = rtdb
        self.commands: CommandService | None = None
        self.refuse: set[str] = set()
        self.sent: list[ControlRequest] = []

    def send_control(self, request: ControlRequest) -> bool:
        self.sent.append(request)
        threading.Timer(0.01, self._answer, args=(request,)).start()
        return True

    def _answer(self, req: ControlRequest) -> None:
        assert self.commands is not None
        name = self.rtdb.config.points[req.point].name
        if name in self.refuse:
            self.commands.on_control_result(ControlResult(req.request_id, ControlStatus.REFUSED_BY_FIELD, "blocked"))
            return
        if req.action in (ControlAction.EXECUTE, ControlAction.DIRECT):
            report(self.rtdb, {name: req.value}, Cause.SPONTANEOUS)
        self.commands.on_control_result(ControlResult(req.request_id, ControlStatus.SUCCESS, ""))


def report(rtdb: Rtdb, values: dict[str, float], cause: Cause = Cause.SPONTANEOUS) -> None:
    rows = new_update_rows(len(values))
    rows["point"] = [rtdb.point_id(n) for n in values]
    rows["value"] = list(values.values())
    rows["source_time_ms"] = now_ms()
    rows["cause"] = int(cause)
    rtdb.ingest(UpdateBatch("test", rows, now_ms()))


@dataclass
class Stack:
    config: StationConfig
    rtdb: Rtdb
    topology: TopologyService
    commands: CommandService
    alarms: AlarmManager
    audit: AuditLog
    tags: TagStore
    field: FieldAdapter
    outages: OutageRecordStore
    data: Path

    def service(self, mode: FlisrMode, **kw: object) -> FlisrService:
        svc = FlisrService(self.config, self.rtdb, self.topology, self.commands, self.alarms, self.audit,
                           data_dir=self.data, tags=self.tags, mode=mode, settings=kw.pop("settings", FAST),
                           recorder=self.outages, **kw)  # type: ignore[arg-type]
        svc.start()
        return svc


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    config = sample_network_config(tmp_path)
    assert config.network is not None
    data = tmp_path / "data"
    rtdb = Rtdb(config)
    rtdb.start()
    for rtu in config.rtus:
        rtdb.ingest(LinkEvent("test", rtu.name, True, "127.0.0.1:1", time_ms=now_ms()))
    model = config.network
    initial: dict[str, float] = {}
    for p in config.points:
        b = config.binding(p)
        if b is None or p.kind is PointKind.COMMAND:
            continue
        if b.quantity is Quantity.SWITCH_POSITION:
            sw = next(s for s in model.switches if s.mrid == b.element_mrid)
            initial[p.name] = float(DoubleState.OFF if sw.open else DoubleState.ON)
        elif b.quantity is Quantity.FAULT_INDICATOR:
            initial[p.name] = 0.0
        elif b.quantity is Quantity.CURRENT_A:
            initial[p.name] = 150.0
    report(rtdb, initial, Cause.INTERROGATED)
    assert rtdb.flush()
    topology = TopologyService(rtdb, model)
    topology.start()
    tags = TagStore(data / "tags.sqlite")
    audit = AuditLog(data / "audit.sqlite")
    field = FieldAdapter(rtdb)
    commands = CommandService(rtdb, field, tags=tags, audit=audit)
    commands.add_interlock(TopologyInterlocks(topology, rtdb, tags))
    field.commands = commands
    alarms = AlarmManager(config, data / "alarms.sqlite")
    outages = OutageRecordStore(data / "outages.sqlite")
    yield Stack(config, rtdb, topology, commands, alarms, audit, tags, field, outages, data)
    topology.stop()
    rtdb.stop()
    for store in (tags, audit, outages):
        store.close()


def _trip(stack: Stack, breaker: str, fpis: tuple[str, ...]) -> None:
    report(stack.rtdb, {f"{s}.FPI": 1.0 for s in fpis})
    report(stack.rtdb, {f"{breaker}.Pos": float(DoubleState.OFF)})


def _final(svc: FlisrService, timeout_s: float = 20) -> object:
    return wait_for(lambda: next((r for r in svc.runs() if r.state.final), None), timeout_s, "a finished FLISR run")


def test_automatic_run_isolates_and_restores(stack: Stack) -> None:
    svc = stack.service(FlisrMode.AUTOMATIC)
    try:
        _trip(stack, "F2-CB", ("F2-RMU03-LBS1", "F2-RMU03-LBS2"))
        run = _final(svc)
        assert run.state is RunState.COMPLETED, run.error
        assert run.plan is not None and run.feeder == "F2" and run.tripped_switch == "F2-CB"
        assert set(run.picked_up) == {"F2-RMU03-LBS1", "F2-RMU03-LBS2"}
        assert "F2-C04" in run.plan.fault.faulted_elements
        assert [s.status for s in run.steps] == [StepStatus.DONE] * len(run.steps)
        snap = stack.topology.snapshot()
        for s in run.plan.steps:
            assert bool(snap.switch_closed[stack.topology.find_switch(s.switch).index]) is (s.action is
                                                                                            SwitchAction.CLOSE)
        assert run.customers_interrupted > 0 and run.customers_restored > 0
        assert run.customers_restored + run.customers_still_off == run.customers_interrupted
        assert run.trip_to_restored_s is not None and run.trip_to_restored_s < 30
        rec = stack.outages.get(run.outage_record_id)
        assert rec.status is OutageStatus.RESTORED and rec.customers_restored == run.customers_restored
        assert rec.isolated_boundary == tuple(s.switch for s in run.plan.isolation)
        assert any(t.kind is TagKind.FAULTED for t in stack.tags.active("F2-C04"))
        # every command went out as dms:flisr and is in the audit log
        assert {e.operator for e in stack.audit.query() if e.action in ("select", "execute")} == {"dms:flisr"}
    finally:
        svc.stop()


def test_manual_mode_waits_for_two_approvals_and_runs_persist(stack: Stack) -> None:
    svc = stack.service(FlisrMode.MANUAL)
    try:
        _trip(stack, "F2-CB", ("F2-RMU03-LBS1", "F2-RMU03-LBS2"))
        run = wait_for(lambda: next((r for r in svc.runs() if r.plan is not None), None), 20, "a planned run")
        sent = len(stack.field.sent)
        threading.Event().wait(0.5)
        assert svc.run(run.id).state is RunState.PLANNED and len(stack.field.sent) == sent  # nothing executed
        svc.approve(run.id, OPERATOR)
        wait_for(lambda: svc.run(run.id).state is RunState.AWAITING_APPROVAL, 20, "isolation done")
        assert all(s.status is StepStatus.PENDING for s in svc.run(run.id).steps
                   if s.purpose is not StepPurpose.ISOLATE)
        svc.approve(run.id, OPERATOR)
        done = _final(svc)
        assert done.state is RunState.COMPLETED, done.error
        with pytest.raises(FlisrServiceError, match="nothing to approve"):
            svc.approve(run.id, OPERATOR)
    finally:
        svc.stop()
    again = stack.service(FlisrMode.MANUAL)  # a restart lists the past run
    try:
        assert again.run(run.id).state is RunState.COMPLETED
        assert again.run(run.id).plan == done.plan
    finally:
        again.stop()


def test_a_hold_tag_stops_the_sequence_and_raises_an_alarm(stack: Stack) -> None:
    svc = stack.service(FlisrMode.AUTOMATIC)
    try:
        stack.tags.place("F2-RMU06-LBS1.Pos", TagKind.HOLD, "bob", "crew working at RMU06")
        _trip(stack, "F2-CB", ("F2-RMU03-LBS1", "F2-RMU03-LBS2"))
        run = _final(svc)
        assert run.state is RunState.FAILED
        failed = [s for s in run.steps if s.status is StepStatus.FAILED]
        assert len(failed) == 1 and failed[0].switch == "F2-RMU06-LBS1" and "tagged" in failed[0].outcome
        after = run.steps[run.steps.index(failed[0]) + 1:]
        assert after and all(s.status is StepStatus.SKIPPED for s in after)
        alarm = next(a for a in stack.alarms.list(include_closed=True) if a.condition == f"flisr:run:{run.id}")
        assert "F2-RMU06-LBS1" in alarm.text and "tagged" in alarm.text
        assert stack.outages.get(run.outage_record_id).status is OutageStatus.OPEN
    finally:
        svc.stop()


def test_a_commanded_opening_is_not_a_trip(stack: Stack) -> None:
    svc = stack.service(FlisrMode.AUTOMATIC)
    try:
        point = stack.rtdb.point_id("F2-CB.Pos")
        stack.commands.select(point, DoubleState.OFF, OPERATOR)
        stack.commands.operate(point, DoubleState.OFF, OPERATOR)
        threading.Event().wait(FAST.settle_s + 0.7)
        assert svc.runs() == []
    finally:
        svc.stop()


def test_semi_automatic_crew_step_and_reject(stack: Stack) -> None:
    """A hand-made plan with a step on a switch without remote control: the sequence waits for the crew."""
    svc = stack.service(FlisrMode.SEMI_AUTOMATIC)
    try:
        report(stack.rtdb, {"F2-CB.Pos": float(DoubleState.OFF)}, Cause.RETURN_REMOTE)  # not a trip: no run
        wait_for(lambda: not stack.topology.find_switch("F2-CB").closed, 5, "F2-CB open in the topology")
        fault = FaultLocation("F2-CB", ("F2-RMU03-LBS1",), (), ("F2-C04",), ("F2-RMU03-LBS2", "F2-RMU04-LBS2"),
                              "test fault")
        steps = (SwitchingStep(1, "F2-RMU03-LBS2", SwitchAction.OPEN, StepPurpose.ISOLATE, True, "bound"),
                 SwitchingStep(2, "F2-RMU04-LBS2", SwitchAction.OPEN, StepPurpose.ISOLATE, False, "bound"),
                 SwitchingStep(3, "F2-CB", SwitchAction.CLOSE, StepPurpose.RESTORE_UPSTREAM, True, "reclose"))
        plan = FlisrPlan(fault, steps[:2], steps[2:], 10, 5, 0, 5, 0, (), (), (), "ok")
        run = svc.submit_plan(plan)
        wait_for(lambda: svc.run(run.id).state is RunState.AWAITING_CREW, 10, "the crew step")
        assert svc.run(run.id).steps[0].status is StepStatus.DONE
        assert svc.run(run.id).steps[1].status is StepStatus.AWAITING_CREW
        svc.confirm_manual_step(run.id, 2, OPERATOR, "opened by crew 7")
        wait_for(lambda: svc.run(run.id).state is RunState.AWAITING_APPROVAL, 10, "isolation done")
        assert not stack.topology.find_switch("F2-RMU04-LBS2").closed
        assert stack.topology.find_switch("F2-RMU04-LBS2").source.value == "manual"
        rejected = svc.reject(run.id, OPERATOR, "crew will switch")
        assert rejected.state is RunState.REJECTED and rejected.steps[2].status is StepStatus.SKIPPED
        assert stack.topology.find_switch("F2-CB").closed is False
        assert [r.id for r in svc.runs()] == [run.id]
    finally:
        svc.stop()


def test_default_loads_follow_the_feeder_head_current(stack: Stack) -> None:
    svc = stack.service(FlisrMode.MANUAL)
    try:
        base = svc.live_state()
        model = base.base
        f2 = np.array([ld.feeder_mrid == next(f.mrid for f in model.feeders if f.name == "F2") for ld in model.loads])
        report(stack.rtdb, {f"F2-CB.A.ph_{p}": 300.0 for p in "ABC"})
        wait_for(lambda: svc.live_state().load_p_w[f2].sum() > base.load_p_w[f2].sum() * 1.5, 5, "F2 loads scaled up")
        ratio = svc.live_state().load_p_w[f2] / base.load_p_w[f2]
        assert np.allclose(ratio, 2.0, rtol=1e-6)
        assert np.allclose(svc.live_state().load_p_w[~f2], base.load_p_w[~f2])
    finally:
        svc.stop()


def test_a_field_refusal_is_retried_once_then_fails_the_run(stack: Stack) -> None:
    svc = stack.service(FlisrMode.AUTOMATIC)
    try:
        stack.field.refuse.add("F2-RMU03-LBS2.Pos")
        _trip(stack, "F2-CB", ("F2-RMU03-LBS1", "F2-RMU03-LBS2"))
        run = _final(svc)
        assert run.state is RunState.FAILED
        failed = next(s for s in run.steps if s.status is StepStatus.FAILED)
        assert failed.switch == "F2-RMU03-LBS2" and "refused_by_field" in failed.outcome and "retry" in failed.outcome
        point = stack.rtdb.point_id("F2-RMU03-LBS2.Pos")
        assert sum(1 for r in stack.field.sent if r.point == point) == 2  # the select, twice
        assert "F2-RMU03-LBS2" in run.error and stack.topology.find_switch("F2-CB").closed is False
    finally:
        svc.stop()
