"""A pandapower network seen as a reconfiguration problem: buses, branches (fixed or switchable), sources, loads.

Bus-bus switches that are not reconfiguration candidates are closed zero-impedance joints, so their buses are merged
(union-find) before the optimisation; open ones are dropped. Candidates (the branches the optimiser may open or
close):

- bus-bus switches that can break load (pandapower ``type`` CB/LBS/LS or unset; a ``DS`` disconnector cannot), except
  substation switches (both ends in the substation region: incomers, bus couplers, feeder breakers);
- lines carrying a line switch that can break load;
- when the net has no switch at all (the classical test cases: ``case33bw`` models its five ties as out-of-service
  lines and assumes every branch has a sectionaliser), every line (:attr:`SwitchableLines.AUTO`).

A switchable branch that is a bridge of the network with every candidate closed (a tee to one transformer, a spur)
must stay closed for its load to be supplied, so it is fixed before the optimisation.

The substation region is what an ext_grid reaches through closed bus-bus switches and transformers without crossing
a line; a feeder is a part of the network outside it, its head the branch that joins it to the region.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandapower as pp

from dms.reconfig.errors import MeshedNetworkError, ReconfigError

__all__ = ["Actuator", "ActuatorKind", "Branch", "BranchKind", "ReconfigProblem", "SwitchableLines", "build_problem"]

# pandapower switch types that cannot interrupt load current: never a reconfiguration candidate.
_NOT_LOAD_BREAKING = frozenset({"DS"})
# A transformer whose rated ratio is within this of 1 is a regulator: it does not separate sources.
_REGULATOR_RATIO_TOLERANCE = 0.1


class SwitchableLines(StrEnum):
    AUTO = "auto"  # ALL when the net has no switch at all (classical test cases), else SWITCHED
    ALL = "all"  # every line is a candidate (each branch has a sectionaliser)
    SWITCHED = "switched"  # only lines carrying a load-breaking line switch


class BranchKind(StrEnum):
    LINE = "line"
    TRANSFORMER = "transformer"
    SWITCH = "switch"


class ActuatorKind(StrEnum):
    BUS_SWITCH = "bus_switch"  # net.switch rows with et="b"
    LINE_SWITCH = "line_switch"  # net.switch rows with et="l" on the line
    LINE_SERVICE = "line_service"  # net.line.in_service (a test case's tie line without switch)


@dataclass(frozen=True, slots=True)
class Actuator:
    """How a switchable branch is opened or closed in the pandapower net."""

    kind: ActuatorKind
    switch_rows: tuple[int, ...] = ()  # net.switch indices (opening opens the first, closing closes all)
    line_row: int = -1


@dataclass(frozen=True, slots=True)
class Branch:
    """One branch between two (merged) buses. Per unit on ``net.sn_mva``; ``tap_sq`` is the squared off-nominal
    ratio of a transformer (|V_to|^2 ~ |V_from|^2 / tap_sq - drop)."""

    name: str
    kind: BranchKind
    row: int  # index in net.line / net.trafo / net.switch (-1 for a three-winding star leg)
    from_bus: int
    to_bus: int
    r_pu: float
    x_pu: float
    tap_sq: float
    rating_mva: float  # NaN when unknown
    switchable: bool
    closed: bool  # in the present configuration
    actuator: Actuator | None


@dataclass(frozen=True, slots=True, eq=False)
class ReconfigProblem:
    """Buses are merged-bus indices 0..n-1; ``bus_of`` maps every in-service pandapower bus to one of them."""

    net: pp.pandapowerNet
    name: str
    bus_count: int
    bus_names: tuple[str, ...]
    bus_of: dict[int, int]
    source_buses: tuple[int, ...]  # merged buses with an ext_grid
    source_vm_pu: tuple[float, ...]
    substation: frozenset[int]  # merged buses of the substation region
    load_p: np.ndarray  # per merged bus, net demand (loads - generation), per unit
    load_q: np.ndarray
    branches: tuple[Branch, ...]
    unsupplied_buses: tuple[int, ...]  # merged buses no configuration can reach (left out of the radiality)
    notes: tuple[str, ...]
    base_mva: float
    bus_vn_kv: np.ndarray
    by_name: dict[str, int] = field(default_factory=dict)

    @property
    def candidates(self) -> tuple[int, ...]:
        return tuple(i for i, b in enumerate(self.branches) if b.switchable)

    def open_set(self, closed: np.ndarray) -> frozenset[str]:
        """Names of the switchable branches that are open in a configuration (``closed`` per branch)."""
        return frozenset(b.name for b, c in zip(self.branches, closed, strict=True) if b.switchable and not c)

    def present_closed(self) -> np.ndarray:
        return np.array([b.closed for b in self.branches], dtype=bool)

    def closed_from_open_set(self, open_names: frozenset[str] | set[str]) -> np.ndarray:
        unknown = set(open_names) - set(self.by_name)
        if unknown:
            raise ReconfigError(f"network {self.name!r}: no switchable branch named {', '.join(sorted(unknown))}")
        closed = np.array([not b.switchable or b.closed for b in self.branches], dtype=bool)
        for i, b in enumerate(self.branches):
            if b.switchable:
                closed[i] = b.name not in open_names
        return closed


class _UnionFind:
    def __init__(self, items: list[int]) -> None:
        self.parent = {i: i for i in items}

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _is_load_breaking(sw_type: object) -> bool:
    return not (isinstance(sw_type, str) and sw_type.strip().upper() in _NOT_LOAD_BREAKING)


def _frame(net: pp.pandapowerNet, table: str):  # noqa: ANN202 - a pandas DataFrame, possibly empty
    df = net[table] if table in net else None
    if df is None or len(df) == 0:
        return None
    return df


def _in_service(df) -> np.ndarray:  # noqa: ANN001
    return df["in_service"].to_numpy(dtype=bool) if "in_service" in df else np.ones(len(df), dtype=bool)


def _trafo_tap_sq(t, vn_bus_hv: float, vn_bus_lv: float) -> float:  # noqa: ANN001 - a net.trafo row
    ratio = (float(t.vn_hv_kv) / vn_bus_hv) / (float(t.vn_lv_kv) / vn_bus_lv)
    pos, neutral, step = (float(t.get(k, math.nan)) for k in ("tap_pos", "tap_neutral", "tap_step_percent"))
    if not (math.isnan(pos) or math.isnan(neutral) or math.isnan(step)):
        factor = 1.0 + (pos - neutral) * step / 100.0
        ratio = ratio * factor if str(t.get("tap_side", "hv")) == "hv" else ratio / factor
    return ratio * ratio


def build_problem(net: pp.pandapowerNet, *, switchable_lines: SwitchableLines = SwitchableLines.AUTO,
                  name: str | None = None, held: Collection[str] = ()) -> ReconfigProblem:
    """Read ``net`` (not changed) into a :class:`ReconfigProblem`; ReconfigError names what cannot be used.
    ``held``: switch names that keep their state (tagged, or bounding a faulted or earthed section)."""
    name = name or str(net.name or "network")
    notes: list[str] = []
    base = float(net.sn_mva)
    bus_df = net.bus
    live = bus_df.index[_in_service(bus_df)].tolist()
    vn = {int(i): float(bus_df.vn_kv.at[i]) for i in live}
    bus_name = {int(i): (str(bus_df.name.at[i]) if isinstance(bus_df.name.at[i], str) and bus_df.name.at[i]
                         else f"bus {i}") for i in live}
    if _frame(net, "ext_grid") is None:
        raise ReconfigError(f"network {name!r}: no ext_grid, so no source to feed the feeders from")
    eg = net.ext_grid[_in_service(net.ext_grid)]
    if not len(eg):
        raise ReconfigError(f"network {name!r}: every ext_grid is out of service")

    sw = _frame(net, "switch")
    lines = _frame(net, "line")
    trafos = _frame(net, "trafo")
    line_switches: dict[int, list[int]] = defaultdict(list)
    if sw is not None:
        for i in sw.index[sw.et == "l"]:
            line_switches[int(sw.element.at[i])].append(int(i))
    if switchable_lines is SwitchableLines.AUTO:
        switchable_lines = SwitchableLines.ALL if sw is None else SwitchableLines.SWITCHED
        if sw is None:
            notes.append("the net has no switch: every line is taken as switchable (test-case convention)")

    # Substation region: ext_grid buses, and what closed bus-bus switches and transformers reach from them.
    adjacency: dict[int, set[int]] = defaultdict(set)
    if sw is not None:
        for i in sw.index[(sw.et == "b") & sw.closed.astype(bool)]:
            a, b = int(sw.bus.at[i]), int(sw.element.at[i])
            adjacency[a].add(b)
            adjacency[b].add(a)
    if trafos is not None:
        for i in trafos.index[_in_service(trafos)]:
            adjacency[int(trafos.hv_bus.at[i])].add(int(trafos.lv_bus.at[i]))
    station = set(int(b) for b in eg.bus)
    stack = list(station)
    while stack:
        for nb in adjacency[stack.pop()]:
            if nb in vn and nb not in station:
                station.add(nb)
                stack.append(nb)

    # Merge the buses of closed fixed bus-bus switches.
    uf = _UnionFind(list(vn))
    bus_switch_candidates: list[int] = []
    if sw is not None:
        for i in sw.index[sw.et == "b"]:
            a, b = int(sw.bus.at[i]), int(sw.element.at[i])
            if a not in vn or b not in vn:
                continue
            candidate = _is_load_breaking(sw.type.at[i] if "type" in sw else None) and not (
                a in station and b in station) and str(sw.name.at[i]) not in held
            if candidate and a != b:
                bus_switch_candidates.append(int(i))
            elif bool(sw.closed.at[i]):
                uf.union(a, b)
    roots = sorted({uf.find(b) for b in vn})
    merged = {r: k for k, r in enumerate(roots)}
    bus_of = {b: merged[uf.find(b)] for b in vn}
    n = len(roots)
    names = [""] * n
    vn_arr = np.zeros(n)
    for b in sorted(vn):
        k = bus_of[b]
        if not names[k]:
            names[k], vn_arr[k] = bus_name[b], vn[b]

    raw: list[Branch] = []
    if lines is not None:
        for i in lines.index:
            a, b = int(lines.from_bus.at[i]), int(lines.to_bus.at[i])
            if a not in vn or b not in vn:
                continue
            sws = line_switches.get(int(i), [])
            breaking = [s for s in sws if _is_load_breaking(sw.type.at[s] if "type" in sw else None)]
            in_service = bool(lines.in_service.at[i])
            closed = in_service and all(bool(sw.closed.at[s]) for s in sws)
            if switchable_lines is SwitchableLines.ALL:
                act = (Actuator(ActuatorKind.LINE_SWITCH, tuple(breaking or sws)) if sws and in_service
                       else Actuator(ActuatorKind.LINE_SERVICE, line_row=int(i)))
                switchable = True
            elif breaking and in_service:
                act, switchable = Actuator(ActuatorKind.LINE_SWITCH, tuple(breaking)), True
            else:
                act, switchable = None, False
                if not closed:
                    continue  # out of service or held open by a disconnector: not part of any configuration
            zb = vn[a] ** 2 / base
            par = float(lines.parallel.at[i]) if "parallel" in lines else 1.0
            length = float(lines.length_km.at[i])
            r = float(lines.r_ohm_per_km.at[i]) * length / par / zb
            x = float(lines.x_ohm_per_km.at[i]) * length / par / zb
            rating = float(lines.max_i_ka.at[i]) * par * vn[a] * math.sqrt(3) * float(lines.df.at[i]
                                                                                    if "df" in lines else 1.0)
            label = str(lines.name.at[i]) if isinstance(lines.name.at[i], str) and lines.name.at[i] else f"line {i}"
            raw.append(Branch(label, BranchKind.LINE, int(i), a, b, r, x, 1.0, rating, switchable, closed, act))
    for i in bus_switch_candidates:
        a, b = int(sw.bus.at[i]), int(sw.element.at[i])
        in_ka = float(sw.in_ka.at[i]) if "in_ka" in sw else math.nan
        label = str(sw.name.at[i]) if isinstance(sw.name.at[i], str) and sw.name.at[i] else f"switch {i}"
        raw.append(Branch(label, BranchKind.SWITCH, int(i), a, b, 0.0, 0.0, 1.0, in_ka * vn[a] * math.sqrt(3), True,
                          bool(sw.closed.at[i]), Actuator(ActuatorKind.BUS_SWITCH, (int(i),))))
    trafo_open: set[int] = set()
    if sw is not None:
        trafo_open = {int(sw.element.at[i]) for i in sw.index[(sw.et == "t") & ~sw.closed.astype(bool)]}
    if trafos is not None:
        for i in trafos.index[_in_service(trafos)]:
            t = trafos.loc[i]
            a, b = int(t.hv_bus), int(t.lv_bus)
            if a not in vn or b not in vn or int(i) in trafo_open:
                continue
            scale = base / float(t.sn_mva) / float(t.get("parallel", 1) or 1)
            z, r = float(t.vk_percent) / 100 * scale, float(t.vkr_percent) / 100 * scale
            label = str(t["name"]) if isinstance(t["name"], str) and t["name"] else f"trafo {i}"
            raw.append(Branch(label, BranchKind.TRANSFORMER, int(i), a, b, r, math.sqrt(max(z * z - r * r, 0.0)),
                              _trafo_tap_sq(t, vn[a], vn[b]), float(t.sn_mva), False, True, None))
    t3 = _frame(net, "trafo3w")
    if t3 is not None:
        for i in t3.index[_in_service(t3)]:
            t = t3.loc[i]
            ends = [(int(t.hv_bus), "hv"), (int(t.mv_bus), "mv"), (int(t.lv_bus), "lv")]
            if any(bus not in vn for bus, _ in ends):
                continue
            star = len(names)  # a star point of its own: three fixed legs
            names.append(f"{t['name'] or f'trafo3w {i}'}-star")
            vn_arr = np.append(vn_arr, vn[ends[0][0]])
            n += 1
            vk = {k: float(t[f"vk_{k}_percent"]) for k in ("hv", "mv", "lv")}
            vkr = {k: float(t[f"vkr_{k}_percent"]) for k in ("hv", "mv", "lv")}
            legs = {"hv": (vk["hv"] + vk["lv"] - vk["mv"]) / 2, "mv": (vk["hv"] + vk["mv"] - vk["lv"]) / 2,
                    "lv": (vk["mv"] + vk["lv"] - vk["hv"]) / 2}
            legs_r = {"hv": (vkr["hv"] + vkr["lv"] - vkr["mv"]) / 2, "mv": (vkr["hv"] + vkr["mv"] - vkr["lv"]) / 2,
                      "lv": (vkr["mv"] + vkr["lv"] - vkr["hv"]) / 2}
            for bus, side in ends:
                scale = base / float(t.sn_hv_mva)
                z, r = max(legs[side], 0.01) / 100 * scale, max(legs_r[side], 0.0) / 100 * scale
                ratio = (float(t[f"vn_{side}_kv"]) / vn[bus]) / (float(t.vn_hv_kv) / vn[ends[0][0]])
                tap_sq = 1.0 / (ratio * ratio) if side != "hv" else 1.0
                raw.append(Branch(f"{t['name'] or f'trafo3w {i}'}-{side}", BranchKind.TRANSFORMER, -1,
                                  -1 - star if side == "hv" else bus, bus if side == "hv" else -1 - star,
                                  r, math.sqrt(max(z * z - r * r, 0.0)), tap_sq, float(t[f"sn_{side}_mva"]), False,
                                  True, None))

    def merged_bus(b: int) -> int:
        return -1 - b if b < 0 else bus_of[b]

    branches = []
    for br in raw:
        a, b = merged_bus(br.from_bus), merged_bus(br.to_bus)
        if a == b:
            if br.switchable:
                notes.append(f"{br.name}: both ends are one bus once fixed switches are merged; left as it is")
            continue
        branches.append(Branch(br.name, br.kind, br.row, a, b, br.r_pu, br.x_pu, br.tap_sq, br.rating_mva,
                               br.switchable, br.closed, br.actuator))

    # Net demand per merged bus (loads - static generators), per unit.
    load_p, load_q = np.zeros(n), np.zeros(n)
    for table, sign in (("load", 1.0), ("sgen", -1.0), ("gen", -1.0), ("shunt", 1.0)):
        df = _frame(net, table)
        if df is None:
            continue
        df = df[_in_service(df)]
        scaling = df["scaling"].to_numpy(dtype=float) if "scaling" in df else np.ones(len(df))
        p = df["p_mw"].to_numpy(dtype=float) * scaling if "p_mw" in df else np.zeros(len(df))
        q = df["q_mvar"].to_numpy(dtype=float) * scaling if "q_mvar" in df else np.zeros(len(df))
        if table == "shunt":
            steps = df["step"].to_numpy(dtype=float) if "step" in df else np.ones(len(df))
            p, q = p * steps, q * steps
        for bus, pi, qi in zip(df.bus.to_numpy(dtype=int), np.nan_to_num(p), np.nan_to_num(q), strict=True):
            if bus in bus_of:
                load_p[bus_of[bus]] += sign * pi / base
                load_q[bus_of[bus]] += sign * qi / base

    sources = sorted({bus_of[int(b)] for b in eg.bus if int(b) in bus_of})
    vm = {bus_of[int(b)]: float(v) for b, v in zip(eg.bus, eg.vm_pu, strict=True) if int(b) in bus_of}
    substation = frozenset(bus_of[b] for b in station if b in bus_of)
    branches, unsupplied = _fix_bridges(branches, n, sources, notes)
    if any(abs(load_p[b]) + abs(load_q[b]) > 0 for b in unsupplied):
        notes.append(f"{sum(1 for b in unsupplied if load_p[b] or load_q[b])} bus(es) with load cannot be "
                     "supplied in any configuration; left out")
    _refuse_fixed_loops(name, branches, n, sources, set(unsupplied))
    by_name: dict[str, int] = {}
    for k, br in enumerate(branches):
        if br.switchable:
            if br.name in by_name:
                raise ReconfigError(f"network {name!r}: two switchable branches are both named {br.name!r}")
            by_name[br.name] = k
    return ReconfigProblem(net, name, n, tuple(names), bus_of, tuple(sources), tuple(vm[s] for s in sources),
                           substation, load_p, load_q, tuple(branches), unsupplied, tuple(notes), base, vn_arr,
                           by_name)


def _fix_bridges(branches: list[Branch], n: int, sources: list[int], notes: list[str]
                 ) -> tuple[list[Branch], tuple[int, ...]]:
    """Switchable bridges (with every candidate closed and the sources joined by a virtual root) must stay closed;
    buses no source reaches are reported. Returns the branches with bridges fixed, and the unreachable buses."""
    import networkx as nx  # only needed here

    g = nx.MultiGraph()
    g.add_nodes_from(range(n + 1))  # n: the virtual root joining every source
    for k, br in enumerate(branches):
        if br.switchable or br.closed:
            g.add_edge(br.from_bus, br.to_bus, key=k)
    for s in sources:
        g.add_edge(n, s, key=-1 - s)
    reached = nx.node_connected_component(g, n)
    unsupplied = tuple(sorted(set(range(n)) - reached))
    # Bridges of a multigraph: an edge whose endpoints are joined by a single edge and that is a bridge of the
    # simple graph.
    simple = nx.Graph(g)
    multiplicity: dict[frozenset[int], int] = defaultdict(int)
    for a, b, _k in g.edges(keys=True):
        multiplicity[frozenset((a, b))] += 1
    bridges = {frozenset(e) for e in nx.bridges(simple) if multiplicity[frozenset(e)] == 1}
    out = []
    fixed = 0
    for br in branches:
        if br.switchable and br.closed and frozenset((br.from_bus, br.to_bus)) in bridges:
            out.append(Branch(br.name, br.kind, br.row, br.from_bus, br.to_bus, br.r_pu, br.x_pu, br.tap_sq,
                              br.rating_mva, False, br.closed, br.actuator))
            fixed += 1
        else:
            out.append(br)
    if fixed:
        notes.append(f"{fixed} closed switchable branch(es) on no loop kept closed")
    return out, unsupplied


def _refuse_fixed_loops(name: str, branches: list[Branch], n: int, sources: list[int], dead: set[int]) -> None:
    """Closed branches nobody may open must not close a loop (or join two sources) among themselves."""
    uf = _UnionFind(list(range(n + 1)))
    for s in sources:
        uf.union(n, s)
    for br in branches:
        if br.switchable or not br.closed or br.from_bus in dead or br.to_bus in dead:
            continue
        if uf.find(br.from_bus) == uf.find(br.to_bus):
            raise MeshedNetworkError(f"network {name!r}: {br.kind.value} {br.name!r} closes a loop (or joins two "
                                     "sources) with branches that cannot be opened: no configuration is radial")
        uf.union(br.from_bus, br.to_bus)
