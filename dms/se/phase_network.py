"""The estimator's network from the project's own phase model (``models.phase_model``) of a network state.

Per unit: every node on its own phase-to-neutral base (``PhaseModel.node_base_v``) and one power base, so
``Y_pu = D Y D / S_base`` with ``D = diag(base_v)`` and a current of ``I`` amperes at node k is ``I base_v[k] /
S_base`` pu. The transformers' 1 ppm anti-float shunts are kept in the Y-bus (the flow has them too, so zero
injections stay exact). Closed switches are the phase model's small impedances. Regulators and OLTCs sit in the
Y-bus at the state's tap step (telemetered tap positions); the estimator gets no ratio states for them.

Only energised nodes enter (a no-load three-phase flow from the sources tells which, and gives each node's nominal
angle, rounded to 30 degrees so transformer phase shifts are kept). A first estimate starts from a flow with the
pseudo loads (:func:`flow_start_state`), not flat: a flat start (1 pu everywhere) puts the whole regulator/OLTC boost
across their tiny series impedances, and Gauss-Newton with flows through closed switches then diverges.
De-energised buses are listed, not estimated.
Each energised island gets angle references at every phase of its first source bus (the source is a balanced
three-phase voltage: with magnitudes and injections alone the angles of phases B and C there are not observable).

Branch terminals: one row per (element, terminal, node) of every series element (lines, switches, transformer
units, regulators); the row gives the current into the element at that node, which is what live P/Q/I points
measure ("power into the element at the measured terminal").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dms.network_state import NetworkState
from dms.se.errors import SeError
from dms.se.measurements import MeasurementKind, MeasurementSet
from dms.se.wls3ph import PhaseNetwork
from models.network import Phase
from models.phase_model import PhaseModel, build_phase_model
from models.three_phase_flow import DerMode, run_three_phase_powerflow

__all__ = ["DEFAULT_S_BASE_VA", "ModelNetwork", "build_model_network", "flow_start_state", "restrict",
           "unobservable_buses"]

DEFAULT_S_BASE_VA = 1e6
_SHIFT_STEP_RAD = math.pi / 6.0
FLOAT_TOLERANCE = 1e-9  # common-mode current relative to the bus's largest admittance: a floating bus


@dataclass(frozen=True, slots=True, eq=False)
class ModelNetwork:
    """A :class:`PhaseNetwork` over the energised nodes of one network state, with the lookups back to the model."""

    state: NetworkState
    phase_model: PhaseModel
    network: PhaseNetwork
    s_base_va: float
    pm_node: np.ndarray  # estimator node -> phase-model node
    est_node: np.ndarray  # phase-model node -> estimator node, -1 when de-energised
    base_v: np.ndarray  # phase-to-neutral base voltage per estimator node
    bus: np.ndarray  # model bus index per estimator node
    phase: np.ndarray  # Phase flag per estimator node
    terminal_element: tuple[str, ...]  # per branch-terminal row
    terminal_number: np.ndarray  # int8 per row (1 = from end / winding 1 ...)
    reference_nodes: np.ndarray  # angle references: every phase of one source bus per energised island
    source_nodes: np.ndarray  # estimator nodes of source buses (unknown injection)
    deenergised_buses: tuple[str, ...]
    no_load_state: np.ndarray  # (angles, magnitudes) of the no-load flow: the start of a first estimate
    floating_nodes: np.ndarray  # nodes of buses with no path to ground but the anti-float shunts (delta-delta)
    _node_index: dict[tuple[int, int], int] = field(repr=False)
    _terminal_index: dict[tuple[str, int, int], int] = field(repr=False)  # (element, bus, phase flag) -> row
    _element_terminal: dict[tuple[str, int, int], int] = field(repr=False)  # (element, terminal, phase) -> row

    @property
    def size(self) -> int:
        return self.network.size

    def node_of(self, bus: int, phase: Phase) -> int | None:
        """Estimator node of a bus phase, None when the bus has no such phase or it is de-energised."""
        return self._node_index.get((bus, int(phase)))

    def terminal_row(self, element: str, phase: Phase, *, bus: int | None = None,
                     terminal: int | None = None) -> int | None:
        """Branch-terminal row of an element's phase at a bus (preferred) or terminal number; None if not there."""
        if bus is not None:
            row = self._terminal_index.get((element, bus, int(phase)))
            if row is not None:
                return row
        if terminal is not None:
            return self._element_terminal.get((element, terminal, int(phase)))
        return None

    def bus_name(self, bus: int) -> str:
        return self.state.model.buses[bus].name

    def node_label(self, node: int) -> str:
        return self.network.node_names[node]


