"""Phase-level model of a feeder and its sparse three-phase nodal admittance matrix (Y-bus), in siemens.

Nodes are single phases of buses named like GridAPPS-D/OpenDSS (``BUS.1``/``.2``/``.3`` for A/B/C, split-phase legs
s1/s2 as ``.1``/``.2``; bus names upper-cased). Ground is the reference and is not a node. The matrix holds lines
(series Z^-1 plus half the shunt susceptance at each end), closed switches, transformers and regulators (winding
connections and tap ratios), and capacitors. Loads and sources are injections and are not in it.

Transformers: every single-phase unit (a tank, or one phase of a three-phase PowerTransformer) with two or more
windings gets the standard N-winding primitive admittance (OpenDSS/Kersting: short-circuit impedances between
winding 1 and each other winding, and between the others, give Zb; Y = A^T Zb^-1 A). Delta windings follow the
vector group's clock number (``Dyn1``: the wye side lags 30 degrees; no number: ANSI lag). A centre-tapped
(split-phase) unit has the s2 winding in reverse polarity (CIMHub writes it ``Ns2``), so s1 and s2 are 180 degrees
apart. ``float_guard_s`` holds 1 ppm of each winding's rating as a shunt to ground (OpenDSS ``ppm_antifloat``) for a
solver to add; it is not in ``y_s`` (a delta secondary has no zero-sequence reference without it).

Closed switches are modelled as OpenDSS does (``Switch=yes``: r1=r0=x1=x0=1 ohm, c1=1.1 nF, c0=1 nF per unit length,
length 0.001), so the node set and entries match GridAPPS-D's exported Y-bus; open switches add nothing.
Every element type's contribution is kept apart in ``PhaseModel.parts`` so a comparison can be attributed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp

from models.errors import ModelError
from models.network import (
    LineSegment,
    NetworkModel,
    Phase,
    ShuntConnection,
    Transformer,
    TransformerTank,
    TransformerWinding,
    WindingConnection,
)

__all__ = [
    "BranchBlock",
    "ElementKind",
    "PhaseModel",
    "PhaseModelError",
    "TapSource",
    "build_phase_model",
    "node_suffix",
]

# OpenDSS Switch=yes line: per-phase series impedance and capacitances for its 0.001 length (units none).
SWITCH_Z_OHM = complex(0.001, 0.001)
SWITCH_C1_F = 1.1e-9 * 0.001
SWITCH_C0_F = 1.0e-9 * 0.001
_PHASE_SUFFIX: dict[Phase, int] = {Phase.A: 1, Phase.B: 2, Phase.C: 3, Phase.S1: 1, Phase.S2: 2}
_ORDER = (Phase.A, Phase.B, Phase.C, Phase.S1, Phase.S2)
_NodeOf = Callable[[int, Phase, str], int]  # (bus, phase, element text) -> node index
FLOAT_GUARD_PPM = 1.0  # OpenDSS Transformer ppm_antifloat default
_VECTOR_WINDING = re.compile(r"([DYZI])N?(\d*)", re.IGNORECASE)


class PhaseModelError(ModelError, ValueError):
    """The network cannot be turned into a phase model; the message names the element and the problem."""


class ElementKind(StrEnum):
    LINE = "line"
    SWITCH = "switch"
    TRANSFORMER = "transformer"
    REGULATOR = "regulator"
    CAPACITOR = "capacitor"


class TapSource(StrEnum):
    """Which regulator tap to build with: the CIM ``step`` (present position) or neutral (ratio 1)."""

    MODEL = "model"
    NEUTRAL = "neutral"


def node_suffix(phase: Phase) -> int:
    """GridAPPS-D/OpenDSS node number of a single phase (A=1, B=2, C=3, s1=1, s2=2)."""
    try:
        return _PHASE_SUFFIX[phase]
    except KeyError:
        raise PhaseModelError(f"phase {phase!r} has no node number (single phase A, B, C, s1 or s2 expected)") from None


@dataclass(frozen=True, slots=True, eq=False)
class BranchBlock:
    """One series element (or one single-phase unit of a transformer) as its primitive admittance on its nodes:
    the currents into the element at ``nodes`` are ``y_s @ V[nodes]``; ``terminals`` numbers each node's end (1..)."""

    name: str
    kind: ElementKind
    nodes: np.ndarray  # int, node indices (ground dropped)
    terminals: np.ndarray  # int8, 1 = from end / winding 1, 2 = to end / winding 2, ...
    y_s: np.ndarray  # complex (k, k), siemens


