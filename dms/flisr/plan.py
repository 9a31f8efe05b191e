"""What a FLISR run produces: the located fault, the switching plan and its figures.

The planner (``dms.flisr.planner``) computes a :class:`FlisrPlan` from a network state; the live service
(``dms.flisr.service``) executes its steps through the SCADA command path and records the outcome. Switches are
named by their model names; ``telemetered`` steps go out as SCADA commands, the others are for a field crew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["FaultLocation", "FlisrMode", "FlisrPlan", "RestorationOption", "StepPurpose", "SwitchAction",
           "SwitchingStep"]


class FlisrMode(StrEnum):
    MANUAL = "manual"  # the plan is shown; the operator approves isolation and restoration
    SEMI_AUTOMATIC = "semi_automatic"  # isolation runs at once; restoration waits for approval
    AUTOMATIC = "automatic"  # isolation and restoration run at once


class SwitchAction(StrEnum):
    OPEN = "open"
    CLOSE = "close"


class StepPurpose(StrEnum):
    ISOLATE = "isolate"  # open a switch bounding the faulted section
    RESTORE_UPSTREAM = "restore_upstream"  # reclose the tripped breaker / recloser
    RESTORE_DOWNSTREAM = "restore_downstream"  # close a normally-open tie (or open a sectionalising switch for it)
    SHED_LOAD = "shed_load"  # open a switch to drop load a tie cannot carry


@dataclass(frozen=True, slots=True)
class SwitchingStep:
    number: int  # 1.. in execution order within the plan
    switch: str  # model name
    action: SwitchAction
    purpose: StepPurpose
    telemetered: bool  # remote controllable through SCADA; False: a crew operates it
    reason: str  # one sentence: why this step


@dataclass(frozen=True, slots=True)
class FaultLocation:
    """The faulted section: between the last switch whose FPI picked up and the first that did not."""

    tripped_switch: str  # the protective device that opened
    picked_up: tuple[str, ...]  # switches that saw fault current (FPI), source side first
    faulted_buses: tuple[int, ...]  # indices into the model's buses
    faulted_elements: tuple[str, ...]  # lines (and other branches) inside the section
    boundary_switches: tuple[str, ...]  # the switches to open to isolate it (telemetered ones when possible)
    description: str


@dataclass(frozen=True, slots=True)
class RestorationOption:
    """One candidate considered for a dead healthy area, with the verdict of its power-flow check."""

    area: str  # which dead area ("downstream of F2-RMU06-LBS1")
    closes: tuple[str, ...]  # ties closed
    opens: tuple[str, ...]  # switches opened (splits or load shedding)
    customers: int  # customers it brings back
    priority_customers: int
    accepted: bool
    check: str  # FlowCheck.summary() or why it was not checked


@dataclass(frozen=True, slots=True)
class FlisrPlan:
    fault: FaultLocation
    isolation: tuple[SwitchingStep, ...]
    restoration: tuple[SwitchingStep, ...]  # upstream reclose first, then ties, then sheds
    customers_interrupted: int  # off supply after the trip
    customers_restored_upstream: int
    customers_restored_downstream: int
    customers_unserved: int  # in the faulted section, or with no acceptable path
    priority_customers_unserved: int
    shed_loads: tuple[str, ...]  # loads left off to make a restoration fit (named in notes)
    der_islands: tuple[str, ...]  # healthy sections kept as DER islands (why in notes)
    options: tuple[RestorationOption, ...]
    final_check: str  # FlowCheck.summary() of the state after the whole plan
    notes: tuple[str, ...] = field(default=())
    plan_ms: float = 0.0

    @property
    def steps(self) -> tuple[SwitchingStep, ...]:
        return self.isolation + self.restoration

    @property
    def customers_restored(self) -> int:
        return self.customers_restored_upstream + self.customers_restored_downstream
