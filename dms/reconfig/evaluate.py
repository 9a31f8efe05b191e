"""Exact AC evaluation of a configuration (pandapower Newton-Raphson) and the radial-tree helpers around it."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np
import pandapower as pp

from dms.reconfig.errors import ReconfigError
from dms.reconfig.problem import ActuatorKind, Branch, BranchKind, ReconfigProblem

__all__ = ["AcEvaluator", "FeederLoading", "Operating", "Tree"]

ROOT = -1  # the virtual root joining every source


@dataclass(frozen=True, slots=True)
class FeederLoading:
    head: str  # the branch joining the feeder to the substation
    p_mw: float
    q_mvar: float
    s_mva: float
    rating_mva: float  # NaN when the head has no rating
    loading_pct: float  # NaN when the head has no rating

    @property
    def measure(self) -> float:
        """What ``balance`` compares: loading in % when rated, else MVA."""
        return self.loading_pct if math.isfinite(self.loading_pct) else self.s_mva


@dataclass(frozen=True, slots=True)
class Operating:
    """One configuration solved by the AC power flow."""

    open_set: frozenset[str]
    converged: bool
    losses_mw: float
    v_min_pu: float
    v_max_pu: float
    max_loading_pct: float  # of rated lines and transformers
    max_loading_element: str
    unsupplied_mw: float
    feeders: tuple[FeederLoading, ...]
    violations: tuple[str, ...]  # against the limits, judged beside the present configuration

    @property
    def feasible(self) -> bool:
        return self.converged and not self.violations

    @property
    def max_feeder_measure(self) -> float:
        return max((f.measure for f in self.feeders), default=0.0)


class Tree:
    """A radial configuration as parent pointers from the virtual root (merged buses)."""

    def __init__(self, problem: ReconfigProblem, closed: np.ndarray) -> None:
        self.problem = problem
        adj: dict[int, list[tuple[int, int]]] = defaultdict(list)
        dead = set(problem.unsupplied_buses)
        for k, br in enumerate(problem.branches):
            if closed[k] and br.from_bus not in dead and br.to_bus not in dead:
                adj[br.from_bus].append((br.to_bus, k))
                adj[br.to_bus].append((br.from_bus, k))
        self.parent: dict[int, tuple[int, int]] = {}  # bus -> (parent bus, branch index or -1 for a root edge)
        self.depth: dict[int, int] = {ROOT: 0}
        self.source_of: dict[int, int] = {}
        self.looped = False
        queue: deque[int] = deque()
        for s in problem.source_buses:
            self.parent[s] = (ROOT, -1)
            self.depth[s] = 1
            self.source_of[s] = s
            queue.append(s)
        while queue:
            u = queue.popleft()
            for v, k in adj[u]:
                if v == self.parent[u][0] and k == self.parent[u][1]:
                    continue
                if v in self.depth:
                    self.looped = True
                    continue
                self.parent[v] = (u, k)
                self.depth[v] = self.depth[u] + 1
                self.source_of[v] = self.source_of[u]
                queue.append(v)

    def path(self, a: int, b: int) -> list[int]:
        """Branches on the tree path between two buses (root edges, -1, left out). Empty if one is not supplied."""
        if a not in self.depth or b not in self.depth:
            return []
        out: list[int] = []
        while a != b:
            if self.depth[a] >= self.depth[b]:
                a, k = self.parent[a]
            else:
                b, k = self.parent[b]
            if k >= 0:
                out.append(k)
        return out

    def below(self, branch: int) -> set[int]:
        """Buses cut off when ``branch`` (a tree branch) opens."""
        br = self.problem.branches[branch]
        child = br.to_bus if self.parent.get(br.to_bus, (None, None))[1] == branch else br.from_bus
        children: dict[int, list[int]] = defaultdict(list)
        for v, (u, _k) in self.parent.items():
            children[u].append(v)
        out, stack = {child}, [child]
        while stack:
            for v in children[stack.pop()]:
                out.add(v)
                stack.append(v)
        return out


class AcEvaluator:
    """Sets configurations on the problem's pandapower net (in place; :meth:`restore` puts the present one back) and
    solves them. Limits are judged beside the present configuration: a proposal must not add a violation."""

    def __init__(self, problem: ReconfigProblem, *, v_low_pu: float = 0.95, v_high_pu: float = 1.05,
                 loading_limit_pct: float = 100.0, min_check_kv: float = 1.0) -> None:
        self.problem = problem
        self.net = problem.net
        self.v_low_pu, self.v_high_pu = v_low_pu, v_high_pu
        self.loading_limit_pct = loading_limit_pct
        self.evaluations = 0
        self.solve_s = 0.0
        net = self.net
        self._saved_switch = net.switch.closed.copy() if len(net.switch) else None
        self._saved_line = net.line.in_service.copy() if len(net.line) else None
        self._check_bus = (net.bus.vn_kv.to_numpy(dtype=float) >= min_check_kv)
        self._present_loading: dict[str, float] = {}
        self._present_v = (math.inf, -math.inf)
        self.present = self.evaluate(problem.present_closed(), judge=False)
        if self.present.converged:
            self._present_v = (self.present.v_min_pu, self.present.v_max_pu)

    # ------------------------------------------------------------------------------------------ configuration
    def restore(self) -> None:
        if self._saved_switch is not None:
            self.net.switch["closed"] = self._saved_switch
        if self._saved_line is not None:
            self.net.line["in_service"] = self._saved_line

    def apply(self, closed: np.ndarray) -> None:
        net = self.net
        for k, br in enumerate(self.problem.branches):
            if not br.switchable or br.actuator is None:
                continue
            act, want = br.actuator, bool(closed[k])
            if act.kind is ActuatorKind.LINE_SERVICE:
                net.line.at[act.line_row, "in_service"] = want
            elif want:
                for s in act.switch_rows:
                    net.switch.at[s, "closed"] = True
            else:
                net.switch.at[act.switch_rows[0], "closed"] = False

    # ------------------------------------------------------------------------------------------ solve
    def evaluate(self, closed: np.ndarray, *, judge: bool = True) -> Operating:
        self.apply(closed)
        open_set = self.problem.open_set(closed)
        started = time.perf_counter()
        self.evaluations += 1
        try:
            try:
                pp.runpp(self.net, algorithm="nr", max_iteration=30, tolerance_mva=1e-8, numba=False)
            except pp.LoadflowNotConverged:  # a flat start is slower but sometimes converges where DC did not
                pp.runpp(self.net, algorithm="nr", init="flat", max_iteration=60, tolerance_mva=1e-8, numba=False)
        except pp.LoadflowNotConverged:
            self.solve_s += time.perf_counter() - started
            return Operating(open_set, False, math.nan, math.nan, math.nan, math.nan, "", math.nan, (),
                             ("power flow did not converge",))
        except Exception as exc:  # pandapower raises plain errors for malformed nets
            raise ReconfigError(f"network {self.problem.name!r}: power flow failed: {exc}") from exc
        self.solve_s += time.perf_counter() - started
        return self._collect(closed, open_set, judge)

    def _collect(self, closed: np.ndarray, open_set: frozenset[str], judge: bool) -> Operating:
        net = self.net
        vm = net.res_bus.vm_pu.reindex(net.bus.index).to_numpy(dtype=float)
        checked = self._check_bus & np.isfinite(vm) & net.bus.in_service.to_numpy(dtype=bool)
        v_min = float(vm[checked].min()) if checked.any() else math.nan
        v_max = float(vm[checked].max()) if checked.any() else math.nan
        losses = 0.0
        for table in ("res_line", "res_trafo", "res_trafo3w"):
            if table in net and len(net[table]):
                losses += float(np.nansum(net[table].pl_mw.to_numpy(dtype=float)))
        unsupplied = 0.0
        if len(net.load):
            bus_vm = net.res_bus.vm_pu.reindex(net.load.bus.to_numpy()).to_numpy(dtype=float)
            on = net.load.in_service.to_numpy(dtype=bool)
            p = net.load.p_mw.to_numpy(dtype=float) * net.load.scaling.to_numpy(dtype=float)
            unsupplied = float(p[on & ~np.isfinite(bus_vm)].sum())
        loading: dict[str, float] = {}
        for table, res in (("line", "res_line"), ("trafo", "res_trafo")):
            if table in net and len(net[table]) and res in net and len(net[res]):
                lp = net[res].loading_percent.reindex(net[table].index).to_numpy(dtype=float)
                names = net[table].name.to_numpy()
                for idx, name, value in zip(net[table].index, names, lp, strict=True):
                    if math.isfinite(value):
                        loading[name if isinstance(name, str) and name else f"{table} {idx}"] = float(value)
        worst = max(loading.items(), key=lambda kv: kv[1], default=("", 0.0))
        feeders = self._feeders(closed)
        violations: list[str] = []
        if judge:
            if unsupplied > 1e-6:
                violations.append(f"{unsupplied:.3f} MW of load unsupplied")
            low = min(self.v_low_pu, self._present_v[0]) - 1e-3
            high = max(self.v_high_pu, self._present_v[1]) + 1e-3
            if math.isfinite(v_min) and v_min < low:
                violations.append(f"undervoltage {v_min:.4f} pu (limit {low:.4f})")
            if math.isfinite(v_max) and v_max > high:
                violations.append(f"overvoltage {v_max:.4f} pu (limit {high:.4f})")
            for name, pct in loading.items():
                # an element already above its limit may not get worse by more than 1 % (dms.flow_check's rule)
                allowed = max(self.loading_limit_pct, self._present_loading.get(name, 0.0) * 1.01)
                if pct > allowed:
                    violations.append(f"{name} loaded {pct:.0f} % (limit {allowed:.0f} %)")
        else:
            self._present_loading = loading
        return Operating(open_set, True, losses, v_min, v_max, float(worst[1]), worst[0], unsupplied, feeders,
                         tuple(violations))

    def branch_flow_loss(self) -> np.ndarray:
        """AC losses (MW) of each problem branch in the last solved state."""
        net = self.net
        out = np.zeros(len(self.problem.branches))
        for k, br in enumerate(self.problem.branches):
            if br.kind is BranchKind.LINE and br.row in net.res_line.index:
                out[k] = float(np.nan_to_num(net.res_line.pl_mw.at[br.row]))
            elif br.kind is BranchKind.TRANSFORMER and br.row >= 0 and br.row in net.res_trafo.index:
                out[k] = float(np.nan_to_num(net.res_trafo.pl_mw.at[br.row]))
        return out

    def _feeders(self, closed: np.ndarray) -> tuple[FeederLoading, ...]:
        """Per feeder (component outside the substation region): demand plus the losses inside, through its head."""
        prob, net = self.problem, self.net
        station = prob.substation
        adj: dict[int, list[int]] = defaultdict(list)
        heads: dict[int, list[int]] = defaultdict(list)
        for k, br in enumerate(prob.branches):
            if not closed[k]:
                continue
            a, b = br.from_bus, br.to_bus
            if a in station and b in station:
                continue
            if a in station or b in station:
                heads[b if a in station else a].append(k)
            else:
                adj[a].append(b)
                adj[b].append(a)
        pl = np.zeros(len(prob.branches))
        ql = np.zeros(len(prob.branches))
        for k, br in enumerate(prob.branches):
            table = {BranchKind.LINE: "res_line", BranchKind.TRANSFORMER: "res_trafo"}.get(br.kind)
            if table and br.row >= 0 and br.row in net[table].index and closed[k]:
                pl[k] = float(np.nan_to_num(net[table].pl_mw.at[br.row]))
                ql[k] = float(np.nan_to_num(net[table].ql_mvar.at[br.row]))
        bus_branches: dict[int, list[int]] = defaultdict(list)
        for k, br in enumerate(prob.branches):
            if closed[k]:
                bus_branches[br.from_bus].append(k)
                bus_branches[br.to_bus].append(k)
        seen: set[int] = set()
        out = []
        for start in sorted(heads):
            if start in seen:
                continue
            comp, stack = {start}, [start]
            while stack:
                for v in adj[stack.pop()]:
                    if v not in comp:
                        comp.add(v)
                        stack.append(v)
            seen |= comp
            head_ks = sorted({k for bus in comp for k in heads.get(bus, [])})
            inner = {k for bus in comp for k in bus_branches[bus]}
            p = float(prob.load_p[list(comp)].sum()) * prob.base_mva + float(pl[list(inner)].sum())
            q = float(prob.load_q[list(comp)].sum()) * prob.base_mva + float(ql[list(inner)].sum())
            s = math.hypot(p, q)
            head = prob.branches[head_ks[0]]
            rating = _rating(head) if len(head_ks) == 1 else math.nan
            out.append(FeederLoading(" + ".join(prob.branches[k].name for k in head_ks), p, q, s, rating,
                                     100.0 * s / rating if math.isfinite(rating) else math.nan))
        return tuple(out)


def _rating(br: Branch) -> float:
    return br.rating_mva if math.isfinite(br.rating_mva) and br.rating_mva > 0 else math.nan