@dataclass(frozen=True, slots=True, eq=False)
class PhaseModel:
    """Per-phase nodes and the Y-bus. ``node_bus[i]``/``node_phase[i]`` give node i's bus index and phase flag."""

    network_name: str
    node_names: tuple[str, ...]
    node_bus: np.ndarray  # int32, index into NetworkModel.buses
    node_phase: np.ndarray  # uint8 Phase flag
    y_s: sp.csr_array  # complex, siemens, symmetric
    parts: Mapping[ElementKind, sp.csr_array]  # the same matrix split by element type (they sum to y_s)
    frequency_hz: float
    tap_source: TapSource
    node_base_v: np.ndarray  # float, phase-to-neutral base voltage of each node (split-phase legs: the leg voltage)
    branches: tuple[BranchBlock, ...]  # lines, switches, transformer units, regulators (not capacitors)
    float_guard_s: np.ndarray  # float, per-node shunt conductance a solver may add against floating windings

    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}


class _Triplets:
    """COO triplets gathered per element kind, turned into CSR once."""

    def __init__(self, n: int) -> None:
        self.rows: dict[ElementKind, list[np.ndarray]] = {k: [] for k in ElementKind}
        self.cols: dict[ElementKind, list[np.ndarray]] = {k: [] for k in ElementKind}
        self.vals: dict[ElementKind, list[np.ndarray]] = {k: [] for k in ElementKind}
        self.branches: list[BranchBlock] = []
        self.float_guard_s = np.zeros(n)

    def add_blocks(self, kind: ElementKind, nodes: np.ndarray, blocks: np.ndarray,
                   names: list[str] | None = None, terminals: np.ndarray | None = None) -> None:
        """``nodes`` (m, k) node indices, ``blocks`` (m, k, k) admittances: scatter each block on its nodes.
        With ``names`` and ``terminals`` ((m, k) end numbers) each block is also kept as a BranchBlock."""
        k = nodes.shape[1]
        self.rows[kind].append(np.repeat(nodes, k, axis=1).ravel())
        self.cols[kind].append(np.tile(nodes, (1, k)).ravel())
        self.vals[kind].append(blocks.reshape(-1))
        if names is not None and terminals is not None:
            self.branches.extend(BranchBlock(name, kind, nd, tm.astype(np.int8), bl)
                                 for name, nd, tm, bl in zip(names, nodes, terminals, blocks, strict=True))

    def matrix(self, kind: ElementKind, n: int) -> sp.csr_array:
        if not self.rows[kind]:
            return sp.csr_array((n, n), dtype=complex)
        coo = sp.coo_array((np.concatenate(self.vals[kind]),
                            (np.concatenate(self.rows[kind]), np.concatenate(self.cols[kind]))), shape=(n, n))
        out = coo.tocsr()  # sums duplicates
        out.eliminate_zeros()
        return out


