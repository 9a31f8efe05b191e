"""Loads and DERs of a feeder as single-phase injection branches on the phase model's nodes (vectorised tables).

Each branch draws power between node ``a`` and node ``b`` (``b`` = the ground index ``n``) at nominal voltage
``v_nom_v`` with ZIP shares: constant-impedance (``*_z``, stamped into the Y-bus by the solver), constant-current
(``*_i``), constant-power (``*_pq``) and, for CIM exponent models, ``*_e`` with exponents ``e_p``/``e_q``.

Connection rules (OpenDSS/CIMHub conventions): a wye load splits over its phases (per-phase CIM values when given,
else equally) phase to neutral; a three-phase delta load puts phase X's value between X and the next phase (A-B, B-C,
C-A); a single-phase delta load on phase X sits between X and the next phase of A->B->C->A (646 ``B`` = B-C); a
two-phase delta load sits between its two phases. Split-phase (s1/s2) loads and DERs are taken leg to neutral. DERs
are constant-power injections (negative loads) at their present P and Q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from models.errors import ModelError
from models.network import Der, Load, NetworkModel, Phase, ShuntConnection
from models.phase_model import PhaseModel

__all__ = ["INJECTION_DTYPE", "InjectionError", "InjectionKind", "Injections", "build_injections"]

_CYCLE = {Phase.A: Phase.B, Phase.B: Phase.C, Phase.C: Phase.A}
_SINGLE = (Phase.A, Phase.B, Phase.C, Phase.S1, Phase.S2)


class InjectionError(ModelError):
    """A load or DER cannot be placed on the phase model; the message names it and the problem."""


class InjectionKind(IntEnum):
    LOAD = 0
    DER = 1


INJECTION_DTYPE = np.dtype([
    ("owner", np.int32),  # index into NetworkModel.loads or .ders
    ("kind", np.int8),  # InjectionKind
    ("a", np.int64),
    ("b", np.int64),  # n = ground
    ("v_nom_v", np.float64),
    ("p_z_w", np.float64), ("q_z_var", np.float64),
    ("p_i_w", np.float64), ("q_i_var", np.float64),
    ("p_pq_w", np.float64), ("q_pq_var", np.float64),
    ("p_e_w", np.float64), ("q_e_var", np.float64),
    ("e_p", np.float64), ("e_q", np.float64),
])


@dataclass(frozen=True, slots=True, eq=False)
class Injections:
    table: np.ndarray  # INJECTION_DTYPE
    n_nodes: int

    def only_at(self, live: np.ndarray) -> Injections:
        """The branches whose nodes are all in ``live`` (bool per node): the others have no supply."""
        t = self.table
        ok = np.append(live, True)
        return Injections(t[ok[t["a"]] & ok[t["b"]]], self.n_nodes)

    def z_admittance_s(self) -> np.ndarray:
        """Constant-impedance share as an admittance per branch (drawn power (p + jq) at nominal voltage)."""
        t = self.table
        return (t["p_z_w"] - 1j * t["q_z_var"]) / t["v_nom_v"] ** 2

    def branch_power_va(self, v: np.ndarray) -> np.ndarray:
        """Power drawn by each branch (all shares, constant-impedance included) at node voltages ``v``."""
        t = self.table
        vab = _across(v, t)
        vm = np.abs(vab) / t["v_nom_v"]
        return self._non_z_power(vm) + (t["p_z_w"] + 1j * t["q_z_var"]) * vm**2

    def current_injection_a(self, v: np.ndarray) -> np.ndarray:
        """Node current injections (length n, into the network) of the non-impedance shares at voltages ``v``."""
        t = self.table
        vab = _across(v, t)
        vm = np.abs(vab) / t["v_nom_v"]
        s = self._non_z_power(vm)
        with np.errstate(divide="ignore", invalid="ignore"):
            drawn = np.where(np.abs(vab) > 0, np.conj(s / vab), 0.0)
        out = np.zeros(self.n_nodes + 1, dtype=complex)
        np.add.at(out, t["a"], -drawn)
        np.add.at(out, t["b"], drawn)
        return out[: self.n_nodes]

    def _non_z_power(self, vm: np.ndarray) -> np.ndarray:
        t = self.table
        p = t["p_i_w"] * vm + t["p_pq_w"] + t["p_e_w"] * vm ** t["e_p"]
        q = t["q_i_var"] * vm + t["q_pq_var"] + t["q_e_var"] * vm ** t["e_q"]
        return p + 1j * q


def _across(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    vg = np.append(v, 0.0)
    return vg[t["a"]] - vg[t["b"]]


def build_injections(network: NetworkModel, pm: PhaseModel, *, include_ders: bool = True) -> Injections:
    """All loads (and DERs unless ``include_ders`` is False) as injection branches on ``pm``'s nodes."""
    index = {(int(b), Phase(int(p))): i for i, (b, p) in enumerate(zip(pm.node_bus, pm.node_phase, strict=True))}
    n = len(pm.node_names)
    rows: list[tuple] = []
    for k, load in enumerate(network.loads):
        shares = _shares(load)
        for a, b, p_w, q_var in _load_branches(network, load, index, n):
            # phase to neutral: the node base; phase to phase: line voltage (or 240 V across split-phase legs)
            v_nom = pm.node_base_v[a] * (1.0 if b == n else 2.0 if _is_leg(pm, a) else math.sqrt(3.0))
            rows.append((k, InjectionKind.LOAD, a, b, v_nom, *_split(p_w, q_var, shares)))
    if include_ders:
        for k, der in enumerate(network.ders):
            for a, p_w, q_var in _der_branches(network, der, index):
                rows.append((k, InjectionKind.DER, a, n, pm.node_base_v[a], 0.0, 0.0, 0.0, 0.0, -p_w, -q_var,
                             0.0, 0.0, 0.0, 0.0))
    table = np.array(rows, dtype=INJECTION_DTYPE) if rows else np.zeros(0, dtype=INJECTION_DTYPE)
    return Injections(table, n)


