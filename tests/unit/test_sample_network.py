"""The embedded sample network: deterministic, committed as generated, physically sound, and following the names
the other modules rely on (substation, feeders, RMUs, ties, measurements, customers)."""

from __future__ import annotations

import gzip
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from models.cim import load_cim
from models.cim.export import to_rdf_xml
from models.model_cli import main as model_main
from models.network import CustomerKind, MeasurementKind, NetworkModel, Phase, SwitchKind
from models.pandapower_net import run_balanced_powerflow
from models.sample_network import F_HZ, FEEDER_RATING_A, SAMPLE_NETWORK_PATH, build_sample_network
from models.topology import build_topology_graph

FEEDERS = [f"F{n}" for n in range(1, 7)]
AUTOMATED = ("03", "06", "08")


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return load_cim(SAMPLE_NETWORK_PATH)  # what everyone else loads


def test_generation_is_fast_deterministic_and_committed() -> None:
    started = time.perf_counter()
    first = build_sample_network()
    built_s = time.perf_counter() - started
    assert built_s < 1.0, built_s
    document = to_rdf_xml(first)
    assert to_rdf_xml(build_sample_network()) == document
    assert gzip.decompress(SAMPLE_NETWORK_PATH.read_bytes()) == document, \
        "regenerate with models.sample_network.export_sample('models/data', compressed=True)"


def test_substation_and_feeder_names(model: NetworkModel) -> None:
    switches = {s.name: s for s in model.switches}
    assert [s.name for s in model.sources] == ["SS-GRID1", "SS-GRID2"]
    assert all(s.nominal_v == 33000.0 for s in model.sources)
    assert {t.name for t in model.transformers if t.name.startswith("SS-")} == {"SS-TR1", "SS-TR2"}
    for name in ("SS-INC1", "SS-INC2", "SS-BC", *(f"{f}-CB" for f in FEEDERS)):
        assert switches[name].kind is SwitchKind.BREAKER
    assert (switches["SS-BC"].normal_open, switches["SS-BC"].open) == (True, True)
    assert [f.name for f in model.feeders] == FEEDERS
    feeder_name = {f.mrid: f.name for f in model.feeders}
    for n, f in enumerate(FEEDERS, start=1):
        cb = switches[f"{f}-CB"]
        assert model.buses[cb.from_bus].name == ("SS-BUS1" if n <= 3 else "SS-BUS2")
        assert feeder_name[cb.feeder_mrid or ""] == f
        for k in range(1, 9):
            rmu = f"{f}-RMU{k:02d}"
            assert switches[f"{rmu}-LBS1"].kind is SwitchKind.LOAD_BREAK_SWITCH
            assert switches[f"{rmu}-LBS2"].kind is SwitchKind.LOAD_BREAK_SWITCH
            assert switches[f"{rmu}-TEE"].kind in (SwitchKind.FUSE, SwitchKind.BREAKER)
    ties = {s.name for s in model.switches if s.normal_open}
    assert ties == {"SS-BC", "F1-RMU08-LBS2", "F3-RMU08-LBS2", "F5-RMU08-LBS2"}
    assert all(switches[t].open for t in ties)
    assert {SwitchKind.SECTIONALISER, SwitchKind.RECLOSER} <= {s.kind for s in model.switches}
    dts = [t for t in model.transformers if t.name.endswith("-DT")]
    assert len(dts) == 50 and {t.windings[0].rated_s_va for t in dts} == {250e3, 400e3, 630e3, 990e3}
    assert all(t.vector_group == "Dyn11" and t.windings[1].rated_u_v == 433.0 for t in model.transformers
               if t in dts)
    assert all(ld.response is not None and ld.name.endswith("-LOAD") for ld in model.loads)
    for tap in model.tap_changers:  # +-10 % in 17 steps
        assert tap.name in ("SS-TR1-OLTC", "SS-TR2-OLTC")
        assert (tap.low_step, tap.neutral_step, tap.high_step, tap.step_voltage_increment_pct) == (1, 9, 17, 1.25)
    lon_lat = [(b.x, b.y) for b in model.buses]
    assert all(73.7 < x < 74.0 and 18.4 < y < 18.7 for x, y in lon_lat)  # around Pune


def test_cables_and_transformers_are_realistic(model: NetworkModel) -> None:
    cables = [ln for ln in model.lines if ln.name.startswith(("F", "TIE")) and "-OH" not in ln.name]
    assert all(200.0 <= ln.length_m <= 900.0 for ln in cables)
    c300 = next(ln for ln in cables if ln.impedance_name.startswith("3C-300"))
    assert c300.sequence is not None
    assert math.isclose(c300.sequence.r_ohm_per_m * 1e3, 0.130) and math.isclose(c300.sequence.x_ohm_per_m * 1e3,
                                                                                   0.094)
    assert math.isclose(c300.sequence.b_s_per_m * 1e3 / (2 * math.pi * F_HZ) * 1e6, 0.40)  # uF/km
    tr1 = next(t for t in model.transformers if t.name == "SS-TR1")
    hv = tr1.windings[0]
    z_pct = math.hypot(tr1.mesh_impedances[0].r_ohm, tr1.mesh_impedances[0].x_ohm) / (
        hv.rated_u_v ** 2 / hv.rated_s_va) * 100
    assert hv.rated_s_va == 10e6 and math.isclose(z_pct, 8.35) and tr1.vector_group == "Dyn11"


