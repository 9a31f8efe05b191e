"""Three-phase power flow against the published IEEE 13-node test feeder results (IEEE PES Distribution System
Analysis Subcommittee, radial test feeders; Kersting's voltage profile table), and on IEEE 123 against GridAPPS-D's
simulator truth (../shared/data/se-ieee123/simulation_data.csv).

The reference CIM file is GridAPPS-D's IEEE 13 "assets" variant. What differs from the published feeder, and how
each difference is handled here:
- DERs (2 PV, 3 batteries): switched off (``DerMode.OFF``) for the comparison.
- A centre-tapped 5 kVA transformer on 670 phase B feeding a 5 kW "house": kept (5 kW of 3.5 MW; not a published bus).
- Breaker, recloser, fuse and sectionaliser as 1 milliohm switches (OpenDSS ``Switch=yes``): kept.
- Substation: a 115 kV Thevenin source (20 GVA short circuit) behind a 0.01 % transformer instead of an ideal 1.0 pu
  bus at 650, regulators with their (0.014 %) leakage impedance: kept; 650 comes out 0.9998 pu, RG60 0.07 % low.
- Line impedances: the file's matrices for configurations 601 and 602 have the A-B and B-C mutual impedances
  exchanged against the published configuration table (601: Zab 0.1560+j0.5017 and Zbc 0.1535+j0.3849 ohm/mile).
  That changes the phase imbalance a lot (671 phase B 1.0201 pu instead of 1.0529). The comparison restores the
  published mutuals (``_published_line_data``); the file as is is reported beside. The file also has no line
  charging (the published feeder has some: a few 0.01 % of voltage), kept as is.
Regulator taps come from the CIM file and equal the published ones (A 10, B 8, C 11), asserted below.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from models.cim import load_cim
from models.network import NetworkModel, Phase, phase_text
from models.powerflow_cli import main as powerflow_main
from models.three_phase_flow import DerMode, ThreePhaseFlow, run_three_phase_powerflow
from tests.support import IEEE13, IEEE123, SHARED_DATA, requires_reference_feeders

pytestmark = requires_reference_feeders()

# Published |V| (pu) and angle (deg) per bus, phases A, B, C; None where the bus lacks the phase. 634 is on the
# 0.48 kV base (the table's XFXFM1 row), the others on 4.16 kV (2.4017 kV phase to neutral).
PUBLISHED_V_PU = {
    "650": (1.0000, 1.0000, 1.0000), "rg60": (1.0625, 1.0500, 1.0687), "632": (1.0210, 1.0420, 1.0174),
    "633": (1.0180, 1.0401, 1.0148), "634": (0.9940, 1.0218, 0.9960), "645": (None, 1.0329, 1.0155),
    "646": (None, 1.0311, 1.0134), "671": (0.9900, 1.0529, 0.9778), "680": (0.9900, 1.0529, 0.9778),
    "684": (0.9881, None, 0.9758), "611": (None, None, 0.9738), "652": (0.9825, None, None),
    "692": (0.9900, 1.0529, 0.9777), "675": (0.9835, 1.0553, 0.9758),
}
PUBLISHED_ANGLE_DEG = {
    "632": (-2.49, -121.72, 117.83), "633": (-2.56, -121.77, 117.82), "634": (-3.23, -122.22, 117.34),
    "645": (None, -121.90, 117.86), "646": (None, -121.98, 117.90), "671": (-5.30, -122.34, 116.02),
    "684": (-5.32, None, 115.92), "611": (None, None, 115.78), "652": (-5.25, None, None),
    "692": (-5.31, -122.34, 116.02), "675": (-5.56, -122.52, 116.03),
}
PUBLISHED_Z_OHM_PER_MILE = {  # configuration table, phase order A, B, C
    "mtx601": np.array([[0.3465 + 1.0179j, 0.1560 + 0.5017j, 0.1580 + 0.4236j],
                        [0.1560 + 0.5017j, 0.3375 + 1.0478j, 0.1535 + 0.3849j],
                        [0.1580 + 0.4236j, 0.1535 + 0.3849j, 0.3414 + 1.0348j]]),
    "mtx602": np.array([[0.7526 + 1.1814j, 0.1580 + 0.4236j, 0.1560 + 0.5017j],
                        [0.1580 + 0.4236j, 0.7475 + 1.1983j, 0.1535 + 0.3849j],
                        [0.1560 + 0.5017j, 0.1535 + 0.3849j, 0.7436 + 1.2112j]]),
}
TOLERANCE = 0.005  # the 0.5 %
ANGLE_TOLERANCE_DEG = 0.25
M_PER_MILE = 1609.344
PHASES = ("A", "B", "C")


def _exchange_ab_bc(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[1, 0], out[2, 1] = m[2, 1], m[1, 0]
    out[0, 1], out[1, 2] = m[1, 2], m[0, 1]
    return out


def _published_line_data(net: NetworkModel) -> NetworkModel:
    """The network with the published 601/602 mutual impedances (see the module docstring)."""
    lines = tuple(dataclasses.replace(ln, r_ohm_per_m=_exchange_ab_bc(ln.r_ohm_per_m),
                                      x_ohm_per_m=_exchange_ab_bc(ln.x_ohm_per_m),
                                      b_s_per_m=_exchange_ab_bc(ln.b_s_per_m))
                  if ln.impedance_name in PUBLISHED_Z_OHM_PER_MILE else ln for ln in net.lines)
    return dataclasses.replace(net, lines=lines)


def _deviations(flow: ThreePhaseFlow) -> list[tuple[float, str, float, float]]:
    """(relative deviation, bus.phase, ours, published) for every published bus/phase."""
    out = []
    for bus, values in PUBLISHED_V_PU.items():
        for phase, published in zip(PHASES, values, strict=True):
            if published is not None:
                ours = flow.voltage_pu(bus, phase)
                out.append((abs(ours - published) / published, f"{bus}.{phase}", ours, published))
    return sorted(out)


@pytest.fixture(scope="module")
def ieee13() -> NetworkModel:
    return load_cim(IEEE13)


@pytest.fixture(scope="module")
def published_flow(ieee13: NetworkModel) -> ThreePhaseFlow:
    return run_three_phase_powerflow(_published_line_data(ieee13), der=DerMode.OFF)


@pytest.mark.timeout(60)
def test_file_taps_are_the_published_taps(ieee13: NetworkModel) -> None:
    steps = {phase_text(tc.phases & ~Phase.N): tc.step for tc in ieee13.tap_changers}
    assert steps == {"A": 10, "B": 8, "C": 11}


@pytest.mark.timeout(60)
def test_file_line_data_has_601_602_mutuals_exchanged(ieee13: NetworkModel) -> None:
    for name, published in PUBLISHED_Z_OHM_PER_MILE.items():
        line = next(ln for ln in ieee13.lines if ln.impedance_name == name)
        z = (line.r_ohm_per_m + 1j * line.x_ohm_per_m) * M_PER_MILE
        assert np.abs(z - published).max() > 0.03, f"{name}: the file now matches the published matrix"
        np.testing.assert_allclose(_exchange_ab_bc(z), published, atol=2e-4)


@pytest.mark.timeout(60)
def test_matches_published_voltage_table(ieee13: NetworkModel, published_flow: ThreePhaseFlow) -> None:
    devs = _deviations(published_flow)
    as_is = _deviations(run_three_phase_powerflow(ieee13, der=DerMode.OFF))
    worst, where, ours, published = devs[-1]
    print(f"\nIEEE13 (published line data, DERs off): {len(devs)} bus/phases, worst {worst * 100:.3f} % at {where} "
          f"({ours:.4f} vs {published:.4f}), mean {np.mean([d[0] for d in devs]) * 100:.3f} %, "
          f"{published_flow.iterations} iterations, {published_flow.solve_s * 1e3:.1f} ms")
    print(f"IEEE13 file as is: worst {as_is[-1][0] * 100:.2f} % at {as_is[-1][1]} ({as_is[-1][2]:.4f} vs "
          f"{as_is[-1][3]:.4f})")
    assert len(devs) == 35
    assert worst < TOLERANCE, f"{where}: {ours:.4f} pu vs published {published:.4f}"


@pytest.mark.timeout(60)
def test_matches_published_angles(published_flow: ThreePhaseFlow) -> None:
    nodes = published_flow.nodes
    worst = 0.0
    for bus, values in PUBLISHED_ANGLE_DEG.items():
        for phase, published in zip(PHASES, values, strict=True):
            if published is not None:
                row = nodes[(nodes["bus"] == bus) & (nodes["phase"] == phase)][0]
                worst = max(worst, abs(row["angle_deg"] - published))
                assert row["angle_deg"] == pytest.approx(published, abs=ANGLE_TOLERANCE_DEG), f"{bus}.{phase}"
    print(f"\nIEEE13 worst angle deviation {worst:.3f} deg")


@pytest.mark.timeout(60)
def test_power_balance(published_flow: ThreePhaseFlow) -> None:
    f = published_flow
    assert f.source_p_w == pytest.approx(f.load_p_w + f.loss_p_w - f.der_p_w, rel=1e-7)
    assert f.source_q_var == pytest.approx(f.load_q_var + f.loss_q_var - f.der_q_var - f.capacitor_q_var, rel=1e-6)
    assert 3.4e6 < f.load_p_w < 3.6e6 and 80e3 < f.loss_p_w < 150e3  # published: 3466 kW load, 111 kW loss
    assert f.max_mismatch_a < 1e-3


@pytest.mark.timeout(60)
def test_ders_off_changes_the_result(ieee13: NetworkModel) -> None:
    on = run_three_phase_powerflow(ieee13, der=DerMode.ON)
    off = run_three_phase_powerflow(ieee13, der=DerMode.OFF)
    assert on.der_p_w == pytest.approx(240e3 + 4e3 + 100e3 - 1e3 - 5e3, rel=1e-9) and off.der_p_w == 0
    assert on.source_p_w < off.source_p_w - 300e3
    for phase in PHASES:  # 339 kW injected at 634 lifts its voltage
        assert on.voltage_pu("634", phase) > off.voltage_pu("634", phase) + 0.005


@pytest.mark.timeout(60)
def test_cli_json_three_phase_with_balanced_beside(capsys: pytest.CaptureFixture[str]) -> None:
    assert powerflow_main([str(IEEE13), "--der", "off", "--json"]) == 0  # three-phase is the default
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "three-phase" and data["der"] == "off" and data["iterations"] > 0
    node = next(n for n in data["nodes"] if n["bus"] == "671" and n["phase"] == "B")
    assert node["v_pu"] > 1.0 and 0.98 < node["balanced_vm_pu"] < 1.03
    assert data["balanced"]["loss_p_mw"] > 0 and data["balanced_error"] is None
    assert {t["name"]: t["step"] for t in data["taps"]} == {"reg1": 10, "reg2": 8, "reg3": 11}
    assert any(b["element"] == "tpoletop" and b["terminal"] == 3 for b in data["branches"])
    assert data["totals"]["der_p_w"] == 0
    assert powerflow_main([str(IEEE13), "--three-phase", "--balanced"]) == 2  # mutually exclusive


@pytest.mark.timeout(60)
def test_ieee123_converges_and_agrees_with_gridappsd_truth() -> None:
    flow = run_three_phase_powerflow(load_cim(IEEE123))
    nodes = flow.nodes
    assert nodes["energised"].all() and flow.iterations < 20
    assert 0.97 < nodes["v_pu"].min() and nodes["v_pu"].max() < 1.06
    assert flow.source_p_w == pytest.approx(flow.load_p_w + flow.loss_p_w, rel=1e-7)
    assert flow.voltage_pu("150r", "A") == pytest.approx(1.0375, abs=1e-4)  # reg1 step 6 on a stiff source
    truth_file = SHARED_DATA / "se-ieee123/simulation_data.csv"
    if not truth_file.is_file():
        pytest.skip(f"{truth_file} not found")
    with truth_file.open(newline="") as f:
        truth = next(csv.DictReader(f))  # first snapshot
    ours = dict(zip(nodes["node"], nodes["v_pu"], strict=True))
    # 610 is the ungrounded delta 480 V secondary: its phase-to-ground voltages are not defined (left out)
    dev = sorted((abs(ours[k[5:]] - float(v)), k[5:]) for k, v in truth.items()
                 if k.startswith("vmag_") and not k.startswith("vmag_610."))
    print(f"\nIEEE123 vs GridAPPS-D truth: {len(dev)} nodes, median {dev[len(dev) // 2][0] * 100:.2f} %, "
          f"max {dev[-1][0] * 100:.2f} % at {dev[-1][1]}; {flow.iterations} iterations, {flow.solve_s * 1e3:.1f} ms")
    assert dev[len(dev) // 2][0] < 0.005 and dev[-1][0] < 0.015


@pytest.mark.timeout(60)
def test_substation_input_matches_published(published_flow: ThreePhaseFlow) -> None:
    # Published input per phase (kW, kvar): A 1251.4 + j681.6, B 977.3 + j373.4, C 1348.5 + j669.8. Ours is taken at
    # the regulator's output terminal into line 650632; phase B also feeds the 5 kW house (not in the original).
    published = {"A": (1251.4e3, 681.6e3), "B": (977.3e3, 373.4e3), "C": (1348.5e3, 669.8e3)}
    b = published_flow.branches
    for phase, (p_w, q_var) in published.items():
        row = b[(b["element"] == "650632") & (b["terminal"] == 1) & (b["phase"] == phase)][0]
        assert row["p_w"] == pytest.approx(p_w, rel=0.01) and row["q_var"] == pytest.approx(q_var, rel=0.015)


@pytest.mark.timeout(60)
def test_open_switch_deenergises_the_part_behind_it(ieee13: NetworkModel) -> None:
    opened = dataclasses.replace(ieee13, switches=tuple(dataclasses.replace(s, open=True) if s.name == "671692" else s
                                                        for s in ieee13.switches))
    flow = run_three_phase_powerflow(opened, der=DerMode.OFF)
    dead = set(flow.deenergised_nodes)
    assert dead == {"692.1", "692.2", "692.3", "675.1", "675.2", "675.3"}
    assert flow.voltage_pu("675", "A") == 0.0
    closed = run_three_phase_powerflow(ieee13, der=DerMode.OFF)
    assert flow.load_p_w < closed.load_p_w - 0.95e6  # 675 and 692 (1013 kW) no longer served
    assert flow.source_p_w == pytest.approx(flow.load_p_w + flow.loss_p_w, rel=1e-7)