def build_model_network(state: NetworkState, *, s_base_va: float = DEFAULT_S_BASE_VA) -> ModelNetwork:
    """The estimator network of ``state`` (its switch positions and taps); SeError names what cannot be built."""
    model = state.model
    try:
        pm = build_phase_model(model, frequency_hz=state.frequency_hz)
        no_load = run_three_phase_powerflow(state.scaled_loads(0.0).model, der=DerMode.OFF, phase_model=pm)
    except Exception as exc:  # PhaseModelError / ThreePhaseFlowError / InjectionError: all name the element
        raise SeError(f"network {model.name!r}: cannot build the estimator network: {exc}") from exc
    energised = no_load.nodes["energised"]
    pm_node = np.flatnonzero(energised)
    est_node = np.full(len(pm.node_names), -1, dtype=np.int64)
    est_node[pm_node] = np.arange(len(pm_node))
    base_v = pm.node_base_v[pm_node]
    y_full = sp.csr_matrix(pm.y_s + sp.diags_array(pm.float_guard_s))
    y_sub = y_full[pm_node][:, pm_node]
    d = sp.diags(base_v)
    ybus_pu = sp.csr_matrix(d @ y_sub @ d / s_base_va)
    angle = np.deg2rad(no_load.nodes["angle_deg"][pm_node])
    vnom_angle = np.round(angle / _SHIFT_STEP_RAD) * _SHIFT_STEP_RAD
    no_load_state = np.concatenate([angle, no_load.nodes["v_pu"][pm_node]])
    bus = pm.node_bus[pm_node].astype(np.int64)
    phase = pm.node_phase[pm_node]
    node_index = {(int(b), int(p)): i for i, (b, p) in enumerate(zip(bus, phase, strict=True))}
    # A common-mode voltage on a bus fed only through delta windings drives no current (but the 1 ppm guard):
    # its zero-sequence voltage is unobservable from injections and flows. Such buses get soft pseudo voltages.
    y_plain = sp.csr_matrix(pm.y_s)[pm_node][:, pm_node]
    floating: list[int] = []
    src_buses = {s.bus for s in model.sources}
    for b in np.unique(bus):
        if int(b) in src_buses:
            continue  # held by the angle references and usually measured
        nodes_b = np.flatnonzero(bus == b)
        common = np.asarray(abs(y_plain[:, nodes_b].sum(axis=1))).ravel()
        if common.max(initial=0.0) <= FLOAT_TOLERANCE * abs(y_plain[nodes_b]).max():
            floating.extend(int(k) for k in nodes_b)

    # Branch terminals: rows of the currents into each element at each of its (energised) nodes.
    term_key: dict[tuple[str, int, int], int] = {}
    elements: list[str] = []
    numbers: list[int] = []
    nodes_of_row: list[int] = []
    rows, cols, vals = [], [], []
    for blk in pm.branches:
        en = est_node[blk.nodes]
        if (en < 0).any():
            continue
        scaled = pm.node_base_v[blk.nodes][:, None] * blk.y_s * pm.node_base_v[blk.nodes][None, :] / s_base_va
        for i in range(len(blk.nodes)):
            key = (blk.name, int(blk.terminals[i]), int(en[i]))
            row = term_key.get(key)
            if row is None:
                row = term_key[key] = len(elements)
                elements.append(blk.name)
                numbers.append(int(blk.terminals[i]))
                nodes_of_row.append(int(en[i]))
            rows.append(np.full(len(en), row))
            cols.append(en)
            vals.append(scaled[i])
    nb = len(elements)
    n = len(pm_node)
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nb, n)) \
        if nb else sp.csr_matrix((0, n), dtype=complex)
    branch_node = np.asarray(nodes_of_row, dtype=np.int64)
    terminal_index = {(el, int(bus[nd]), int(phase[nd])): r for (el, _t, nd), r in term_key.items()}
    element_terminal = {(el, t, int(phase[nd])): r for (el, t, nd), r in term_key.items()}

    source_nodes = np.flatnonzero(np.isin(bus, list(src_buses)))
    _, label = connected_components(abs(ybus_pu) > 0, directed=False)
    refs: dict[int, int] = {}  # island label -> reference bus (the first source bus reaching it)
    for k in source_nodes:
        refs.setdefault(int(label[k]), int(bus[k]))
    reference_nodes = np.flatnonzero(np.isin(bus, list(refs.values())))
    dead_buses = sorted({model.buses[int(b)].name for b in pm.node_bus[~energised]})
    network = PhaseNetwork(tuple(pm.node_names[i] for i in pm_node), ybus_pu, vnom_angle,
                           np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), matrix, branch_node)
    return ModelNetwork(state, pm, network, s_base_va, pm_node, est_node, base_v, bus, phase, tuple(elements),
                        np.asarray(numbers, dtype=np.int8), reference_nodes,
                        source_nodes, tuple(dead_buses), no_load_state, np.asarray(floating, dtype=np.int64),
                        node_index, terminal_index, element_terminal)


