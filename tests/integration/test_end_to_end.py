"""The whole spine over real sockets: simulated RTU -> IEC 104 -> supervised adapter -> RTDB -> gRPC subscriber,
and commands back. One running system is shared by the tests of this module; each test leaves it as it found it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from support import sample_config_on_free_ports, wait_for

from models.config import StationConfig
from models.points import DoubleState, Quality
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ClientError, ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.server import ControlCenter

OPERATOR, VIEWER = "operator-demo-token", "viewer-demo-token"
CB = "SHN/F1/CB"


@dataclass
class System:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    op: ScadaClient
    viewer: ScadaClient


def _all_good(client: ScadaClient, names: list[str] | None = None) -> bool:
    return all(v.quality == 0 for v in client.read(names))


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    config, _ = sample_config_on_free_ports(tmp_path_factory.mktemp("e2e"))
    sim = RtuSimulator(config, seed=1)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    sim.start()
    try:
        center.start()
        op = ScadaClient(f"127.0.0.1:{center.grpc_port}", OPERATOR)
        viewer = ScadaClient(f"127.0.0.1:{center.grpc_port}", VIEWER)
        op.wait_ready(10)
        wait_for(lambda: _all_good(op), 30, "all points good after GI")
        yield System(config, sim, center, op, viewer)
        op.close()
        viewer.close()
    finally:
        center.stop()
        sim.stop()


class Collector:
    """Reads a gRPC point subscription in a thread and keeps every value."""

    def __init__(self, client: ScadaClient, names: list[str] | None = None) -> None:
        self.values: list[pb.PointValue] = []
        self.ready = threading.Event()
        self.stream = client.subscribe(names)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "no snapshot on the subscription"

    def _run(self) -> None:
        for msg in self.stream:
            if msg.snapshot:
                if msg.end_of_snapshot:
                    self.ready.set()
                continue
            self.values.extend(msg.values)

    def find(self, name: str, pred) -> pb.PointValue | None:
        return next((v for v in list(self.values) if v.name == name and pred(v)), None)

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(5)


@pytest.mark.timeout(60)
def test_field_changes_reach_grpc_with_quality_and_time(system: System) -> None:
    col = Collector(system.op)
    try:
        before_ms = time.time_ns() // 1_000_000
        system.sim.trip(CB)
        v = wait_for(lambda: col.find(CB, lambda v: v.value == DoubleState.OFF), 5, "trip on the gRPC stream")
        after_ms = time.time_ns() // 1_000_000
        assert before_ms <= v.source_time_ms <= after_ms  # the RTU's own ms time tag, intact
        assert v.quality == 0 and v.cause == pb.CAUSE_SPONTANEOUS
        assert v.recv_time_ms >= v.source_time_ms
        prot = wait_for(lambda: col.find("SHN/F1/PROT_TRIP", lambda v: v.value == 1), 5, "protection flag")
        assert abs(prot.source_time_ms - v.source_time_ms) <= 5

        system.sim.set_value("SHN/BUS11/V", 12.5, quality=Quality.INVALID)
        a = wait_for(lambda: col.find("SHN/BUS11/V", lambda v: v.quality & Quality.INVALID), 5, "invalid analog")
        assert a.value == pytest.approx(12.5, abs=1e-3) and "INVALID" in a.quality_names
        system.sim.release("SHN/BUS11/V")
        wait_for(lambda: col.find("SHN/BUS11/V", lambda v: v.quality == 0 and v.seq > a.seq), 10, "analog good again")
        soe = system.op.soe(points=[CB], limit=5)
        assert soe and soe[0].source_time_ms == v.source_time_ms and soe[0].value == DoubleState.OFF
    finally:
        col.close()
        _reclose(system)


def _reclose(system: System) -> None:
    if system.op.read([CB])[0].value != DoubleState.ON:
        system.op.select(CB, DoubleState.ON)
        system.op.operate(CB, DoubleState.ON)


@pytest.mark.timeout(60)
def test_sbo_command_round_trip(system: System) -> None:
    system.sim.trip("SHN/F2/CB")
    wait_for(lambda: system.op.read(["SHN/F2/CB"])[0].value == DoubleState.OFF, 5, "F2 open")
    sel = system.op.select("SHN/F2/CB", DoubleState.ON)
    assert sel.status == pb.CONTROL_STATUS_SUCCESS
    res = system.op.operate("SHN/F2/CB", DoubleState.ON)
    assert res.status == pb.CONTROL_STATUS_SUCCESS and res.feedback == pb.FEEDBACK_STATUS_CONFIRMED
    assert system.sim.value("SHN/F2/CB") == DoubleState.ON
    entries = system.op.audit(point="SHN/F2/CB")
    assert {e.outcome for e in entries} >= {"sent", "answered"}
    # a direct set-point command
    sp = system.op.operate("SHN/TR1/TAP", 11.2)
    assert sp.status == pb.CONTROL_STATUS_SUCCESS
    assert system.sim.value("SHN/TR1/TAP") == pytest.approx(11.2, abs=1e-4)


@pytest.mark.timeout(60)
def test_refusal_paths(system: System) -> None:
    with pytest.raises(ClientError) as ei:
        system.viewer.select(CB, DoubleState.OFF)
    assert ei.value.code is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(ClientError) as ei:
        system.op.select("NO/SUCH/POINT", 1)
    assert ei.value.code is grpc.StatusCode.NOT_FOUND and "NO/SUCH/POINT" in ei.value.message
    tag = system.op.place_tag(CB, "hold", "crew working")
    try:
        with pytest.raises(ClientError) as ei:
            system.op.select(CB, DoubleState.OFF)
        assert ei.value.code is grpc.StatusCode.FAILED_PRECONDITION and ei.value.refusal == "tagged"
    finally:
        system.op.remove_tag(tag.id, "done")
    # the RTU itself refuses: a blocked device answers with a negative confirmation
    system.sim.block("RMU1/SW2")
    try:
        res = system.op.select("RMU1/SW2", DoubleState.ON)
        if res.status == pb.CONTROL_STATUS_SUCCESS:  # c104 answers the select itself; the device refuses execute
            res = system.op.operate("RMU1/SW2", DoubleState.ON)
        assert res.status == pb.CONTROL_STATUS_REFUSED_BY_FIELD
        assert system.sim.value("RMU1/SW2") == DoubleState.OFF
        failed = [a for a in system.op.alarms() if a.kind == "system" and a.text.startswith("RMU1/SW2:")]
        assert failed and "refused_by_field" in failed[0].text
        assert failed[0].state == pb.ALARM_STATE_CLEARED_UNACKED  # an event: acknowledging it closes it
        system.op.acknowledge([failed[0].id])
    finally:
        system.sim.block("RMU1/SW2", False)


@pytest.mark.timeout(90)
def test_link_loss_comm_lost_then_gi_restores(system: System) -> None:
    names = [p.name for p in system.config.points_of_rtu("FRTU-RMU1")]
    t0 = time.monotonic()
    system.sim.link_down("FRTU-RMU1")
    try:
        wait_for(lambda: all(v.quality & Quality.COMM_LOST for v in system.op.read(names)), 10, "comm-lost")
        lost_after_s = time.monotonic() - t0
        assert lost_after_s < 10
        alarms = system.op.alarms()
        assert any(a.kind == "system" and "FRTU-RMU1" in a.text for a in alarms)
        # the other RTUs are untouched
        assert system.op.read(["RMU2/I"])[0].quality & Quality.COMM_LOST == 0
    finally:
        system.sim.link_up("FRTU-RMU1")
    wait_for(lambda: all(v.quality == 0 for v in system.op.read(names)), 30, "GI restoring good quality")
    wait_for(lambda: not any(a.kind == "system" and "FRTU-RMU1" in a.text and a.state == pb.ALARM_STATE_ACTIVE_UNACKED
                             for a in system.op.alarms()), 10, "link alarm cleared")


@pytest.mark.timeout(90)
def test_redundant_link_switch_over(system: System) -> None:
    rtu = system.config.rtu("RTU-SHN")
    primary = rtu.addresses[0]
    system.sim.link_down("RTU-SHN", primary)
    try:
        time.sleep(1.0)
        # after the switch-over the backup link carries a fresh trip
        system.sim.trip("SHN/F2/CB")
        wait_for(lambda: (v := system.op.read(["SHN/F2/CB"])[0]).value == DoubleState.OFF and v.quality == 0,
                 20, "trip over the backup link")
    finally:
        system.sim.link_up("RTU-SHN", primary)
        _reclose_f2(system)


def _reclose_f2(system: System) -> None:
    wait_for(lambda: system.op.read(["SHN/F2/CB"])[0].quality == 0, 20, "F2 good")
    system.op.select("SHN/F2/CB", DoubleState.ON)
    system.op.operate("SHN/F2/CB", DoubleState.ON)


@pytest.mark.timeout(120)
def test_adapter_crash_restarts_only_the_adapter(system: System) -> None:
    sup = system.center.supervisors["iec104"]
    restarts = sup.restarts
    sup.kill()
    wait_for(lambda: sup.restarts > restarts, 10, "supervisor noticing the crash")
    try:
        wait_for(lambda: _all_good(system.op), 40, "all points good again after adapter restart")
    except AssertionError:
        bad = [(v.name, list(v.quality_names)) for v in system.op.read() if v.quality]
        raise AssertionError(f"not good after adapter restart: {bad}") from None
    assert system.op.health() == "SERVING"


@pytest.mark.timeout(120)
def test_restart_keeps_soe_and_acknowledgements(tmp_path: Path) -> None:
    config, _ = sample_config_on_free_ports(tmp_path)
    sim = RtuSimulator(config, seed=2)
    sim.start()
    try:
        with ControlCenter(config, grpc_address="127.0.0.1:0") as center:
            with ScadaClient(f"127.0.0.1:{center.grpc_port}", OPERATOR) as op:
                wait_for(lambda: _all_good(op), 30, "GI")
                sim.trip(CB)
                alarm = wait_for(lambda: next((a for a in op.alarms() if a.point_name == CB), None), 10, "alarm")
                op.acknowledge([alarm.id])
                soe_before = op.soe(points=[CB])
        with ControlCenter(config, grpc_address="127.0.0.1:0") as center:
            with ScadaClient(f"127.0.0.1:{center.grpc_port}", OPERATOR) as op:
                soe_after = op.soe(points=[CB])
                assert [e.seq for e in soe_after[: len(soe_before)]] == [e.seq for e in soe_before]
                again = next(a for a in op.alarms() if a.id == alarm.id)
                assert again.state == pb.ALARM_STATE_ACTIVE_ACKED and again.acked_by == "operator"
    finally:
        sim.stop()


@pytest.mark.timeout(60)
def test_rtu_status_interrogation_and_clock_sync(system: System, capsys: pytest.CaptureFixture[str]) -> None:
    from scada.client_cli import main as cli

    rtus = {r.name: r for r in system.op.rtus()}
    assert set(rtus) == {"RTU-SHN", "FRTU-RMU1", "FRTU-RMU2"}
    assert all(r.link_up and r.active_address in r.addresses for r in rtus.values())
    before = rtus["FRTU-RMU2"].last_gi_ms
    assert system.op.interrogate("FRTU-RMU2") == ["FRTU-RMU2"]
    wait_for(lambda: next(r for r in system.op.rtus() if r.name == "FRTU-RMU2").last_gi_ms > before, 10,
             "GI on demand completing")
    with pytest.raises(ClientError) as ei:
        system.viewer.interrogate("FRTU-RMU2")
    assert ei.value.code is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(ClientError) as ei:
        system.op.interrogate("NOPE")
    assert ei.value.code is grpc.StatusCode.NOT_FOUND
    address = f"127.0.0.1:{system.center.grpc_port}"
    assert cli(["--address", address, "--token", OPERATOR, "clock-sync"]) == 0
    assert cli(["--address", address, "--token", OPERATOR, "rtus"]) == 0
    out = capsys.readouterr().out
    assert "clock synchronisation sent to: RTU-SHN, FRTU-RMU1, FRTU-RMU2" in out and "FRTU-RMU2" in out
    assert "UP" in out


@pytest.mark.timeout(60)
def test_server_status_shows_subscribers_and_adapters(system: System, capsys: pytest.CaptureFixture[str]) -> None:
    from scada.client_cli import main as cli

    # the adapter reports its counters with each heartbeat (every 0.25 s)
    st = wait_for(lambda: (s := system.op.server_status()).adapters and s.adapters[0].counters["gi_done"] >= 3 and s,
                  10, "heartbeat counting the three GIs")
    assert st.points == len(system.config.points) and st.rows > 0 and st.changes > 0
    assert {"alarms", "historian"} <= {s.name for s in st.subscribers}
    (adapter,) = st.adapters
    assert adapter.name == "iec104" and adapter.running and adapter.pid > 0
    assert adapter.last_heartbeat_ms > 0 and adapter.counters.get("callback_errors", 0) == 0
    assert cli(["--address", f"127.0.0.1:{system.center.grpc_port}", "--token", VIEWER, "status"]) == 0
    assert "Protocol adapters" in capsys.readouterr().out
