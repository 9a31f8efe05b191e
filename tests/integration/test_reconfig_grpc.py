"""Feeder reconfiguration over gRPC on the live IEEE 123 state: switch positions from the simulator (IEC 104) and
from operators' manual states reach the proposal; READ suffices, no token is refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from support import IEEE123, free_port, requires_reference_feeders, wait_for

from dms.api.protos import reconfig_pb2 as pb
from dms.api.protos import reconfig_pb2_grpc as pb_grpc
from dms.api.reconfig_servicer import register
from dms.reconfig.service import ReconfigService
from models.config import OperatorConfig, Role, StationConfig, load_station_config
from rtu_sim.simulator import RtuSimulator
from scada.server import ControlCenter

pytestmark = [requires_reference_feeders(), pytest.mark.slow]

OPERATOR_TOKEN = "operator-test-token"
VIEWER_TOKEN = "viewer-test-token"
OPERATOR = OperatorConfig("operator", Role.OPERATOR, OPERATOR_TOKEN)


def station_text(data_dir: Path) -> str:
    return f"""
[station]
name = "IEEE 123 reconfiguration test"
[server]
grpc_address = "127.0.0.1:0"
data_dir = "{data_dir.as_posix()}"
[network]
cim = "{IEEE123.as_posix()}"
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
name = "RTU-SW"
common_address = 1
addresses = ["127.0.0.1:{free_port()}"]
equipment = ["sw1", "sw2", "sw3", "sw4", "sw6"]  # sw5, sw7, sw8: manual states
ioa_base = 0
"""


@dataclass
class System:
    config: StationConfig
    center: ControlCenter
    reconfig: ReconfigService
    stub: pb_grpc.ReconfigurationStub


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("reconfig")
    path = tmp / "station.toml"
    path.write_text(station_text(tmp / "data"), encoding="utf-8")
    config = load_station_config(path)
    sim = RtuSimulator(config, seed=11)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    reconfig = ReconfigService.from_center(center)
    center.add_grpc_registrar(lambda server: register(server, center.services, reconfig))
    sim.start()
    try:
        center.start()
        reconfig.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        try:
            ids = [p.id for p in config.points]
            wait_for(lambda: all(int(q) == 0 for q in center.rtdb.snapshot(ids)["quality"]), 30,
                     "switch positions good after GI")
            yield System(config, center, reconfig, pb_grpc.ReconfigurationStub(channel))
        finally:
            channel.close()
            reconfig.stop()
    finally:
        center.stop()
        sim.stop()


def _md(token: str = OPERATOR_TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _set_manual(center: ControlCenter, states: dict[str, bool]) -> None:
    for name, closed in states.items():
        center.topology.set_manual_switch_state(name, closed, OPERATOR, "reconfiguration test")


def test_propose_on_the_live_state(system: System) -> None:
    reply = system.stub.Propose(pb.ReconfigRequest(objective=pb.RECONFIG_OBJECTIVE_LOSSES), metadata=_md(VIEWER_TOKEN),
                                timeout=120)
    assert reply.network == "ieee123" and reply.state.startswith("real time")
    assert reply.objective == pb.RECONFIG_OBJECTIVE_LOSSES
    assert list(reply.before.open_switches) == ["sw7", "sw8"]
    assert reply.before.losses_kw > 50 and reply.before.three_phase_losses_kw > 50
    assert reply.before.feeders and reply.ac_solves > 0 and "MILP" in reply.algorithm
    if reply.improved:
        assert reply.after.losses_kw < reply.before.losses_kw
        assert {s.element for s in reply.steps} <= {f"sw{i}" for i in range(1, 9)}
    else:  # the three-phase check refuses what the balanced model would take (said in the notes)
        assert not reply.steps and list(reply.after.open_switches) == ["sw7", "sw8"]
        assert any("three-phase check refused" in n for n in reply.notes)


def test_manual_switch_states_reach_the_proposal(system: System) -> None:
    # the tie sw8 closed and sw5 opened by hand: a radial configuration other than the normal one
    _set_manual(system.center, {"sw8": True, "sw5": False})
    try:
        reply = system.stub.Propose(pb.ReconfigRequest(), metadata=_md(), timeout=120)
        assert list(reply.before.open_switches) == ["sw5", "sw7"]
        assert reply.objective == pb.RECONFIG_OBJECTIVE_LOSSES  # unspecified: the service's default
        assert reply.before.three_phase_losses_kw > 0
        for step in reply.steps:
            assert step.mode in (pb.RECONFIG_TRANSFER_MAKE_BEFORE_BREAK, pb.RECONFIG_TRANSFER_BREAK_BEFORE_MAKE)
            assert step.action in (pb.RECONFIG_ACTION_OPEN, pb.RECONFIG_ACTION_CLOSE)
        if reply.improved:
            assert reply.after.losses_kw < reply.before.losses_kw
            assert len(reply.steps) == 2 * len(reply.to_close)
            assert set(reply.after.open_switches) == (set(reply.before.open_switches) - set(reply.to_close)
                                                      | set(reply.to_open))
        else:
            assert not reply.steps and list(reply.after.open_switches) == ["sw5", "sw7"]
    finally:
        _set_manual(system.center, {"sw8": False, "sw5": True})
    after = system.stub.Propose(pb.ReconfigRequest(), metadata=_md(), timeout=120)
    assert list(after.before.open_switches) == ["sw7", "sw8"]  # the manual states went back


def test_balance_objective_and_errors(system: System) -> None:
    reply = system.stub.Propose(pb.ReconfigRequest(objective=pb.RECONFIG_OBJECTIVE_BALANCE), metadata=_md(),
                                timeout=120)
    assert reply.objective == pb.RECONFIG_OBJECTIVE_BALANCE
    with pytest.raises(grpc.RpcError) as err:
        system.stub.Propose(pb.ReconfigRequest(), timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        system.stub.Propose(pb.ReconfigRequest(band_low_pu=1.05, band_high_pu=0.95), metadata=_md(), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "band" in (err.value.details() or "")
