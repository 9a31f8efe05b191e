"""Mixed-integer reconfiguration on the linearised DistFlow (scipy.optimize.milp, HiGHS).

Per branch e (from i to j): real and reactive flows P, Q (per unit, losses left out of the balance), a binary z
(closed) for a switchable branch, and a fictitious commodity F. Constraints:

- power balance at every bus: what flows in minus what flows out equals the bus's net demand;
- |P|, |Q| <= M z: an open branch carries nothing;
- radiality by single-commodity flow: a virtual root joined to every source supplies one unit to every bus through
  closed branches (|F| <= N z), and the number of closed branches is buses - sources, so the closed branches with
  the root edges form a spanning tree: every bus supplied, no loop, no path between two sources;
- voltages (squared, per unit): v_j = v_i / tap^2 - 2 (r P + x Q) on a closed branch (big-M relaxed when open),
  v inside the band (never tighter than what the present configuration already has);
- ratings: P cos(t) + Q sin(t) <= S_max for eight directions t (an octagon inside the circle);
- objective ``losses``: sum r (P^2 + Q^2), the squares by tangent cuts (outer approximation), refined by adding the
  tangents at the solution and solving again until the cut error is below a tolerance (successive linearisation);
- objective ``balance``: the largest feeder-head loading T (octagon projections of the head flow over its rating)
  plus a small weight on losses to break ties.

The MILP optimum is exact for the linearised model; the AC power flow polish (``dms.reconfig.search``) corrects the
difference to the real network (losses in the balance, V != 1 in the loss term).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from dms.reconfig.errors import InfeasibleReconfigurationError, MeshedNetworkError, ReconfigError
from dms.reconfig.problem import ReconfigProblem

__all__ = ["MilpResult", "Objective", "solve_milp"]

_log = logging.getLogger(__name__)
_DISP = False
_DIRECTIONS = np.linspace(0.0, 2 * math.pi, 8, endpoint=False)
_OCTAGON_INSCRIBED = math.cos(math.pi / 8)  # keeps the octagon inside the rating circle
# Initial tangent points as fractions of the total demand: most branches carry a small share of it, so the points
# are denser near zero (then refined at the solution's own flows).
_TANGENT_FRACTIONS = np.array([-1, -0.5, -0.25, -0.125, -0.0625, -0.03125, 0.0, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1])
_BALANCE_LOSS_WEIGHT = 1e-2  # per unit of losses, against 1.0 = 100 % head loading


class Objective(StrEnum):
    LOSSES = "losses"
    BALANCE = "balance"


@dataclass(frozen=True, slots=True)
class MilpResult:
    closed: np.ndarray  # per problem branch
    objective_value: float
    linear_loss_pu: float  # sum r (P^2 + Q^2) of the solution's flows
    iterations: int  # MILP solves (tangent refinements)
    solve_s: float
    voltage_constrained: bool  # False when the band had to be dropped (say so in notes)
    status: str
    ratings_constrained: bool = True  # False when the ratings had to be dropped too


class _Builder:
    """Rows of a sparse constraint matrix with their bounds."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(self.lo)
        for c, v in terms:
            self.rows.append(r)
            self.cols.append(c)
            self.vals.append(v)
        self.lo.append(lo)
        self.hi.append(hi)

    def constraint(self, n_vars: int) -> LinearConstraint:
        a = coo_matrix((self.vals, (self.rows, self.cols)), shape=(len(self.lo), n_vars)).tocsr()
        return LinearConstraint(a, np.array(self.lo), np.array(self.hi))


def solve_milp(problem: ReconfigProblem, objective: Objective, *, v_low_pu: float = 0.95, v_high_pu: float = 1.05,
               limits_pu: np.ndarray | None = None, head_ratings_pu: dict[int, float] | None = None,
               time_limit_s: float = 30.0, max_refinements: int = 8, cut_tolerance: float = 2e-3,
               fixed_open: frozenset[int] = frozenset(), mip_gap: float = 1e-4) -> MilpResult:
    """Solve the reconfiguration MILP. ``limits_pu``: apparent-power limit per branch (inf: none);
    ``head_ratings_pu``: feeder-head branch -> rating for ``balance`` (1.0 when unknown); ``fixed_open``: branch
    indices that must stay open. Voltage band and ratings first; when no configuration satisfies the linear model,
    without the band, then without the ratings too (the AC check judges what the MILP could not)."""
    # relax voltages, then ratings; an attempt that finds nothing in its share of the time counts as infeasible
    attempts = ((True, limits_pu, 0.6), (False, limits_pu, 0.5), (False, None, 1.0))
    deadline = time.perf_counter() + time_limit_s
    for n, (voltage, limits, share) in enumerate(attempts):
        last = n == len(attempts) - 1 or (limits_pu is None and not voltage)
        budget = (deadline - time.perf_counter()) * (1.0 if last else share)
        try:
            res = _solve(problem, objective, v_low_pu, v_high_pu, limits, head_ratings_pu, budget,
                         max_refinements, cut_tolerance, fixed_open, mip_gap, voltage=voltage)
            return dataclasses.replace(res, ratings_constrained=limits is not None)
        except (InfeasibleReconfigurationError, _NoSolutionInTime):
            if last:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class _NoSolutionInTime(ReconfigError):
    """The solver stopped at its time limit before finding any configuration."""


