"""Feeder reconfiguration (dms.reconfig): the published case33bw optimum, radiality and supply of every result,
sequences that never parallel two sources, the balance objective, CIM networks and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandapower.topology as top
import pytest
from support import IEEE123, requires_reference_feeders

from dms.network_state import NetworkState
from dms.reconfig import (
    MeshedNetworkError,
    NetworkFileError,
    Objective,
    ReconfigError,
    ReconfigOptions,
    ReconfigResult,
    StepAction,
    TransferMode,
    build_problem,
    propose_for_state,
    reconfigure,
    reconfigure_file,
)
from models.cim import load_cim
from models.sample_network import F_HZ, SAMPLE_NETWORK_PATH

REPO = Path(__file__).resolve().parents[2]
warnings.filterwarnings("ignore", module="pandapower")

# Baran & Wu (1989) 33-bus: the published optimum opens branches 7, 9, 14, 32, 37 (1-based), losses 139.55 kW.
CASE33_OPTIMUM = {"line 6", "line 8", "line 13", "line 31", "line 36"}


# ---------------------------------------------------------------------------------------------- helpers
def _apply_open_set(net: pp.pandapowerNet, result: ReconfigResult) -> pp.pandapowerNet:
    """Independent of the package: set the result's open points on a copy of ``net`` by name."""
    net = pp.pandapowerNet(net.deepcopy()) if hasattr(net, "deepcopy") else net
    import copy

    net = copy.deepcopy(net)
    for name in result.to_close:
        _set(net, name, True)
    for name in result.to_open:
        _set(net, name, False)
    return net


def _set(net: pp.pandapowerNet, name: str, closed: bool) -> None:
    sw = net.switch
    rows = sw.index[sw.name == name] if len(sw) else []
    if len(rows):
        sw.loc[rows, "closed"] = closed
        return
    line_rows = net.line.index[net.line.name == name]
    if not len(line_rows) and name.startswith("line "):
        line_rows = [int(name.split()[1])]
    assert len(line_rows) == 1, f"no switch or line named {name!r}"
    row = line_rows[0]
    ls = sw.index[(sw.et == "l") & (sw.element == row)] if len(sw) else []
    if len(ls):
        if closed:
            sw.loc[ls, "closed"] = True
        else:
            sw.loc[ls[0], "closed"] = False
    else:
        net.line.loc[row, "in_service"] = closed


def _assert_radial_and_supplied(net: pp.pandapowerNet) -> None:
    """Every load bus reaches exactly one ext_grid bus and the energised network has no loop (bus-bus switches
    merge their buses, as pandapower's topology does)."""
    g = top.create_nxgraph(net, respect_switches=True, include_out_of_service=False, multi=True)
    sources = set(net.ext_grid.bus[net.ext_grid.in_service])
    # ext_grids of one substation region count as one root: join them to a virtual node
    g.add_node("root")
    for s in sources:
        g.add_edge("root", s)
    comp = nx.node_connected_component(g, "root")
    sub = g.subgraph(comp)
    assert sub.number_of_edges() == sub.number_of_nodes() - 1, "the energised network has a loop"
    loads = set(net.load.bus[net.load.in_service & (net.load.p_mw != 0)])
    assert loads <= comp, f"loads at buses {sorted(loads - comp)[:10]} are not supplied"


def _state_graph(net: pp.pandapowerNet) -> nx.MultiGraph:
    return top.create_nxgraph(net, respect_switches=True, include_out_of_service=False, multi=True)


def _assert_sequence_never_parallels_sources(net: pp.pandapowerNet, result: ReconfigResult) -> None:
    """Replay the steps: no state may join two ext_grid buses, a make-before-break loop has one source."""
    import copy

    net = copy.deepcopy(net)
    sources = list(net.ext_grid.bus[net.ext_grid.in_service])
    for step in result.sequence:
        _set(net, step.element, step.action is StepAction.CLOSE)
        g = _state_graph(net)
        for i, a in enumerate(sources):
            for b in sources[i + 1:]:
                assert not nx.has_path(g, a, b), f"step {step.number} parallels the sources at buses {a} and {b}"
        if step.action is StepAction.OPEN or step.mode is not TransferMode.MAKE_BEFORE_BREAK:
            assert step.radial


