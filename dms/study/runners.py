"""The applications a study case can run, each on the case's own state: ``(case) -> (ok, summary, result)``.

They call the same engines real time uses (the three-phase flow check, the FLISR planner, reconfiguration,
Volt/VAR, the three-phase estimator) with the study's state; none of them gets a command path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dms.flow_check import FlowCheck, VoltageBand, check_flow
from dms.study.case import StudyCase
from dms.study.errors import StudyError

__all__ = ["flisr_runner", "power_flow_runner"]

Runner = Callable[[StudyCase], tuple[bool, str, Any]]


def power_flow_runner(band: VoltageBand | None = None) -> Runner:
    def run(case: StudyCase) -> tuple[bool, str, FlowCheck]:
        check = check_flow(case.state, band=band or VoltageBand())
        return check.ok, check.summary(), check

    return run


def flisr_runner(fault_line: str) -> Runner:
    """The FLISR plan for a fault on ``fault_line`` in the study's state (every switch counted as controllable
    unless the state's model says otherwise)."""

    def run(case: StudyCase) -> tuple[bool, str, Any]:
        from dms.flisr.locate import locate_section
        from dms.flisr.planner import plan_restoration

        state = case.state
        if fault_line not in {ln.name for ln in state.base.lines} | {ln.mrid for ln in state.base.lines}:
            raise StudyError(f"study {case.id}: network {state.base.name!r} has no line {fault_line!r}")
        fault = locate_section(state, fault_line)
        plan = plan_restoration(state, fault)
        summary = (f"fault on {fault_line}: {len(plan.isolation)} isolation and {len(plan.restoration)} restoration "
                   f"step(s); {plan.customers_restored} of {plan.customers_interrupted} customers restored, "
                   f"{plan.customers_unserved} unserved; plan {plan.plan_ms:.0f} ms")
        return True, summary, plan

    return run