@pytest.mark.timeout(60)
def test_balanced_flow_converges_within_limits(model: NetworkModel) -> None:
    flow = run_balanced_powerflow(model, f_hz=F_HZ)
    vm = [b.vm_pu for b in flow.buses]
    assert 0.94 <= min(vm) and max(vm) <= 1.06, (min(vm), max(vm))
    volts = {b.name: b.vm_pu * b.vn_kv * 1e3 for b in flow.buses}
    for f in FEEDERS:  # current out of the breaker, from the first cable's sending end
        head = next(br for br in flow.branches if br.name == f"{f}-C01")
        amps = math.hypot(head.p_from_mw, head.q_from_mvar) * 1e6 / (math.sqrt(3) * volts[head.from_bus])
        assert 0.40 <= amps / FEEDER_RATING_A <= 0.70, (f, amps)
    assert flow.loss_p_mw < 0.05 * sum(ld.p_w for ld in model.loads) / 1e6


def test_topology_every_load_fed_by_its_own_feeder(model: NetworkModel) -> None:
    graph = build_topology_graph(model)
    sources = {s.bus for s in model.sources}
    live = set().union(*(nx.node_connected_component(graph, s) for s in sources))
    assert all(ld.bus in live for ld in model.loads)
    feeder_name = {f.mrid: f.name for f in model.feeders}
    for f in FEEDERS:  # opening a feeder's breaker de-energises exactly that feeder's loads
        opened = build_topology_graph(model, {f"{f}-CB": False})
        live = set().union(*(nx.node_connected_component(opened, s) for s in sources))
        dead = {ld.name for ld in model.loads if ld.bus not in live}
        assert dead == {ld.name for ld in model.loads if feeder_name[ld.feeder_mrid or ""] == f}
    grid1, grid2 = (s.bus for s in model.sources)
    assert not nx.has_path(build_topology_graph(model, {"F1-RMU08-LBS2": True}), grid1, grid2)
    assert nx.has_path(build_topology_graph(model, {"F3-RMU08-LBS2": True}), grid1, grid2)  # parallels the grids


def test_measurements_follow_the_convention(model: NetworkModel) -> None:
    names = {m.element_mrid: n for n, m in ((_element_name(model, m.element_mrid), m) for m in model.measurements)}
    by_type: Counter[tuple[str, str]] = Counter(
        (names[m.element_mrid], m.measurement_type) for m in model.measurements)
    assert by_type[("SS-BUS1", "PNV")] == 3 and by_type[("SS-BUS2", "PNV")] == 3
    assert by_type[("SS-TR1", "VA")] == 3 and by_type[("SS-TR1", "Pos")] == 1  # the OLTC's tap position
    for f in FEEDERS:
        assert (by_type[(f"{f}-CB", "Pos")], by_type[(f"{f}-CB", "A")], by_type[(f"{f}-CB", "VA")]) == (1, 3, 3)
        for kk in AUTOMATED:
            rmu = f"{f}-RMU{kk}"
            assert by_type[(f"{rmu}-BB", "PNV")] == 3 and by_type[(f"{rmu}-TEE", "Pos")] == 1
            for sw in ("LBS1", "LBS2"):
                assert [by_type[(f"{rmu}-{sw}", t)] for t in ("Pos", "A", "FPI")] == [1, 3, 1]
        assert by_type[(f"{f}-RMU04-LBS1", "Pos")] == 0  # not automated
    assert all(m.terminal_mrid is not None and m.bus is not None for m in model.measurements)
    assert {m.kind for m in model.measurements if m.measurement_type in ("Pos", "FPI")} == {MeasurementKind.DISCRETE}


def _element_name(model: NetworkModel, mrid: str) -> str:
    for group in (model.switches, model.transformers, model.other_equipment):
        for el in group:
            if el.mrid == mrid:
                return el.name
    raise KeyError(mrid)


def test_customers(model: NetworkModel) -> None:
    customers = model.customers
    assert 2000 <= len(customers) <= 5000
    numbers = [c.consumer_number for c in customers]
    assert len(set(numbers)) == len(numbers) and all(re.fullmatch(r"17001\d{7}", n) for n in numbers)
    per_load = Counter(c.load_mrid for c in customers)
    assert all(per_load[ld.mrid] == ld.customer_count > 0 for ld in model.loads)
    assert {c.kind for c in customers} == {CustomerKind.RESIDENTIAL, CustomerKind.COMMERCIAL_INDUSTRIAL}
    assert {c.connection_category for c in customers} == {"LT-I Residential", "LT-II Commercial", "LT-V Industrial"}
    assert {c.phases for c in customers} == {Phase.A | Phase.N, Phase.B | Phase.N, Phase.C | Phase.N,
                                             Phase.A | Phase.B | Phase.C | Phase.N}
    assert all(model.loads[c.load].bus == c.bus for c in customers if c.load is not None)


def test_cli_export_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert model_main(["export-sample", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    path = Path(report["file"])
    assert path == tmp_path / "out" / "sample_network.xml"
    assert path.read_bytes() == gzip.decompress(SAMPLE_NETWORK_PATH.read_bytes())
    assert report["elements"]["feeders"] == 6 and report["elements"]["customers"] > 2000
    assert model_main(["export-sample", str(tmp_path / "text")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(tmp_path / "text" / "sample_network.xml")


def test_topology_graph_knows_dts_and_customers() -> None:
    from models.topology import BranchKind, build_topology_graph

    model = build_sample_network()
    graph = build_topology_graph(model)
    kinds = {d["name"]: d["kind"] for _a, _b, d in graph.edges(data=True)}
    assert kinds["SS-TR1"] is BranchKind.TRANSFORMER  # a 33/11 kV power transformer behind its incomer
    assert kinds["F1-RMU03-DT"] is BranchKind.DISTRIBUTION_TRANSFORMER
    numbers = [n for _bus, data in graph.nodes(data=True) for n in data["customers"]]
    assert len(numbers) == len(set(numbers)) == len(model.customers)
