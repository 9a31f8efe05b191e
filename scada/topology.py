"""Topology processor: energization, islands and colouring of a feeder from live switch states.

Built once from a NetworkModel. Buses joined by always-connected branches (lines, transformers, regulators) form
*sections*, computed once; switches join sections. An *island* is a set of sections connected by closed switches,
and it is energized when it holds an EnergySource bus. ``set_switch`` updates only the islands the switch touches:
closing merges two islands (relabelling the smaller), opening searches the one island over its closed switches to
see whether it splits. Per-bus answers are then array look-ups, so the cost of a switch change scales with the
switches of the affected island, not with the buses of the network.

Energization is per bus, not per phase (a single-phase switch like IEEE 123 sw8 energizes the whole bus).

Look-aheads for interlocks (``opening_effect``, ``closing_effect``) answer what a switching would do without
changing anything; ``downstream_buses`` gives what an element supplies (the customers a trace reports).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from models.network import NetworkModel
from models.topology import BranchKind, StaticTopology, TopologyError, build_static_topology

__all__ = [
    "BRANCH_COLOUR_DTYPE",
    "BUS_COLOUR_DTYPE",
    "LOAD_COLOUR_DTYPE",
    "OpeningEffect",
    "Colouring",
    "ElementKind",
    "Island",
    "TopologyChange",
    "TopologyError",
    "TopologyProcessor",
    "Trace",
    "TraceStep",
]

# Operator-display colouring: one row per element; source/feeder are indices into model.sources / model.feeders,
# -1 when de-energized. The feeder is the *feeding* feeder: the one whose head the supply passed through (a section
# back-fed over a tie shows the feeder feeding it now); -1 also upstream of any feeder (a substation bus). In a mesh a
# bus keeps the feeder it had when the loop was closed.
BUS_COLOUR_DTYPE = np.dtype(
    [("bus", np.int32), ("energized", np.bool_), ("island", np.int32), ("source", np.int32), ("feeder", np.int32)]
)
BRANCH_COLOUR_DTYPE = np.dtype(
    [
        ("branch", np.int32),
        ("energized", np.bool_),
        ("closed", np.bool_),
        ("island", np.int32),
        ("source", np.int32),
        ("feeder", np.int32),
    ]
)
LOAD_COLOUR_DTYPE = np.dtype(
    [("load", np.int32), ("energized", np.bool_), ("island", np.int32), ("source", np.int32), ("feeder", np.int32)]
)


class ElementKind(StrEnum):
    BUS = "bus"
    LINE = "line"
    TRANSFORMER = "transformer"
    SWITCH = "switch"
    LOAD = "load"
    CAPACITOR = "capacitor"
    DER = "der"
    SOURCE = "source"


@dataclass(frozen=True, slots=True)
class TopologyChange:
    """What one switch operation did. ``changed`` is False when the switch was already in that state."""

    switch_mrid: str
    switch_name: str
    closed: bool
    changed: bool
    islands_merged: bool  # closing joined two islands
    island_split: bool  # opening split one island in two
    loop_closed: bool  # closing joined an island to itself (a mesh, same source)
    energized_buses: tuple[int, ...]  # buses that became energized
    deenergized_buses: tuple[int, ...]  # buses that lost supply
    island_count: int


@dataclass(frozen=True, slots=True)
class OpeningEffect:
    """What opening a switch would do, computed without changing anything (interlock look-ahead)."""

    switch_mrid: str
    switch_name: str
    was_closed: bool
    energized: bool  # the switch's island is fed now
    breaks_loop: bool  # both sides stay connected over other closed switches: it would break a loop (mesh) current
    deenergized_buses: tuple[int, ...]  # buses that would lose supply


@dataclass(frozen=True, slots=True)
class ClosingEffect:
    """What closing a switch would do, computed without changing anything (interlock look-ahead)."""

    switch_mrid: str
    switch_name: str
    was_closed: bool
    sources_side1: tuple[str, ...]  # source mRIDs of the island on the switch's from side
    sources_side2: tuple[str, ...]
    parallels_sources: bool  # joins two islands fed by different sources
    closes_loop: bool  # both sides already in one island
    energized_buses: tuple[int, ...]  # dead buses the close would energize


@dataclass(frozen=True, slots=True)
class Island:
    id: int
    buses: tuple[int, ...]  # sorted
    source_mrids: tuple[str, ...]  # empty: de-energized; more than one: sources in parallel
    feeder_mrid: str | None  # feeder of the first source's bus

    @property
    def energized(self) -> bool:
        return bool(self.source_mrids)


@dataclass(frozen=True, slots=True, eq=False)
class Colouring:
    """Read-only structured arrays (``*_COLOUR_DTYPE``) in model order; ``branches`` follows
    ``StaticTopology`` order (lines, transformer legs, switches)."""

    buses: np.ndarray
    branches: np.ndarray
    loads: np.ndarray


@dataclass(frozen=True, slots=True)
class TraceStep:
    kind: ElementKind
    mrid: str
    name: str


@dataclass(frozen=True, slots=True)
class Trace:
    """Path from an element to the source feeding it: element first, source last. Empty ``source_mrid`` and only
    the element's own island reached when de-energized (``energized`` False)."""

    element: TraceStep
    energized: bool
    source_mrid: str | None
    feeder_mrid: str | None
    bus_path: tuple[int, ...]  # from the element's bus to the source bus
    steps: tuple[TraceStep, ...]  # element, the branches crossed, the source


