"""All four front ends side by side on the embedded sample network: IEC 104 substation RTU, Modbus transformer
meters, IEC 61850 feeder protection IEDs and DNP3 FRTUs, each with its own supervised adapter process feeding one
RTDB. A crashed adapter costs only its own protocol: the others keep updating while it restarts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import sample_network_config, wait_for

from models.config import StationConfig
from models.points import DoubleState, PointKind, Quality
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.server import ControlCenter

OPERATOR = "operator-demo-token"
PROTOCOLS = ("iec104", "dnp3", "modbus", "iec61850")


@dataclass
class Mixed:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    op: ScadaClient


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mixed]:
    folder = tmp_path_factory.mktemp("mixed")
    config = sample_network_config(folder)
    sim = RtuSimulator(config, seed=3)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    sim.start()
    try:
        center.start()
        op = ScadaClient(f"127.0.0.1:{center.grpc_port}", OPERATOR)
        op.wait_ready(10)
        try:
            wait_for(lambda: all(v.quality == 0 for v in op.read(_monitored(config))), 60, "all points good")
        except AssertionError:
            bad = [(v.name, list(v.quality_names)) for v in op.read(_monitored(config)) if v.quality][:10]
            raise AssertionError(f"points not good after start: {bad}") from None
        yield Mixed(config, sim, center, op)
        op.close()
    finally:
        center.stop()
        sim.stop()


def _monitored(config: StationConfig) -> list[str]:
    # field points: the calculated ones (DMS-SE) stay COMM_LOST here, no estimator runs
    return [p.name for p in config.points if p.kind is not PointKind.COMMAND and p.source.frontend != "calculated"]


def _analog_of(config: StationConfig, protocol: str) -> str:
    return next(p.name for p in config.points if p.source.frontend == protocol and p.kind is PointKind.ANALOG
                and p.units in ("kV", "A", "kW"))  # not a tap position: an integer register on Modbus


def test_the_sample_station_uses_all_four_protocols(mixed: Mixed) -> None:
    used = {r.protocol.value for r in mixed.config.rtus}
    # and the state-estimation source DMS-SE (no adapter) and the transmission centre over ICCP (its own front end)
    assert used == {*PROTOCOLS, "calculated", "iccp"}
    assert set(mixed.center.supervisors) == {*PROTOCOLS, "iccp"}
    assert all(s.running for s in mixed.center.supervisors.values())


def test_every_device_completes_its_interrogation(mixed: Mixed) -> None:
    """Each adapter confirms every device with a completed interrogation / integrity poll / full scan (stale
    supervision relies on it), not only some of them."""
    def missing() -> list[str]:
        return [r.name for r in mixed.op.rtus() if r.last_gi_ms <= 0 and r.protocol != "calculated"]

    try:
        wait_for(lambda: not missing(), 30, "an interrogation of every device")
    except AssertionError:
        raise AssertionError(f"no completed interrogation from {missing()}") from None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_field_change_arrives_with_its_time(mixed: Mixed, protocol: str) -> None:
    name = _analog_of(mixed.config, protocol)
    value = 4321.25
    mixed.sim.set_value(name, value)
    got = wait_for(lambda: next((v for v in mixed.op.read([name]) if abs(v.value - value) < 1e-3), None), 20,
                   f"{name} = {value} over {protocol}")
    assert got.quality == 0
    if protocol == "modbus":  # polled: the time is the poll's, not an event time from the device
        assert got.source_time_ms > 0
    else:
        assert got.source_time_ms > 0 and got.recv_time_ms >= got.source_time_ms
    mixed.sim.release(name)


def test_a_crashed_adapter_costs_only_its_protocol(mixed: Mixed) -> None:
    victim = "dnp3"
    sup = mixed.center.supervisors[victim]
    dnp3_point = _analog_of(mixed.config, victim)
    others = {p: _analog_of(mixed.config, p) for p in PROTOCOLS if p != victim}
    restarts = sup.restarts
    sup.kill()
    wait_for(lambda: sup.restarts > restarts, 15, "the supervisor noticing the crash")
    wait_for(lambda: mixed.op.read([dnp3_point])[0].quality & Quality.COMM_LOST, 15, "DNP3 points comm-lost")
    # While DNP3 is down, every other protocol keeps delivering fresh values.
    for protocol, name in others.items():
        value = 1234.5
        mixed.sim.set_value(name, value)
        wait_for(lambda name=name, value=value: abs(mixed.op.read([name])[0].value - value) < 1e-3, 20,
                 f"{name} over {protocol} during the DNP3 outage")
        mixed.sim.release(name)
    wait_for(lambda: mixed.op.read([dnp3_point])[0].quality == 0, 60, "DNP3 points good after the restart")


def test_switching_over_each_controlling_protocol(mixed: Mixed) -> None:
    """Open and close a switch through the protocols that carry controls: DNP3 (FRTU load-break switch) and
    IEC 61850 (feeder breaker), with select-before-operate and status feedback from the device."""
    cfg = mixed.config
    for protocol in ("dnp3", "iec61850"):
        name = next(p.name for p in cfg.points if p.source.frontend == protocol and p.control is not None
                    and p.kind is PointKind.DOUBLE and p.name.endswith("LBS2.Pos" if protocol == "dnp3" else "CB.Pos"))
        for state in (DoubleState.OFF, DoubleState.ON):
            for attempt in (1, 2):
                sel = mixed.op.select(name, state)
                res = mixed.op.operate(name, state)
                if res.status == pb.CONTROL_STATUS_SUCCESS:
                    break
                assert attempt == 1, f"{name} over {protocol}: {sel} / {res}"
            wait_for(lambda name=name, state=state: mixed.op.read([name])[0].value == state, 15,
                     f"{name} feedback {state.name} over {protocol}")
