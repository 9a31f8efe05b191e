"""Validation and study simulation of a switching order on a simulated copy of the network.

Every step is checked in order on a private ``TopologyProcessor`` that starts from the given switch states (real
time or a study) and applies each step in turn, so step 5 is judged on the network that steps 1-4 leave. The rules
are those of the live command interlocks (``scada.interlocks``), applied to the simulated topology:

- closing a switch that joins two islands fed by different sources, unless the switch is listed in
  ``parallel_allowed`` or carries a PARALLEL_ALLOWED tag;
- closing a switch that would energize an element marked earthed (an active CLEARANCE tag, or an earlier EARTH
  step of the order) or FAULTED;
- opening a Disconnector that carries load: the opening would de-energize loads, or it breaks a loop (a mesh
  carries current). Measured currents are not used: after the first step they no longer describe the network;
- operating a switch that carries a HOLD or CLEARANCE tag (the command service would refuse it);
- earthing an element that is still live; unearthing/untagging an element without that marking;
- a switch already in the target state, a target the model does not have, open/close of an element that is no
  switch.

A step with a problem is still applied, so one run lists every problem of the order, each naming its step.
The study simulation (:func:`simulate_steps`) runs the same walk on a ``NetworkState`` and adds, per step, the
customers de-energized and energized and a power-flow check of the state after the step (``dms.flow_check``),
judged by the violations it adds to the starting state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from dms.flow_check import FlowCheck, FlowCheckError, VoltageBand, check_flow, new_violations
from dms.network_state import NetworkState, customers_per_load
from dms.switching.order import (
    ProblemKind,
    SimulationReport,
    StepAction,
    StepProblem,
    StepSimulation,
    SwitchingStep,
    ValidationReport,
)
from models.network import NetworkModel, SwitchKind
from scada.tags import Tag, TagKind
from scada.topology import ElementKind, TopologyError, TopologyProcessor

_BAND = VoltageBand()

__all__ = ["Marking", "StepWalk", "markings_from_tags", "simulate_steps", "validate_steps"]


@dataclass(frozen=True, slots=True)
class Marking:
    """A tag that matters to a simulation: on an element (name or mRID) of the model."""

    target: str
    kind: TagKind
    by: str  # who placed it: "tag 12 by alice (reason)" or "step 3 of this order"


def markings_from_tags(tags: Iterable[Tag]) -> tuple[Marking, ...]:
    """The live tags that a simulation must respect (every kind but INFO)."""
    return tuple(Marking(t.target, t.kind, f"tag {t.id} by {t.operator} ({t.reason})") for t in tags
                 if t.kind is not TagKind.INFO)


class StepWalk:
    """Applies steps one by one to a private topology, collecting the problems of each."""

    def __init__(self, model: NetworkModel, switch_closed: np.ndarray, *, markings: Iterable[Marking] = (),
                 parallel_allowed: Iterable[str] = ()) -> None:
        self.model = model
        self.tp = TopologyProcessor(model)
        closed = np.asarray(switch_closed, dtype=bool)
        if closed.shape != (len(model.switches),):
            raise ValueError(f"network {model.name!r}: {closed.shape} switch states for {len(model.switches)} switches")
        for i, sw in enumerate(model.switches):
            if self.tp.switch_closed(sw.mrid) != bool(closed[i]):
                self.tp.set_switch(sw.mrid, bool(closed[i]))
        self.markings: list[Marking] = list(markings)
        self._parallel_allowed = set(parallel_allowed)

    # ------------------------------------------------------------------------------------------ helpers
    def _keys(self, target: str) -> set[str]:
        try:
            step, _buses = self.tp.element(target)
        except TopologyError:
            return {target}
        return {step.name, step.mrid}

    def _marked(self, target: str, kinds: tuple[TagKind, ...]) -> list[Marking]:
        keys = self._keys(target)
        return [m for m in self.markings if m.kind in kinds and m.target in keys]

    # ------------------------------------------------------------------------------------------ the walk
    def apply(self, step: SwitchingStep) -> tuple[StepProblem, ...]:
        """Check one step against the simulated network, then apply it."""
        def problem(kind: ProblemKind, reason: str) -> StepProblem:
            return StepProblem(step.number, step.target, kind, reason)

        try:
            element, _buses = self.tp.element(step.target_mrid or step.target)
        except TopologyError:
            return (problem(ProblemKind.UNKNOWN_ELEMENT,
                            f"network {self.model.name!r} has no element {step.target!r}"),)
        name = element.name
        if step.action.operates_switch:
            if element.kind is not ElementKind.SWITCH:
                return (problem(ProblemKind.NOT_A_SWITCH,
                                f"{element.kind.value} {name} is not a switch and cannot be {step.action.value}ed"),)
            return self._operate(step, name, problem)
        if step.action is StepAction.EARTH:
            out = []
            if not self.tp.is_dead(name):
                out.append(problem(ProblemKind.EARTHS_LIVE_ELEMENT,
                                   f"earthing {element.kind.value} {name} while it is live: open its supply first"))
            self.markings.append(Marking(name, TagKind.CLEARANCE, f"step {step.number} of this order"))
            return tuple(out)
        kind = TagKind.CLEARANCE if step.action is StepAction.UNEARTH else TagKind.HOLD
        if step.action is StepAction.TAG:
            self.markings.append(Marking(name, TagKind.HOLD, f"step {step.number} of this order"))
            return ()
        found = self._marked(name, (kind,))
        if not found:
            what = "earthed" if kind is TagKind.CLEARANCE else "tagged hold"
            return (problem(ProblemKind.NOT_MARKED, f"{element.kind.value} {name} is not {what}: nothing to "
                                                    f"{step.action.value}"),)
        for m in found:
            self.markings.remove(m)
        return ()

    def _operate(self, step: SwitchingStep, name: str,
                 problem: Callable[[ProblemKind, str], StepProblem]) -> tuple[StepProblem, ...]:
        close = step.action is StepAction.CLOSE
        out: list[StepProblem] = []
        i = self.tp.switch_index(name)
        sw = self.model.switches[i]
        for m in self._marked(name, (TagKind.HOLD, TagKind.CLEARANCE)):
            out.append(problem(ProblemKind.TAGGED, f"switch {name} is tagged {m.kind.value} ({m.by}): the command "
                                                   "would be refused"))
        if self.tp.switch_closed(sw.mrid) == close:
            out.append(problem(ProblemKind.ALREADY_IN_STATE,
                               f"switch {name} is already {'closed' if close else 'open'} at this step"))
            return tuple(out)
        if close:
            effect = self.tp.closing_effect(sw.mrid)
            live = set(effect.energized_buses)
            if live:
                for m in self._marked_any((TagKind.CLEARANCE, TagKind.FAULTED)):
                    try:
                        marked, buses = self.tp.element(m.target)
                    except TopologyError:
                        continue
                    if live.intersection(buses):
                        earthed = m.kind is TagKind.CLEARANCE
                        out.append(problem(
                            ProblemKind.CLOSES_ONTO_EARTHED if earthed else ProblemKind.CLOSES_ONTO_FAULTED,
                            f"closing switch {name} would energize {marked.kind.value} {marked.name}, marked "
                            f"{'earthed' if earthed else 'faulted'} ({m.by})"))
            if effect.parallels_sources and not self._parallel_ok(sw.name, sw.mrid):
                src = {s.mrid: s.name for s in self.model.sources}
                side1 = ", ".join(src.get(x, x) for x in effect.sources_side1)
                side2 = ", ".join(src.get(x, x) for x in effect.sources_side2)
                out.append(problem(ProblemKind.PARALLELS_SOURCES,
                                   f"closing switch {name} would parallel source {side1} with source {side2}; mark "
                                   "the switch parallel_allowed if this transfer is intended"))
        elif sw.kind is SwitchKind.DISCONNECTOR:
            effect_o = self.tp.opening_effect(sw.mrid)
            if effect_o.energized:
                dead = np.asarray(effect_o.deenergized_buses, dtype=np.int64)
                loads = [ld.name for ld in self.model.loads if ld.bus in set(dead.tolist())]
                if loads:
                    out.append(problem(ProblemKind.DISCONNECTOR_UNDER_LOAD,
                                       f"disconnector {name} would break load current: opening it de-energizes "
                                       f"{len(loads)} load(s) (e.g. {loads[0]}); open a breaker or load-break switch "
                                       "first"))
                elif effect_o.breaks_loop:
                    out.append(problem(ProblemKind.DISCONNECTOR_UNDER_LOAD,
                                       f"disconnector {name} would break a loop current: it closes a ring that stays "
                                       "connected through other switches"))
        self.tp.set_switch(sw.mrid, close)
        return tuple(out)

    def _marked_any(self, kinds: tuple[TagKind, ...]) -> list[Marking]:
        return [m for m in self.markings if m.kind in kinds]

    def _parallel_ok(self, name: str, mrid: str) -> bool:
        if name in self._parallel_allowed or mrid in self._parallel_allowed:
            return True
        return bool(self._marked(name, (TagKind.PARALLEL_ALLOWED,)))


def validate_steps(model: NetworkModel, switch_closed: np.ndarray, steps: Sequence[SwitchingStep], *,
                   markings: Iterable[Marking] = (), parallel_allowed: Iterable[str] = (), order_id: int = 0,
                   basis: str = "") -> ValidationReport:
    """Every problem of the steps, in step order, on a simulated copy starting from ``switch_closed``."""
    walk = StepWalk(model, switch_closed, markings=markings, parallel_allowed=parallel_allowed)
    problems: list[StepProblem] = []
    for step in steps:
        problems.extend(walk.apply(step))
    return ValidationReport(order_id, tuple(problems), basis)


def simulate_steps(state: NetworkState, steps: Sequence[SwitchingStep], *, markings: Iterable[Marking] = (),
                   parallel_allowed: Iterable[str] = (), order_id: int = 0, band: VoltageBand = _BAND,
                   flow: bool = True) -> SimulationReport:
    """Run the steps on ``state`` (nothing reaches the field): per step the customers off/on and a flow check."""
    model = state.base
    walk = StepWalk(model, state.switch_closed, markings=markings, parallel_allowed=parallel_allowed)
    customers = customers_per_load(model)
    energized = walk.tp.colouring().loads["energized"].copy()
    before = _check(state, band) if flow else None
    out: list[StepSimulation] = []
    problems: list[StepProblem] = []
    for step in steps:
        problems.extend(walk.apply(step))
        if step.action.operates_switch and any(s.name == step.target or s.mrid == step.target_mrid
                                               for s in model.switches):
            state = state.with_switch_array(walk.tp.switch_closed_array())
        now = walk.tp.colouring().loads["energized"].copy()
        lost, gained = energized & ~now, now & ~energized
        energized = now
        ok, summary, added = True, "not checked", ()
        if flow and before is not None:
            after = _check(state, band)
            if isinstance(after, str):
                ok, summary = False, after
            else:
                added_v = new_violations(before, after) if not isinstance(before, str) else after.violations
                ok, summary, added = after.converged and not added_v, after.summary(), tuple(v.text() for v in added_v)
        out.append(StepSimulation(
            step=step.number, description=step.describe(),
            customers_off=int(customers[lost].sum()), customers_on=int(customers[gained].sum()),
            customers_without_supply=int(customers[~now].sum()),
            deenergised_loads=tuple(model.loads[i].name for i in np.nonzero(lost)[0]),
            energised_loads=tuple(model.loads[i].name for i in np.nonzero(gained)[0]),
            flow_ok=ok, flow_summary=summary, new_violations=added))
    return SimulationReport(order_id, state.label, tuple(out), tuple(problems))


def _check(state: NetworkState, band: VoltageBand) -> FlowCheck | str:
    """The flow check, or the reason it could not run."""
    try:
        return check_flow(state, band=band)
    except FlowCheckError as exc:
        return f"power flow could not be set up: {exc}"