def _kind_of_branch(kind: BranchKind) -> ElementKind:
    if kind is BranchKind.LINE:
        return ElementKind.LINE
    if kind is BranchKind.SWITCH:
        return ElementKind.SWITCH
    return ElementKind.TRANSFORMER


class TopologyProcessor:
    """Live topology of one NetworkModel. Not thread-safe: one owner (the topology subscriber) calls it."""

    def __init__(self, model: NetworkModel) -> None:
        self._model = model
        self._static: StaticTopology = build_static_topology(model)
        st = self._static
        n = st.n_buses
        self._switch_closed = np.array([not sw.open for sw in model.switches], dtype=np.bool_)
        self._switch_by_key: dict[str, int] = {}
        for i, sw in enumerate(model.switches):
            self._switch_by_key[sw.name] = i
        for i, sw in enumerate(model.switches):
            self._switch_by_key[sw.mrid] = i  # mRIDs win over a name that happens to equal one
        # Sections: union-find over the always-connected branches.
        parent = np.arange(n, dtype=np.int64)

        def find(x: int) -> int:
            root = x
            while parent[root] != root:
                root = int(parent[root])
            while parent[x] != root:
                parent[x], x = root, int(parent[x])
            return root

        for b in range(st.n_branches):
            if st.branch_kind[b] is not BranchKind.SWITCH:
                ra, rb = find(int(st.branch_from[b])), find(int(st.branch_to[b]))
                if ra != rb:
                    parent[ra] = rb
        roots = np.array([find(i) for i in range(n)], dtype=np.int64)
        _unique, section_of_bus = np.unique(roots, return_inverse=True)
        self._section_of_bus = section_of_bus.astype(np.int32)
        n_sections = int(self._section_of_bus.max()) + 1 if n else 0
        order = np.argsort(self._section_of_bus, kind="stable")
        bounds = np.searchsorted(self._section_of_bus[order], np.arange(n_sections + 1))
        self._section_buses = [order[bounds[s] : bounds[s + 1]] for s in range(n_sections)]
        self._switch_sections = [
            (int(self._section_of_bus[sw.from_bus]), int(self._section_of_bus[sw.to_bus])) for sw in model.switches
        ]
        # Section adjacency through switches: section -> [(switch index, other section)].
        self._section_switches: list[list[tuple[int, int]]] = [[] for _ in range(n_sections)]
        for i, (a, b) in enumerate(self._switch_sections):
            self._section_switches[a].append((i, b))
            if b != a:
                self._section_switches[b].append((i, a))
        self._section_sources: list[tuple[int, ...]] = [() for _ in range(n_sections)]
        for i, src in enumerate(model.sources):
            s = int(self._section_of_bus[src.bus])
            self._section_sources[s] = (*self._section_sources[s], i)
        feeder_index = {f.mrid: i for i, f in enumerate(model.feeders)}
        self._source_feeder = np.array(
            [feeder_index.get(model.buses[src.bus].feeder_mrid or "", -1) for src in model.sources], dtype=np.int32
        )
        # Bus adjacency for traces: bus -> [(branch index, other bus)].
        self._bus_adjacency: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for b in range(st.n_branches):
            fa, tb = int(st.branch_from[b]), int(st.branch_to[b])
            self._bus_adjacency[fa].append((b, tb))
            self._bus_adjacency[tb].append((b, fa))
        self._switch_of_branch = {int(br): i for i, br in enumerate(st.switch_branch)}
        self._branches_of: dict[str, list[int]] = {}
        for b, mrid in enumerate(st.branch_mrid):
            self._branches_of.setdefault(mrid, []).append(b)
        # Islands, from scratch once.
        self._island_of_section = np.full(n_sections, -1, dtype=np.int32)
        self._island_sections: dict[int, list[int]] = {}
        self._island_sources: dict[int, tuple[int, ...]] = {}
        self._next_island = 0
        for s in range(n_sections):
            if self._island_of_section[s] < 0:
                island = self._new_island()
                self._claim(self._reach(s), island)
        # Feeding feeder of every bus: the source bus's own feeder, else the feeder container of the first branch
        # crossed on the way out (a substation bus has none; its feeder breakers do), inherited downstream; -1 dead.
        branch_feeder = []
        for b in range(st.n_branches):
            kind, index = st.branch_kind[b], int(st.branch_element[b])
            element = (model.lines[index] if kind is BranchKind.LINE else model.switches[index]
                       if kind is BranchKind.SWITCH else model.transformers[index])
            branch_feeder.append(feeder_index.get(element.feeder_mrid or "", -1))
        self._branch_feeder = np.array(branch_feeder, dtype=np.int32)
        self._bus_feeder = np.full(n, -1, dtype=np.int32)
        self._spread_feeders_from_sources()

    # -- incremental core ---------------------------------------------------------------------------------------

    def _new_island(self) -> int:
        island = self._next_island
        self._next_island += 1
        return island

    def _reach(self, start: int) -> list[int]:
        """Sections reachable from ``start`` over closed switches."""
        seen = {start}
        queue = deque((start,))
        while queue:
            s = queue.popleft()
            for sw, other in self._section_switches[s]:
                if self._switch_closed[sw] and other not in seen:
                    seen.add(other)
                    queue.append(other)
        return list(seen)

    def _claim(self, sections: list[int], island: int) -> None:
        self._island_of_section[sections] = island
        self._island_sections[island] = sections
        self._island_sources[island] = tuple(sorted(x for s in sections for x in self._section_sources[s]))

    def _spread_feeders_from_sources(self) -> None:
        self._bus_feeder[:] = -1
        seeds = [(src.bus, int(self._source_feeder[i])) for i, src in enumerate(self._model.sources)]
        self._spread_feeders(seeds, None)

    def _spread_feeders(self, seeds: list[tuple[int, int]], within: set[int] | None) -> None:
        """Breadth-first over closed branches from the seed buses (with their feeders), inside ``within`` (None:
        everywhere reachable): a bus takes its parent's feeder, or the crossed branch's when the parent has none."""
        seen = set()
        queue: deque[int] = deque()
        for bus, feeder in seeds:
            self._bus_feeder[bus] = feeder
            seen.add(bus)
            queue.append(bus)
        feeders, branch_feeder = self._bus_feeder, self._branch_feeder
        while queue:
            bus = queue.popleft()
            parent = int(feeders[bus])
            for br, other in self._bus_adjacency[bus]:
                if other in seen or (within is not None and other not in within):
                    continue
                sw = self._switch_of_branch.get(br)
                if sw is not None and not self._switch_closed[sw]:
                    continue
                seen.add(other)
                feeders[other] = parent if parent >= 0 else branch_feeder[br]
                queue.append(other)

    def _buses_of(self, sections: list[int]) -> tuple[int, ...]:
        if not sections:
            return ()
        return tuple(sorted(int(b) for s in sections for b in self._section_buses[s]))

    def _switch_index(self, name_or_mrid: str) -> int:
        try:
            return self._switch_by_key[name_or_mrid]
        except KeyError:
            raise TopologyError(f"no switch {name_or_mrid!r} in network {self._model.name!r}") from None

    def set_switch(self, name_or_mrid: str, closed: bool) -> TopologyChange:
        """Apply a switch state (from telemetry or a command) and update the affected islands only."""
        i = self._switch_index(name_or_mrid)
        sw = self._model.switches[i]
        if bool(self._switch_closed[i]) == closed:
            return TopologyChange(sw.mrid, sw.name, closed, False, False, False, False, (), (), self.island_count)
        self._switch_closed[i] = closed
        a, b = self._switch_sections[i]
        ia, ib = int(self._island_of_section[a]), int(self._island_of_section[b])
        energized: tuple[int, ...] = ()
        deenergized: tuple[int, ...] = ()
        merged = split = loop = False
        if closed:
            if ia == ib:
                loop = a != b
            else:
                merged = True
                keep, gone = (ia, ib) if len(self._island_sections[ia]) >= len(self._island_sections[ib]) else (ib, ia)
                keep_fed, gone_fed = bool(self._island_sources[keep]), bool(self._island_sources[gone])
                if keep_fed and not gone_fed:
                    energized = self._buses_of(self._island_sections[gone])
                elif gone_fed and not keep_fed:
                    energized = self._buses_of(self._island_sections[keep])
                sections = self._island_sections[keep] + self._island_sections.pop(gone)
                del self._island_sources[gone]
                self._claim(sections, keep)
                if energized:  # the dead side takes the feeder coming through the switch
                    dead = set(energized)
                    into, live = (sw.from_bus, sw.to_bus) if sw.from_bus in dead else (sw.to_bus, sw.from_bus)
                    feeder = int(self._bus_feeder[live])
                    if feeder < 0:
                        feeder = int(self._branch_feeder[self._static.switch_branch[i]])
                    self._spread_feeders([(into, feeder)], dead)
        elif a != b:
            reached = self._reach(a)
            if b not in set(reached):
                split = True
                was_fed = bool(self._island_sources[ia])
                reached_set = set(reached)
                rest = [s for s in self._island_sections[ia] if s not in reached_set]
                new = self._new_island()
                self._claim(rest, ia)
                self._claim(reached, new)
                if was_fed:
                    if not self._island_sources[ia]:
                        deenergized = self._buses_of(rest)
                    if not self._island_sources[new]:
                        deenergized = self._buses_of(reached)
                    if deenergized:
                        self._bus_feeder[list(deenergized)] = -1
                    else:  # both halves keep a source (a meshed multi-source network): feeders from scratch
                        self._spread_feeders_from_sources()
        return TopologyChange(
            sw.mrid, sw.name, closed, True, merged, split, loop, energized, deenergized, self.island_count
        )

    # -- queries ------------------------------------------------------------------------------------------------

    @property
    def model(self) -> NetworkModel:
        return self._model

    @property
    def static(self) -> StaticTopology:
        return self._static

    @property
    def island_count(self) -> int:
        return len(self._island_sections)

    def switch_closed(self, name_or_mrid: str) -> bool:
        return bool(self._switch_closed[self._switch_index(name_or_mrid)])

    def _bus_index(self, bus: int | str) -> int:
        if isinstance(bus, int):
            if not 0 <= bus < self._static.n_buses:
                raise TopologyError(f"bus index {bus} out of range in network {self._model.name!r}")
            return bus
        for b in self._model.buses:
            if bus in (b.name, b.mrid):
                return b.index
        raise TopologyError(f"no bus {bus!r} in network {self._model.name!r}")

    def energized(self, bus: int | str) -> bool:
        """Whether a bus (index, name or mRID) is connected to a source."""
        island = int(self._island_of_section[self._section_of_bus[self._bus_index(bus)]])
        return bool(self._island_sources[island])

    def islands(self) -> tuple[Island, ...]:
        """Every island, ordered by its lowest bus index."""
        result = []
        for island, sections in self._island_sections.items():
            sources = self._island_sources[island]
            feeder = int(self._source_feeder[sources[0]]) if sources else -1
            result.append(
                Island(
                    id=island,
                    buses=self._buses_of(sections),
                    source_mrids=tuple(self._model.sources[s].mrid for s in sources),
                    feeder_mrid=self._model.feeders[feeder].mrid if feeder >= 0 else None,
                )
            )
        return tuple(sorted(result, key=lambda x: x.buses[0] if x.buses else -1))

    def island_sources(self) -> dict[int, tuple[str, ...]]:
        """Island id -> mRIDs of its sources (empty tuple: de-energized), for every island."""
        srcs = self._model.sources
        return {island: tuple(srcs[x].mrid for x in sources) for island, sources in self._island_sources.items()}

    def source_feeder(self, source_mrid: str) -> str | None:
        """Feeder mRID of a source's bus, None when the bus has no feeder."""
        for i, src in enumerate(self._model.sources):
            if src.mrid == source_mrid:
                feeder = int(self._source_feeder[i])
                return self._model.feeders[feeder].mrid if feeder >= 0 else None
        raise TopologyError(f"no source {source_mrid!r} in network {self._model.name!r}")

    def _island_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per island id: first source index (-1 none) and feeder index (-1 none)."""
        source = np.full(self._next_island, -1, dtype=np.int32)
        for island, sources in self._island_sources.items():
            if sources:
                source[island] = sources[0]
        feeder = np.full(self._next_island, -1, dtype=np.int32)
        fed = source >= 0
        feeder[fed] = self._source_feeder[source[fed]]
        return source, feeder

    def colouring(self) -> Colouring:
        """Energization and feeding source/feeder of every bus, branch and load, vectorised."""
        st = self._static
        island_source, _island_feeder = self._island_tables()
        bus_island = self._island_of_section[self._section_of_bus]
        buses = np.zeros(st.n_buses, dtype=BUS_COLOUR_DTYPE)
        buses["bus"] = np.arange(st.n_buses)
        buses["island"] = bus_island
        buses["source"] = island_source[bus_island]
        buses["feeder"] = self._bus_feeder
        buses["energized"] = buses["source"] >= 0
        branches = np.zeros(st.n_branches, dtype=BRANCH_COLOUR_DTYPE)
        closed = np.ones(st.n_branches, dtype=np.bool_)
        closed[st.switch_branch] = self._switch_closed
        from_island, to_island = bus_island[st.branch_from], bus_island[st.branch_to]
        # An open switch with one live side is drawn live on that side's source (it is under voltage).
        from_live = island_source[from_island] >= 0
        island = np.where(from_live, from_island, to_island)
        branches["branch"] = np.arange(st.n_branches)
        branches["closed"] = closed
        branches["island"] = island
        branches["source"] = island_source[island]
        f_from, f_to = self._bus_feeder[st.branch_from], self._bus_feeder[st.branch_to]
        branches["feeder"] = np.where(f_from >= 0, f_from, f_to)  # a feeder breaker: its feeder side
        branches["energized"] = branches["source"] >= 0
        load_bus = np.array([x.bus for x in self._model.loads], dtype=np.int32)
        loads = np.zeros(len(load_bus), dtype=LOAD_COLOUR_DTYPE)
        load_island = bus_island[load_bus]
        loads["load"] = np.arange(len(load_bus))
        loads["island"] = load_island
        loads["source"] = island_source[load_island]
        loads["feeder"] = self._bus_feeder[load_bus]
        loads["energized"] = loads["source"] >= 0
        for table in (buses, branches, loads):
            table.flags.writeable = False
        return Colouring(buses=buses, branches=branches, loads=loads)

    def _element(self, element: str) -> tuple[TraceStep, tuple[int, ...]]:
        """Resolve a name or mRID to its step and its buses. Buses first, then branches, then shunts."""
        m = self._model
        for b in m.buses:
            if element in (b.name, b.mrid):
                return TraceStep(ElementKind.BUS, b.mrid, b.name), (b.index,)
        groups: tuple[tuple[ElementKind, tuple], ...] = (
            (ElementKind.LINE, m.lines),
            (ElementKind.TRANSFORMER, m.transformers),
            (ElementKind.SWITCH, m.switches),
            (ElementKind.LOAD, m.loads),
            (ElementKind.CAPACITOR, m.capacitors),
            (ElementKind.DER, m.ders),
            (ElementKind.SOURCE, m.sources),
        )
        for kind, items in groups:
            for x in items:
                if element in (x.mrid, x.name):
                    if kind in (ElementKind.LINE, ElementKind.SWITCH):
                        buses = (x.from_bus, x.to_bus)
                    elif kind is ElementKind.TRANSFORMER:
                        buses = x.buses
                    else:
                        buses = (x.bus,)
                    return TraceStep(kind, x.mrid, x.name), buses
        raise TopologyError(f"no element {element!r} in network {self._model.name!r}")

    def is_dead(self, element: str) -> bool:
        """Interlock helper: True when no bus of the element (bus, line, transformer, switch, load, ...) is
        energized, i.e. the section is safe to earth / work on as far as topology can tell."""
        _step, buses = self._element(element)
        return not any(self.energized(b) for b in buses)

    def switch_closed_array(self) -> np.ndarray:
        """A copy of every switch's state (True = closed), in ``model.switches`` order."""
        return self._switch_closed.copy()

    def switch_index(self, name_or_mrid: str) -> int:
        """Index into ``model.switches``; TopologyError naming the key when it is no switch."""
        return self._switch_index(name_or_mrid)

    def element(self, element: str) -> tuple[TraceStep, tuple[int, ...]]:
        """Resolve a name or mRID to (kind, mRID, name) and its buses; TopologyError when unknown."""
        return self._element(element)

    def opening_effect(self, switch: str) -> OpeningEffect:
        """Look-ahead of ``set_switch(switch, False)``: the buses that would lose supply, or whether it breaks a
        loop. Cost: one search of the switch's island over its closed switches."""
        i = self._switch_index(switch)
        sw = self._model.switches[i]
        a, b = self._switch_sections[i]
        island = int(self._island_of_section[a])
        fed = bool(self._island_sources[island])
        if not self._switch_closed[i]:
            return OpeningEffect(sw.mrid, sw.name, False, fed, False, ())
        if a == b:  # in parallel with always-connected branches
            return OpeningEffect(sw.mrid, sw.name, True, fed, True, ())
        self._switch_closed[i] = False
        try:
            reached = set(self._reach(a))
        finally:
            self._switch_closed[i] = True
        if b in reached:
            return OpeningEffect(sw.mrid, sw.name, True, fed, True, ())
        rest = [s for s in self._island_sections[island] if s not in reached]
        dead: tuple[int, ...] = ()
        if fed:
            if not any(self._section_sources[s] for s in reached):
                dead = self._buses_of(list(reached))
            elif not any(self._section_sources[s] for s in rest):
                dead = self._buses_of(rest)
        return OpeningEffect(sw.mrid, sw.name, True, fed, False, dead)

    def closing_effect(self, switch: str) -> ClosingEffect:
        """Look-ahead of ``set_switch(switch, True)``: parallel of sources, loop, and the dead buses it energizes."""
        i = self._switch_index(switch)
        sw = self._model.switches[i]
        a, b = self._switch_sections[i]
        ia, ib = int(self._island_of_section[a]), int(self._island_of_section[b])
        src_a = tuple(self._model.sources[x].mrid for x in self._island_sources[ia])
        src_b = tuple(self._model.sources[x].mrid for x in self._island_sources[ib])
        if self._switch_closed[i]:
            return ClosingEffect(sw.mrid, sw.name, True, src_a, src_b, False, False, ())
        if ia == ib:
            return ClosingEffect(sw.mrid, sw.name, False, src_a, src_b, False, True, ())
        energized: tuple[int, ...] = ()
        if src_a and not src_b:
            energized = self._buses_of(self._island_sections[ib])
        elif src_b and not src_a:
            energized = self._buses_of(self._island_sections[ia])
        return ClosingEffect(sw.mrid, sw.name, False, src_a, src_b, bool(src_a and src_b), False, energized)

    def downstream_buses(self, element: str) -> tuple[int, ...]:
        """Buses supplied only through the element: those that lose supply if it is taken out (opened, removed).
        Empty when the element is dead or every side of it has another path to a source (a mesh). A bus counts
        itself; a shunt element (load, capacitor, ...) gives its own bus."""
        step, buses = self._element(element)
        if not any(self.energized(x) for x in buses):
            return ()
        if step.kind in (ElementKind.LOAD, ElementKind.CAPACITOR, ElementKind.DER, ElementKind.SOURCE):
            return buses
        if step.kind is ElementKind.BUS:
            skip = {br for br, _other in self._bus_adjacency[buses[0]]}
            starts = [other for _br, other in self._bus_adjacency[buses[0]]]
            own = {buses[0]}
        else:
            skip = set(self._branches_of.get(step.mrid, ()))
            starts = list(buses)
            own = set()
        source_buses = self._static.source_buses
        removed = own  # a removed bus is not crossed
        downstream: set[int] = set()
        fed_side = bool(own & source_buses)
        for start in starts:
            if start in downstream or start in removed:
                continue
            seen = {start}
            queue = deque((start,))
            found = start in source_buses
            while queue and not found:
                bus = queue.popleft()
                for br, other in self._bus_adjacency[bus]:
                    if br in skip or other in seen or other in removed:
                        continue
                    sw = self._switch_of_branch.get(br)
                    if sw is not None and not self._switch_closed[sw]:
                        continue
                    if other in source_buses:
                        found = True
                        break
                    seen.add(other)
                    queue.append(other)
            if found:
                fed_side = True
            else:
                downstream |= seen
        if not fed_side:
            return ()
        return tuple(sorted(downstream | own))

    def would_parallel_sources(self, switch: str) -> bool:
        """Interlock helper: True when closing this (open) switch would join two islands fed by different
        sources. Closing a loop inside one island (same source) is not a parallel."""
        i = self._switch_index(switch)
        if self._switch_closed[i]:
            return False
        a, b = self._switch_sections[i]
        ia, ib = int(self._island_of_section[a]), int(self._island_of_section[b])
        if ia == ib:
            return False
        return bool(self._island_sources[ia]) and bool(self._island_sources[ib])

    def trace(self, element: str) -> Trace:
        """Shortest path (in branches) over the live topology from an element to the source feeding it."""
        step, buses = self._element(element)
        st = self._static
        source_at = {src.bus: i for i, src in enumerate(self._model.sources)}
        start = buses[0]
        if not self.energized(start) and len(buses) > 1:
            start = next((b for b in buses if self.energized(b)), start)
        if not self.energized(start):
            return Trace(step, False, None, None, (start,), (step,))
        came: dict[int, tuple[int, int]] = {start: (-1, -1)}
        queue = deque((start,))
        found = start if start in source_at else -1
        while queue and found < 0:
            bus = queue.popleft()
            for br, other in self._bus_adjacency[bus]:
                sw = self._switch_of_branch.get(br)
                if (sw is not None and not self._switch_closed[sw]) or other in came:
                    continue
                came[other] = (bus, br)
                if other in source_at:
                    found = other
                    break
                queue.append(other)
        path = [found]
        crossed: list[int] = []
        while came[path[-1]][0] >= 0:
            prev, br = came[path[-1]]
            crossed.append(br)
            path.append(prev)
        path.reverse()
        crossed.reverse()
        source = self._model.sources[source_at[found]]
        steps = [step]
        steps += [
            TraceStep(_kind_of_branch(st.branch_kind[br]), st.branch_mrid[br], st.branch_name[br]) for br in crossed
        ]
        steps.append(TraceStep(ElementKind.SOURCE, source.mrid, source.name))
        feeder = int(self._bus_feeder[start])  # the feeding feeder (a back-fed section: the one feeding it now)
        if feeder < 0:
            feeder = int(self._source_feeder[source_at[found]])
        return Trace(
            element=step,
            energized=True,
            source_mrid=source.mrid,
            feeder_mrid=self._model.feeders[feeder].mrid if feeder >= 0 else None,
            bus_path=tuple(path),
            steps=tuple(steps),
        )
