"""Check a network state by a three-phase power flow: voltages inside the band, branches inside their ratings.

Every DMS proposal (a FLISR restoration, a Volt/VAR action, a reconfiguration, a switching step in a study) is
accepted only once :func:`check_flow` of the resulting state finds no violation. Ratings: a line's
``rated_current_a`` when the model gives one (CIM ``CurrentLimit``), a switch's ``rated_current_a``, a transformer
winding's rated apparent power. Elements without a rating are not checked for loading (reported in ``unrated``).
Voltages are checked on every energised phase node of a bus whose nominal voltage is at least ``min_check_v`` (the
band is a primary-distribution limit; customers' service drops are left out by default).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from dms.errors import DmsError
from dms.network_state import NetworkState
from models.errors import ModelError
from models.phase_model import build_phase_model
from models.three_phase_flow import DerMode, ThreePhaseFlow, run_three_phase_powerflow

__all__ = ["FlowCheck", "FlowCheckError", "VoltageBand", "Violation", "ViolationKind", "branch_ratings", "check_flow",
           "new_violations"]


class FlowCheckError(DmsError):
    """The power flow of a proposed state could not be set up (the message names the network and the cause)."""


class ViolationKind(StrEnum):
    UNDERVOLTAGE = "undervoltage"
    OVERVOLTAGE = "overvoltage"
    OVERLOAD = "overload"
    NOT_CONVERGED = "not_converged"


@dataclass(frozen=True, slots=True)
class VoltageBand:
    low_pu: float = 0.95
    high_pu: float = 1.05

    def __post_init__(self) -> None:
        if not 0 < self.low_pu < self.high_pu:
            raise DmsError(f"voltage band {self.low_pu}..{self.high_pu} pu is not a band")


@dataclass(frozen=True, slots=True)
class Violation:
    kind: ViolationKind
    element: str  # bus name for voltages, element name for overloads
    phase: str
    value: float  # |V| in pu, or loading in % of the rating
    limit: float

    def text(self) -> str:
        if self.kind is ViolationKind.OVERLOAD:
            return f"{self.element} loaded {self.value:.0f} % (limit {self.limit:.0f} %)"
        if self.kind is ViolationKind.NOT_CONVERGED:
            return f"power flow did not converge ({self.element})"
        return f"{self.element}.{self.phase} at {self.value:.4f} pu ({self.kind.value}, limit {self.limit:.3f} pu)"


@dataclass(frozen=True, slots=True, eq=False)
class FlowCheck:
    """The verdict on one state. ``flow`` is None when the flow did not converge."""

    converged: bool
    violations: tuple[Violation, ...]
    v_min_pu: float
    v_max_pu: float
    max_loading_pct: float
    max_loading_element: str
    loss_p_w: float
    load_p_w: float
    deenergised_loads: tuple[int, ...]  # indices into the model's loads
    unrated: int  # branches carrying current without a rating
    solve_ms: float
    flow: ThreePhaseFlow | None

    @property
    def ok(self) -> bool:
        return self.converged and not self.violations

    def summary(self) -> str:
        if not self.converged:
            return self.violations[0].text() if self.violations else "power flow did not converge"
        head = (f"|V| {self.v_min_pu:.3f}-{self.v_max_pu:.3f} pu, max loading {self.max_loading_pct:.0f} % "
                f"({self.max_loading_element or '-'}), losses {self.loss_p_w / 1e3:.1f} kW")
        if not self.violations:
            return head
        worst = sorted(self.violations, key=lambda v: v.kind.value)[:3]
        more = f" and {len(self.violations) - 3} more" if len(self.violations) > 3 else ""
        return f"{head}; violations: {'; '.join(v.text() for v in worst)}{more}"


def branch_ratings(state: NetworkState) -> dict[str, float]:
    """Element name -> rated current in A (lines and switches) or rated apparent power in VA (``"VA:" + name`` keys
    for transformers)."""
    m = state.base
    out: dict[str, float] = {}
    for ln in m.lines:
        r = float(getattr(ln, "rated_current_a", math.nan))
        if r > 0:
            out[ln.name] = r
    for sw in m.switches:
        if sw.rated_current_a > 0:
            out[sw.name] = sw.rated_current_a
    for tr in m.transformers:
        # a bank of single-phase tanks: the sum of the tanks' first windings
        s = sum(w.rated_s_va for w in tr.windings if w.end_number == 1 and w.rated_s_va > 0)
        if s > 0:
            out["VA:" + tr.name] = s
    return out


def check_flow(state: NetworkState, *, band: VoltageBand = VoltageBand(), loading_limit_pct: float = 100.0,
               min_check_v: float = 1000.0, der: bool = True) -> FlowCheck:
    """Run the three-phase flow of ``state`` and list what breaks the band or a rating."""
    started = time.perf_counter()
    model = state.model
    try:
        pm = build_phase_model(model, frequency_hz=state.frequency_hz)
        flow = run_three_phase_powerflow(model, der=DerMode.ON if der else DerMode.OFF, phase_model=pm,
                                         tolerance_pu=1e-7, max_iterations=60)
    except ModelError as exc:
        if type(exc).__name__ != "NotConvergedError":
            raise FlowCheckError(f"network {model.name!r} ({state.label}): {exc}") from exc
        ms = (time.perf_counter() - started) * 1e3
        v = Violation(ViolationKind.NOT_CONVERGED, str(exc), "", math.nan, math.nan)
        return FlowCheck(False, (v,), math.nan, math.nan, math.nan, "", math.nan, math.nan, (), 0, ms, None)
    violations: list[Violation] = []
    nodes = flow.nodes
    nominal = np.array([b.nominal_v for b in model.buses])
    bus_index = {b.name: i for i, b in enumerate(model.buses)}
    node_nominal = nominal[[bus_index[str(b)] for b in nodes["bus"]]] if len(nodes) else np.zeros(0)
    checked = nodes["energised"] & ~(node_nominal < min_check_v)  # NaN nominal: checked
    vm = nodes["v_pu"][checked]
    for row in nodes[checked & (nodes["v_pu"] < band.low_pu)]:
        violations.append(Violation(ViolationKind.UNDERVOLTAGE, str(row["bus"]), str(row["phase"]),
                                    float(row["v_pu"]), band.low_pu))
    for row in nodes[checked & (nodes["v_pu"] > band.high_pu)]:
        violations.append(Violation(ViolationKind.OVERVOLTAGE, str(row["bus"]), str(row["phase"]),
                                    float(row["v_pu"]), band.high_pu))
    ratings = branch_ratings(state)
    loading: dict[str, float] = {}
    unrated = 0
    br = flow.branches
    if len(br):
        elements, inverse = np.unique(br["element"], return_inverse=True)
        i_max = np.zeros(len(elements))
        np.maximum.at(i_max, inverse, br["i_a"])
        for name, i_a in zip(elements, i_max, strict=True):
            name = str(name)
            if name in ratings:
                loading[name] = 100.0 * float(i_a) / ratings[name]
            elif i_a > 1e-3 and ("VA:" + name) not in ratings:
                unrated += 1
        # transformers: |S| through their first terminal against the rating
        term1 = br[br["terminal"] == 1]
        for name in {k[3:] for k in ratings if k.startswith("VA:")}:
            rows = term1[term1["element"] == name]
            if len(rows):
                s_va = float(np.hypot(rows["p_w"].sum(), rows["q_var"].sum()))
                loading[name] = 100.0 * s_va / ratings["VA:" + name]
    for name, pct in loading.items():
        if pct > loading_limit_pct:
            violations.append(Violation(ViolationKind.OVERLOAD, name, "", pct, loading_limit_pct))
    worst = max(loading.items(), key=lambda kv: kv[1], default=("", 0.0))
    dead_buses = {bus_index[str(b)] for b in nodes["bus"][~nodes["energised"]]}
    live_buses = {bus_index[str(b)] for b in nodes["bus"][nodes["energised"]]}
    dead_loads = tuple(i for i, ld in enumerate(model.loads) if ld.bus in dead_buses and ld.bus not in live_buses)
    return FlowCheck(True, tuple(violations), float(vm.min()) if len(vm) else math.nan,
                     float(vm.max()) if len(vm) else math.nan, float(worst[1]), worst[0], flow.loss_p_w,
                     flow.load_p_w, dead_loads, unrated, (time.perf_counter() - started) * 1e3, flow)


def new_violations(before: FlowCheck, after: FlowCheck, *, tolerance: float = 0.01) -> tuple[Violation, ...]:
    """Violations of ``after`` that ``before`` did not have, or that got worse by more than ``tolerance`` (pu for
    voltages, fraction of the limit for loadings). A proposal is judged by what it adds: a network that starts with a
    violation (a feeder head above its nameplate) must not make every plan impossible."""
    if not after.converged:
        return after.violations
    old = {(v.kind, v.element, v.phase): v for v in before.violations}
    out = []
    for v in after.violations:
        prev = old.get((v.kind, v.element, v.phase))
        if prev is None:
            out.append(v)
        elif v.kind is ViolationKind.OVERLOAD and v.value > prev.value * (1 + tolerance):
            out.append(v)
        elif v.kind is ViolationKind.UNDERVOLTAGE and v.value < prev.value - tolerance:
            out.append(v)
        elif v.kind is ViolationKind.OVERVOLTAGE and v.value > prev.value + tolerance:
            out.append(v)
    return tuple(out)
