"""The switching order model: an order is a numbered sequence of steps on switches and network elements.

An order moves ``draft -> validated -> approved -> executing -> completed``, or to ``aborted`` from any state but
``completed``. Editing is not offered: a changed plan is a new order, so what was validated and approved is exactly
what runs. A step is *telemetered* when its switch has a controllable position point in the station configuration
(derived when the order is created, never typed in): it goes out as a SCADA command. Every other open/close and
every earth/unearth step is *manual*: a field crew does it and the control room records it. Tag/untag steps place
or remove a HOLD tag in the SCADA tag store when executed in the control room.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "OrderState",
    "ProblemKind",
    "SimulationReport",
    "StepAction",
    "StepProblem",
    "StepSimulation",
    "StepSpec",
    "StepStatus",
    "SwitchingOrder",
    "SwitchingStep",
    "ValidationReport",
]


class OrderState(StrEnum):
    DRAFT = "draft"
    VALIDATED = "validated"
    APPROVED = "approved"
    EXECUTING = "executing"
    COMPLETED = "completed"
    ABORTED = "aborted"


class StepAction(StrEnum):
    OPEN = "open"
    CLOSE = "close"
    EARTH = "earth"  # apply working earths: marks the element earthed (a CLEARANCE tag)
    UNEARTH = "unearth"  # remove the earths: removes that marking
    TAG = "tag"  # place a HOLD ("do not operate") tag on the element
    UNTAG = "untag"  # remove the HOLD tag

    @property
    def operates_switch(self) -> bool:
        return self in (StepAction.OPEN, StepAction.CLOSE)


class StepStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # the order was aborted before the step ran


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A step as an author writes it; ``target`` is a model name or mRID."""

    action: StepAction
    target: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class SwitchingStep:
    number: int  # 1.. in execution order
    action: StepAction
    target: str  # the element's model name
    target_mrid: str
    telemetered: bool  # a SCADA command; False: a crew does it (or, for tag/untag, the control room)
    note: str = ""
    status: StepStatus = StepStatus.PENDING
    executed_by: str = ""
    executed_ms: int | None = None  # field time for telemetered steps' answer, the crew's time for manual ones
    detail: str = ""  # the command outcome or the failure reason

    def describe(self) -> str:
        how = "remote" if self.telemetered else "manual"
        return f"step {self.number}: {self.action.value} {self.target} ({how})"


@dataclass(frozen=True, slots=True)
class SwitchingOrder:
    id: int
    title: str
    purpose: str
    author: str
    state: OrderState
    created_ms: int
    updated_ms: int
    steps: tuple[SwitchingStep, ...]
    approved_by: str = ""
    network: str = ""  # the network model's name the targets belong to

    def step(self, number: int) -> SwitchingStep:
        for s in self.steps:
            if s.number == number:
                return s
        raise IndexError(f"switching order {self.id} has no step {number} (it has 1..{len(self.steps)})")

    def next_step(self) -> SwitchingStep | None:
        """The first step not done (a failed step is retried before anything after it)."""
        return next((s for s in self.steps if s.status is not StepStatus.DONE), None)

    def with_step(self, step: SwitchingStep, *, updated_ms: int, state: OrderState | None = None) -> SwitchingOrder:
        steps = tuple(step if s.number == step.number else s for s in self.steps)
        return replace(self, steps=steps, updated_ms=updated_ms, state=state or self.state)


class ProblemKind(StrEnum):
    UNKNOWN_ELEMENT = "unknown_element"
    NOT_A_SWITCH = "not_a_switch"
    ALREADY_IN_STATE = "already_in_state"
    PARALLELS_SOURCES = "parallels_sources"
    DISCONNECTOR_UNDER_LOAD = "disconnector_under_load"
    CLOSES_ONTO_EARTHED = "closes_onto_earthed"
    CLOSES_ONTO_FAULTED = "closes_onto_faulted"
    EARTHS_LIVE_ELEMENT = "earths_live_element"
    TAGGED = "tagged"  # the switch carries a hold/clearance tag: the command would be refused
    NOT_MARKED = "not_marked"  # untag/unearth of an element without that tag


@dataclass(frozen=True, slots=True)
class StepProblem:
    step: int
    target: str
    kind: ProblemKind
    reason: str  # one sentence naming the element and why

    def text(self) -> str:
        return f"step {self.step} ({self.target}): {self.reason}"


@dataclass(frozen=True, slots=True)
class ValidationReport:
    order_id: int
    problems: tuple[StepProblem, ...]
    basis: str  # which switch states the simulation started from ("real time v42", "study ...")

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class StepSimulation:
    """What one step did in the study: supply changes and the power-flow verdict of the state after it."""

    step: int
    description: str
    customers_off: int  # lost supply at this step
    customers_on: int  # regained supply at this step
    customers_without_supply: int  # in total after the step
    deenergised_loads: tuple[str, ...]
    energised_loads: tuple[str, ...]
    flow_ok: bool  # converged and no violation that the starting state did not have
    flow_summary: str
    new_violations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SimulationReport:
    order_id: int
    basis: str
    steps: tuple[StepSimulation, ...]
    problems: tuple[StepProblem, ...] = field(default=())  # the validation of the same run

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.flow_ok for s in self.steps)
