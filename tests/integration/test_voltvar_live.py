"""Live Volt/VAR on IEEE 13: simulated RTU (IEC 104, physics-driven three-phase flow) -> RTDB -> VoltVarService,
proposals over gRPC, execution through the CommandService: regulator tap set-points (``reg<n>.Step.Set``, confirmed
by the tap position point) and capacitor switching (``cap2.Pos`` double command, confirmed by status feedback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from support import IEEE13, free_port, requires_reference_feeders, wait_for

from dms.api.protos import voltvar_pb2 as pb
from dms.api.protos import voltvar_pb2_grpc as pb_grpc
from dms.api.voltvar_servicer import register
from dms.flow_check import VoltageBand
from dms.voltvar import ControlKind, DailyLimitError, DailyLimits, Objective, VoltVarOptions
from dms.voltvar.errors import ExecutionError, StaleProposalError
from dms.voltvar.service import ActionStatus, VoltVarService
from models.commands import ControlStatus
from models.config import OperatorConfig, Role, StationConfig, load_station_config
from models.points import DoubleState
from rtu_sim.grid_driver import FlowMethod, PhysicsSettings
from rtu_sim.simulator import RtuSimulator
from scada.server import ControlCenter

pytestmark = requires_reference_feeders()

OPERATOR_TOKEN = "operator-test-token"
VIEWER_TOKEN = "viewer-test-token"
OPERATOR = OperatorConfig("operator", Role.OPERATOR, OPERATOR_TOKEN)
WIDE = VoltageBand(0.95, 1.07)  # IEEE 13's regulator output starts at 1.068 pu


def station_text(data_dir: Path) -> str:
    return f"""
