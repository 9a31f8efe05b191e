"""rtu_sim.physics on IEEE 123: tap changers, capacitor switching and the unbalanced (three-phase) flow."""

from __future__ import annotations

import pytest
from support import IEEE123, requires_reference_feeders

from models.cim import load_cim
from models.measurement_points import MeasurementBinding, Quantity, RtuEquipment, derive_measurement_points
from models.network import NetworkModel, Phase
from rtu_sim.errors import SimulatorError
from rtu_sim.grid_driver import INSTANT_OPERATE, OperateTimes
from rtu_sim.physics import FlowMethod, GridPhysics, PhysicsError

pytestmark = requires_reference_feeders()


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return load_cim(IEEE123)


@pytest.fixture(scope="module")
def bindings(model: NetworkModel) -> dict[str, MeasurementBinding]:
    return {p.name: p.binding for p in derive_measurement_points(model, [RtuEquipment("R", ("*",))]).points}


def _values(g: GridPhysics, bindings: dict[str, MeasurementBinding]) -> dict[str, float]:
    snap = g.solve(epoch_s=12 * 3600.0)
    assert snap.converged
    return {n: g.value(b, snap) for n, b in bindings.items()}


@pytest.mark.parametrize("flow", list(FlowMethod))
def test_set_tap_is_range_checked_and_moves_the_regulated_voltage(model: NetworkModel,
                                                                  bindings: dict[str, MeasurementBinding],
                                                                  flow: FlowMethod) -> None:
    g = GridPhysics(model, noise_pct=0, f_hz=60, flow=flow)
    before = _values(g, bindings)
    assert before["creg4a.Pos.ph_A"] == before["creg4a.Step.Set"] == 10
    for bad in (17, -17, 2.5, float("nan")):
        with pytest.raises(PhysicsError, match=r"tap changer 'creg4a': step .* -16..16"):
            g.set_tap("creg4a", bad)
    with pytest.raises(PhysicsError, match="no tap changer 'nope'"):
        g.set_tap("nope", 1)
    assert g.set_tap("creg4a", 14) and not g.set_tap("creg4a", 14)
    after = _values(g, bindings)
    assert after["creg4a.Pos.ph_A"] == after["creg4a.Step.Set"] == 14 and g.tap_step("creg4a") == 14
    ratio = after["reg4.PNV.T2.ph_A"] / before["reg4.PNV.T2.ph_A"]
    if flow is FlowMethod.THREE_PHASE:  # 4 steps of 0.625 % on phase A only
        assert ratio == pytest.approx(1.025, abs=0.004)
        assert after["reg4.PNV.T2.ph_B"] == pytest.approx(before["reg4.PNV.T2.ph_B"], rel=0.003)
    else:  # pandapower's one tap_pos is the mean of the three per-phase steps
        assert ratio == pytest.approx(1 + 0.025 / 3, abs=0.003)


def test_three_phase_values_are_unbalanced_and_consistent(model: NetworkModel,
                                                          bindings: dict[str, MeasurementBinding]) -> None:
    g = GridPhysics(model, noise_pct=0, f_hz=60, flow=FlowMethod.THREE_PHASE)
    v = _values(g, bindings)
    snap = g.last
    assert snap is not None and snap.phases is not None
    head = [v[f"sw1.A.ph_{x}"] for x in "ABC"]
    assert (max(head) - min(head)) / max(head) > 0.1  # the feeder head is unbalanced
    # Power balance: what enters at the feeder head (sw1, all phases) = loads + losses below it (losses > 0, small).
    into_head = sum(snap.phases.flow[(b.element_mrid, b.bus, "ABC"[k])][0]
                    for k, b in enumerate(bindings[f"sw1.A.ph_{x}"] for x in "ABC"))
    loads_kw = float(snap.load_p_kw.sum())
    assert 0 < into_head - loads_kw < 0.1 * loads_kw
    # A single-phase load draws on its phase only; its value is its scheduled load at this voltage (ZIP response).
    s1a = next(ld for ld in model.loads if ld.name == "s1a")
    assert s1a.phases & ~Phase.N == Phase.A
    assert v["s1a.P.ph_A"] == pytest.approx(s1a.p_w / 1e3 * g.load_multipliers(12 * 3600.0)[
        model.loads.index(s1a)], rel=0.1)
    # Switch totals fill the balanced-shaped arrays too (what energised()/FPI logic read).
    k = next(i for i, s in enumerate(model.switches) if s.name == "sw1")
    assert snap.switch_p_kw[k, 0] == pytest.approx(into_head)


@pytest.mark.parametrize("flow", list(FlowMethod))
def test_capacitor_switching_and_open_switch(model: NetworkModel, bindings: dict[str, MeasurementBinding],
                                             flow: FlowMethod) -> None:
    g = GridPhysics(model, noise_pct=0, f_hz=60, flow=flow)
    before = _values(g, bindings)
    assert before["c83.Q.ph_A"] < -50 and before["c83.Pos.ph_A"] == 2
    g.set_switch("c83", False)
    g.set_switch("sw3", False)
    after = _values(g, bindings)
    assert after["c83.Q.ph_A"] == 0 and after["c83.Pos.ph_A"] == 1
    assert after["c83.PNV.ph_A"] < before["c83.PNV.ph_A"]  # its reactive support is gone
    assert after["sw3.A.ph_A"] == 0 and after["l114.PNV.ph_A"] == 0  # dead downstream of the open sw3
    state = g.state_model()
    assert next(s for s in state.switches if s.name == "sw3").open
    assert next(c for c in state.capacitors if c.name == "c83").sections == 0


def test_operate_times_per_device_kind(bindings: dict[str, MeasurementBinding]) -> None:
    times = OperateTimes()
    assert times.of(bindings["sw2.Pos.ph_A"]) == 1.5  # LoadBreakSwitch
    assert times.of(bindings["c83.Pos.ph_A"]) == 0.08  # capacitor bank switch
    assert INSTANT_OPERATE.of(bindings["sw2.Pos.ph_A"]) == 0
    with pytest.raises(SimulatorError, match="OperateTimes.disconnector_s must be 0..60 s"):
        OperateTimes(disconnector_s=-1)
    assert Quantity.TAP_SETPOINT.value == "tap_setpoint"
