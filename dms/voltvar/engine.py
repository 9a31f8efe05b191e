"""Volt/VAR optimisation: choose tap changer steps and capacitor sections for one network state.

Method: discrete coordinate descent with a full three-phase power flow (``dms.flow_check.check_flow``) per candidate.
Starting from the present state, each control in turn is moved one step up or down and, while that lowers the cost,
further in the same direction; passes repeat until none helps. The cost is

    penalty x (band excursions in pu + new overloads) + objective (W) + min_gain_w x operations,

so getting back inside the band dominates, then losses (``LOSSES``) or load demand (``CVR``: the ZIP loads draw
less at lower voltage) fall, and each operation must buy at least ``min_gain_w``. Why this and not a sensitivity
model or an OPF: the controls are few (IEEE 123: 7 regulators and 4 banks) and discrete, the feeders are unbalanced
with single-phase regulators and voltage-dependent loads, and one flow costs ~5-10 ms, so evaluating the real
physics for every step is affordable (IEEE 123: ~100 flows, ~1 s) and needs no linearisation that could mislead it.
Coordinate descent finds a local optimum: moves that only help when two controls go together (one regulator down,
another up) are found only if each half helps on its own.

Daily limits: a tap changer's step may move at most its remaining operations away from the start (one operation per
step), a capacitor's sections likewise; a control with none left is not touched and is listed in ``blocked``.
The proposal is verified by the flow of the final state: converged and no violation added or worsened
(``dms.flow_check.new_violations``); the band is reported ``feasible`` only when no checked node is outside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from dms.flow_check import FlowCheck, Violation, ViolationKind, VoltageBand, check_flow, new_violations
from dms.network_state import NetworkState
from dms.voltvar.errors import VoltVarError
from models.network import phase_text

__all__ = ["ControlKind", "FlowFigures", "Objective", "VoltVarAction", "VoltVarOptions", "VoltVarProposal",
           "optimise"]

#: W of cost per pu of band excursion (or per 100 % of added overload): any violation outweighs any loss saving.
PENALTY_W_PER_PU = 1e10
_VOLTAGE_KINDS = (ViolationKind.UNDERVOLTAGE, ViolationKind.OVERVOLTAGE)


class Objective(StrEnum):
    LOSSES = "losses"  # minimise active losses
    CVR = "cvr"  # conservation voltage reduction: minimise the (voltage-dependent) load demand


class ControlKind(StrEnum):
    TAP = "tap"  # an OLTC or regulator tap changer: value is its step
    CAPACITOR = "capacitor"  # a capacitor bank: value is its energised sections


@dataclass(frozen=True, slots=True)
class VoltVarOptions:
    objective: Objective = Objective.LOSSES
    band: VoltageBand = VoltageBand()
    # Control name -> operations left today (from ``OperationCounter.operations_left``); a control missing here is
    # unlimited. A tap step is one operation, a capacitor section switched is one.
    operations_left: Mapping[str, int] = field(default_factory=dict)
    fixed: frozenset[str] = frozenset()  # controls to leave alone (local control, out of service)
    min_gain_w: float = 100.0  # each operation must lower the objective by at least this much
    loading_limit_pct: float = 100.0
    # An overload present at the start may grow by this fraction of itself before it counts as worsened (the
    # verification uses the same figure): lower voltage draws more current through constant-power loads.
    overload_tolerance: float = 0.01
    min_check_v: float = 1000.0  # nodes below this nominal voltage are not held to the band (LV service buses)
    max_passes: int = 10
    max_flows: int = 3000

    def __post_init__(self) -> None:
        if self.min_gain_w < 0:
            raise VoltVarError(f"Volt/VAR options: min_gain_w must be >= 0, not {self.min_gain_w}")
        if not 0 <= self.overload_tolerance < 1:
            raise VoltVarError(f"Volt/VAR options: overload_tolerance {self.overload_tolerance} is not a fraction")
        if self.max_passes < 1 or self.max_flows < 1:
            raise VoltVarError("Volt/VAR options: max_passes and max_flows must be at least 1")


@dataclass(frozen=True, slots=True)
class VoltVarAction:
    kind: ControlKind
    element: str  # tap changer or capacitor name
    phases: str
    before: float  # tap step or energised sections
    after: float

    @property
    def operations(self) -> int:
        return int(round(abs(self.after - self.before)))

    def text(self) -> str:
        what = "tap" if self.kind is ControlKind.TAP else "sections"
        return f"{self.element} ({self.phases}) {what} {self.before:g} -> {self.after:g}"


@dataclass(frozen=True, slots=True)
class FlowFigures:
    """What one power flow says about a state."""

    converged: bool
    loss_p_w: float
    load_p_w: float
    v_min_pu: float
    v_max_pu: float
    voltage_violations: int  # checked node phases outside the band
    violations: tuple[Violation, ...]

    @classmethod
    def of(cls, check: FlowCheck) -> FlowFigures:
        return cls(check.converged, check.loss_p_w, check.load_p_w, check.v_min_pu, check.v_max_pu,
                   sum(v.kind in _VOLTAGE_KINDS for v in check.violations), check.violations)

    def text(self) -> str:
        if not self.converged:
            return "power flow did not converge"
        return (f"losses {self.loss_p_w / 1e3:.1f} kW, demand {self.load_p_w / 1e3:.1f} kW, "
                f"|V| {self.v_min_pu:.4f}-{self.v_max_pu:.4f} pu, {self.voltage_violations} node phase(s) outside")


@dataclass(frozen=True, slots=True, eq=False)
class VoltVarProposal:
    network: str
    state_label: str
    objective: Objective
    band: VoltageBand
    actions: tuple[VoltVarAction, ...]
    before: FlowFigures
    after: FlowFigures
    feasible: bool  # after the actions no checked node is outside the band
    verified: bool  # the final flow converged and adds or worsens no violation
    new_violations: tuple[Violation, ...]
    blocked: tuple[str, ...]  # controls left alone: no operations left today
    message: str
    flows: int
    elapsed_ms: float
    state: NetworkState  # the proposed state

    @property
    def operations(self) -> int:
        return sum(a.operations for a in self.actions)

    def objective_value(self, figures: FlowFigures) -> float:
        return figures.loss_p_w if self.objective is Objective.LOSSES else figures.load_p_w


@dataclass(frozen=True, slots=True)
class _Control:
    kind: ControlKind
    index: int  # into the model's tap_changers / capacitors
    name: str
    phases: str
    start: float
    low: float
    high: float


def _controls(state: NetworkState, options: VoltVarOptions) -> tuple[list[_Control], list[str]]:
    m = state.base
    out: list[_Control] = []
    blocked: list[str] = []
    items = [(ControlKind.TAP, i, tc.name, tc.phases, float(state.tap_step[i]), tc.low_step, tc.high_step)
             for i, tc in enumerate(m.tap_changers)]
    items += [(ControlKind.CAPACITOR, i, c.name, c.phases, float(state.capacitor_sections[i]), 0,
               max(c.maximum_sections, 1)) for i, c in enumerate(m.capacitors)]
    for kind, i, name, phases, start, low, high in items:
        if name in options.fixed:
            continue
        left = options.operations_left.get(name)
        if left is not None:
            if left <= 0:
                blocked.append(name)
                continue
            low, high = max(low, start - left), min(high, start + left)
        if not low <= start <= high:  # a position outside the nameplate range: leave it to the operator
            continue
        out.append(_Control(kind, i, name, phase_text(phases), start, float(low), float(high)))
    return out, blocked


class _Evaluator:
    """Cost of a control vector, each vector's flow computed once."""

    def __init__(self, state: NetworkState, controls: list[_Control], options: VoltVarOptions) -> None:
        self.state = state
        self.controls = controls
        self.options = options
        self.start = np.array([c.start for c in controls])
        self.cache: dict[tuple[float, ...], tuple[float, FlowCheck]] = {}
        self.flows = 0
        self.base_loading: dict[str, float] = {}
        self.base_check = self._flow(self.start)
        # overloads already there at the start are judged against their own level, not the limit
        self.base_loading = {v.element: v.value for v in self.base_check.violations
                             if v.kind is ViolationKind.OVERLOAD}
        self.cache[self._key(self.start)] = (self._cost(self.base_check, self.start), self.base_check)

    def state_of(self, x: np.ndarray) -> NetworkState:
        taps = self.state.tap_step.copy()
        caps = self.state.capacitor_sections.copy()
        for c, value in zip(self.controls, x, strict=True):
            (taps if c.kind is ControlKind.TAP else caps)[c.index] = value
        return self.state.replace(tap_step=taps, capacitor_sections=caps)

    def check(self, x: np.ndarray) -> FlowCheck:
        return self._entry(x)[1]

    def cost(self, x: np.ndarray) -> float:
        return self._entry(x)[0]

    @staticmethod
    def _key(x: np.ndarray) -> tuple[float, ...]:
        return tuple(float(v) for v in x)

    def _flow(self, x: np.ndarray) -> FlowCheck:
        o = self.options
        self.flows += 1
        return check_flow(self.state_of(x), band=o.band, loading_limit_pct=o.loading_limit_pct,
                          min_check_v=o.min_check_v)

    def _entry(self, x: np.ndarray) -> tuple[float, FlowCheck]:
        key = self._key(x)
        hit = self.cache.get(key)
        if hit is None:
            fc = self._flow(x)
            hit = (self._cost(fc, x), fc)
            self.cache[key] = hit
        return hit

    def _cost(self, fc: FlowCheck, x: np.ndarray) -> float:
        if not fc.converged:
            return math.inf
        excess = 0.0
        for v in fc.violations:
            if v.kind in _VOLTAGE_KINDS:
                excess += abs(v.value - v.limit)
            elif v.kind is ViolationKind.OVERLOAD:
                # an overload already there may grow by new_violations' own tolerance before it counts
                allowed = max(v.limit, self.base_loading.get(v.element, 0.0) * (1.0 + self.options.overload_tolerance))
                excess += max(0.0, v.value - allowed) / 100.0
        value = fc.loss_p_w if self.options.objective is Objective.LOSSES else fc.load_p_w
        operations = float(np.abs(x - self.start).sum()) if len(x) else 0.0
        return PENALTY_W_PER_PU * excess + value + self.options.min_gain_w * operations