def two_source_net(*, second_source: bool, heavy_feeder: str = "A") -> pp.pandapowerNet:
    """Two 11 kV feeders of five sections with sectionalising load-break switches, a normally-open tie at their
    ends; all load sits on one feeder, so moving the open point balances them. With ``second_source`` feeder B comes
    from another grid infeed."""
    net = pp.create_empty_network(name="two feeders", f_hz=50.0)
    a0 = pp.create_bus(net, 11.0, name="SS-A")
    b0 = pp.create_bus(net, 11.0, name="SS-B") if second_source else a0
    pp.create_ext_grid(net, a0, vm_pu=1.0, name="grid A")
    if second_source:
        pp.create_ext_grid(net, b0, vm_pu=1.0, name="grid B")
    ends = {}
    for feeder, head in (("A", a0), ("B", b0)):
        prev = head
        for k in range(1, 6):
            bus = pp.create_bus(net, 11.0, name=f"{feeder}{k}")
            line = pp.create_line_from_parameters(net, prev, bus, length_km=1.0, r_ohm_per_km=0.2, x_ohm_per_km=0.1,
                                                  c_nf_per_km=10.0, max_i_ka=0.4, name=f"{feeder}-L{k}")
            pp.create_switch(net, bus, line, et="l", closed=True, type="LBS", name=f"{feeder}-S{k}")
            p = 0.9 if feeder == heavy_feeder else 0.1
            pp.create_load(net, bus, p_mw=p, q_mvar=p * 0.3, name=f"{feeder}{k}-load")
            prev = bus
        ends[feeder] = prev
    tie = pp.create_line_from_parameters(net, ends["A"], ends["B"], length_km=0.5, r_ohm_per_km=0.2,
                                         x_ohm_per_km=0.1, c_nf_per_km=10.0, max_i_ka=0.4, name="TIE")
    pp.create_switch(net, ends["A"], tie, et="l", closed=False, type="LBS", name="TIE-S")
    return net


# ---------------------------------------------------------------------------------------------- case33bw
@pytest.fixture(scope="module")
def case33() -> tuple[pp.pandapowerNet, ReconfigResult]:
    net = pn.case33bw()
    return net, reconfigure(net, ReconfigOptions(milp_time_limit_s=120.0))  # room to prove the MILP optimum


def test_case33bw_reaches_the_published_optimum(case33: tuple[pp.pandapowerNet, ReconfigResult]) -> None:
    net, r = case33
    assert set(r.after.open_set) == CASE33_OPTIMUM
    assert abs(r.after.losses_mw * 1e3 - 139.55) < 0.5
    assert abs(r.before.losses_mw * 1e3 - 202.68) < 0.5
    assert r.milp is not None and set(r.milp.open_set) == CASE33_OPTIMUM  # the MILP alone finds it
    assert r.milp_status.startswith("optimal")  # and proves it optimal for the linearised model
    assert r.after.v_min_pu > r.before.v_min_pu
    # the result, applied independently and solved by pandapower, has the reported losses
    after = _apply_open_set(net, r)
    pp.runpp(after)
    assert abs(after.res_line.pl_mw.sum() - r.after.losses_mw) < 1e-6
    _assert_radial_and_supplied(after)


def test_case33bw_sequence_keeps_every_state_radial(case33: tuple[pp.pandapowerNet, ReconfigResult]) -> None:
    net, r = case33
    assert len(r.sequence) == 2 * len(r.to_close) == 8  # line 37 (index 36) is open before and after
    assert all(s.mode is TransferMode.MAKE_BEFORE_BREAK for s in r.sequence)  # one source: no interruption
    assert [s.action for s in r.sequence] == [StepAction.CLOSE, StepAction.OPEN] * 4
    assert r.sequence[-1].losses_mw == pytest.approx(r.after.losses_mw, abs=1e-9)
    _assert_sequence_never_parallels_sources(net, r)
    import copy

    state = copy.deepcopy(net)
    for step in r.sequence:  # after every open the network is radial again
        _set(state, step.element, step.action is StepAction.CLOSE)
        if step.action is StepAction.OPEN:
            _assert_radial_and_supplied(state)


