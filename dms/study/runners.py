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
from models.config import StationConfig

__all__ = ["flisr_runner", "power_flow_runner", "reconfiguration_runner", "state_estimation_runner", "voltvar_runner"]

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


def state_estimation_runner(config: StationConfig) -> Runner:
    """The three-phase estimator on the study's state and its measurements (the RTDB snapshot with the study's
    measurement edits): what the estimate would have been with those values."""

    def run(case: StudyCase) -> tuple[bool, str, Any]:
        from dms.se.live_measurements import live_measurements
        from dms.se.model_estimate import EstimatorOptions, estimate_with_pseudo
        from dms.se.phase_network import build_model_network
        from dms.se.pseudo import profile_multiplier

        state = case.state
        opts = EstimatorOptions()
        rows = case.measurement_values()
        base = profile_multiplier(opts.pseudo.profile, case.created_ms / 1e3)
        network = build_model_network(state, s_base_va=opts.s_base_va)
        result, _x = estimate_with_pseudo(
            network, lambda b: live_measurements(b, config, rows, accuracy=opts.accuracy),
            state.load_p_w * base, state.load_q_var * base, options=opts, trigger=f"study {case.id}",
            time_ms=case.created_ms)
        return bool(result.converged), result.summary(), result

    return run


def reconfiguration_runner(objective: str) -> Runner:
    def run(case: StudyCase) -> tuple[bool, str, Any]:
        from dms.reconfig.engine import ReconfigOptions, propose_for_state
        from dms.reconfig.milp import Objective

        try:
            goal = Objective(objective or "losses")
        except ValueError:
            raise StudyError(f"reconfiguration objective must be losses or balance, not {objective!r}") from None
        proposal = propose_for_state(case.state, ReconfigOptions(objective=goal, held=case.held_switches))
        r = proposal.result
        moves = (f"open {', '.join(r.to_open)}; close {', '.join(r.to_close)}" if r.to_open or r.to_close
                 else "the present configuration is the best found")
        summary = (f"{goal.value}: {moves}; losses {r.before.losses_mw * 1e3:.1f} -> {r.after.losses_mw * 1e3:.1f} kW"
                   f" ({r.algorithm}, {r.total_s:.1f} s)")
        return proposal.acceptable or not (r.to_open or r.to_close), summary, r

    return run


def voltvar_runner(objective: str) -> Runner:
    def run(case: StudyCase) -> tuple[bool, str, Any]:
        from dms.voltvar.engine import Objective, VoltVarOptions, optimise

        try:
            goal = Objective(objective or "losses")
        except ValueError:
            raise StudyError(f"Volt/VAR objective must be losses or cvr, not {objective!r}") from None
        proposal = optimise(case.state, VoltVarOptions(objective=goal))
        actions = "; ".join(a.text() for a in proposal.actions) or "no action"
        summary = f"{goal.value}: {actions}; before {proposal.before.text()}; after {proposal.after.text()}"
        return proposal.verified, summary, proposal

    return run