def unobservable_buses(mn: ModelNetwork, mset: MeasurementSet) -> np.ndarray:
    """Model bus indices the measurements do not determine (topological analysis on the bus graph, P-side).

    1. Elements with a P-flow measurement join their buses into flow islands. 2. A bus with a P injection
    (measured, pseudo or virtual) whose unmeasured elements all lead to one other island merges it (repeated).
    The island holding an angle reference and a voltage magnitude is observable; every other bus is returned.
    """
    d = mset.data
    kind = d["kind"]
    buses = np.unique(mn.bus)
    pos = {int(b): i for i, b in enumerate(buses)}
    nbus = len(buses)
    element_buses: dict[str, set[int]] = {}
    for row, el in enumerate(mn.terminal_element):
        element_buses.setdefault(el, set()).add(pos[int(mn.bus[mn.network.branch_node[row]])])
    measured = {mn.terminal_element[int(r)] for r in d["node"][kind == MeasurementKind.P_FLOW]}
    # An element joining three or more buses (a three-winding unit) is a star of edges around a virtual bus
    # whose injection is known (zero).
    stars = [el for el, bs in element_buses.items() if len(bs) > 2]
    total = nbus + len(stars)
    parent = np.arange(total)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    def union(a: int, b: int) -> bool:
        ra, rb = find(a), find(b)
        if ra == rb:
            return False
        parent[rb] = ra
        return True

    incident: dict[int, list[int]] = {}
    star_of = {el: nbus + j for j, el in enumerate(stars)}
    for el, bs in element_buses.items():
        bl = sorted(bs)
        edges = [(star_of[el], b) for b in bl] if el in star_of else [(bl[0], bl[1])] if len(bl) == 2 else []
        for a, b in edges:
            if el in measured:
                union(a, b)
            else:
                incident.setdefault(a, []).append(b)
                incident.setdefault(b, []).append(a)
    inj = {pos[int(mn.bus[int(k)])] for k in d["node"][kind == MeasurementKind.P_INJ]}
    pending = sorted(inj | set(star_of.values()))
    changed = True
    while changed and pending:
        changed = False
        still = []
        for b in pending:
            own = find(b)
            others = {find(o) for o in incident.get(b, [])} - {own}
            if len(others) == 1:
                union(own, others.pop())
                changed = True
            elif others:
                still.append(b)
        pending = still
    roots = np.array([find(i) for i in range(nbus)])  # real buses only
    vm_buses = {pos[int(mn.bus[int(k)])] for k in d["node"][kind == MeasurementKind.V_MAG]}
    ok_roots = {int(roots[pos[int(mn.bus[int(r)])]]) for r in mn.reference_nodes}
    ok_roots &= {int(roots[b]) for b in vm_buses}
    bad = ~np.isin(roots, list(ok_roots))
    return buses[bad]