def _solve(problem: ReconfigProblem, objective: Objective, v_low: float, v_high: float,
           limits_pu: np.ndarray | None, head_ratings: dict[int, float] | None, time_limit_s: float,
           max_refinements: int, cut_tolerance: float, fixed_open: frozenset[int], mip_gap: float, *,
           voltage: bool) -> MilpResult:
    started = time.perf_counter()
    n = problem.bus_count
    dead = set(problem.unsupplied_buses)
    live_buses = [i for i in range(n) if i not in dead]
    active = [k for k, b in enumerate(problem.branches)
              if (b.switchable or b.closed) and b.from_bus not in dead and b.to_bus not in dead]
    m = len(active)
    sources = list(problem.source_buses)
    n_live = len(live_buses)
    total_p = float(np.abs(problem.load_p).sum())
    total_q = float(np.abs(problem.load_q).sum())
    big_p = 1.2 * total_p + 1e-3
    big_q = 1.2 * total_q + 1e-3
    big_v = 1.0

    # variable layout
    ip, iq, if_, iz = 0, m, 2 * m, 3 * m
    isp = 4 * m
    isq = isp + len(sources)
    isf = isq + len(sources)
    iv = isf + len(sources)
    lossy = [e for e, k in enumerate(active) if problem.branches[k].r_pu > 0]
    ilp = iv + n
    ilq = ilp + len(lossy)
    it = ilq + len(lossy)
    n_vars = it + 1

    lo = np.full(n_vars, -np.inf)
    hi = np.full(n_vars, np.inf)
    integrality = np.zeros(n_vars)
    lo[ip:ip + m], hi[ip:ip + m] = -big_p, big_p
    lo[iq:iq + m], hi[iq:iq + m] = -big_q, big_q
    lo[if_:if_ + m], hi[if_:if_ + m] = -n_live, n_live
    fixed_closed = 0
    for e, k in enumerate(active):
        br = problem.branches[k]
        if k in fixed_open:
            lo[iz + e] = hi[iz + e] = 0.0
        elif br.switchable:
            lo[iz + e], hi[iz + e] = 0.0, 1.0
            integrality[iz + e] = 1
        else:
            lo[iz + e] = hi[iz + e] = 1.0
            fixed_closed += 1
    for s in range(len(sources)):
        lo[isp + s], hi[isp + s] = -big_p, big_p
        lo[isq + s], hi[isq + s] = -big_q, big_q
        lo[isf + s], hi[isf + s] = 0.0, n_live
    v_lo, v_hi = (v_low ** 2, v_high ** 2) if voltage else (0.0, 4.0)
    lo[iv:iv + n], hi[iv:iv + n] = v_lo, v_hi
    for i in dead:
        lo[iv + i], hi[iv + i] = 0.0, 4.0
    for s, bus in enumerate(sources):
        lo[iv + bus] = hi[iv + bus] = problem.source_vm_pu[s] ** 2
    lo[ilp:it], hi[ilp:it] = 0.0, np.inf
    lo[it], hi[it] = 0.0, np.inf

    b = _Builder()
    incident: dict[int, list[tuple[int, float]]] = {i: [] for i in live_buses}
    for e, k in enumerate(active):
        br = problem.branches[k]
        incident[br.from_bus].append((e, -1.0))
        incident[br.to_bus].append((e, 1.0))
    src_index = {bus: s for s, bus in enumerate(sources)}
    for i in live_buses:
        terms_p = [(ip + e, sign) for e, sign in incident[i]]
        terms_q = [(iq + e, sign) for e, sign in incident[i]]
        terms_f = [(if_ + e, sign) for e, sign in incident[i]]
        if i in src_index:
            s = src_index[i]
            terms_p.append((isp + s, 1.0))
            terms_q.append((isq + s, 1.0))
            terms_f.append((isf + s, 1.0))
        b.add(terms_p, float(problem.load_p[i]), float(problem.load_p[i]))
        b.add(terms_q, float(problem.load_q[i]), float(problem.load_q[i]))
        b.add(terms_f, 1.0, 1.0)
    switchable = [e for e, k in enumerate(active) if problem.branches[k].switchable]
    need = n_live - len(sources) - fixed_closed
    if need < 0 or need > len(switchable):
        raise MeshedNetworkError(
            f"network {problem.name!r}: {fixed_closed} fixed branches and {len(switchable)} switchable ones cannot "
            f"form a radial network of {n_live} buses fed from {len(sources)} source(s) (a loop with no switch?)")
    b.add([(iz + e, 1.0) for e in switchable], need, need)
    for e, k in enumerate(active):
        br = problem.branches[k]
        if not br.switchable:
            continue
        for base_col, big in ((ip, big_p), (iq, big_q), (if_, float(n_live))):
            b.add([(base_col + e, 1.0), (iz + e, -big)], -np.inf, 0.0)
            b.add([(base_col + e, -1.0), (iz + e, -big)], -np.inf, 0.0)
    for e, k in enumerate(active):
        br = problem.branches[k]
        terms = [(iv + br.from_bus, 1.0 / br.tap_sq), (iv + br.to_bus, -1.0), (ip + e, -2 * br.r_pu),
                 (iq + e, -2 * br.x_pu)]
        if br.switchable:
            b.add([*terms, (iz + e, big_v)], -np.inf, big_v)
            b.add([*terms, (iz + e, -big_v)], -big_v, np.inf)
        else:
            b.add(terms, 0.0, 0.0)
    if limits_pu is not None:
        for e, k in enumerate(active):
            lim = float(limits_pu[k])
            if math.isfinite(lim) and lim > 0:
                for t in _DIRECTIONS:
                    b.add([(ip + e, math.cos(t)), (iq + e, math.sin(t))], -np.inf, lim * _OCTAGON_INSCRIBED)
    for cycle in _cycle_cuts(problem, active, sources):
        # every loop (and every path between two sources) has an open switchable branch
        b.add([(iz + e, 1.0) for e in cycle], -np.inf, len(cycle) - 1)
    for chain in _chains(problem, active):
        # two open branches in one chain would cut off the buses between them
        b.add([(iz + e, 1.0) for e in chain], len(chain) - 1, np.inf)
    c = np.zeros(n_vars)
    for j, e in enumerate(lossy):
        r = problem.branches[active[e]].r_pu
        c[ilp + j] = c[ilq + j] = r
    if objective is Objective.BALANCE:
        c *= _BALANCE_LOSS_WEIGHT
        c[it] = 1.0
        heads = head_ratings or {}
        pos = {k: e for e, k in enumerate(active)}
        for k, rating in heads.items():
            if k not in pos:
                continue
            e = pos[k]
            for t in _DIRECTIONS:
                b.add([(ip + e, math.cos(t) * _OCTAGON_INSCRIBED), (iq + e, math.sin(t) * _OCTAGON_INSCRIBED),
                       (it, -rating)], -np.inf, 0.0)
    # tangent cuts lp >= 2 a P - a^2
    cuts = _Builder()
    cuts.rows, cuts.cols, cuts.vals, cuts.lo, cuts.hi = list(b.rows), list(b.cols), list(b.vals), list(b.lo), list(
        b.hi)
    # Perspective form lp >= 2 a P - a^2 z: the same cut when closed, and with z fractional it charges P^2 / z, so
    # the relaxation cannot spread flow over half-closed branches for free (what makes the plain cuts weak).
    for j, e in enumerate(lossy):
        for a in big_p * _TANGENT_FRACTIONS:
            cuts.add([(ilp + j, 1.0), (ip + e, -2 * a), (iz + e, a * a)], 0.0, np.inf)
        for a in big_q * _TANGENT_FRACTIONS:
            cuts.add([(ilq + j, 1.0), (iq + e, -2 * a), (iz + e, a * a)], 0.0, np.inf)

    res = None  # the last solve that returned a solution
    iterations = 0
    for iterations in range(1, max_refinements + 2):  # noqa: B007 - the count is reported
        remaining = time_limit_s - (time.perf_counter() - started)
        if remaining <= 0:
            break
        t_iter = time.perf_counter()
        attempt = milp(c, constraints=cuts.constraint(n_vars), integrality=integrality, bounds=Bounds(lo, hi),
                       options={"time_limit": remaining, "mip_rel_gap": mip_gap, "disp": _DISP})
        if attempt.x is None:
            if attempt.status == 2 and res is None:  # infeasible (cuts added later cannot make it so)
                raise InfeasibleReconfigurationError(
                    f"network {problem.name!r}: no radial configuration supplies every load within "
                    + ("the voltage band and ratings (linearised)" if voltage else "the branch ratings (linearised)"))
            break  # out of time: keep the previous solution, if any
        res = attempt
        x = res.x
        _log.debug("reconfiguration MILP %s: iteration %d in %.2f s, objective %.6g", problem.name, iterations,
                   time.perf_counter() - t_iter, res.fun)
        # the loss the cuts under-estimate at this solution; refine where it is, until it is a small share
        gaps = []
        for j, e in enumerate(lossy):
            r = problem.branches[active[e]].r_pu
            for col_l, col_f in ((ilp + j, ip + e), (ilq + j, iq + e)):
                a = float(x[col_f])
                gaps.append((r * (a * a - float(x[col_l])), col_l, col_f, e, a))
        missing = sum(g[0] for g in gaps if g[0] > 0)
        true_loss = sum(problem.branches[active[e]].r_pu * (x[ip + e] ** 2 + x[iq + e] ** 2) for e in range(m))
        if missing <= cut_tolerance * max(true_loss, 1e-12) or res.status != 0:
            break
        for gap, col_l, col_f, e, a in gaps:
            if gap > 0.01 * missing / len(gaps):
                cuts.add([(col_l, 1.0), (col_f, -2 * a), (iz + e, a * a)], 0.0, np.inf)
    if res is None:
        raise _NoSolutionInTime(f"network {problem.name!r}: the MILP found no configuration in {time_limit_s:.1f} s")
    x = res.x
    closed = problem.present_closed().copy()
    for e, k in enumerate(active):
        closed[k] = bool(round(x[iz + e]))
    linear_loss = sum(problem.branches[active[e]].r_pu * (x[ip + e] ** 2 + x[iq + e] ** 2) for e in range(m))
    bound = getattr(res, "mip_dual_bound", None)
    gap = (float(res.fun) - float(bound)) / abs(float(res.fun)) if bound is not None and res.fun else math.nan
    status = "optimal" if res.status == 0 else "time limit"
    if math.isfinite(gap):
        status += f", gap {100 * max(gap, 0.0):.2f} % to the MILP bound"
    return MilpResult(closed, float(res.fun), float(linear_loss), iterations, time.perf_counter() - started, voltage,
                      status)


