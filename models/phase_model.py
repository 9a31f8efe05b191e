"""Phase-level model of a feeder and its sparse three-phase nodal admittance matrix (Y-bus), in siemens.

Nodes are single phases of buses named like GridAPPS-D/OpenDSS (``BUS.1``/``.2``/``.3`` for A/B/C, split-phase legs
s1/s2 as ``.1``/``.2``; bus names upper-cased). Ground is the reference and is not a node. The matrix holds lines
(series Z^-1 plus half the shunt susceptance at each end), closed switches, transformers and regulators (winding
connections and tap ratios), and capacitors. Loads and sources are injections and are not in it.

Closed switches are modelled as OpenDSS does (``Switch=yes``: r1=r0=x1=x0=1 ohm, c1=1.1 nF, c0=1 nF per unit length,
length 0.001), so the node set and entries match GridAPPS-D's exported Y-bus; open switches add nothing.
Every element type's contribution is kept apart in ``PhaseModel.parts`` so a comparison can be attributed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp

from models.network import (
    LineSegment,
    NetworkModel,
    Phase,
    ShuntConnection,
    Transformer,
    TransformerWinding,
    WindingConnection,
)

__all__ = [
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


class PhaseModelError(ValueError):
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

    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}


class _Triplets:
    """COO triplets gathered per element kind, turned into CSR once."""

    def __init__(self) -> None:
        self.rows: dict[ElementKind, list[np.ndarray]] = {k: [] for k in ElementKind}
        self.cols: dict[ElementKind, list[np.ndarray]] = {k: [] for k in ElementKind}
        self.vals: dict[ElementKind, list[np.ndarray]] = {k: [] for k in ElementKind}

    def add_blocks(self, kind: ElementKind, nodes: np.ndarray, blocks: np.ndarray) -> None:
        """``nodes`` (m, k) node indices, ``blocks`` (m, k, k) admittances: scatter each block on its nodes."""
        k = nodes.shape[1]
        self.rows[kind].append(np.repeat(nodes, k, axis=1).ravel())
        self.cols[kind].append(np.tile(nodes, (1, k)).ravel())
        self.vals[kind].append(blocks.reshape(-1))

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
    trip = _Triplets()

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
    return PhaseModel(network.name, tuple(names), np.asarray(node_bus, dtype=np.int32),
                      np.asarray(node_phase, dtype=np.uint8), sp.csr_array(total), parts, frequency_hz, tap_source)


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
        trip.add_blocks(ElementKind.LINE, nodes, _two_port(y, b_half))


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
        trip.add_blocks(ElementKind.SWITCH, nodes, _two_port(y[None], (0.5j * omega * c)[None]))


def _winding_incidence(w: TransformerWinding, node: _NodeOf, what: str) -> list[tuple[list[int], list[float]]]:
    """Per single-phase winding: the nodes it spans and their signs (ground is dropped)."""
    phases = [p for p in _ORDER if p in w.phases]
    if w.connection in (WindingConnection.D,):
        if len(phases) != 3:
            raise PhaseModelError(f"{what}: delta winding {w.name!r} needs three phases, has {w.phases!r}")
        return [([node(w.bus, phases[i], what), node(w.bus, phases[(i + 1) % 3], what)], [1.0, -1.0])
                for i in range(3)]
    if w.connection is WindingConnection.I and len(phases) == 2 and Phase.N not in w.phases:
        return [([node(w.bus, phases[0], what), node(w.bus, phases[1], what)], [1.0, -1.0])]
    if w.connection in (WindingConnection.Y, WindingConnection.YN, WindingConnection.I):
        # An ungrounded wye's neutral is not a node of the Y-bus; treated as grounded (balanced operation).
        return [([node(w.bus, p, what)], [1.0]) for p in phases]
    raise PhaseModelError(f"{what}: winding connection {w.connection.value!r} of {w.name!r} is not supported")


def _add_transformers(network: NetworkModel, trip: _Triplets, node: _NodeOf, tap_source: TapSource) -> None:
    ratio_of: dict[str, float] = {}
    if tap_source is TapSource.MODEL:
        for tc in network.tap_changers:
            ratio_of[tc.winding_end_mrid] = tc.ratio_pu
    for tr in network.transformers:
        kind = ElementKind.REGULATOR if tr.is_regulator else ElementKind.TRANSFORMER
        for ends, z_pu, s_unit_va in _units(tr):
            what = f"transformer {tr.name!r}"
            w1, w2 = ends
            inc1 = _winding_incidence(w1, node, what)
            inc2 = _winding_incidence(w2, node, what)
            if len(inc1) != len(inc2):
                raise PhaseModelError(f"{what}: ends {w1.name!r} and {w2.name!r} have different phase counts")
            v1 = _winding_v(w1) * ratio_of.get(w1.end_mrid, 1.0)
            v2 = _winding_v(w2) * ratio_of.get(w2.end_mrid, 1.0)
            y = s_unit_va / z_pu
            yw = y * np.array([[1.0 / v1**2, -1.0 / (v1 * v2)], [-1.0 / (v1 * v2), 1.0 / v2**2]])
            for (n1, s1), (n2, s2) in zip(inc1, inc2, strict=True):
                nodes = np.array(n1 + n2)
                signs = np.array(s1 + s2)
                end = np.array([0] * len(n1) + [1] * len(n2))
                block = yw[end[:, None], end[None, :]] * np.outer(signs, signs)
                trip.add_blocks(kind, nodes[None], block[None])


def _winding_v(w: TransformerWinding) -> float:
    """Voltage across one single-phase winding: line-to-neutral for a three-phase wye end, else rated U."""
    three_phase = sum(1 for p in (Phase.A, Phase.B, Phase.C) if p in w.phases) == 3
    if three_phase and w.connection in (WindingConnection.Y, WindingConnection.YN):
        return w.rated_u_v / math.sqrt(3.0)
    return w.rated_u_v


def _units(tr: Transformer) -> list[tuple[tuple[TransformerWinding, TransformerWinding], complex, float]]:
    """(end 1, end 2), per-unit leakage impedance and per-phase rating for each two-winding unit (tank)."""
    out = []
    groups: dict[str | None, list[TransformerWinding]] = {}
    for w in tr.windings:
        groups.setdefault(w.tank_mrid, []).append(w)
    tanks = {t.mrid: t for t in tr.tanks}
    for tank_mrid, windings in groups.items():
        if len(windings) != 2:
            raise PhaseModelError(f"transformer {tr.name!r}: {len(windings)} windings in one unit, only "
                                  "two-winding units are supported")
        w1, w2 = sorted(windings, key=lambda w: w.end_number)
        n_phases = sum(1 for p in (Phase.A, Phase.B, Phase.C) if p in w1.phases)
        s_unit = w1.rated_s_va / (3.0 if n_phases == 3 else 1.0)
        z_base1 = w1.rated_u_v**2 / w1.rated_s_va  # ohm on end 1 (three-phase equivalent-wye base)
        if tank_mrid is None:
            mesh = [m for m in tr.mesh_impedances if {m.from_end_number, m.to_end_number} == {1, 2}]
            if not mesh:
                raise PhaseModelError(f"transformer {tr.name!r}: no TransformerMeshImpedance between ends 1 and 2")
            z_pu = complex(mesh[0].r_ohm, mesh[0].x_ohm) / z_base1
        else:
            tests = [t for t in tanks[tank_mrid].short_circuit_tests if t.energised_end_number == 1]
            if not tests:
                raise PhaseModelError(f"transformer {tr.name!r}: tank {tank_mrid} has no ShortCircuitTest from end 1")
            test = tests[0]
            # CIMHub writes leakageImpedance in ohm referred to the energised end; the loss gives the resistance.
            r_ohm = test.loss_w * (w1.rated_u_v / w1.rated_s_va) ** 2 if test.loss_w > 0 else w1.r_ohm + w2.r_ohm * (
                w1.rated_u_v / w2.rated_u_v) ** 2
            z_abs = test.leakage_impedance_ohm
            x_ohm = math.sqrt(max(z_abs**2 - r_ohm**2, 0.0))
            z_pu = complex(r_ohm, x_ohm) / z_base1
        if z_pu == 0:
            raise PhaseModelError(f"transformer {tr.name!r}: zero leakage impedance")
        out.append(((w1, w2), z_pu, s_unit))
    return out


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