[station]
name = "IEEE 13 Volt/VAR test"
[server]
grpc_address = "127.0.0.1:0"
data_dir = "{data_dir.as_posix()}"
[network]
cim = "{IEEE13.as_posix()}"
frequency_hz = 60
[[operators]]
name = "operator"
role = "operator"
token = "{OPERATOR_TOKEN}"
[[operators]]
name = "viewer"
role = "viewer"
token = "{VIEWER_TOKEN}"
[[rtus]]
name = "RTU-VV"
common_address = 1
addresses = ["127.0.0.1:{free_port()}"]
equipment = ["cap*", "Reg"]
ioa_base = 0
"""


@dataclass
class System:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    voltvar: VoltVarService
    stub: pb_grpc.VoltVarStub
    channel: grpc.Channel


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("voltvar")
    path = tmp / "station.toml"
    path.write_text(station_text(tmp / "data"), encoding="utf-8")
    config = load_station_config(path)
    sim = RtuSimulator(config, seed=5, physics=PhysicsSettings(period_s=1.0, noise_pct=0.0,
                                                              flow=FlowMethod.THREE_PHASE))
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    voltvar = VoltVarService.from_center(center, options=VoltVarOptions(band=WIDE), feedback_timeout_s=20.0)
    center.add_grpc_registrar(lambda server: register(server, center.services, voltvar))
    sim.start()
    try:
        center.start()
        voltvar.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        try:
            wait_for(lambda: _rtdb(center, "cap2.Pos")[1] == 0 and _rtdb(center, "reg1.Pos.ph_A")[1] == 0, 30,
                     "capacitor and tap positions good after GI")
            yield System(config, sim, center, voltvar, pb_grpc.VoltVarStub(channel), channel)
        finally:
            channel.close()
            voltvar.stop()
    finally:
        center.stop()
        sim.stop()


def _rtdb(center: ControlCenter, name: str) -> tuple[float, int]:
    row = center.rtdb.snapshot([center.rtdb.point_id(name)])[0]
    return float(row["value"]), int(row["quality"])


def _md(token: str = OPERATOR_TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _switch_cap2(system: System, state: DoubleState) -> None:
    """The operator switches cap2 by hand. Retried for a while: the IEC 104 client refuses a command on an object
    whose previous command has not yet seen its activation termination ("already running")."""
    pid = system.center.rtdb.point_id("cap2.Pos")
    outcomes = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        sel = system.center.commands.select(pid, state, OPERATOR)
        out = system.center.commands.operate(pid, state, OPERATOR) if sel.status is ControlStatus.SUCCESS else sel
        outcomes.append(out)
        if out.status is ControlStatus.SUCCESS:
            break
        time.sleep(0.5)
    assert outcomes[-1].status is ControlStatus.SUCCESS, outcomes
    wait_for(lambda: _rtdb(system.center, "cap2.Pos")[0] == state, 15, f"cap2.Pos {state.name}")


def test_state_follows_the_field(system: System) -> None:
    state = system.voltvar.telemetered_state()
    m = state.base
    assert [state.tap_step[state.index_of("tap changer", n)] for n in ("reg1", "reg2", "reg3")] == [
        t.step for t in m.tap_changers]
    assert state.capacitor_sections[state.index_of("capacitor", "cap2")] == 1
    assert state.frequency_hz == 60


def test_capacitor_and_taps_executed_through_scada(system: System) -> None:
    _switch_cap2(system, DoubleState.OFF)
    stored = system.voltvar.propose(objective=Objective.LOSSES)
    p = stored.proposal
    assert p.verified and p.feasible, p.message
    cap = [a for a in p.actions if a.kind is ControlKind.CAPACITOR]
    assert [(a.element, a.before, a.after) for a in cap] == [("cap2", 0.0, 1.0)]
    taps = [a for a in p.actions if a.kind is ControlKind.TAP]
    report = system.voltvar.execute(stored.id, OPERATOR)
    assert report.completed, report.message
    assert all(r.status is ActionStatus.DONE for r in report.results)
    assert {r.point for r in report.results} == {"cap2.Pos"} | {f"{a.element}.Step.Set" for a in taps}
    assert _rtdb(system.center, "cap2.Pos")[0] == DoubleState.ON
    physics = system.sim.physics
    assert physics is not None
    for a in taps:
        assert physics.tap_step(a.element) == a.after
        assert round(_rtdb(system.center, f"{a.element}.Pos.ph_{a.phases[0]}")[0]) == a.after
    used = {c.element: c.used for c in system.voltvar.counters()}
    assert used["cap2"] == 1
    for a in taps:
        assert used[a.element] >= a.operations
    # the field now matches the proposal: a fresh one has nothing left to gain
    again = system.voltvar.propose(objective=Objective.LOSSES).proposal
    assert not again.actions, again.message
    # the command service audited each command under the operator's name
    audited = {e.point_name for e in system.center.audit.query(operator="operator")}
    assert {r.point for r in report.results} <= audited


def test_stale_proposal_is_refused(system: System) -> None:
    _switch_cap2(system, DoubleState.OFF)
    stored = system.voltvar.propose(objective=Objective.LOSSES)
    assert any(a.element == "cap2" for a in stored.proposal.actions)
    _switch_cap2(system, DoubleState.ON)  # someone else acts first
    with pytest.raises(StaleProposalError, match="cap2"):
        system.voltvar.execute(stored.id, OPERATOR)
    with pytest.raises(ExecutionError, match="unknown"):
        system.voltvar.execute(99_999, OPERATOR)


def test_grpc_propose_execute_counters_and_permissions(system: System) -> None:
    stub = system.stub
    reply = stub.Propose(pb.VoltVarProposeRequest(objective=pb.VOLTVAR_OBJECTIVE_CVR), metadata=_md(VIEWER_TOKEN),
                         timeout=30)
    assert reply.objective == pb.VOLTVAR_OBJECTIVE_CVR and reply.verified and reply.feasible
    assert (reply.band_low_pu, reply.band_high_pu) == (WIDE.low_pu, WIDE.high_pu)
    assert reply.actions and reply.after.demand_kw < reply.before.demand_kw
    with pytest.raises(grpc.RpcError) as denied:
        stub.Execute(pb.VoltVarExecuteRequest(proposal_id=reply.id), metadata=_md(VIEWER_TOKEN), timeout=30)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    before = {c.element: c.used for c in stub.GetCounters(pb.VoltVarCountersRequest(), metadata=_md(),
                                                          timeout=10).counters}
    done = stub.Execute(pb.VoltVarExecuteRequest(proposal_id=reply.id), metadata=_md(), timeout=120)
    assert done.completed, done.message
    assert all(r.status == pb.VOLTVAR_ACTION_STATUS_DONE for r in done.results)
    after = {c.element: c for c in stub.GetCounters(pb.VoltVarCountersRequest(), metadata=_md(),
                                                    timeout=10).counters}
    for a in reply.actions:
        assert after[a.element].used == before[a.element] + a.operations
        assert after[a.element].left == after[a.element].limit - after[a.element].used
    # an infeasible band: reported, not verified, and refused by Execute
    bad = stub.Propose(pb.VoltVarProposeRequest(band_low_pu=0.99, band_high_pu=1.0), metadata=_md(), timeout=30)
    assert not bad.feasible and "cannot be met" in bad.message
    assert not bad.verified and bad.new_violations  # it trades overvoltages for new undervoltages
    with pytest.raises(grpc.RpcError) as refused:
        stub.Execute(pb.VoltVarExecuteRequest(proposal_id=bad.id), metadata=_md(), timeout=30)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "not verified" in (refused.value.details() or "")
    with pytest.raises(grpc.RpcError) as inverted:
        stub.Propose(pb.VoltVarProposeRequest(band_low_pu=1.05, band_high_pu=0.95), metadata=_md(), timeout=30)
    assert inverted.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_daily_limit_refuses_execution(system: System, tmp_path: Path) -> None:
    tight = VoltVarService.from_center(system.center, data_dir=tmp_path, options=VoltVarOptions(band=WIDE),
                                       limits=DailyLimits(max_tap_operations=30, max_capacitor_switchings=1))
    try:
        _switch_cap2(system, DoubleState.OFF)
        first = tight.propose(objective=Objective.LOSSES)
        assert any(a.element == "cap2" for a in first.proposal.actions)
        # the counter runs out between proposal and execution (another proposal executed meanwhile)
        cap = next(a for a in first.proposal.actions if a.element == "cap2")
        tight.counter.record(cap, "someone")
        with pytest.raises(DailyLimitError, match="cap2"):
            tight.execute(first.id, OPERATOR)
        assert _rtdb(system.center, "cap2.Pos")[0] == DoubleState.OFF  # nothing was sent
        # and a new proposal leaves cap2 alone
        second = tight.propose(objective=Objective.LOSSES).proposal
        assert "cap2" in second.blocked and not any(a.element == "cap2" for a in second.actions)
    finally:
        tight.stop()
        _switch_cap2(system, DoubleState.ON)


def test_periodic_mode_alarms_while_the_band_cannot_be_met(system: System, tmp_path: Path) -> None:
    periodic = VoltVarService.from_center(system.center, data_dir=tmp_path, period_s=0.3,
                                          options=VoltVarOptions(band=VoltageBand(0.99, 1.0)))
    key = "system:dms:voltvar:band"

    def alarm() -> object:
        return next((a for a in system.center.alarms.list() if a.key == key and a.state.value.startswith("active")),
                    None)

    periodic.start()
    try:
        raised = wait_for(alarm, 30, "the Volt/VAR band alarm")
        assert "cannot be met" in raised.text  # type: ignore[attr-defined]
        # automatic execution is off: nothing moved
        assert _rtdb(system.center, "cap2.Pos")[0] == DoubleState.ON
        assert all(c.used == 0 for c in periodic.counters())
    finally:
        periodic.stop()
        system.center.alarms.clear_system("dms:voltvar:band")
