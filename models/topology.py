"""The switchable topology of a NetworkModel as a networkx graph, plus the static structure the topology processor
(``scada.topology``) works on.

Graph: one node per bus (the bus index), one edge per branch keyed by the element mRID. Lines, transformers and
regulators are always connected; a switch edge is present only while the switch is closed (``build_topology_graph``
takes the switch states, defaulting to the model's actual ``open`` flags). Node attributes carry the bus name, mRID,
phases, feeder, whether an EnergySource sits on it, the loads attached to it and their customers' consumer numbers;
edge attributes carry the element kind, mRID, name, phases and feeder, so a trace source -> feeder -> distribution
transformer -> customer is a shortest path plus attribute look-ups (``customer_trace``).

Pure data over ``models.network``: nothing here imports ``scada``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import networkx as nx
import numpy as np

from models.network import NetworkModel, Phase, Transformer

__all__ = [
    "BranchKind",
    "CustomerTrace",
    "StaticTopology",
    "TopologyError",
    "build_static_topology",
    "build_topology_graph",
    "customer_trace",
    "is_distribution_transformer",
]


class TopologyError(Exception):
    """Root of topology errors: an unknown element, or a trace that cannot reach a source."""


class BranchKind(StrEnum):
    LINE = "line"
    TRANSFORMER = "transformer"  # substation / power transformer (touches a source bus)
    DISTRIBUTION_TRANSFORMER = "distribution_transformer"
    REGULATOR = "regulator"
    SWITCH = "switch"


LV_MAX_V = 1000.0  # low voltage (IEC 60038): a winding rated at most this feeds customers


def is_distribution_transformer(model: NetworkModel, transformer: Transformer, source_buses: frozenset[int]) -> bool:
    """A transformer that steps down to customers: not a voltage regulator, and with a low-voltage winding (rated
    at most 1 kV) — or, when the ratings are unknown, not on a source bus. The CIM has no such flag. A 33/11 kV
    substation transformer behind an incomer breaker is therefore a power transformer, not a DT."""
    if is_voltage_regulator(transformer):
        return False
    rated = [w.rated_u_v for w in transformer.windings if w.rated_u_v > 0]
    if rated:
        return min(rated) <= LV_MAX_V
    return not (set(transformer.buses) & source_buses)


def is_voltage_regulator(transformer: Transformer) -> bool:
    """A tap-changing unit with (nearly) equal winding voltages; a power transformer with an on-load tap changer
    (33/11 kV) also carries a RatioTapChanger but is not a regulator."""
    if not transformer.is_regulator:
        return False
    rated = [w.rated_u_v for w in transformer.windings if w.rated_u_v > 0]
    return not rated or max(rated) <= 1.1 * min(rated)


def _transformer_kind(model: NetworkModel, transformer: Transformer, source_buses: frozenset[int]) -> BranchKind:
    if is_voltage_regulator(transformer):
        return BranchKind.REGULATOR
    if is_distribution_transformer(model, transformer, source_buses):
        return BranchKind.DISTRIBUTION_TRANSFORMER
    return BranchKind.TRANSFORMER


@dataclass(frozen=True, slots=True, eq=False)
class StaticTopology:
    """Index arrays of every branch, in a fixed order: lines, then transformer legs (winding 1 to each other
    winding's bus), then switches. ``branch_element`` indexes into the model's tuple of that kind. Arrays are
    read-only."""

    n_buses: int
    branch_from: np.ndarray  # int32, bus index
    branch_to: np.ndarray  # int32, bus index
    branch_kind: tuple[BranchKind, ...]
    branch_element: np.ndarray  # int32, index into model.lines / model.transformers / model.switches
    branch_mrid: tuple[str, ...]
    branch_name: tuple[str, ...]
    switch_branch: np.ndarray  # int32, branch index of each model switch
    source_buses: frozenset[int]

    @property
    def n_branches(self) -> int:
        return len(self.branch_kind)


def _readonly(values: list[int]) -> np.ndarray:
    array = np.asarray(values, dtype=np.int32)
    array.flags.writeable = False
    return array


def build_static_topology(model: NetworkModel) -> StaticTopology:
    source_buses = frozenset(s.bus for s in model.sources)
    frm: list[int] = []
    to: list[int] = []
    kinds: list[BranchKind] = []
    elem: list[int] = []
    mrids: list[str] = []
    names: list[str] = []

    def add(a: int, b: int, kind: BranchKind, index: int, mrid: str, name: str) -> None:
        frm.append(a)
        to.append(b)
        kinds.append(kind)
        elem.append(index)
        mrids.append(mrid)
        names.append(name)

    for i, line in enumerate(model.lines):
        add(line.from_bus, line.to_bus, BranchKind.LINE, i, line.mrid, line.name)
    for i, tr in enumerate(model.transformers):
        buses = tr.buses
        kind = _transformer_kind(model, tr, source_buses)
        # A three-winding (or split-phase) transformer becomes a star of legs from its first winding's bus.
        for other in buses[1:]:
            add(buses[0], other, kind, i, tr.mrid, tr.name)
    switch_branch: list[int] = []
    for i, sw in enumerate(model.switches):
        switch_branch.append(len(kinds))
        add(sw.from_bus, sw.to_bus, BranchKind.SWITCH, i, sw.mrid, sw.name)
    return StaticTopology(
        n_buses=len(model.buses),
        branch_from=_readonly(frm),
        branch_to=_readonly(to),
        branch_kind=tuple(kinds),
        branch_element=_readonly(elem),
        branch_mrid=tuple(mrids),
        branch_name=tuple(names),
        switch_branch=_readonly(switch_branch),
        source_buses=source_buses,
    )


def _branch_phases(model: NetworkModel, kind: BranchKind, index: int) -> Phase:
    if kind is BranchKind.LINE:
        return model.lines[index].phase_set
    if kind is BranchKind.SWITCH:
        return model.switches[index].phases
    result = Phase.NONE
    for winding in model.transformers[index].windings:
        result |= winding.phases
    return result


def _branch_feeder(model: NetworkModel, kind: BranchKind, index: int) -> str | None:
    if kind is BranchKind.LINE:
        return model.lines[index].feeder_mrid
    if kind is BranchKind.SWITCH:
        return model.switches[index].feeder_mrid
    return model.transformers[index].feeder_mrid


def build_topology_graph(model: NetworkModel, switch_closed: Mapping[str, bool] | None = None) -> nx.MultiGraph:
    """The switchable topology as an undirected MultiGraph (parallel branches allowed; edge key = element mRID).

    ``switch_closed`` maps switch mRID or name to its state; switches not named keep the model's actual state.
    Raises TopologyError naming a key that is no switch of the model."""
    states = {sw.mrid: not sw.open for sw in model.switches}
    if switch_closed:
        by_name = {sw.name: sw.mrid for sw in model.switches}
        for key, closed in switch_closed.items():
            mrid = key if key in states else by_name.get(key)
            if mrid is None:
                raise TopologyError(f"no switch {key!r} in network {model.name!r}")
            states[mrid] = closed
    static = build_static_topology(model)
    graph = nx.MultiGraph(name=model.name, feeders={f.mrid: f.name for f in model.feeders})
    loads_at: dict[int, list[str]] = {}
    for load in model.loads:
        loads_at.setdefault(load.bus, []).append(load.mrid)
    customers_at: dict[int, list[str]] = {}
    for customer in model.customers:
        customers_at.setdefault(customer.bus, []).append(customer.consumer_number)
    sources_at: dict[int, list[str]] = {}
    for src in model.sources:
        sources_at.setdefault(src.bus, []).append(src.mrid)
    for bus in model.buses:
        graph.add_node(
            bus.index,
            name=bus.name,
            mrid=bus.mrid,
            phases=bus.phases,
            feeder_mrid=bus.feeder_mrid,
            is_source=bus.index in sources_at,
            sources=tuple(sources_at.get(bus.index, ())),
            loads=tuple(loads_at.get(bus.index, ())),
            customers=tuple(customers_at.get(bus.index, ())),  # consumer numbers (CIM UsagePoints)
        )
    for b in range(static.n_branches):
        kind = static.branch_kind[b]
        mrid = static.branch_mrid[b]
        if kind is BranchKind.SWITCH and not states[mrid]:
            continue
        index = int(static.branch_element[b])
        graph.add_edge(
            int(static.branch_from[b]),
            int(static.branch_to[b]),
            key=mrid,
            mrid=mrid,
            name=static.branch_name[b],
            kind=kind,
            phases=_branch_phases(model, kind, index),
            feeder_mrid=_branch_feeder(model, kind, index),
        )
    return graph


@dataclass(frozen=True, slots=True)
class CustomerTrace:
    """Source -> feeder -> distribution transformer -> customer, along the closed topology."""

    load_mrid: str
    load_name: str
    source_mrid: str
    feeder_mrid: str | None
    distribution_transformer_mrid: str | None  # nearest one upstream of the customer; None when fed at primary
    bus_path: tuple[int, ...]  # from the source bus to the load's bus
    branch_mrids: tuple[str, ...]  # the branches along bus_path, in the same order


def customer_trace(graph: nx.MultiGraph, model: NetworkModel, load: str) -> CustomerTrace:
    """Trace a load (name or mRID) to its nearest source over the graph (built by ``build_topology_graph``).
    Raises TopologyError when the load is unknown or no source is reachable (de-energized customer)."""
    found = next((x for x in model.loads if load in (x.mrid, x.name)), None)
    if found is None:
        raise TopologyError(f"no load {load!r} in network {model.name!r}")
    sources = [n for n, is_src in graph.nodes(data="is_source") if is_src]
    try:
        if not sources:
            raise nx.NetworkXNoPath("no source in the graph")
        _hops, nodes = nx.multi_source_dijkstra(graph, sources, target=found.bus, weight=None)
    except nx.NetworkXNoPath:
        raise TopologyError(f"load {found.name!r} in network {model.name!r} is not reachable from any source") from None
    path = tuple(int(n) for n in nodes)
    branches: list[str] = []
    dt: str | None = None
    for a, b in zip(path, path[1:], strict=False):
        edges = graph.get_edge_data(a, b)
        key, data = next(iter(edges.items()))
        branches.append(key)
        if data["kind"] is BranchKind.DISTRIBUTION_TRANSFORMER:
            dt = key  # the last one on the way down is the customer's
    return CustomerTrace(
        load_mrid=found.mrid,
        load_name=found.name,
        source_mrid=graph.nodes[path[0]]["sources"][0],
        feeder_mrid=found.feeder_mrid or graph.nodes[path[0]]["feeder_mrid"],
        distribution_transformer_mrid=dt,
        bus_path=path,
        branch_mrids=tuple(branches),
    )