def _is_leg(pm: PhaseModel, node: int) -> bool:
    return bool(pm.node_phase[node] & int(Phase.S1 | Phase.S2))


def _shares(load: Load) -> tuple[float, ...]:
    """(pz, pi, ppq, pe, ep, qz, qi, qpq, qe, eq) fractions and exponents of the load's response."""
    r = load.response
    if r is None:
        return (0, 0, 1, 0, 0, 0, 0, 1, 0, 0)
    if r.exponent_model:
        return (0, 0, 0, 1, r.p_voltage_exponent, 0, 0, 0, 1, r.q_voltage_exponent)
    p = np.array([r.p_constant_impedance_pct, r.p_constant_current_pct, r.p_constant_power_pct]) / 100.0
    q = np.array([r.q_constant_impedance_pct, r.q_constant_current_pct, r.q_constant_power_pct]) / 100.0
    p = p if p.sum() > 0 else np.array([0.0, 0.0, 1.0])  # a response with no shares: constant power
    q = q if q.sum() > 0 else np.array([0.0, 0.0, 1.0])
    return (*p, 0, 0, *q, 0, 0)


def _split(p_w: float, q_var: float, s: tuple[float, ...]) -> tuple[float, ...]:
    pz, pi, ppq, pe, ep, qz, qi, qpq, qe, eq = s
    return (p_w * pz, q_var * qz, p_w * pi, q_var * qi, p_w * ppq, q_var * qpq, p_w * pe, q_var * qe, ep, eq)


def _per_phase(name: str, total_p: float, total_q: float, phase_p: tuple, phase_q: tuple,
               phases: list[Phase]) -> dict[Phase, tuple[float, float]]:
    if not phases:
        raise InjectionError(f"{name}: no phases")
    if phase_p:
        pp, qq = dict(phase_p), dict(phase_q)
        return {p: (pp.get(p, 0.0), qq.get(p, 0.0)) for p in phases}
    return {p: (total_p / len(phases), total_q / len(phases)) for p in phases}


def _load_branches(network: NetworkModel, load: Load, index: dict, n: int) -> list[tuple[int, int, float, float]]:
    what = f"load {load.name!r}"
    phases = [p for p in _SINGLE if p in load.phases]
    values = _per_phase(what, load.p_w, load.q_var, load.phase_p_w, load.phase_q_var, phases)

    def node(p: Phase) -> int:
        try:
            return index[(load.bus, p)]
        except KeyError:
            raise InjectionError(f"{what}: bus {network.buses[load.bus].name!r} has no phase {p.name}") from None

    if load.connection is ShuntConnection.D:
        if len(phases) == 2:
            total = [sum(v) for v in zip(*values.values(), strict=True)]
            return [(node(phases[0]), node(phases[1]), total[0], total[1])]
        if any(p not in _CYCLE for p in phases) or len(phases) not in (1, 3):
            raise InjectionError(f"{what}: delta connection on phases {load.phases!r} is not supported")
        return [(node(p), node(_CYCLE[p]), *values[p]) for p in phases]
    return [(node(p), n, *values[p]) for p in phases]


def _der_branches(network: NetworkModel, der: Der, index: dict) -> list[tuple[int, float, float]]:
    what = f"DER {der.name!r}"
    phases = [p for p in _SINGLE if p in der.phases]
    values = _per_phase(what, der.p_w, der.q_var, der.phase_p_w, der.phase_q_var, phases)
    out = []
    for p in phases:
        try:
            out.append((index[(der.bus, p)], *values[p]))
        except KeyError:
            raise InjectionError(f"{what}: bus {network.buses[der.bus].name!r} has no phase {p.name}") from None
    return out
