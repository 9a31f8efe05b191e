"""Bus graph of a network model for FLISR: energisation, the source tree and switch-bounded regions.

Lines and transformers always connect their buses; a switch connects its two buses only while closed. Everything
is small (a few hundred buses), so plain breadth-first searches over adjacency lists are fast enough (< 1 ms) and
keep the planner independent of the live topology service.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from dms.network_state import UnknownNetworkElementError
from models.network import NetworkModel, SwitchKind

NO_SWITCH = -1


@dataclass(frozen=True, slots=True)
class SourceTree:
    """Breadth-first tree from the sources: for each bus its depth (-1: dead), parent bus and the switch between."""

    depth: np.ndarray
    parent_bus: np.ndarray
    parent_switch: np.ndarray  # NO_SWITCH when the parent edge is a line or a transformer

    def energised(self, bus: int) -> bool:
        return bool(self.depth[bus] >= 0)

    def path_switches(self, bus: int) -> list[int]:
        """Switches from ``bus`` up to its source, nearest first."""
        out = []
        while self.depth[bus] > 0:
            sw = int(self.parent_switch[bus])
            if sw != NO_SWITCH:
                out.append(sw)
            bus = int(self.parent_bus[bus])
        return out


@dataclass(frozen=True, slots=True)
class Region:
    buses: frozenset[int]
    edge_switches: tuple[int, ...]  # closed stop switches with one end inside
    open_switches: tuple[int, ...]  # open switches with one end inside (ties, normally-open points)


class BusGraph:
    def __init__(self, model: NetworkModel) -> None:
        self.model = model
        n = len(model.buses)
        self.fixed: list[list[int]] = [[] for _ in range(n)]
        self.switched: list[list[tuple[int, int]]] = [[] for _ in range(n)]  # (neighbour, switch index)
        for ln in model.lines:
            self._join(ln.from_bus, ln.to_bus)
        for tr in model.transformers:
            buses = tr.buses
            for b in buses[1:]:
                self._join(buses[0], b)
        for i, sw in enumerate(model.switches):
            if sw.from_bus != sw.to_bus:
                self.switched[sw.from_bus].append((sw.to_bus, i))
                self.switched[sw.to_bus].append((sw.from_bus, i))
        self.source_buses = tuple(dict.fromkeys(s.bus for s in model.sources))
        self.switch_ends = np.array([(s.from_bus, s.to_bus) for s in model.switches], dtype=np.int64).reshape(-1, 2)
        self.load_bus = np.array([ld.bus for ld in model.loads], dtype=np.int64)
        self.der_bus = np.array([d.bus for d in model.ders], dtype=np.int64)

    def _join(self, a: int, b: int) -> None:
        if a != b:
            self.fixed[a].append(b)
            self.fixed[b].append(a)

    def source_tree(self, closed: np.ndarray) -> SourceTree:
        n = len(self.fixed)
        depth = np.full(n, -1, dtype=np.int64)
        parent = np.full(n, -1, dtype=np.int64)
        parent_sw = np.full(n, NO_SWITCH, dtype=np.int64)
        queue: deque[int] = deque()
        for b in self.source_buses:
            depth[b] = 0
            queue.append(b)
        while queue:
            b = queue.popleft()
            d = depth[b] + 1
            for nb in self.fixed[b]:
                if depth[nb] < 0:
                    depth[nb], parent[nb] = d, b
                    queue.append(nb)
            for nb, sw in self.switched[b]:
                if closed[sw] and depth[nb] < 0:
                    depth[nb], parent[nb], parent_sw[nb] = d, b, sw
                    queue.append(nb)
        return SourceTree(depth, parent, parent_sw)

    def energised(self, closed: np.ndarray) -> np.ndarray:
        return self.source_tree(closed).depth >= 0

    def region(self, start: Iterable[int], closed: np.ndarray, *, stop: Collection[int] = (),
               within: Collection[int] | None = None, exclude: Collection[int] = ()) -> Region:
        """Buses reached from ``start`` over lines, transformers and closed switches not in ``stop``; ``within``
        limits the search to a bus set, ``exclude`` keeps it out of one."""
        seen: set[int] = set()
        queue = deque(b for b in start if b not in exclude)
        seen.update(queue)
        edges: dict[int, None] = {}
        opens: dict[int, None] = {}
        while queue:
            b = queue.popleft()
            for nb in self.fixed[b]:
                if nb not in seen and nb not in exclude and (within is None or nb in within):
                    seen.add(nb)
                    queue.append(nb)
            for nb, sw in self.switched[b]:
                if not closed[sw]:
                    opens[sw] = None
                elif sw in stop:
                    edges[sw] = None
                elif nb not in seen and nb not in exclude and (within is None or nb in within):
                    seen.add(nb)
                    queue.append(nb)
        # a stop switch with both ends inside (reached round a loop) bounds nothing
        edge = tuple(sw for sw in edges if not (int(self.switch_ends[sw, 0]) in seen
                                                 and int(self.switch_ends[sw, 1]) in seen))
        return Region(frozenset(seen), edge, tuple(opens))

    def components(self, buses: Collection[int], closed: np.ndarray) -> list[frozenset[int]]:
        """Connected parts of ``buses`` over lines, transformers and closed switches."""
        left = set(buses)
        out = []
        while left:
            b = min(left)
            part = self.region((b,), closed, within=left).buses
            out.append(part)
            left -= part
        return out


def operable_switches(model: NetworkModel, controllable: Collection[str] | None) -> frozenset[int]:
    """Indices of the switches FLISR may operate: the named ones, or every switch but fuses when None (a fuse is
    not a switching device: name it explicitly to let a crew open it by pulling the links)."""
    if controllable is None:
        return frozenset(i for i, s in enumerate(model.switches) if s.kind is not SwitchKind.FUSE)
    index = {s.name: i for i, s in enumerate(model.switches)} | {s.mrid: i for i, s in enumerate(model.switches)}
    unknown = sorted(str(n) for n in controllable if n not in index)
    if unknown:
        raise UnknownNetworkElementError(
            f"network {model.name!r} has no switch named {', '.join(repr(n) for n in unknown)} (controllable list)")
    return frozenset(index[n] for n in controllable)