def _descend(ev: _Evaluator, options: VoltVarOptions) -> np.ndarray:
    x = ev.start.copy()
    best = ev.cost(x)
    for _ in range(options.max_passes):
        improved = False
        for k, c in enumerate(ev.controls):
            for direction in (1.0, -1.0):
                moved = False
                while c.low <= x[k] + direction <= c.high and ev.flows < options.max_flows:
                    y = x.copy()
                    y[k] += direction
                    cost = ev.cost(y)
                    if not cost < best - 1e-6 * max(abs(best), 1.0):
                        break
                    x, best, moved, improved = y, cost, True, True
                if moved:
                    break  # the other direction cannot help from a point this one just improved
        if not improved or ev.flows >= options.max_flows:
            break
    # Fewest operations: drop any action whose undoing costs nothing (each undo is judged on the full cost).
    for k in range(len(x)):
        if x[k] != ev.start[k]:
            y = x.copy()
            y[k] = ev.start[k]
            cost = ev.cost(y)
            if cost <= best:
                x, best = y, cost
    return x


def optimise(state: NetworkState, options: VoltVarOptions = VoltVarOptions()) -> VoltVarProposal:
    """The Volt/VAR proposal for ``state``: actions, figures before/after and the verdict of the final flow."""
    started = time.perf_counter()
    controls, blocked = _controls(state, options)
    ev = _Evaluator(state, controls, options)
    before = ev.base_check
    if not before.converged:
        raise VoltVarError(f"network {state.base.name!r} ({state.label}): the power flow of the present state does "
                           f"not converge ({before.summary()}); no Volt/VAR proposal")
    x = _descend(ev, options) if controls else ev.start
    after = ev.check(x)
    actions = tuple(VoltVarAction(c.kind, c.name, c.phases, c.start, float(v))
                    for c, v in zip(controls, x, strict=True) if v != c.start)
    added = new_violations(before, after, tolerance=options.overload_tolerance)
    fig_before, fig_after = FlowFigures.of(before), FlowFigures.of(after)
    feasible = after.converged and fig_after.voltage_violations == 0
    verified = after.converged and not added
    message = _message(state, options, fig_before, fig_after, feasible, actions, blocked, after)
    return VoltVarProposal(state.base.name, state.label, options.objective, options.band, actions, fig_before,
                           fig_after, feasible, verified, added, tuple(blocked), message, ev.flows,
                           (time.perf_counter() - started) * 1e3, ev.state_of(x))