def restrict(mn: ModelNetwork, mset: MeasurementSet, bad_buses: np.ndarray) -> tuple[PhaseNetwork, MeasurementSet,
                                                                                   np.ndarray]:
    """The network without the nodes of ``bad_buses`` and the measurements that involve them (injections at their
    neighbours too). Returns (network, measurements, kept estimator nodes)."""
    if not len(bad_buses):
        return mn.network, mset, np.arange(mn.size)
    drop = np.isin(mn.bus, bad_buses)
    keep = np.flatnonzero(~drop)
    new_index = np.full(mn.size, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    net = mn.network
    y = net.ybus_pu
    touched = np.asarray(abs(y[:, drop]).sum(axis=1)).ravel() > 0  # nodes whose injection reaches a dropped node
    bm = net.branch_matrix
    assert bm is not None and net.branch_node is not None
    term_ok = (np.asarray(abs(bm[:, drop]).sum(axis=1)).ravel() == 0) & ~drop[net.branch_node]
    term_new = np.full(bm.shape[0], -1, dtype=np.int64)
    term_new[term_ok] = np.arange(int(term_ok.sum()))
    d = mset.data
    kind = d["kind"]
    is_branch = np.isin(kind, [MeasurementKind.P_FLOW, MeasurementKind.Q_FLOW, MeasurementKind.I_MAG])
    is_inj = np.isin(kind, [MeasurementKind.P_INJ, MeasurementKind.Q_INJ])
    ok = np.where(is_branch, term_ok[np.where(is_branch, d["node"], 0)], ~drop[np.where(is_branch, 0, d["node"])])
    ok &= ~(is_inj & touched[np.where(is_branch, 0, d["node"])])
    data = d[ok].copy()
    br = is_branch[ok]
    data["node"] = np.where(br, term_new[np.where(br, data["node"], 0)], new_index[np.where(br, 0, data["node"])])
    data["node2"] = new_index[data["node2"]]
    sub = PhaseNetwork(tuple(net.node_names[i] for i in keep), sp.csr_matrix(y[keep][:, keep]),
                       net.vnom_angle_rad[keep], net.reg_primary, net.reg_regulated,
                       sp.csr_matrix(bm[term_ok][:, keep]), new_index[net.branch_node[term_ok]])
    ids = tuple(i for i, k in zip(mset.ids, ok, strict=True) if k)
    return sub, MeasurementSet(ids, data), keep


def check_size(mn: ModelNetwork) -> None:
    if mn.size == 0:
        raise SeError(f"network {mn.state.model.name!r}: no energised node (no source reaches any bus)")


def flow_start_state(mn: ModelNetwork, load_p_w: np.ndarray, load_q_var: np.ndarray) -> np.ndarray:
    """Start state from a three-phase flow with the given loads (e.g. the pseudo loads): near the solution, and with
    currents flowing (at no load the zero sequence behind a delta-delta transformer is numerically unobservable).
    Falls back to the no-load state when that flow fails."""
    try:
        flow = run_three_phase_powerflow(mn.state.with_loads(load_p_w, load_q_var).model, phase_model=mn.phase_model)
    except Exception:  # a failing flow only costs the better start
        return mn.no_load_state.copy()
    nodes = flow.nodes[mn.pm_node]
    if not nodes["energised"].all():
        return mn.no_load_state.copy()
    return np.concatenate([np.deg2rad(nodes["angle_deg"]), nodes["v_pu"]])
