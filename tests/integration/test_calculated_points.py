"""Calculated points on the sample station: simulators (IEC 104, Modbus, IEC 61850, DNP3) -> front ends -> RTDB ->
RealtimeEstimator -> the DMS-SE points in the RTDB and over gRPC. After the first estimate they are GOOD and agree
with the simulator's flow and the field telemetry; a de-energised part reads 0 GOOD; they turn COMM_LOST with a
"calculation stopped" alarm when the estimator stops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from support import sample_network_config, wait_for

from dms.se.realtime import RealtimeEstimator, RealtimeOptions
from models.calculated_points import SE_SOURCE, CalculatedQuantity
from models.config import OperatorConfig, Role, StationConfig
from models.points import DoubleState, PointKind, Quality
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ScadaClient
from scada.server import ControlCenter

OPENED = "F2-RMU06-LBS2"  # a telemetered ring switch: opening it de-energises the rest of F2 up to its tie
OPERATOR = OperatorConfig("test:calculated", Role.OPERATOR, "")


@dataclass
class Live:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    se: RealtimeEstimator
    client: ScadaClient


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("calculated")
    config = sample_network_config(folder)
    assert config.calculated, "the sample station opts in to the state-estimation points"
    sim = RtuSimulator(config, seed=11)  # DMS-SE is skipped: it has no field device
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    sim.start()
    se = client = None
    try:
        center.start()
        field = [p.id for p in config.points if p.kind is PointKind.ANALOG and p.source.rtu != SE_SOURCE]
        wait_for(lambda: not center.rtdb.snapshot(field)["quality"].any(), 90, "every field analog good")
        se = RealtimeEstimator.for_center(center, options=RealtimeOptions(period_s=120.0))  # runs only on demand
        se.start()
        wait_for(lambda: se.latest() is not None, 60, "the first estimate")
        client = ScadaClient(f"127.0.0.1:{center.grpc_port}", "operator-demo-token")
        client.wait_ready(10)
        yield Live(config, sim, center, se, client)
    finally:
        if client is not None:
            client.close()
        if se is not None:
            se.stop()
        center.stop()
        sim.stop()


def _rows(live: Live, quantity: CalculatedQuantity) -> tuple[list, np.ndarray]:
    calc = [c for c in live.config.calculated if c.quantity is quantity]
    return calc, live.center.rtdb.snapshot([c.point for c in calc])


def test_after_the_first_estimate_the_points_are_good_and_match_the_field(live: Live) -> None:
    result = live.se.run_now()
    assert result.converged and not result.unobservable_buses and not result.deenergised_buses, result.summary()
    assert live.center.rtdb.flush(10)
    physics = live.sim.physics
    assert physics is not None and physics.last is not None
    model = live.config.network
    assert model is not None
    bus_index = {b.name: b.index for b in model.buses}
    calc, rows = _rows(live, CalculatedQuantity.V_KV)
    assert len(calc) == 636 and (rows["quality"] == 0).all()
    assert (rows["source_time_ms"] == result.time_ms).all()
    truth = np.array([physics.last.bus_v_ln_kv[bus_index[c.bus]] for c in calc])
    base = np.array([model.buses[bus_index[c.bus]].nominal_v / 1e3 / np.sqrt(3) for c in calc])
    err_pu = np.abs(rows["value"] - truth) / base
    print(f"\nSE voltage points vs the simulator's flow: max {err_pu.max():.5f} pu, mean {err_pu.mean():.5f} pu")
    assert err_pu.max() < 0.01
    # ...and against the field's own voltage telemetry at the measured busbars, which carries the simulator's 0.5 %
    # (one sigma) noise: within 2 % (4 sigma)
    for phase in "ABC":
        for bus in ("SS-BUS1", "SS-BUS2"):
            field = live.center.rtdb.snapshot([live.center.rtdb.point_id(f"{bus}.PNV.ph_{phase}")])[0]
            est = live.center.rtdb.snapshot([live.center.rtdb.point_id(f"{bus}.SE.V.ph_{phase}")])[0]
            assert abs(est["value"] - field["value"]) < 0.02 * field["value"], (bus, phase)
    calc, sd = _rows(live, CalculatedQuantity.V_SD_KV)
    assert (sd["quality"] == 0).all() and (sd["value"] > 0).all() and (sd["value"] < 0.05 * rows["value"]).all()
    # flows at the measured terminals agree with the measurements they were estimated from
    for q, meas in ((CalculatedQuantity.P_KW, "P"), (CalculatedQuantity.Q_KVAR, "Q"), (CalculatedQuantity.I_A, "A")):
        calc, est = _rows(live, q)
        assert len(calc) == 132 and (est["quality"] == 0).all(), q
        for breaker in ("F1-CB", "F4-CB"):
            got = est["value"][[c.name for c in calc].index(f"{breaker}.SE.{meas}.ph_B")]
            field = live.center.rtdb.snapshot([live.center.rtdb.point_id(f"{breaker}.{meas}.ph_B")])[0]["value"]
            assert abs(got - field) < 0.05 * abs(field) + 5, (breaker, meas, got, field)
        tie = est["value"][[c.name for c in calc].index(f"F1-RMU08-LBS2.SE.{meas}.ph_A")]
        assert tie == 0.0  # the normally-open tie carries nothing: a fact from the topology, GOOD
    (losses,), rows = _rows(live, CalculatedQuantity.LOSSES_KW)
    assert rows["quality"][0] == 0 and rows["value"][0] == pytest.approx(result.loss_p_w / 1e3) and rows["value"][0] > 0


def test_the_points_are_served_over_grpc_like_field_points(live: Live) -> None:
    name = "SS-BUS1.SE.V.ph_A"
    (definition,) = live.client.list_points(".SE.V.ph_A")[:1]
    assert definition.protocol == "calculated" and definition.rtu == SE_SOURCE and definition.units == "kV"
    value = live.client.read([name])[0]
    assert value.quality == 0 and value.value > 5.0
    rtu = next(r for r in live.client.rtus() if r.name == SE_SOURCE)
    assert rtu.protocol == "calculated" and rtu.link_up and rtu.points == len(live.config.calculated)


def test_a_deenergised_part_reads_zero_good(live: Live) -> None:
    pid = live.center.rtdb.point_id(f"{OPENED}.Pos")
    live.center.commands.select(pid, DoubleState.OFF, OPERATOR)
    live.center.commands.operate(pid, DoubleState.OFF, OPERATOR)
    try:
        wait_for(lambda: len(live.center.topology.snapshot().deenergized_loads()), 30, f"{OPENED} open in the topology")
        result = wait_for(lambda: (r := live.se.run_now()).deenergised_buses and r, 30, "an estimate with dead buses")
        assert result.converged, result.summary()
        assert live.center.rtdb.flush(10)
        dead = set(result.deenergised_buses)
        calc, rows = _rows(live, CalculatedQuantity.V_KV)
        mask = np.array([c.bus in dead for c in calc])
        assert mask.any() and (rows["value"][mask] == 0).all() and (rows["quality"][mask] == 0).all()
        assert (rows["quality"][~mask] == 0).all() and (rows["value"][~mask] > 5.0).all()
        calc, rows = _rows(live, CalculatedQuantity.I_A)
        opened = np.array([c.element == OPENED for c in calc])
        assert opened.any() and (rows["value"][opened] == 0).all() and (rows["quality"][opened] == 0).all()
    finally:
        live.center.commands.select(pid, DoubleState.ON, OPERATOR)
        live.center.commands.operate(pid, DoubleState.ON, OPERATOR)
        wait_for(lambda: not len(live.center.topology.snapshot().deenergized_loads()), 30, "every load supplied")


def test_the_points_go_comm_lost_when_the_estimator_stops(live: Live) -> None:
    ids = [c.point for c in live.config.calculated]
    live.se.stop()
    wait_for(lambda: (live.center.rtdb.snapshot(ids)["quality"] & Quality.COMM_LOST).all(), 10, "SE points comm-lost")
    alarm = wait_for(lambda: next((a for a in live.center.alarms.list() if a.condition == f"link:{SE_SOURCE}"), None),
                     10, "the calculation-stopped alarm")
    assert "calculation stopped" in alarm.text and "communication" not in alarm.text
    # field points are untouched
    field = live.center.rtdb.snapshot([live.center.rtdb.point_id("F1-CB.P.ph_A")])[0]
    assert field["quality"] == 0