# ---------------------------------------------------------------------------------------------- small networks
def test_problem_reads_line_switches_ties_and_substation() -> None:
    p = build_problem(two_source_net(second_source=False))
    assert p.source_buses == (0,)
    assert len(p.candidates) == 11  # ten sectionalisers and the tie
    assert p.open_set(p.present_closed()) == frozenset({"TIE"})
    heads = [b.name for b in p.branches if (b.from_bus in p.substation) != (b.to_bus in p.substation)]
    assert sorted(heads) == ["A-L1", "B-L1"]


def test_balance_objective_lowers_the_largest_feeder_loading() -> None:
    net = two_source_net(second_source=False)
    r = reconfigure(net, ReconfigOptions(objective=Objective.BALANCE))
    before = {f.head: f.loading_pct for f in r.before.feeders}
    after = {f.head: f.loading_pct for f in r.after.feeders}
    assert max(after.values()) < 0.75 * max(before.values())
    assert "TIE" in r.to_close and len(r.to_open) == 1
    _assert_radial_and_supplied(_apply_open_set(net, r))
    _assert_sequence_never_parallels_sources(net, r)


def test_two_sources_are_transferred_break_before_make() -> None:
    net = two_source_net(second_source=True)
    r = reconfigure(net, ReconfigOptions(objective=Objective.BALANCE))
    assert r.improved
    pair = [s for s in r.sequence if s.pair == 1]
    assert [s.action for s in pair] == [StepAction.OPEN, StepAction.CLOSE]
    assert all(s.mode is TransferMode.BREAK_BEFORE_MAKE for s in pair)
    assert pair[0].interrupted_mw > 0  # said: the section between is briefly off
    _assert_sequence_never_parallels_sources(net, r)
    _assert_radial_and_supplied(_apply_open_set(net, r))


def test_losses_objective_keeps_a_configuration_that_is_already_optimal() -> None:
    net = two_source_net(second_source=False)
    first = reconfigure(net)
    again = reconfigure(_apply_open_set(net, first))
    assert not again.improved and again.sequence == ()
    assert again.after.losses_mw == pytest.approx(first.after.losses_mw, rel=1e-9)
    assert "the present configuration is the best found" in again.notes


def test_ratings_bind_the_milp() -> None:
    """With the tie cable rated for almost nothing, no load may be moved through it."""
    net = two_source_net(second_source=False)
    net.line.loc[net.line.name == "TIE", "max_i_ka"] = 0.001
    r = reconfigure(net)
    assert not r.improved


def test_a_loop_without_switch_is_refused() -> None:
    net = two_source_net(second_source=False)
    net.switch.loc[net.switch.index, "type"] = "DS"  # nothing may be operated
    with pytest.raises(ReconfigError, match="no switchable branch"):
        reconfigure(net)
    net = two_source_net(second_source=False)
    # a second cable beside A-L1 without a switch, and A-L1's own switch a disconnector: a loop nobody can open
    pp.create_line_from_parameters(net, 0, 1, length_km=1.0, r_ohm_per_km=0.2, x_ohm_per_km=0.1, c_nf_per_km=10.0,
                                   max_i_ka=0.4, name="A-L1bis")
    net.switch.loc[net.switch.name == "A-S1", "type"] = "DS"
    with pytest.raises(MeshedNetworkError, match="radial"):
        reconfigure(net)