def build_phase_model(network: NetworkModel, *, tap_source: TapSource = TapSource.MODEL,
                      frequency_hz: float = 60.0) -> PhaseModel:
    """Build the phase nodes and Y-bus of ``network``; PhaseModelError names any element that cannot be built."""
    names: list[str] = []
    node_bus: list[int] = []
    node_phase: list[int] = []
    index: dict[tuple[int, Phase], int] = {}
    for bus in network.buses:
        for p in _ORDER:
            if p in bus.phases:
                index[(bus.index, p)] = len(names)
                names.append(f"{bus.name.upper()}.{node_suffix(p)}")
                node_bus.append(bus.index)
                node_phase.append(int(p))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PhaseModelError(f"network {network.name!r}: node names {dup} are not unique (bus names differ only "
                              "in case, or a bus has both A and s1)")
    n = len(names)
    trip = _Triplets(n)

    def node(bus: int, phase: Phase, what: str) -> int:
        try:
            return index[(bus, phase)]
        except KeyError:
            raise PhaseModelError(f"{what}: bus {network.buses[bus].name!r} has no phase {phase.name}") from None

    _add_lines(network, trip, node)
    _add_switches(network, trip, node, 2.0 * math.pi * frequency_hz)
    _add_transformers(network, trip, node, tap_source)
    _add_capacitors(network, trip, node)
    parts = {kind: trip.matrix(kind, n) for kind in ElementKind}
    total = sp.csr_array((n, n), dtype=complex)
    for part in parts.values():
        total = total + part
    bus_arr = np.asarray(node_bus, dtype=np.int32)
    phase_arr = np.asarray(node_phase, dtype=np.uint8)
    return PhaseModel(network.name, tuple(names), bus_arr, phase_arr, sp.csr_array(total), parts, frequency_hz,
                      tap_source, _node_base_v(network, bus_arr, phase_arr), tuple(trip.branches), trip.float_guard_s)


def _node_base_v(network: NetworkModel, node_bus: np.ndarray, node_phase: np.ndarray) -> np.ndarray:
    """Line-to-neutral base per node: bus nominal / sqrt 3 (a bus without one borrows from a line or switch
    neighbour); a split-phase leg takes the rated voltage of the transformer winding that feeds it."""
    vn = [b.nominal_v for b in network.buses]
    pairs = [(ln.from_bus, ln.to_bus) for ln in network.lines] + [(s.from_bus, s.to_bus) for s in network.switches]
    changed = True
    while changed:
        changed = False
        for a, b in pairs:
            if math.isnan(vn[a]) != math.isnan(vn[b]):
                vn[a] = vn[b] = vn[b] if math.isnan(vn[a]) else vn[a]
                changed = True
    leg_v: dict[int, float] = {}
    for tr in network.transformers:
        for w in tr.windings:
            if w.phases & (Phase.S1 | Phase.S2):
                leg_v[w.bus] = w.rated_u_v
    base = np.array([vn[b] / math.sqrt(3.0) for b in node_bus])
    legs = (node_phase & int(Phase.S1 | Phase.S2)) != 0
    base[legs] = [leg_v.get(int(b), vn[b] / 2.0) for b in node_bus[legs]]
    return base


def _two_port(y_series: np.ndarray, y_shunt_half: np.ndarray) -> np.ndarray:
    """Blocks (m, 2k, 2k) of pi-branches from (m, k, k) series admittances and per-end shunt admittances."""
    top = np.concatenate([y_series + y_shunt_half, -y_series], axis=2)
    bottom = np.concatenate([-y_series, y_series + y_shunt_half], axis=2)
    return np.concatenate([top, bottom], axis=1)


def _add_lines(network: NetworkModel, trip: _Triplets, node: _NodeOf) -> None:
    by_size: dict[int, list[LineSegment]] = {}
    for line in network.lines:
        by_size.setdefault(len(line.phases), []).append(line)
    for k, lines in by_size.items():
        z = np.stack([(ln.r_ohm_per_m + 1j * ln.x_ohm_per_m) * ln.length_m for ln in lines])
        b_half = np.stack([1j * ln.b_s_per_m * ln.length_m / 2.0 for ln in lines])
        try:
            y = np.linalg.inv(z)
        except np.linalg.LinAlgError:
            bad = [ln.name for ln, zz in zip(lines, z, strict=True) if np.linalg.matrix_rank(zz) < k]
            raise PhaseModelError(f"lines {bad}: phase impedance matrix is singular") from None
        nodes = np.array([[node(ln.from_bus, p, f"line {ln.name!r}") for p in ln.phases]
                          + [node(ln.to_bus, p, f"line {ln.name!r}") for p in ln.phases] for ln in lines])
        terminals = np.tile(np.repeat([1, 2], k), (len(lines), 1))
        trip.add_blocks(ElementKind.LINE, nodes, _two_port(y, b_half), [ln.name for ln in lines], terminals)


