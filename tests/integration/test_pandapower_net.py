"""Balanced pandapower equivalent of the IEEE 13 and IEEE 123 CIM feeders, with physics checks on the power flow."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest
from support import IEEE13, IEEE123, requires_reference_feeders

from models.cim import load_cim
from models.network import NetworkModel
from models.pandapower_net import (
    MIN_VK_PERCENT,
    BalancedPowerFlow,
    BranchKind,
    PowerFlowError,
    run_balanced_powerflow,
    to_pandapower,
)
from models.powerflow_cli import main

pytestmark = requires_reference_feeders()


@pytest.fixture(scope="module")
def ieee123() -> NetworkModel:
    return load_cim(IEEE123)


@pytest.fixture(scope="module")
def ieee13() -> NetworkModel:
    return load_cim(IEEE13)


@pytest.fixture(scope="module")
def flow13(ieee13: NetworkModel) -> BalancedPowerFlow:
    return run_balanced_powerflow(ieee13)


@pytest.fixture(scope="module")
def flow123(ieee123: NetworkModel) -> BalancedPowerFlow:
    return run_balanced_powerflow(ieee123)


def _assert_power_balance(flow: BalancedPowerFlow) -> None:
    """Generation = load + shunt + losses (P and Q), and the losses are physical."""
    p_in = flow.ext_grid_p_mw + flow.sgen_p_mw
    q_in = flow.ext_grid_q_mvar + flow.sgen_q_mvar
    assert p_in == pytest.approx(flow.load_p_mw + flow.shunt_p_mw + flow.loss_p_mw, abs=1e-6)
    assert q_in == pytest.approx(flow.load_q_mvar + flow.shunt_q_mvar + flow.loss_q_mvar, abs=1e-6)
    assert 0 < flow.loss_p_mw < 0.05 * flow.load_p_mw
    assert all(b.pl_mw > -1e-9 for b in flow.branches), "a branch generates active power"


@pytest.mark.timeout(60)
def test_ieee13_conversion(ieee13: NetworkModel) -> None:
    conversion = to_pandapower(ieee13)
    net = conversion.net
    assert len(net.bus) == len(ieee13.buses)
    assert list(net.bus.name) == [b.name for b in ieee13.buses]
    assert net.bus.vn_kv.at[ieee13.bus_by_name("634").index] == pytest.approx(0.48)
    assert net.bus.vn_kv.at[ieee13.bus_by_name("house").index] == pytest.approx(0.208)
    # Three-phase line: Z1 = mean self - mean mutual, per km.
    line = next(ln for ln in ieee13.lines if ln.name == "650632")
    r = line.r_ohm_per_m
    z1_r = np.trace(r) / 3 - (r.sum() - np.trace(r)) / 6
    row = net.line[net.line.name == "650632"].iloc[0]
    assert row.r_ohm_per_km == pytest.approx(z1_r * 1e3)
    assert row.length_km == pytest.approx(0.6096)
    # Single-phase lateral: mean self impedance.
    lateral = next(ln for ln in ieee13.lines if len(ln.phases) == 1)
    row = net.line[net.line.name == lateral.name].iloc[0]
    assert row.x_ohm_per_km == pytest.approx(lateral.x_ohm_per_m[0, 0] * 1e3)
    # Elements: 5 closed switches, substation as trafo3w, regulator bank with its mean tap, loads summed per bus.
    assert len(net.switch) == 5 and net.switch.closed.all() and (net.switch.et == "b").all()
    assert list(net.trafo3w.name) == ["sub3", "tpoletop"]  # the split-phase halves are MV and LV ends
    assert net.trafo3w.shift_mv_degree.iat[0] == 30.0
    reg = net.trafo[net.trafo.name == "Reg"].iloc[0]
    assert reg.sn_mva == pytest.approx(3 * 1.666)
    assert reg.tap_pos == pytest.approx((10 + 8 + 11) / 3)
    assert reg.tap_step_percent == pytest.approx(0.625) and reg.tap_side == "lv"
    assert reg.vk_percent == MIN_VK_PERCENT
    xfm1 = net.trafo[net.trafo.name == "xfm1"].iloc[0]
    assert xfm1.vk_percent == pytest.approx(math.hypot(1.1, 2.0), rel=1e-3)  # 500 kVA, R 1.1 %, X 2 %
    assert len(net.load) == len({ld.bus for ld in ieee13.loads})
    assert net.load.p_mw.sum() == pytest.approx(sum(ld.p_w for ld in ieee13.loads) / 1e6)
    assert net.shunt.q_mvar.sum() == pytest.approx(-0.7, rel=1e-3)  # 600 kvar at 675 + 100 kvar at 611
    assert net.ext_grid.va_degree.iat[0] == pytest.approx(30.0)
    assert any("Reg" in note for note in conversion.notes)


@pytest.mark.timeout(60)
def test_ieee13_power_flow(ieee13: NetworkModel, flow13: BalancedPowerFlow) -> None:
    assert 0 < flow13.iterations <= 10
    _assert_power_balance(flow13)
    volts = {b.name: b for b in flow13.buses}
    assert volts["sourcebus"].vm_pu == pytest.approx(1.0) and volts["sourcebus"].va_degree == pytest.approx(30.0)
    assert volts["650"].va_degree == pytest.approx(0.0, abs=0.2)  # Dyn1: 30 degrees lag
    # The regulator raises the voltage by its mean tap ratio (less its tiny drop).
    ratio = volts["rg60"].vm_pu / volts["brkr"].vm_pu
    assert ratio == pytest.approx(1 + (29 / 3) * 0.00625, abs=2e-3)
    assert all(0.95 < b.vm_pu < 1.1 for b in flow13.buses)
    assert {b.kind for b in flow13.branches} == set(BranchKind)


@pytest.mark.timeout(60)
def test_ieee123_power_flow(ieee123: NetworkModel, flow123: BalancedPowerFlow) -> None:
    assert 0 < flow123.iterations <= 10
    _assert_power_balance(flow123)
    assert flow123.load_p_mw == pytest.approx(3.49)
    assert all(0.9 <= b.vm_pu <= 1.1 for b in flow123.buses), min(b.vm_pu for b in flow123.buses)
    assert flow123.ext_grid_p_mw > flow123.load_p_mw


@pytest.mark.timeout(60)
def test_switch_state_follows_the_model(ieee123: NetworkModel) -> None:
    net = to_pandapower(ieee123).net
    assert dict(zip(net.switch.name, net.switch.closed, strict=True)) == {
        **{f"sw{i}": True for i in range(1, 7)}, "sw7": False, "sw8": False}
    # Close the normally-open tie sw7: the feeder becomes meshed and must still solve and balance.
    switches = tuple(dataclasses.replace(s, open=False) if s.name == "sw7" else s for s in ieee123.switches)
    meshed = dataclasses.replace(ieee123, switches=switches)
    flow = run_balanced_powerflow(meshed)
    _assert_power_balance(flow)
    # Opening sw2 isolates buses beyond it: pandapower reports them without a voltage.
    switches = tuple(dataclasses.replace(s, open=True) if s.name == "sw2" else s for s in ieee123.switches)
    net = to_pandapower(dataclasses.replace(ieee123, switches=switches)).net
    pp.runpp(net, numba=False)
    assert net.res_bus.vm_pu.isna().sum() > 0


@pytest.mark.timeout(60)
def test_model_without_source_is_refused(ieee13: NetworkModel) -> None:
    with pytest.raises(PowerFlowError, match="no EnergySource"):
        to_pandapower(dataclasses.replace(ieee13, sources=()))


@pytest.mark.timeout(60)
def test_cli_json(capsys: pytest.CaptureFixture[str], flow13: BalancedPowerFlow) -> None:
    assert main([str(IEEE13), "--balanced", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["buses"]) == 22
    by_name = {b["name"]: b for b in data["buses"]}
    assert by_name["671"]["vm_pu"] == pytest.approx(next(b.vm_pu for b in flow13.buses if b.name == "671"))
    assert data["loss_p_mw"] == pytest.approx(flow13.loss_p_mw)
    assert {b["kind"] for b in data["branches"]} == {"line", "transformer", "transformer3w"}


@pytest.mark.timeout(60)
def test_cli_table_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(IEEE13), "--balanced"]) == 0
    assert "Bus voltages" in capsys.readouterr().out
    broken = tmp_path / "broken.xml"
    broken.write_text("<rdf:RDF not xml")
    assert main([str(broken), "--balanced"]) == 2
    err = capsys.readouterr().err
    assert "broken.xml" in err and "not well-formed" in err
    assert main([str(IEEE13), "--balanced", "--three-phase"]) == 2  # one method at a time
