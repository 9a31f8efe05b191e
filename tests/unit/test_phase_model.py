"""Phase-level model and Y-bus of the IEEE 123 CIM feeder: structure and element admittances from first principles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.cim import load_cim
from models.network import NetworkModel, Phase
from models.phase_model import (
    SWITCH_Z_OHM,
    BranchBlock,
    ElementKind,
    PhaseModel,
    PhaseModelError,
    TapSource,
    build_phase_model,
    node_suffix,
)

CIM_DIR = Path(__file__).resolve().parents[2].parent / "shared/data/cim"
IEEE123 = CIM_DIR / "IEEE123.xml"
IEEE13 = CIM_DIR / "IEEE13.xml"

pytestmark = pytest.mark.skipif(
    not IEEE123.is_file(),
    reason=f"reference CIM model not found in {CIM_DIR} (the shared/ folder must sit beside the repository)",
)


@pytest.fixture(scope="module")
def net() -> NetworkModel:
    return load_cim(IEEE123)


@pytest.fixture(scope="module")
def pm(net: NetworkModel) -> PhaseModel:
    return build_phase_model(net)


def test_node_suffixes() -> None:
    assert [node_suffix(p) for p in (Phase.A, Phase.B, Phase.C, Phase.S1, Phase.S2)] == [1, 2, 3, 1, 2]
    with pytest.raises(PhaseModelError, match="no node number"):
        node_suffix(Phase.A | Phase.B)


@pytest.mark.timeout(60)
def test_nodes_follow_bus_phases(net: NetworkModel, pm: PhaseModel) -> None:
    assert len(pm.node_names) == sum(b.phases.conductors for b in net.buses) == 274
    idx = pm.node_index()
    assert {"150R.1", "61S.3", "610.2", "9R.1", "94.1"} <= set(idx)
    assert "9R.2" not in idx  # reg2 is single-phase A
    i = idx["25R.3"]
    assert net.buses[pm.node_bus[i]].name == "25r" and Phase(int(pm.node_phase[i])) is Phase.C


@pytest.mark.timeout(60)
def test_matrix_is_symmetric_and_sum_of_parts(pm: PhaseModel) -> None:
    y = pm.y_s
    assert y.shape == (274, 274) and y.dtype == np.complex128
    assert abs(y - y.T).max() < 1e-12 * abs(y).max()  # reciprocal elements; only round-off of inv()
    total = sum(pm.parts.values())
    assert abs(total - y).max() < 1e-9
    assert all(pm.parts[k].nnz > 0 for k in ElementKind)


@pytest.mark.timeout(60)
def test_line_block_is_inverse_of_series_impedance(net: NetworkModel, pm: PhaseModel) -> None:
    line = next(ln for ln in net.lines if ln.name == "l115")
    idx = pm.node_index()
    f = [idx[f"{net.buses[line.from_bus].name.upper()}.{node_suffix(p)}"] for p in line.phases]
    t = [idx[f"{net.buses[line.to_bus].name.upper()}.{node_suffix(p)}"] for p in line.phases]
    z = (line.r_ohm_per_m + 1j * line.x_ohm_per_m) * line.length_m
    mutual = pm.parts[ElementKind.LINE][f][:, t].toarray()
    np.testing.assert_allclose(mutual, -np.linalg.inv(z), rtol=1e-12)


@pytest.mark.timeout(60)
def test_closed_switch_open_switch(pm: PhaseModel) -> None:
    idx = pm.node_index()
    sw = pm.parts[ElementKind.SWITCH]
    assert sw[idx["97.1"], idx["197.1"]] == pytest.approx(-1.0 / SWITCH_Z_OHM)
    assert sw[idx["97.1"], idx["197.2"]] == 0  # no mutual series coupling in the OpenDSS switch
    assert pm.y_s[idx["151.1"], idx["300.1"]] == 0  # sw7 normally open
    assert pm.y_s[idx["54.1"], idx["94.1"]] == 0  # sw8 normally open


@pytest.mark.timeout(60)
def test_regulator_tap_ratio(net: NetworkModel) -> None:
    model = build_phase_model(net, tap_source=TapSource.MODEL)
    neutral = build_phase_model(net, tap_source=TapSource.NEUTRAL)
    idx = model.node_index()
    tc = next(t for t in net.tap_changers if t.name == "creg4a")  # step 10 on end 2 -> ratio 1.0625
    ratio = 1 + tc.step * tc.step_voltage_increment_pct / 100
    assert ratio == pytest.approx(1.0625)
    a, b = idx["160.1"], idx["160R.1"]
    reg_m, reg_n = model.parts[ElementKind.REGULATOR], neutral.parts[ElementKind.REGULATOR]
    assert reg_m[a, b] == pytest.approx(reg_n[a, b] / ratio, rel=1e-12)
    assert reg_m[b, b] == pytest.approx(reg_n[b, b] / ratio**2, rel=1e-12)
    assert reg_m[a, a] == pytest.approx(reg_n[a, a], rel=1e-12)


@pytest.mark.timeout(60)
def test_delta_delta_transformer(net: NetworkModel, pm: PhaseModel) -> None:
    tr = next(t for t in net.transformers if t.name == "xfm1")
    mesh = tr.mesh_impedances[0]
    w1, w2 = tr.windings
    # Each delta winding carries S/3 at line voltage; the mesh impedance is in ohm on the equivalent-wye base.
    y = (w1.rated_s_va / 3) / (complex(mesh.r_ohm, mesh.x_ohm) * w1.rated_s_va / w1.rated_u_v**2) / w1.rated_u_v**2
    n = w1.rated_u_v / w2.rated_u_v
    idx = pm.node_index()
    part = pm.parts[ElementKind.TRANSFORMER]
    assert part[idx["61S.1"], idx["61S.1"]] == pytest.approx(2 * y, rel=1e-12)
    assert part[idx["61S.1"], idx["61S.2"]] == pytest.approx(-y, rel=1e-12)
    assert part[idx["61S.1"], idx["610.1"]] == pytest.approx(-2 * y * n, rel=1e-12)
    assert part[idx["610.1"], idx["610.2"]] == pytest.approx(-y * n**2, rel=1e-12)


@pytest.mark.timeout(60)
def test_capacitor_shunt(net: NetworkModel, pm: PhaseModel) -> None:
    idx = pm.node_index()
    cap = pm.parts[ElementKind.CAPACITOR]
    c83 = next(c for c in net.capacitors if c.name == "c83")
    assert cap[idx["83.2"], idx["83.2"]] == pytest.approx(1j * c83.b_per_section_s)
    assert cap[idx["83.1"], idx["83.2"]] == 0
    assert cap[idx["88.1"], idx["88.1"]] == pytest.approx(1j * 0.008666106)
    assert cap.nnz == 6
    assert math.isclose(abs(cap.sum()), 3 * c83.b_per_section_s + 3 * 0.008666106, rel_tol=1e-9)


@pytest.fixture(scope="module")
def ieee13() -> tuple[NetworkModel, PhaseModel]:
    if not IEEE13.is_file():
        pytest.skip(f"IEEE13.xml not found in {CIM_DIR}")
    net13 = load_cim(IEEE13)
    return net13, build_phase_model(net13)


def _block(pm: PhaseModel, name: str) -> list[BranchBlock]:
    return [b for b in pm.branches if b.name == name]


@pytest.mark.timeout(60)
def test_three_winding_substation_transformer_is_built(ieee13: tuple[NetworkModel, PhaseModel]) -> None:
    net13, pm13 = ieee13
    blocks = _block(pm13, "sub3")
    assert len(blocks) == 3  # one single-phase unit per phase, each D (2 nodes) + Yn + Y (1 node each)
    assert all(sorted(b.terminals.tolist()) == [1, 1, 2, 3] for b in blocks)
    idx = pm13.node_index()
    # Dyn1: the wye phase A winding sits across source phases A and C (30 degree lag), not A-B
    unit_a = next(b for b in blocks if idx["650.1"] in b.nodes)
    hv = {pm13.node_names[n] for n, t in zip(unit_a.nodes, unit_a.terminals, strict=True) if t == 1}
    assert hv == {"SOURCEBUS.1", "SOURCEBUS.3"}
    assert pm13.float_guard_s[idx["650.1"]] > 0 and pm13.float_guard_s[idx["632.1"]] == 0


@pytest.mark.timeout(60)
def test_three_winding_primitive_reproduces_the_short_circuit_tests(ieee13: tuple[NetworkModel, PhaseModel]) -> None:
    net13, pm13 = ieee13
    (block,) = _block(pm13, "tpoletop")
    tr = next(t for t in net13.transformers if t.name == "tpoletop")
    w1 = next(w for w in tr.windings if w.end_number == 1)
    y = block.y_s
    order = {int(t): i for i, t in enumerate(block.terminals)}
    i1, i2, i3 = order[1], order[2], order[3]
    # winding 2 shorted, winding 3 open: the impedance seen from winding 1 is the 1-2 short-circuit impedance
    z12 = 1 / (y[i1, i1] - y[i1, i3] * y[i3, i1] / y[i3, i3])
    test12 = next(t for t in tr.tanks[0].short_circuit_tests if t.grounded_end_numbers == (2,))
    assert abs(z12) == pytest.approx(test12.leakage_impedance_ohm, rel=1e-9)
    assert z12.real == pytest.approx(test12.loss_w / w1.rated_s_va * w1.rated_u_v**2 / w1.rated_s_va, rel=1e-9)
    # centre tap: s2 is wound the other way, so winding 1 couples to s1 and s2 with opposite signs
    assert y[i1, i2] == pytest.approx(-y[i1, i3], rel=1e-9)
    idx = pm13.node_index()
    assert {pm13.node_names[n] for n in block.nodes} == {"670.2", "HOUSE.1", "HOUSE.2"}
    assert pm13.node_base_v[idx["HOUSE.1"]] == pytest.approx(120.0)