def _add_switches(network: NetworkModel, trip: _Triplets, node: _NodeOf, omega: float) -> None:
    closed = [sw for sw in network.switches if not sw.open]
    for sw in closed:
        phases = [p for p in _ORDER if p in sw.phases]
        k = len(phases)
        y = np.eye(k, dtype=complex) / SWITCH_Z_OHM
        # Sequence capacitances to the phase frame: self (2 c1 + c0)/3, mutual (c0 - c1)/3; half at each end.
        c = np.full((k, k), (SWITCH_C0_F - SWITCH_C1_F) / 3.0)
        np.fill_diagonal(c, (2.0 * SWITCH_C1_F + SWITCH_C0_F) / 3.0)
        nodes = np.array([[node(sw.from_bus, p, f"switch {sw.name!r}") for p in phases]
                          + [node(sw.to_bus, p, f"switch {sw.name!r}") for p in phases]])
        trip.add_blocks(ElementKind.SWITCH, nodes, _two_port(y[None], (0.5j * omega * c)[None]), [sw.name],
                        np.repeat([1, 2], k)[None])


def _winding_incidence(w: TransformerWinding, node: _NodeOf, what: str,
                       offset_deg: float) -> list[tuple[list[int], list[float]]]:
    """Per single-phase winding: the nodes it spans and their signs (ground is dropped). ``offset_deg`` is the angle
    of the winding voltage over its bus's phase-to-neutral voltage: +-30 picks the delta orientation, 180 polarity."""
    phases = [p for p in _ORDER if p in w.phases]
    offset = round(offset_deg) % 360
    if w.connection is WindingConnection.D:
        if len(phases) != 3:
            raise PhaseModelError(f"{what}: delta winding {w.name!r} needs three phases, has {w.phases!r}")
        if offset not in (30, 150, 210, 330):
            raise PhaseModelError(f"{what}: the vector group puts delta winding {w.name!r} at {offset} degrees")
        step = 1 if offset in (30, 210) else -1  # V_AB leads V_A by 30 degrees, V_AC lags it by 30
        sign = -1.0 if offset in (150, 210) else 1.0
        return [([node(w.bus, phases[i], what), node(w.bus, phases[(i + step) % 3], what)], [sign, -sign])
                for i in range(3)]
    if w.connection not in (WindingConnection.Y, WindingConnection.YN, WindingConnection.I):
        raise PhaseModelError(f"{what}: winding connection {w.connection.value!r} of {w.name!r} is not supported")
    if offset not in (0, 180):
        raise PhaseModelError(f"{what}: the vector group puts wye winding {w.name!r} at {offset} degrees")
    sign = -1.0 if offset == 180 else 1.0
    if w.connection is WindingConnection.I and len(phases) == 2 and Phase.N not in w.phases:
        return [([node(w.bus, phases[0], what), node(w.bus, phases[1], what)], [sign, -sign])]
    # An ungrounded wye's neutral is not a node of the Y-bus; treated as grounded (balanced operation).
    return [([node(w.bus, p, what)], [sign]) for p in phases]


def _end_offsets_deg(tr: Transformer) -> dict[int, float]:
    """Winding-voltage angle per end number from the vector group's clock numbers (first end = reference).
    A delta first end is placed so the first wye end lags it by its clock number; missing numbers: 0 between
    like connections, 1 (ANSI 30 degree lag) between delta and wye."""
    ends = sorted({w.end_number: w for w in tr.windings}.items())
    is_delta = [w.connection is WindingConnection.D for _, w in ends]
    groups = _VECTOR_WINDING.findall(tr.vector_group.replace(" ", ""))
    clocks = []
    for k in range(len(ends)):
        digits = groups[k][1] if len(groups) == len(ends) else ""
        clocks.append(int(digits) % 12 if digits else (1 if is_delta[k] != is_delta[0] else 0))
    clocks[0] = 0
    first_wye = next((k for k in range(len(ends)) if not is_delta[k]), None)
    base = 0.0 if not is_delta[0] else (30.0 if first_wye is None else -30.0 * clocks[first_wye])
    return {number: base + 30.0 * clock for (number, _w), clock in zip(ends, clocks, strict=True)}