def _cycle_cuts(problem: ReconfigProblem, active: list[int], sources: list[int]) -> list[list[int]]:
    """Switchable branches (positions in ``active``) of each cycle of a cycle basis of the active graph, the sources
    joined by a virtual root."""
    import networkx as nx

    root = -1
    g = nx.Graph()
    parallel: list[list[int]] = []
    for e, k in enumerate(active):
        br = problem.branches[k]
        a, b = br.from_bus, br.to_bus
        if g.has_edge(a, b):
            first = g.edges[a, b]["e"]
            parallel.append([x for x in (first, e) if problem.branches[active[x]].switchable])
            continue
        g.add_edge(a, b, e=e)
    for s in sources:
        g.add_edge(root, s, e=-1)
    out = [p for p in parallel if len(p) == 2]
    for cycle in nx.cycle_basis(g):
        edges = [g.edges[cycle[i], cycle[(i + 1) % len(cycle)]]["e"] for i in range(len(cycle))]
        sw = [e for e in edges if e >= 0 and problem.branches[active[e]].switchable]
        if sw:
            out.append(sw)
    return out


def _chains(problem: ReconfigProblem, active: list[int]) -> list[list[int]]:
    """Runs of branches through buses of degree two (positions in ``active``), with two or more switchable ones."""
    degree: dict[int, int] = {}
    ends: dict[int, list[int]] = {}
    for e, k in enumerate(active):
        br = problem.branches[k]
        for bus in (br.from_bus, br.to_bus):
            degree[bus] = degree.get(bus, 0) + 1
            ends.setdefault(bus, []).append(e)
    sources = set(problem.source_buses)
    seen: set[int] = set()
    out = []
    for e0 in range(len(active)):
        if e0 in seen:
            continue
        chain = [e0]
        seen.add(e0)
        for direction in (0, 1):
            br = problem.branches[active[e0]]
            bus = (br.from_bus, br.to_bus)[direction]
            prev = e0
            while degree.get(bus, 0) == 2 and bus not in sources:
                nxt = next(x for x in ends[bus] if x != prev)
                if nxt in seen:
                    break
                seen.add(nxt)
                chain.append(nxt)
                nb = problem.branches[active[nxt]]
                bus = nb.to_bus if nb.from_bus == bus else nb.from_bus
                prev = nxt
        sw = [e for e in chain if problem.branches[active[e]].switchable]
        if len(sw) >= 2:
            out.append(sw)
    return out