def test_options_are_validated() -> None:
    with pytest.raises(ReconfigError, match="band"):
        ReconfigOptions(v_low_pu=1.05, v_high_pu=0.95)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(NetworkFileError, match="no such file"):
        reconfigure_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(NetworkFileError, match="bad.json"):
        reconfigure_file(bad)
    other = tmp_path / "net.csv"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(NetworkFileError, match="expected a CIM file"):
        reconfigure_file(other)


# ---------------------------------------------------------------------------------------------- CIM networks
@requires_reference_feeders()
def test_ieee123_improves_with_its_ties_and_stays_radial() -> None:
    model = load_cim(IEEE123)
    state = NetworkState.from_model(model, frequency_hz=60.0)
    proposal = propose_for_state(state)
    r = proposal.result
    assert r.after.losses_mw <= r.before.losses_mw
    if r.improved:  # the ties sw7/sw8 are closed and two sectionalisers opened
        assert set(r.to_close) <= {"sw7", "sw8"}
        assert proposal.target is not None
        assert set(proposal.target.open_switches()) == set(r.after.open_set)
        assert proposal.three_phase_after is not None and proposal.three_phase_after.converged
        assert not proposal.three_phase_after.deenergised_loads  # every load supplied (three-phase check)
    assert all(s.element in {sw.name for sw in model.switches} for s in r.sequence)


@pytest.mark.slow
def test_sample_network_improves_without_paralleling_the_grid_infeeds() -> None:
    model = load_cim(SAMPLE_NETWORK_PATH)
    state = NetworkState.from_model(model, frequency_hz=F_HZ)
    proposal = propose_for_state(state, ReconfigOptions(polish_time_limit_s=30.0))
    r = proposal.result
    assert r.after.losses_mw < r.before.losses_mw
    assert proposal.three_phase_after is not None and not proposal.three_phase_after.deenergised_loads
    assert not proposal.new_violations
    # SS-BC and the feeder breakers are substation switches: never proposed
    touched = set(r.to_open) | set(r.to_close)
    assert not touched & {"SS-BC", "SS-INC1", "SS-INC2"} and not any(n.endswith("-CB") for n in touched)
    # replay on the topology: no state joins SS-GRID1 and SS-GRID2
    closed = dict(zip((s.name for s in model.switches), state.switch_closed, strict=True))
    index = {b.name: b.index for b in model.buses}
    for step in r.sequence:
        closed[step.element] = step.action is StepAction.CLOSE
        g = nx.Graph()
        g.add_edges_from((ln.from_bus, ln.to_bus) for ln in model.lines)
        g.add_edges_from((w.bus, t.windings[0].bus) for t in model.transformers for w in t.windings)
        g.add_edges_from((s.from_bus, s.to_bus) for s in model.switches if closed[s.name])
        assert not nx.has_path(g, index["SS-GRID1"], index["SS-GRID2"]), f"step {step.number} parallels infeeds"


# ---------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_json_on_a_pandapower_file(tmp_path: Path) -> None:
    path = tmp_path / "two_feeders.json"
    pp.to_json(two_source_net(second_source=True), str(path))
    out = subprocess.run([sys.executable, "-m", "scada.cli", "reconfigure", str(path), "--objective", "balance",
                          "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["objective"] == "balance" and doc["to_close"] == ["TIE"]
    assert doc["losses_before_kw"] > 0 and doc["losses_after_kw"] > 0
    assert [s["mode"] for s in doc["sequence"]] == ["break_before_make"] * 2
    assert max(f["loading_pct"] for f in doc["after"]["feeders"]) < max(f["loading_pct"]
                                                                         for f in doc["before"]["feeders"])


def test_cli_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "scada.cli", "reconfigure", str(tmp_path / "nope.json")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nope.json" in out.stderr


def test_cli_text_output() -> None:
    from dms.reconfig.cli import render

    r = reconfigure(two_source_net(second_source=False), ReconfigOptions(objective=Objective.BALANCE))
    text = render(r)
    assert "close: TIE" in text and "switching sequence" in text and "make_before_break" in text
    assert not math.isnan(r.after.losses_mw) and np.isfinite(r.total_s)