def _add_transformers(network: NetworkModel, trip: _Triplets, node: _NodeOf, tap_source: TapSource) -> None:
    ratio_of: dict[str, float] = {}
    if tap_source is TapSource.MODEL:
        for tc in network.tap_changers:
            ratio_of[tc.winding_end_mrid] = tc.ratio_pu
    for tr in network.transformers:
        kind = ElementKind.REGULATOR if tr.is_regulator else ElementKind.TRANSFORMER
        what = f"transformer {tr.name!r}"
        offsets = _end_offsets_deg(tr)
        for windings, y_pu, s_unit_va in _units(tr):
            legs = {w.end_number for w in windings if w.phases & Phase.S1}
            incs = []
            for w in windings:
                # centre tap: the s2 half-winding is wound the other way round (CIMHub writes it Ns2)
                flip = 180.0 if legs and Phase.S2 in w.phases and Phase.S1 not in w.phases else 0.0
                incs.append(_winding_incidence(w, node, what, offsets[w.end_number] + flip))
            if len({len(inc) for inc in incs}) != 1:
                raise PhaseModelError(f"{what}: windings {[w.name for w in windings]} have different phase counts")
            v = np.array([_winding_v(w) * ratio_of.get(w.end_mrid, 1.0) for w in windings])
            y_s = y_pu * s_unit_va / np.outer(v, v)
            for inc, vw in zip(incs, v, strict=True):
                for nodes_w, _signs in inc:
                    trip.float_guard_s[nodes_w] += FLOAT_GUARD_PPM * 1e-6 * s_unit_va / vw**2
            for parts in zip(*incs, strict=True):
                nodes = np.array([n for nodes_w, _ in parts for n in nodes_w])
                signs = np.array([s for _, signs_w in parts for s in signs_w])
                end = np.array([i for i, (nodes_w, _) in enumerate(parts) for _n in nodes_w])
                block = y_s[end[:, None], end[None, :]] * np.outer(signs, signs)
                terminals = np.array([windings[i].end_number for i in end])
                trip.add_blocks(kind, nodes[None], block[None], [tr.name], terminals[None])


def _winding_v(w: TransformerWinding) -> float:
    """Voltage across one single-phase winding: line-to-neutral for a three-phase wye end, else rated U."""
    three_phase = sum(1 for p in (Phase.A, Phase.B, Phase.C) if p in w.phases) == 3
    if three_phase and w.connection in (WindingConnection.Y, WindingConnection.YN):
        return w.rated_u_v / math.sqrt(3.0)
    return w.rated_u_v


def _units(tr: Transformer) -> list[tuple[list[TransformerWinding], np.ndarray, float]]:
    """Windings (by end number), per-unit primitive admittance on the unit's own base and per-phase rating of
    each single-phase unit (tank, or the three-phase PowerTransformer taken phase by phase)."""
    out = []
    groups: dict[str | None, list[TransformerWinding]] = {}
    for w in tr.windings:
        groups.setdefault(w.tank_mrid, []).append(w)
    tanks = {t.mrid: t for t in tr.tanks}
    for tank_mrid, group in groups.items():
        windings = sorted(group, key=lambda w: w.end_number)
        n = len(windings)
        if n < 2:
            raise PhaseModelError(f"transformer {tr.name!r}: a unit with {n} winding(s)")
        s_base = windings[0].rated_s_va
        tank = tanks.get(tank_mrid) if tank_mrid is not None else None
        z = {(i, j): _pair_z_pu(tr, tank, windings[i], windings[j], s_base)
             for i in range(n) for j in range(i + 1, n)}
        # Short-circuit impedances seen from winding 1 (Zb) -> nodal primitive Y = A^T Zb^-1 A.
        zb = np.empty((n - 1, n - 1), dtype=complex)
        for a in range(1, n):
            for b in range(1, n):
                zb[a - 1, b - 1] = z[(0, a)] if a == b else (z[(0, a)] + z[(0, b)] - z[(min(a, b), max(a, b))]) / 2
        try:
            yb = np.linalg.inv(zb)
        except np.linalg.LinAlgError:
            raise PhaseModelError(f"transformer {tr.name!r}: singular short-circuit impedances {z}") from None
        a_mat = np.hstack([-np.ones((n - 1, 1)), np.eye(n - 1)])
        n_phases = sum(1 for p in (Phase.A, Phase.B, Phase.C) if p in windings[0].phases)
        out.append((windings, a_mat.T @ yb @ a_mat, s_base / (3.0 if n_phases == 3 else 1.0)))
    return out


