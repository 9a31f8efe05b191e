"""Three-phase power flow on hand-checkable feeders: a source, one line and one load, against closed-form answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.network import (
    Bus,
    Der,
    DerKind,
    EnergySource,
    LineSegment,
    Load,
    LoadResponse,
    ModelDiagnostics,
    NetworkModel,
    Phase,
    ShuntConnection,
)
from models.three_phase_flow import DerMode, NotConvergedError, SourceModel, run_three_phase_powerflow

V_LL = 4160.0
E = V_LL / math.sqrt(3.0)
ABC = (Phase.A, Phase.B, Phase.C)


def _response(z: float, i: float, p: float) -> LoadResponse:
    return LoadResponse("r", "r", False, z, i, p, z, i, p, 0.0, 0.0)


def _feeder(z_ohm: np.ndarray, phases: tuple[Phase, ...], loads: list[Load], *, ders: tuple[Der, ...] = (),
            source_z_ohm: complex = 0j) -> NetworkModel:
    flag = Phase.NONE
    for p in phases:
        flag |= p
    buses = (Bus(0, "b0", "src", ("cn0",), Phase.A | Phase.B | Phase.C, V_LL, math.nan, math.nan, None),
             Bus(1, "b1", "load", ("cn1",), flag, V_LL, math.nan, math.nan, None))
    k = len(phases)
    line = LineSegment("l1", "l1", 0, 1, phases, 1000.0, "z", "z", z_ohm.real / 1000.0, z_ohm.imag / 1000.0,
                       np.zeros((k, k)), None, None)
    source = EnergySource("s", "source", 0, V_LL, V_LL, 0.0, source_z_ohm.real, source_z_ohm.imag,
                          source_z_ohm.real, source_z_ohm.imag)
    return NetworkModel("tiny", "test", buses, (), (line,), (), (), (), tuple(loads), (), ders, (source,), (), (),
                        ModelDiagnostics({}, {}))


def _load(phases: Phase, conn: ShuntConnection, p_w: float, q_var: float, response: LoadResponse | None) -> Load:
    return Load("ld", "ld", 1, phases, conn, p_w, q_var, (), (), True, 1, response, None)


@pytest.mark.timeout(60)
def test_constant_impedance_load_is_a_voltage_divider() -> None:
    z_line = np.diag([complex(0.5, 1.0)] * 3)
    s_phase = complex(300e3, 100e3)
    net = _feeder(z_line, ABC, [_load(Phase.A | Phase.B | Phase.C, ShuntConnection.Y, 3 * s_phase.real,
                                      3 * s_phase.imag, _response(100, 0, 0))])
    flow = run_three_phase_powerflow(net, source_model=SourceModel.IDEAL)
    z_load = E**2 / np.conj(s_phase)  # constant-Z at nominal voltage
    expected = E * abs(z_load / (z_load + z_line[0, 0]))
    got = flow.nodes["v_v"][flow.nodes["bus"] == "load"]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # power balance: source = load + line loss (I^2 R)
    i = E / abs(z_load + z_line[0, 0])
    assert flow.loss_p_w == pytest.approx(3 * i**2 * 0.5, rel=1e-6)
    assert flow.source_p_w == pytest.approx(flow.load_p_w + flow.loss_p_w, rel=1e-9)


@pytest.mark.timeout(60)
def test_single_phase_constant_power_load_matches_the_two_bus_quadratic() -> None:
    r, x = 0.8, 1.6
    p, q = 400e3, 200e3
    net = _feeder(np.array([[complex(r, x)]]), (Phase.A,), [_load(Phase.A, ShuntConnection.Y, p, q, None)])
    flow = run_three_phase_powerflow(net, source_model=SourceModel.IDEAL, tolerance_pu=1e-12)
    # |V|^4 + (2(PR + QX) - E^2)|V|^2 + (P^2 + Q^2)(R^2 + X^2) = 0, the high-voltage root
    b = 2 * (p * r + q * x) - E**2
    v2 = (-b + math.sqrt(b * b - 4 * (p * p + q * q) * (r * r + x * x))) / 2
    assert flow.voltage_pu("load", "A") * E == pytest.approx(math.sqrt(v2), rel=1e-9)
    assert flow.load_p_w == pytest.approx(p, rel=1e-9)  # constant power draws its nominal P at any voltage
    assert flow.iterations < 30
    assert flow.max_mismatch_a < 1e-6


@pytest.mark.timeout(60)
def test_delta_load_and_thevenin_source() -> None:
    z_line = np.array([[0.4 + 1.0j, 0.1 + 0.4j, 0.1 + 0.35j], [0.1 + 0.4j, 0.4 + 1.0j, 0.1 + 0.4j],
                       [0.1 + 0.35j, 0.1 + 0.4j, 0.4 + 1.0j]])
    net = _feeder(z_line, ABC, [_load(Phase.A | Phase.B | Phase.C, ShuntConnection.D, 900e3, 300e3, None)],
                  source_z_ohm=0.2 + 2.0j)
    flow = run_three_phase_powerflow(net)
    v = flow.nodes[flow.nodes["bus"] == "load"]
    # balanced delta load, transposition-free line: still nearly balanced, below the source
    assert np.all((v["v_pu"] > 0.9) & (v["v_pu"] < 1.0))
    assert flow.load_p_w == pytest.approx(900e3, rel=1e-9)
    assert flow.source_p_w == pytest.approx(flow.load_p_w + flow.loss_p_w, rel=1e-9)
    # the source's own impedance drops voltage at the source bus
    assert np.all(flow.nodes["v_pu"][flow.nodes["bus"] == "src"] < 1.0)


@pytest.mark.timeout(60)
def test_der_is_a_negative_load_and_can_be_switched_off() -> None:
    z_line = np.diag([complex(0.5, 1.0)] * 3)
    der = Der("d", "pv", DerKind.PHOTOVOLTAIC, 1, Phase.A | Phase.B | Phase.C, 600e3, 0.0, 1e6, V_LL, 0, 0, (), (),
              (), None)
    net = _feeder(z_line, ABC, [_load(Phase.A | Phase.B | Phase.C, ShuntConnection.Y, 600e3, 0.0, None)],
                  ders=(der,))
    on = run_three_phase_powerflow(net, source_model=SourceModel.IDEAL)
    off = run_three_phase_powerflow(net, source_model=SourceModel.IDEAL, der=DerMode.OFF)
    assert on.der_p_w == pytest.approx(600e3) and off.der_p_w == 0.0
    assert abs(on.source_p_w) < 1.0  # the PV supplies the load at its own bus
    assert on.voltage_pu("load", "A") == pytest.approx(1.0, abs=1e-4)
    assert off.voltage_pu("load", "A") < 0.99


@pytest.mark.timeout(60)
def test_impossible_load_names_the_worst_node() -> None:
    net = _feeder(np.array([[complex(5.0, 10.0)]]), (Phase.A,), [_load(Phase.A, ShuntConnection.Y, 5e6, 2e6, None)])
    with pytest.raises(NotConvergedError, match=r"network 'tiny'.*did not converge.*worst bus/phase load\.A"):
        run_three_phase_powerflow(net, source_model=SourceModel.IDEAL, max_iterations=50)


@pytest.mark.timeout(60)
def test_exponent_model_with_exponent_two_equals_constant_impedance() -> None:
    z_line = np.diag([complex(0.5, 1.0)] * 3)
    exp2 = LoadResponse("e", "e", True, 0, 0, 0, 0, 0, 0, 2.0, 2.0)
    flows = [run_three_phase_powerflow(_feeder(z_line, ABC, [_load(Phase.A | Phase.B | Phase.C, ShuntConnection.Y,
                                                                    900e3, 300e3, resp)]),
                                       source_model=SourceModel.IDEAL, tolerance_pu=1e-12)
             for resp in (exp2, _response(100, 0, 0), _response(0, 100, 0))]
    v_exp, v_z, v_i = (f.voltage_pu("load", "A") for f in flows)
    assert v_exp == pytest.approx(v_z, rel=1e-9)
    assert v_z > v_i  # constant current draws more than constant impedance below 1 pu
    assert flows[2].load_p_w == pytest.approx(900e3 * v_i, rel=1e-9)
