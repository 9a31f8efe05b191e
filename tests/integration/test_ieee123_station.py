"""The IEEE 123 station (tests/data/ieee123_station.toml) end to end with the unbalanced physics: every CIM measurement
is a point of an IEC 104 or DNP3 RTU, the simulators drive them from the three-phase flow, and SCADA commands move a
regulator tap (set-point) and switch a capacitor bank and a feeder switch back into the physics."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import requires_reference_feeders, wait_for

from models.config import StationConfig, load_station_config
from models.measurement_points import Quantity
from models.points import DoubleState, PointKind
from models.samples import relocate_station_text
from rtu_sim.grid_driver import PhysicsSettings
from rtu_sim.physics import FlowMethod
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.server import ControlCenter

pytestmark = requires_reference_feeders()

STATION = Path(__file__).resolve().parents[1] / "data" / "ieee123_station.toml"
OPERATOR = "operator-demo-token"
NOISE_PCT = 0.2


@dataclass
class System:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    op: ScadaClient


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("ieee123")
    path = tmp / "station.toml"
    path.write_text(relocate_station_text(STATION.read_text(encoding="utf-8"), tmp / "data", STATION.parent),
                    encoding="utf-8")
    config = load_station_config(path)
    # A long flow period: the loads stay put, so only commands move the values.
    sim = RtuSimulator(config, seed=7, physics=PhysicsSettings(period_s=300.0, noise_pct=NOISE_PCT,
                                                              flow=FlowMethod.THREE_PHASE))
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    sim.start()
    try:
        center.start()
        op = ScadaClient(f"127.0.0.1:{center.grpc_port}", OPERATOR)
        try:
            op.wait_ready(10)
            wait_for(lambda: all(v.quality == 0 for v in op.read()), 60, "every IEEE 123 point good after GI")
            yield System(config, sim, center, op)
        finally:
            op.close()
    finally:
        center.stop()
        sim.stop()


def _rtdb(system: System, names: list[str] | None = None) -> dict[str, float]:
    return {v.name: v.value for v in system.op.read(names)}


def _flow_value(system: System, point: str) -> float:
    physics = system.sim.physics
    assert physics is not None and physics.last is not None
    b = system.config.binding(system.config.point(point))
    assert b is not None
    return physics.value(b, physics.last)


def _mismatches(system: System, names: list[str]) -> list[str]:
    """Points whose RTDB value is outside noise (4 sigma) + deadband of the latest flow."""
    got = _rtdb(system, names)
    bad = []
    for name in names:
        want = _flow_value(system, name)
        if abs(got[name] - want) > abs(want) * (4 * NOISE_PCT + 2.0) / 100 + 0.6:
            bad.append(f"{name}: rtdb {got[name]} vs flow {want}")
    return bad


def _switch(system: System, point: str, value: DoubleState) -> pb.ControlResult:
    """Select and operate, once more when the field did not answer: c104's server sometimes drops an execute
    unanswered (LIBRARY_FACTS), which is not under test here."""
    for _attempt in range(2):
        assert system.op.select(point, value).status == pb.CONTROL_STATUS_SUCCESS
        result = system.op.operate(point, value)
        if result.status not in (pb.CONTROL_STATUS_TIMEOUT, pb.CONTROL_STATUS_REFUSED_BY_FIELD):
            break
    return result


def test_every_measurement_is_a_good_point_with_unbalanced_values(system: System) -> None:
    cfg = system.config
    model = cfg.network
    assert model is not None and cfg.frequency_hz == 60
    assert len({b.measurement_mrid for b in cfg.bindings if b}) == len(model.measurements) == 782
    assert {r.protocol.value for r in cfg.rtus} == {"iec104", "dnp3"}
    # Good after the general interrogation is not yet the flow's values: an outstation may answer the GI from its
    # initial image before the first three-phase solve reaches it (seen on a loaded CI machine).
    def live_voltages() -> dict[str, float] | None:
        values = _rtdb(system)
        return values if all(v > 0 for n, v in values.items() if ".PNV." in n) else None

    got = wait_for(live_voltages, 30, "every IEEE 123 voltage point carrying the flow's value")
    assert len(got) == len(cfg.points) == 1143 and system.sim.physics is not None
    assert system.sim.physics.flow is FlowMethod.THREE_PHASE
    # Per-phase voltages of three-phase measured elements differ (the feeder is unbalanced), beyond the noise.
    spreads = []
    for p in cfg.points:
        three = [p.name.replace("ph_A", f"ph_{x}") for x in "ABC"]
        if p.name.endswith(".PNV.ph_A") and all(n in got for n in three):
            v = [got[n] for n in three]
            spreads.append((max(v) - min(v)) / statistics.mean(v))
    # Measured without noise: 55 elements, max 2.96 %, median 0.95 % (the balanced physics gives 0 for all).
    assert len(spreads) > 50 and max(spreads) > 0.02 and statistics.median(spreads) > 0.006
    # The feeder head carries unequal phase currents; RTDB values are the flow's within noise and deadband.
    head = [got[f"sw1.A.ph_{x}"] for x in "ABC"]
    assert min(head) > 50 and (max(head) - min(head)) / max(head) > 0.1
    sample = ["sw1.A.ph_A", "sw1.A.ph_B", "reg4.PNV.T2.ph_A", "s1a.P.ph_A", "c83.Q.ph_B", "l60.PNV.ph_C"]
    wait_for(lambda: not _mismatches(system, sample), 15, "RTDB values equal to the three-phase flow")
    assert got["c83.Q.ph_A"] < 0  # a capacitor delivers reactive power: negative into the element
    assert got["sw7.Pos.ph_A"] == DoubleState.OFF and got["sw7.A.ph_A"] == 0  # normally-open tie
    # A single-phase lateral measures only its phase.
    assert not any(n.startswith("s1a.PNV.ph_") and not n.endswith("ph_A") for n in got)
    assert got["s1a.PNV.ph_A"] > 2.0


@pytest.mark.timeout(60)
def test_tap_setpoint_moves_the_regulator_and_its_phase_voltage(system: System) -> None:
    cfg = system.config
    sp = cfg.point("creg4a.Step.Set")
    assert sp.kind is PointKind.SETPOINT and cfg.binding(sp).quantity is Quantity.TAP_SETPOINT
    names = ["creg4a.Step.Set", "creg4a.Pos.ph_A", "reg4.PNV.T2.ph_A", "reg4.PNV.T2.ph_B"]
    before = _rtdb(system, names)
    start = before["creg4a.Pos.ph_A"]
    target = start + 4 if start + 4 <= 16 else start - 4
    try:
        result = system.op.operate("creg4a.Step.Set", target)  # direct operate, no select
        assert result.status == pb.CONTROL_STATUS_SUCCESS, result
        wait_for(lambda: _rtdb(system, ["creg4a.Pos.ph_A"])["creg4a.Pos.ph_A"] == target, 15,
                 "the tap position following the set-point")
        assert system.sim.physics is not None and system.sim.physics.tap_step("creg4a") == target
        # 4 steps of 0.625 %: phase A at the regulator output moves ~2.5 %, phase B (its own tap) hardly.
        want = 1 + (target - start) * 0.00625
        wait_for(lambda: _rtdb(system, ["reg4.PNV.T2.ph_A"])["reg4.PNV.T2.ph_A"] / before["reg4.PNV.T2.ph_A"]
                 == pytest.approx(want, abs=0.008), 15, "regulator output voltage of phase A following the tap")
        after = _rtdb(system, names)
        assert after["creg4a.Step.Set"] == target
        assert after["reg4.PNV.T2.ph_B"] == pytest.approx(before["reg4.PNV.T2.ph_B"], rel=0.006)
        # Out of the tap changer's range (-16..16): the RTU refuses it, nothing moves.
        refused = system.op.operate("creg4a.Step.Set", 17)
        assert refused.status != pb.CONTROL_STATUS_SUCCESS
        assert system.sim.physics.tap_step("creg4a") == target
    finally:
        system.sim.set_tap("creg4a", start)
    wait_for(lambda: _rtdb(system, ["creg4a.Pos.ph_A"])["creg4a.Pos.ph_A"] == start, 15, "tap back")


@pytest.mark.timeout(60)
def test_capacitor_bank_switches_through_its_pos_point(system: System) -> None:
    assert _rtdb(system, ["c88a.Pos"])["c88a.Pos"] == DoubleState.ON
    assert _rtdb(system, ["c88a.Q.ph_A"])["c88a.Q.ph_A"] < -10
    try:
        result = _switch(system, "c88a.Pos", DoubleState.OFF)
        assert result.status == pb.CONTROL_STATUS_SUCCESS and result.feedback == pb.FEEDBACK_STATUS_CONFIRMED
        assert system.sim.physics is not None and not system.sim.physics.switch_closed("c88a")
        wait_for(lambda: _rtdb(system, ["c88a.Q.ph_A"])["c88a.Q.ph_A"] == 0, 15, "capacitor Q reading 0")
    finally:
        _switch(system, "c88a.Pos", DoubleState.ON)
    wait_for(lambda: _rtdb(system, ["c88a.Q.ph_A"])["c88a.Q.ph_A"] < -10, 15, "capacitor back in")


@pytest.mark.timeout(60)
def test_load_break_switch_takes_its_operate_time_and_reports_intermediate(system: System) -> None:
    # sw2 is a motorised load-break switch (1.5 s): the command is confirmed only when it arrives, and the RTDB
    # sees the travel as INTERMEDIATE (IEC 104 double point 0) first.
    with system.op.subscribe(["sw2.Pos.ph_A"]) as updates:
        first = next(updates)  # the subscription's snapshot: it is registered before the command
        assert first.snapshot and [v.value for v in first.values] == [DoubleState.ON]
        try:
            result = _switch(system, "sw2.Pos.ph_A", DoubleState.OFF)
            assert result.status == pb.CONTROL_STATUS_SUCCESS and result.feedback == pb.FEEDBACK_STATUS_CONFIRMED
            assert result.elapsed_ms >= 1400, result
            seen: list[float] = []
            for update in updates:
                seen += [v.value for v in update.values]
                if DoubleState.OFF in seen:
                    break
            assert seen[seen.index(DoubleState.INTERMEDIATE) + 1:].count(DoubleState.OFF) >= 1, seen
        finally:
            _switch(system, "sw2.Pos.ph_A", DoubleState.ON)
    wait_for(lambda: _rtdb(system, ["sw2.Pos.ph_A"])["sw2.Pos.ph_A"] == DoubleState.ON, 15, "sw2 closed again")
