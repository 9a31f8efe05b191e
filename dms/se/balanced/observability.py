"""Observability before solving: topological merging, then a numerical null-space test of what is left.

Decoupled analysis (the usual one): the P-θ side uses P flows and P injections (virtual ones included), the Q-V side
Q flows and Q injections with voltage magnitudes as anchors; current magnitudes are not counted.

1. Branches with a flow measurement join their ends into flow islands (connected components).
2. An injection at bus k whose unmeasured incident branches all lead to one other island determines that island's
   angle against k's: the two are merged (repeated until nothing changes). Every merge is exact, so this only
   shrinks the problem.
3. If islands remain and there are at most ``MAX_NUMERIC_ISLANDS``, the reduced DC model (injection rows, island
   columns, random positive branch weights) is tested numerically: islands whose rows in the null space of the
   reduced matrix are equal have determined relative angles and are merged.

The observable island is the one holding the slack bus (P side) and, on the Q side, every island holding a voltage
measurement. Everything else is reported bus by bus; with more than ``MAX_NUMERIC_ISLANDS`` left after step 2 the
report is conservative (it may call observable buses unobservable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dms.se.balanced.measurements import MeasKind
from dms.se.balanced.model import BalancedNetwork

MAX_NUMERIC_ISLANDS = 1500
NULL_TOL = 1e-8


@dataclass(frozen=True, slots=True)
class ObservabilityReport:
    observable: bool
    unobservable_islands: tuple[tuple[int, ...], ...]  # internal bus indices per island, largest first
    island_names: tuple[tuple[str, ...], ...]  # the same as bus names ("bus 17")
    conservative: bool  # the numerical step was skipped (too many islands): islands may be over-reported

    def describe(self) -> str:
        if self.observable:
            return "network observable"
        shown = "; ".join("{" + ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") + "}"
                          for names in self.island_names[:5])
        more = f" and {len(self.island_names) - 5} more" if len(self.island_names) > 5 else ""
        return (f"network not observable: {len(self.island_names)} unobservable island(s) "
                f"({sum(map(len, self.island_names))} buses): {shown}{more}")


def _islands(net: BalancedNetwork, flow_branches: np.ndarray, inj_buses: np.ndarray, seed: int) -> tuple[np.ndarray,
                                                                                                        bool]:
    """Island label per bus for one decoupled half; bool = the numerical step ran."""
    n = net.n_bus
    f, t = net.f_bus[flow_branches], net.t_bus[flow_branches]
    graph = sp.csr_matrix((np.ones(len(f)), (f, t)), shape=(n, n))
    n_comp, label = connected_components(graph, directed=False)
    parent = np.arange(n_comp)  # union-find over flow-island labels

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    adj = sp.csr_matrix((np.ones(2 * net.n_branch), (np.r_[net.f_bus, net.t_bus], np.r_[net.t_bus, net.f_bus])),
                        shape=(n, n))
    neighbours = [adj.indices[adj.indptr[k]:adj.indptr[k + 1]] for k in range(n)]
    pending = list(np.unique(inj_buses))
    changed = True
    while changed and pending:
        changed = False
        still = []
        for k in pending:
            own = find(label[k])
            others = {find(label[j]) for j in neighbours[k]} - {own}
            if len(others) == 1:
                parent[others.pop()] = own
                changed = True
            elif others:
                still.append(k)
        pending = still
    roots = np.array([find(label[k]) for k in range(n)])
    _, isl = np.unique(roots, return_inverse=True)
    n_isl = int(isl.max()) + 1
    if n_isl == 1 or not pending:
        return isl, True
    if n_isl > MAX_NUMERIC_ISLANDS:
        return isl, False
    # Reduced DC model over the remaining injections.
    rng = np.random.default_rng(seed)
    w = 1.0 + rng.random(net.n_branch)
    h = np.zeros((len(pending), n_isl))
    for row, k in enumerate(pending):
        for b in np.flatnonzero((net.f_bus == k) | (net.t_bus == k)):
            j = net.t_bus[b] if net.f_bus[b] == k else net.f_bus[b]
            if isl[j] != isl[k]:
                h[row, isl[k]] += w[b]
                h[row, isl[j]] -= w[b]
    _, s, vt = np.linalg.svd(h, full_matrices=True)
    rank = int(np.sum(s > NULL_TOL * max(s.max(initial=0.0), 1.0)))
    null = vt[rank:].T  # n_isl x k
    null = null / max(np.abs(null).max(), 1e-300)
    keys = np.round(null / 1e-6).astype(np.int64)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    return group.ravel()[isl], True


def analyse_observability(net: BalancedNetwork, meas: np.ndarray, *, seed: int = 0) -> ObservabilityReport:
    kind, el = meas["kind"], meas["element"]
    p_isl, p_num = _islands(net, el[kind == MeasKind.P_FLOW], el[kind == MeasKind.P_INJ], seed)
    q_isl, q_num = _islands(net, el[kind == MeasKind.Q_FLOW], el[kind == MeasKind.Q_INJ], seed + 1)
    bad = p_isl != p_isl[net.slack]
    anchored = np.unique(q_isl[el[kind == MeasKind.V_MAG]])
    bad |= ~np.isin(q_isl, anchored)
    # Report unobservable islands as the P-side islands (Q-side where P is fine) restricted to the bad buses.
    combined = np.where(p_isl != p_isl[net.slack], p_isl, p_isl.max() + 1 + q_isl)
    islands = []
    for lab in np.unique(combined[bad]):
        islands.append(tuple(int(b) for b in np.flatnonzero(bad & (combined == lab))))
    islands.sort(key=len, reverse=True)
    return ObservabilityReport(observable=not bad.any(), unobservable_islands=tuple(islands),
                               island_names=tuple(tuple(net.bus_names[b] for b in isl) for isl in islands),
                               conservative=not (p_num and q_num))