def _message(state: NetworkState, options: VoltVarOptions, before: FlowFigures, after: FlowFigures, feasible: bool,
             actions: tuple[VoltVarAction, ...], blocked: list[str], check: FlowCheck) -> str:
    band = f"{options.band.low_pu:.3f}-{options.band.high_pu:.3f} pu"
    parts: list[str] = []
    if not feasible:
        outside = sorted((v for v in check.violations if v.kind in _VOLTAGE_KINDS),
                         key=lambda v: -abs(v.value - v.limit))
        worst = outside[0].text() if outside else "no converged flow"
        parts.append(f"the band {band} cannot be met on {state.base.name!r} with the available controls: "
                     f"{after.voltage_violations} node phase(s) stay outside (worst {worst})")
    elif before.voltage_violations:
        parts.append(f"brings {before.voltage_violations} node phase(s) back inside {band}")
    if not actions:
        parts.append("no action: the present settings are the best found" if feasible else "no action helps")
    else:
        name = "losses" if options.objective is Objective.LOSSES else "demand"
        b, a = ((before.loss_p_w, after.loss_p_w) if options.objective is Objective.LOSSES
                else (before.load_p_w, after.load_p_w))
        parts.append(f"{len(actions)} action(s), {sum(x.operations for x in actions)} operation(s); {name} "
                     f"{b / 1e3:.1f} -> {a / 1e3:.1f} kW")
    if blocked:
        parts.append(f"daily operation limit reached for {', '.join(blocked)}")
    return "; ".join(parts)