def _pair_z_pu(tr: Transformer, tank: TransformerTank | None, wi: TransformerWinding, wj: TransformerWinding,
               s_base_va: float) -> complex:
    """Short-circuit impedance between two windings, per unit on ``s_base_va`` (mesh impedance or test)."""
    pair = {wi.end_number, wj.end_number}
    if tank is None:
        mesh = [m for m in tr.mesh_impedances if {m.from_end_number, m.to_end_number} == pair]
        if not mesh:
            raise PhaseModelError(f"transformer {tr.name!r}: no TransformerMeshImpedance between ends "
                                  f"{wi.end_number} and {wj.end_number}")
        u_from = (wi if mesh[0].from_end_number == wi.end_number else wj).rated_u_v
        z_pu = complex(mesh[0].r_ohm, mesh[0].x_ohm) * s_base_va / u_from**2
    else:
        tests = sorted((t for t in tank.short_circuit_tests if {t.energised_end_number, *t.grounded_end_numbers}
                        == pair), key=lambda t: t.energised_end_number != wi.end_number)
        if not tests:
            raise PhaseModelError(f"transformer {tr.name!r}: tank {tank.name!r} has no ShortCircuitTest between "
                                  f"ends {wi.end_number} and {wj.end_number}")
        test = tests[0]
        we, wo = (wi, wj) if test.energised_end_number == wi.end_number else (wj, wi)
        base_va = test.base_power_va if test.base_power_va > 0 else we.rated_s_va
        # CIMHub writes leakageImpedance in ohm referred to the energised end; the load loss gives the resistance.
        r_ohm = (test.loss_w / base_va * we.rated_u_v**2 / base_va if test.loss_w > 0
                 else we.r_ohm + wo.r_ohm * (we.rated_u_v / wo.rated_u_v) ** 2)
        x_ohm = math.sqrt(max(test.leakage_impedance_ohm**2 - r_ohm**2, 0.0))
        z_pu = complex(r_ohm, x_ohm) * s_base_va / we.rated_u_v**2
    if z_pu == 0:
        raise PhaseModelError(f"transformer {tr.name!r}: zero leakage impedance between ends {wi.end_number} "
                              f"and {wj.end_number}")
    return z_pu

def _add_capacitors(network: NetworkModel, trip: _Triplets, node: _NodeOf) -> None:
    for cap in network.capacitors:
        what = f"capacitor {cap.name!r}"
        per_phase = dict(cap.phase_b_per_section_s)
        phases = [p for p in (Phase.A, Phase.B, Phase.C) if p in cap.phases]
        b = {p: per_phase.get(p, cap.b_per_section_s) * cap.sections for p in phases}
        if cap.connection is ShuntConnection.D:
            if len(phases) != 3:
                raise PhaseModelError(f"{what}: delta connection needs three phases, has {cap.phases!r}")
            for i, p in enumerate(phases):
                q = phases[(i + 1) % 3]
                y = 1j * b[p]
                nodes = np.array([[node(cap.bus, p, what), node(cap.bus, q, what)]])
                trip.add_blocks(ElementKind.CAPACITOR, nodes, np.array([[[y, -y], [-y, y]]]))
        else:
            nodes = np.array([[node(cap.bus, p, what) for p in phases]])
            trip.add_blocks(ElementKind.CAPACITOR, nodes, np.diag([1j * b[p] for p in phases])[None])
