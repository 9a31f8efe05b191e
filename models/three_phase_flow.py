"""Unbalanced three-phase power flow on the phase-level model (``models.phase_model``).

Method: fixed-point Z-bus iteration (implicit Gauss). The sparse Y-bus of lines, switches, transformers,
regulators (at the model's taps) and capacitors, plus the sources' Thevenin admittances (Norton form) and the
constant-impedance share of every load, is factorised once (SuperLU); each iteration re-solves it with the current
injections of the constant-current, constant-power and exponent shares and of the DERs at the latest voltages. The
start is the no-load solution, which already carries every transformer's ratio and phase shift. It converges when no
node voltage moves by more than ``tolerance_pu`` of its base; the residual |Y V - I(V)| is reported in amperes.

Sources: an EnergySource with impedance is a three-phase Thevenin source (E = its voltage, Z from r/x and r0/x0);
``SourceModel.IDEAL`` (or a zero impedance) holds the source bus at E. Parts of the feeder no source reaches (open
switches) are reported as de-energised (0 V) and left out. Each transformer winding carries a 1 ppm shunt to ground
(OpenDSS ``ppm_antifloat``) so a delta secondary has a zero-sequence reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from models.errors import ModelError
from models.network import NetworkModel, Phase, phase_text
from models.phase_model import ElementKind, PhaseModel, build_phase_model
from models.three_phase_injections import InjectionKind, Injections, build_injections

__all__ = [
    "BRANCH_FLOW_DTYPE",
    "NODE_RESULT_DTYPE",
    "DerMode",
    "NotConvergedError",
    "RegulatorTap",
    "SourceModel",
    "ThreePhaseFlow",
    "ThreePhaseFlowError",
    "run_three_phase_powerflow",
]

NODE_RESULT_DTYPE = np.dtype([
    ("bus", "U64"), ("phase", "U2"), ("node", "U68"), ("v_pu", np.float64), ("v_v", np.float64),
    ("angle_deg", np.float64), ("base_v", np.float64), ("energised", np.bool_),
])
BRANCH_FLOW_DTYPE = np.dtype([
    ("element", "U64"), ("kind", "U12"), ("terminal", np.int8), ("bus", "U64"), ("phase", "U2"),
    ("p_w", np.float64), ("q_var", np.float64), ("i_a", np.float64),
])
_PHASE_NAME = {int(Phase.A): "A", int(Phase.B): "B", int(Phase.C): "C", int(Phase.S1): "s1", int(Phase.S2): "s2"}
_SOURCE_SHIFT_RAD = {Phase.A: 0.0, Phase.B: -2.0 * math.pi / 3.0, Phase.C: 2.0 * math.pi / 3.0}


class ThreePhaseFlowError(ModelError):
    """The three-phase power flow cannot be set up or solved; the message names the feeder and the cause."""


class NotConvergedError(ThreePhaseFlowError):
    """The iteration did not converge; the message names the feeder and the worst bus/phase."""


class DerMode(StrEnum):
    ON = "on"  # DERs inject their present P and Q
    OFF = "off"  # DERs disconnected


class SourceModel(StrEnum):
    THEVENIN = "thevenin"  # E behind the source's sequence impedances (ideal when the impedance is zero)
    IDEAL = "ideal"  # the source bus held at E


@dataclass(frozen=True, slots=True)
class RegulatorTap:
    name: str
    transformer: str
    phases: str
    step: float
    ratio_pu: float


@dataclass(frozen=True, slots=True, eq=False)
class ThreePhaseFlow:
    """Result: node voltages (``NODE_RESULT_DTYPE``), branch terminal flows (``BRANCH_FLOW_DTYPE``; power into the
    element at that terminal), totals in W/var and solver figures."""

    network: str
    nodes: np.ndarray
    branches: np.ndarray
    source_p_w: float
    source_q_var: float
    load_p_w: float
    load_q_var: float
    der_p_w: float  # generated (positive = into the network)
    der_q_var: float
    capacitor_q_var: float  # delivered by capacitors
    loss_p_w: float  # series elements (lines, switches, transformers, regulators) and the anti-float shunts
    loss_q_var: float
    iterations: int
    tolerance_pu: float
    max_mismatch_a: float
    solve_s: float
    der_mode: DerMode
    source_model: SourceModel
    taps: tuple[RegulatorTap, ...]
    deenergised_nodes: tuple[str, ...]
    notes: tuple[str, ...]

    def voltage_pu(self, bus: str, phase: str) -> float:
        """|V| in per unit at ``bus`` (case-insensitive) and phase ``A``/``B``/``C``/``s1``/``s2``."""
        hit = (np.char.lower(self.nodes["bus"]) == bus.lower()) & (self.nodes["phase"] == phase)
        if not hit.any():
            raise KeyError(f"network {self.network!r}: no node {bus}.{phase}")
        return float(self.nodes["v_pu"][hit][0])


def run_three_phase_powerflow(network: NetworkModel, *, der: DerMode = DerMode.ON,
                              source_model: SourceModel = SourceModel.THEVENIN, tolerance_pu: float = 1e-9,
                              max_iterations: int = 100, phase_model: PhaseModel | None = None) -> ThreePhaseFlow:
    """Solve the unbalanced flow of ``network``; NotConvergedError names the worst bus/phase when it does not
    converge, ThreePhaseFlowError (or PhaseModelError / InjectionError) when it cannot be set up."""
    started = time.perf_counter()
    pm = phase_model if phase_model is not None else build_phase_model(network)
    n = len(pm.node_names)
    inj = build_injections(network, pm, include_ders=der is DerMode.ON)
    y_src, i_src, slack, e_slack = _sources(network, pm, source_model)
    energised = _energised(pm, np.concatenate([np.flatnonzero(i_src != 0), slack]))
    inj = inj.only_at(energised)  # loads and DERs on de-energised nodes draw nothing
    y_z = _stamp(inj, n)
    y_all = sp.csr_array(pm.y_s + y_src + y_z + sp.diags_array(pm.float_guard_s))
    is_slack = np.zeros(n, dtype=bool)
    is_slack[slack] = True
    free = np.flatnonzero(energised & ~is_slack)
    v = np.zeros(n, dtype=complex)
    v[slack] = e_slack
    y_ff = y_all[free][:, free].tocsc()
    i_fixed = i_src[free] - y_all[free][:, slack] @ e_slack
    try:
        lu = splu(y_ff)
    except RuntimeError as exc:
        raise ThreePhaseFlowError(f"network {network.name!r}: the nodal admittance matrix is singular ({exc})") from exc
    v[free] = lu.solve(i_fixed)
    base = pm.node_base_v[free]
    iterations, converged, step = 0, False, np.zeros(len(free))
    while iterations < max_iterations:
        iterations += 1
        v_new = lu.solve(i_fixed + inj.current_injection_a(v)[free])
        step = np.abs(v_new - v[free]) / base
        v[free] = v_new
        if not np.all(np.isfinite(v_new)):
            break
        if step.max(initial=0.0) <= tolerance_pu:
            converged = True
            break
    if not converged:
        worst = int(free[np.nanargmax(np.where(np.isfinite(step), step, np.inf))])
        where = f"{network.buses[pm.node_bus[worst]].name}.{_PHASE_NAME[int(pm.node_phase[worst])]}"
        raise NotConvergedError(
            f"network {network.name!r}: three-phase power flow did not converge in {iterations} iterations; worst "
            f"bus/phase {where} moved {float(np.nan_to_num(step.max(), nan=np.inf)):.3g} pu in the last "
            f"one, |V| = {abs(v[worst]) / pm.node_base_v[worst]:.4f} pu")
    mismatch = y_all @ v - i_src - inj.current_injection_a(v)
    return _result(network, pm, inj, v, energised, y_all, y_src, i_src, slack, iterations, tolerance_pu,
                   float(np.abs(mismatch[free]).max(initial=0.0)), time.perf_counter() - started, der, source_model)


def _sources(network: NetworkModel, pm: PhaseModel,
             model: SourceModel) -> tuple[sp.csr_array, np.ndarray, np.ndarray, np.ndarray]:
    """Thevenin sources as Norton admittances and currents; ideal ones as slack nodes with their voltages."""
    if not network.sources:
        raise ThreePhaseFlowError(f"network {network.name!r}: no EnergySource, nothing to solve from")
    n = len(pm.node_names)
    index = {(int(b), int(p)): i for i, (b, p) in enumerate(zip(pm.node_bus, pm.node_phase, strict=True))}
    rows, cols, vals = [], [], []
    i_src = np.zeros(n, dtype=complex)
    slack: list[int] = []
    e_slack: list[complex] = []
    for src in network.sources:
        phases = [p for p in (Phase.A, Phase.B, Phase.C) if (src.bus, int(p)) in index]
        if not phases:
            raise ThreePhaseFlowError(f"source {src.name!r}: bus {network.buses[src.bus].name!r} has no phase node")
        nodes = [index[(src.bus, int(p))] for p in phases]
        e = np.array([src.voltage_magnitude_v / math.sqrt(3.0) * np.exp(1j * (src.voltage_angle_rad
                                                                              + _SOURCE_SHIFT_RAD[p]))
                      for p in phases])
        z1 = complex(src.r_ohm, src.x_ohm)
        z0 = complex(src.r0_ohm, src.x0_ohm) if complex(src.r0_ohm, src.x0_ohm) != 0 else z1
        if model is SourceModel.IDEAL or z1 == 0:
            slack.extend(nodes)
            e_slack.extend(e)
            continue
        k = len(nodes)
        z = np.full((k, k), (z0 - z1) / 3.0)
        np.fill_diagonal(z, (2.0 * z1 + z0) / 3.0)
        y = np.linalg.inv(z)
        rows.append(np.repeat(nodes, k))
        cols.append(np.tile(nodes, k))
        vals.append(y.ravel())
        i_src[nodes] += y @ e
    y_src = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)) \
        if vals else sp.csr_array((n, n), dtype=complex)
    return y_src, i_src, np.asarray(slack, dtype=np.int64), np.asarray(e_slack, dtype=complex)


def _energised(pm: PhaseModel, source_nodes: np.ndarray) -> np.ndarray:
    _, label = connected_components(abs(pm.y_s) > 0, directed=False)
    return np.isin(label, label[source_nodes])


def _stamp(inj: Injections, n: int) -> sp.csr_array:
    """Constant-impedance load shares as admittances between their two nodes (ground rows/columns dropped)."""
    t = inj.table
    y = inj.z_admittance_s()
    a, b = t["a"], t["b"]
    rows = np.concatenate([a, b, a, b])
    cols = np.concatenate([a, b, b, a])
    vals = np.concatenate([y, y, -y, -y])
    keep = (rows < n) & (cols < n) & (vals != 0)
    return sp.csr_array(sp.coo_array((vals[keep], (rows[keep], cols[keep])), shape=(n, n)).tocsr())


def _branch_flows(pm: PhaseModel, v: np.ndarray, bus_names: np.ndarray) -> np.ndarray:
    """Terminal currents and powers of every series element, a delta node shared by two units summed once."""
    elements: list[str] = []
    element_id: dict[str, int] = {}
    kinds: dict[str, ElementKind] = {}
    ids, terms, nodes, currents = [], [], [], []
    by_size: dict[int, list] = {}
    for blk in pm.branches:
        by_size.setdefault(len(blk.nodes), []).append(blk)
    for blocks in by_size.values():
        nd = np.stack([b.nodes for b in blocks])
        y = np.stack([b.y_s for b in blocks])
        currents.append(np.einsum("mij,mj->mi", y, v[nd]).ravel())
        nodes.append(nd.ravel())
        terms.append(np.stack([b.terminals for b in blocks]).ravel())
        for b in blocks:
            if b.name not in element_id:
                element_id[b.name] = len(elements)
                elements.append(b.name)
                kinds[b.name] = b.kind
        ids.append(np.repeat([element_id[b.name] for b in blocks], len(blocks[0].nodes)))
    if not currents:
        return np.zeros(0, dtype=BRANCH_FLOW_DTYPE)
    eid, term, node, cur = (np.concatenate(x) for x in (ids, terms, nodes, currents))
    key = (eid.astype(np.int64) * 16 + term) * (len(pm.node_names) + 1) + node
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    i_sum = np.zeros(len(uniq), dtype=complex)
    np.add.at(i_sum, inverse, cur)
    node_u = node[first]
    s = v[node_u] * np.conj(i_sum)
    out = np.zeros(len(uniq), dtype=BRANCH_FLOW_DTYPE)
    names = np.array(elements)
    out["element"] = names[eid[first]]
    out["kind"] = [kinds[e].value for e in out["element"]]
    out["terminal"] = term[first]
    out["bus"] = bus_names[pm.node_bus[node_u]]
    out["phase"] = [_PHASE_NAME[int(p)] for p in pm.node_phase[node_u]]
    out["p_w"], out["q_var"], out["i_a"] = s.real, s.imag, np.abs(i_sum)
    return out


def _result(network: NetworkModel, pm: PhaseModel, inj: Injections, v: np.ndarray, energised: np.ndarray,
            y_all: sp.csr_array, y_src: sp.csr_array, i_src: np.ndarray, slack: np.ndarray, iterations: int,
            tolerance_pu: float, mismatch_a: float, solve_s: float, der: DerMode,
            source_model: SourceModel) -> ThreePhaseFlow:
    n = len(pm.node_names)
    nodes = np.zeros(n, dtype=NODE_RESULT_DTYPE)
    nodes["bus"] = [network.buses[b].name for b in pm.node_bus]
    nodes["phase"] = [_PHASE_NAME[int(p)] for p in pm.node_phase]
    nodes["node"] = pm.node_names
    nodes["v_v"] = np.abs(v)
    nodes["base_v"] = pm.node_base_v
    nodes["v_pu"] = np.abs(v) / pm.node_base_v
    nodes["angle_deg"] = np.where(energised, np.degrees(np.angle(v)), np.nan)
    nodes["energised"] = energised
    # Source power: Norton current less its own admittance's; an ideal slack delivers what leaves its node.
    s_src = v * np.conj(i_src - y_src @ v)
    if len(slack):
        s_src[slack] = v[slack] * np.conj((y_all @ v)[slack] - inj.current_injection_a(v)[slack])
    s_inj = inj.branch_power_va(v)
    is_der = inj.table["kind"] == InjectionKind.DER
    s_cap = v * np.conj(pm.parts[ElementKind.CAPACITOR] @ v)
    guard_w = float((np.abs(v) ** 2 * pm.float_guard_s).sum())  # the transformers' 1 ppm anti-float shunts
    flows = _branch_flows(pm, v, np.array([b.name for b in network.buses]))
    notes = [f"{(~energised).sum()} node(s) de-energised (no source reaches them)"] if not energised.all() else []
    taps = tuple(RegulatorTap(tc.name, next((t.name for t in network.transformers if t.mrid == tc.transformer_mrid),
                                            tc.transformer_mrid), phase_text(tc.phases), tc.step, tc.ratio_pu)
                 for tc in network.tap_changers)
    return ThreePhaseFlow(
        network.name, nodes, flows, float(s_src.real.sum()), float(s_src.imag.sum()),
        float(s_inj[~is_der].real.sum()), float(s_inj[~is_der].imag.sum()),
        float(-s_inj[is_der].real.sum()), float(-s_inj[is_der].imag.sum()), float(-s_cap.imag.sum()),
        float(flows["p_w"].sum()) + guard_w, float(flows["q_var"].sum()), iterations, tolerance_pu, mismatch_a, solve_s,
        der, source_model, taps, tuple(np.array(pm.node_names)[~energised]), tuple(notes))
