"""Switchable-topology graph (models.topology) and topology processor (scada.topology): a small hand-built
two-source feeder with a normally-open tie, and the IEEE 123 reference feeder (sw7/sw8 normally open)."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from models.cim import load_cim
from models.network import (
    Bus,
    EnergySource,
    Feeder,
    LineSegment,
    Load,
    ModelDiagnostics,
    NetworkModel,
    Phase,
    ShuntConnection,
    Switch,
    SwitchKind,
    Transformer,
    TransformerWinding,
    WindingConnection,
)
from models.topology import BranchKind, TopologyError, build_topology_graph, customer_trace
from scada.topology import ElementKind, TopologyProcessor

CIM = Path(__file__).resolve().parents[2].parent / "shared/data/cim"
ABC = Phase.A | Phase.B | Phase.C
_Z = np.zeros((3, 3))
_Z.flags.writeable = False


def _line(name: str, a: int, b: int, feeder: str) -> LineSegment:
    return LineSegment(name, name, a, b, (Phase.A, Phase.B, Phase.C), 100.0, "z", "z", _Z, _Z, _Z, None, feeder)


def _switch(name: str, a: int, b: int, *, open_: bool, feeder: str) -> Switch:
    return Switch(name, name, SwitchKind.LOAD_BREAK_SWITCH, a, b, ABC, open_, open_, 400.0, math.nan, (), feeder)


def _load(name: str, bus: int, feeder: str) -> Load:
    return Load(name, name, bus, ABC, ShuntConnection.Y, 1e3, 0.0, (), (), True, 1, None, feeder)


def _source(name: str, bus: int) -> EnergySource:
    return EnergySource(name, name, bus, 12470.0, 12470.0, 0.0, 0.1, 0.1, 0.1, 0.1)


def _winding(n: int, bus: int, v: float) -> TransformerWinding:
    return TransformerWinding(f"e{n}", f"e{n}", n, bus, f"t{n}", ABC, WindingConnection.YN, v, 5e4, 0.1, True, None)


@pytest.fixture(name="small")
def small_model() -> NetworkModel:
    """S1 - b0 -l01- b1 -brk1- b2 -l23- b3 -dt1- b4 (load c1) ; b3 -tie(open)- b5 -l56- b6 - S2 ;
    b6 -sw9(open)- b7 -l78- b8 (load c2): feeder F1 from S1, F2 from S2, b7/b8 dead behind sw9."""
    names = [f"b{i}" for i in range(9)]
    feeders = {0: "F1", 1: "F1", 2: "F1", 3: "F1", 4: "F1", 5: "F2", 6: "F2", 7: "F2", 8: "F2"}
    buses = tuple(
        Bus(i, f"mrid-{n}", n, (f"cn-{n}",), ABC, 12470.0, float(i), 0.0, feeders[i]) for i, n in enumerate(names)
    )
    dt = Transformer(
        "dt1", "dt1", "Yy0", (_winding(1, 3, 12470.0), _winding(2, 4, 240.0)), (), (), 0.0, 0.0, False, "F1"
    )
    return NetworkModel(
        name="small",
        source="hand-built",
        buses=buses,
        terminals=(),
        lines=(_line("l01", 0, 1, "F1"), _line("l23", 2, 3, "F1"), _line("l56", 5, 6, "F2"), _line("l78", 7, 8, "F2")),
        transformers=(dt,),
        tap_changers=(),
        switches=(
            _switch("brk1", 1, 2, open_=False, feeder="F1"),
            _switch("tie", 3, 5, open_=True, feeder="F1"),
            _switch("sw9", 6, 7, open_=True, feeder="F2"),
        ),
        loads=(_load("c1", 4, "F1"), _load("c2", 8, "F2")),
        capacitors=(),
        ders=(),
        sources=(_source("S1", 0), _source("S2", 6)),
        feeders=(Feeder("F1", "feeder one"), Feeder("F2", "feeder two")),
        measurements=(),
        diagnostics=ModelDiagnostics({}, {}),
    )


@pytest.fixture(name="ieee123", scope="module")
def ieee123_model() -> NetworkModel:
    path = CIM / "IEEE123.xml"
    if not path.exists():
        pytest.skip(f"reference feeder {path} is missing (shared data not installed)")
    return load_cim(path)


# -- graph ------------------------------------------------------------------------------------------------------


def test_graph_has_switches_only_when_closed(small: NetworkModel) -> None:
    graph = build_topology_graph(small)
    assert graph.number_of_nodes() == 9
    kinds = {key: data["kind"] for _a, _b, key, data in graph.edges(keys=True, data=True)}
    assert kinds == {
        "l01": BranchKind.LINE,
        "l23": BranchKind.LINE,
        "l56": BranchKind.LINE,
        "l78": BranchKind.LINE,
        "dt1": BranchKind.DISTRIBUTION_TRANSFORMER,
        "brk1": BranchKind.SWITCH,
    }
    assert graph.nodes[0]["is_source"] and graph.nodes[0]["sources"] == ("S1",)
    assert graph.nodes[4]["loads"] == ("c1",)
    assert graph.graph["feeders"] == {"F1": "feeder one", "F2": "feeder two"}
    assert nx.number_connected_components(graph) == 3
    closed = build_topology_graph(small, {"tie": True, "sw9": True, "brk1": False})
    assert closed.has_edge(3, 5, key="tie") and not closed.has_edge(1, 2, key="brk1")
    with pytest.raises(TopologyError, match="no switch 'nope'"):
        build_topology_graph(small, {"nope": True})


def test_customer_trace_source_feeder_dt_customer(small: NetworkModel) -> None:
    graph = build_topology_graph(small)
    trace = customer_trace(graph, small, "c1")
    assert (trace.source_mrid, trace.feeder_mrid, trace.distribution_transformer_mrid) == ("S1", "F1", "dt1")
    assert trace.bus_path == (0, 1, 2, 3, 4)
    assert trace.branch_mrids == ("l01", "brk1", "l23", "dt1")
    with pytest.raises(TopologyError, match="'c2'.*not reachable"):
        customer_trace(graph, small, "c2")
    with pytest.raises(TopologyError, match="no load 'zz'"):
        customer_trace(graph, small, "zz")


# -- processor on the small model --------------------------------------------------------------------------------


def test_small_islands_and_energization(small: NetworkModel) -> None:
    tp = TopologyProcessor(small)
    islands = tp.islands()
    assert [(i.buses, i.source_mrids, i.feeder_mrid) for i in islands] == [
        ((0, 1, 2, 3, 4), ("S1",), "F1"),
        ((5, 6), ("S2",), "F2"),
        ((7, 8), (), None),
    ]
    assert [tp.energized(b) for b in range(9)] == [True] * 7 + [False] * 2
    assert tp.is_dead("l78") and tp.is_dead("c2") and not tp.is_dead("sw9")  # sw9 has one live side
    assert tp.would_parallel_sources("tie")  # S1 and S2 on either side
    assert not tp.would_parallel_sources("sw9")  # the far side is dead
    assert not tp.would_parallel_sources("brk1")  # already closed


def test_small_switching_sequence(small: NetworkModel) -> None:
    tp = TopologyProcessor(small)
    change = tp.set_switch("brk1", False)
    assert change.changed and change.island_split and change.deenergized_buses == (2, 3, 4)
    assert tp.island_count == 4 and not tp.energized("b3") and tp.is_dead("c1")
    assert not tp.would_parallel_sources("tie")  # now the S1 side is dead: a back-feed, allowed
    change = tp.set_switch("tie", True)  # back-feed the dead section from S2
    assert change.islands_merged and change.energized_buses == (2, 3, 4)
    trace = tp.trace("c1")
    assert trace.source_mrid == "S2" and trace.feeder_mrid == "F2"
    assert [s.name for s in trace.steps] == ["c1", "dt1", "tie", "l56", "S2"]
    assert trace.bus_path == (4, 3, 5, 6)
    assert tp.would_parallel_sources("brk1")  # closing brk1 now would parallel S1 and S2
    repeat = tp.set_switch("tie", True)
    assert not repeat.changed and repeat.island_count == tp.island_count
    change = tp.set_switch("brk1", True)  # operator closed it anyway: one island, two sources
    assert change.islands_merged and change.energized_buses == ()
    (fed, dead) = tp.islands()
    assert fed.source_mrids == ("S1", "S2") and dead.buses == (7, 8)
    change = tp.set_switch("sw9", True)
    assert change.energized_buses == (7, 8) and tp.island_count == 1
    with pytest.raises(TopologyError, match="no switch 'x'"):
        tp.set_switch("x", True)


def test_small_colouring_arrays(small: NetworkModel) -> None:
    tp = TopologyProcessor(small)
    colours = tp.colouring()
    assert colours.buses["energized"].tolist() == [True] * 7 + [False] * 2
    assert colours.buses["source"].tolist() == [0, 0, 0, 0, 0, 1, 1, -1, -1]
    assert colours.buses["feeder"].tolist() == [0, 0, 0, 0, 0, 1, 1, -1, -1]
    assert colours.loads["energized"].tolist() == [True, False]
    switches = colours.branches[tp.static.switch_branch]
    assert switches["closed"].tolist() == [True, False, False]
    assert switches["energized"].tolist() == [True, True, True]  # an open switch with a live side is live
    assert not colours.buses.flags.writeable
    trace = tp.trace("c2")
    assert not trace.energized and trace.source_mrid is None and trace.steps[0].kind is ElementKind.LOAD


# -- processor on IEEE 123 ---------------------------------------------------------------------------------------


def test_ieee123_normal_state(ieee123: NetworkModel) -> None:
    tp = TopologyProcessor(ieee123)
    assert not tp.switch_closed("sw7") and not tp.switch_closed("sw8")
    (island,) = tp.islands()  # sw7/sw8 are ties: everything is still fed from the one source
    assert len(island.buses) == len(ieee123.buses) and island.source_mrids == (ieee123.sources[0].mrid,)
    assert island.feeder_mrid == ieee123.feeders[0].mrid
    assert all(tp.energized(b) for b in range(len(ieee123.buses)))
    assert bool(tp.colouring().loads["energized"].all())


def test_ieee123_opening_sw1_deenergizes_what_it_feeds(ieee123: NetworkModel) -> None:
    tp = TopologyProcessor(ieee123)
    graph = build_topology_graph(ieee123, {"sw1": False})
    source_bus = ieee123.sources[0].bus
    expected_dead = set(range(len(ieee123.buses))) - nx.node_connected_component(graph, source_bus)
    change = tp.set_switch("sw1", False)
    assert change.island_split and set(change.deenergized_buses) == expected_dead
    assert {ieee123.buses[b].name for b in range(len(ieee123.buses)) if tp.energized(b)} == {"150", "150r"}
    assert tp.island_count == 2 and tp.is_dead("s1a")
    colours = tp.colouring()
    assert int(colours.loads["energized"].sum()) == 0  # no load sits upstream of sw1
    change = tp.set_switch("sw1", True)
    assert set(change.energized_buses) == expected_dead and tp.island_count == 1


def test_ieee123_closing_ties_makes_loops_not_parallels(ieee123: NetworkModel) -> None:
    tp = TopologyProcessor(ieee123)
    for tie in ("sw7", "sw8"):
        assert not tp.would_parallel_sources(tie)
        change = tp.set_switch(tie, True)
        assert change.loop_closed and not change.islands_merged and tp.island_count == 1
        (island,) = tp.islands()
        assert len(island.source_mrids) == 1  # no second source appears
    # With the ties closed, opening sw3 no longer splits anything: its section is fed round the loop.
    change = tp.set_switch("sw3", False)
    assert not change.island_split and change.deenergized_buses == () and tp.island_count == 1


def test_ieee123_trace_load_to_source(ieee123: NetworkModel) -> None:
    tp = TopologyProcessor(ieee123)
    load = ieee123.loads[-1]
    trace = tp.trace(load.name)
    assert trace.energized and trace.source_mrid == ieee123.sources[0].mrid
    assert trace.bus_path[0] == load.bus and trace.bus_path[-1] == ieee123.sources[0].bus
    assert trace.steps[0].mrid == load.mrid and trace.steps[-1].kind is ElementKind.SOURCE
    assert "sw1" in [s.name for s in trace.steps] and "reg1a" in [s.name for s in trace.steps]
    graph = build_topology_graph(ieee123)
    via_graph = customer_trace(graph, ieee123, load.mrid)
    assert via_graph.bus_path == tuple(reversed(trace.bus_path))  # radial: both find the one path
    tp.set_switch("sw1", False)
    assert not tp.trace(load.name).energized
