"""gRPC face of the live FLISR service (``dms/api/protos/flisr.proto``, service ``FlisrService``): GetMode, ListRuns,
GetRun, WatchRuns, PlanForFault (READ); SetMode, Approve, Reject, ConfirmManualStep (CONTROL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from dms.api.protos import flisr_pb2 as pb
from dms.api.protos import flisr_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, abort, handled, streamed
from dms.flisr.plan import FlisrMode, FlisrPlan, SwitchingStep
from dms.flisr.runs import FlisrRun, RunState, StepResult, StepStatus
from dms.flisr.service import FlisrService
from models.config import OperatorConfig
from scada.auth import Permission
from scada.services import Services

__all__ = ["FlisrServicer", "plan_pb", "register", "run_pb"]

_MODE_TO_PB = {m: getattr(pb, f"FLISR_MODE_{m.name}") for m in FlisrMode}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_STATE_TO_PB = {s: getattr(pb, f"FLISR_RUN_STATE_{s.name}") for s in RunState}
_STEP_TO_PB = {s: getattr(pb, f"FLISR_STEP_STATUS_{s.name}") for s in StepStatus}
_STREAM_POLL_S = 0.5


def _step_pb(s: SwitchingStep) -> pb.FlisrSwitchingStep:
    return pb.FlisrSwitchingStep(number=s.number, switch_name=s.switch, action=s.action.value,
                                 purpose=s.purpose.value, telemetered=s.telemetered, reason=s.reason)


def plan_pb(p: FlisrPlan) -> pb.FlisrPlan:
    f = p.fault
    return pb.FlisrPlan(
        fault=pb.FlisrFaultLocation(tripped_switch=f.tripped_switch, picked_up=f.picked_up,
                                    faulted_elements=f.faulted_elements, boundary_switches=f.boundary_switches,
                                    description=f.description),
        isolation=[_step_pb(s) for s in p.isolation], restoration=[_step_pb(s) for s in p.restoration],
        customers_interrupted=p.customers_interrupted, customers_restored_upstream=p.customers_restored_upstream,
        customers_restored_downstream=p.customers_restored_downstream, customers_unserved=p.customers_unserved,
        priority_customers_unserved=p.priority_customers_unserved, shed_loads=p.shed_loads,
        der_islands=p.der_islands,
        options=[pb.FlisrRestorationOption(area=o.area, closes=o.closes, opens=o.opens, customers=o.customers,
                                           priority_customers=o.priority_customers, accepted=o.accepted,
                                           check=o.check) for o in p.options],
        final_check=p.final_check, notes=p.notes, plan_ms=p.plan_ms)


def _result_pb(s: StepResult) -> pb.FlisrStepResult:
    return pb.FlisrStepResult(number=s.number, switch_name=s.switch, action=s.action.value, purpose=s.purpose.value,
                              telemetered=s.telemetered, status=_STEP_TO_PB[s.status], outcome=s.outcome,
                              started_ms=s.started_ms, finished_ms=s.finished_ms, point=s.point)


def run_pb(r: FlisrRun) -> pb.FlisrRun:
    t = r.trip_to_restored_s
    return pb.FlisrRun(
        id=r.id, state=_STATE_TO_PB[r.state], mode=_MODE_TO_PB[r.mode], feeder=r.feeder,
        tripped_switch=r.tripped_switch, picked_up=r.picked_up, trip_ms=r.trip_ms, created_ms=r.created_ms,
        planned_ms=r.planned_ms, isolated_ms=r.isolated_ms, restored_ms=r.restored_ms, finished_ms=r.finished_ms,
        plan=plan_pb(r.plan) if r.plan is not None else None, steps=[_result_pb(s) for s in r.steps],
        error=r.error, customers_interrupted=r.customers_interrupted, customers_restored=r.customers_restored,
        customers_still_off=r.customers_still_off, outage_record_id=r.outage_record_id, notes=r.notes,
        trip_to_restored_s=t if t is not None else -1.0)


class FlisrServicer(DmsServicerBase, pb_grpc.FlisrServiceServicer):
    def __init__(self, services: Services, flisr: FlisrService) -> None:
        super().__init__(services)
        self.flisr = flisr

    @handled(Permission.READ, "read the FLISR mode")
    def GetMode(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.FlisrModeResponse:
        return pb.FlisrModeResponse(mode=_MODE_TO_PB[self.flisr.mode])

    @handled(Permission.CONTROL, "change the FLISR mode")
    def SetMode(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.FlisrModeResponse:
        mode = _MODE_FROM_PB.get(request.mode)
        if mode is None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"SetMode: mode must be manual, semi_automatic or automatic, not {request.mode}")
        return pb.FlisrModeResponse(mode=_MODE_TO_PB[self.flisr.set_mode(mode, operator)])

    @handled(Permission.READ, "list FLISR runs")
    def ListRuns(self, request: Any, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.ListFlisrRunsResponse:
        return pb.ListFlisrRunsResponse(runs=[run_pb(r) for r in self.flisr.runs(limit=request.limit or 100)])

    @handled(Permission.READ, "read a FLISR run")
    def GetRun(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.FlisrRun:
        return run_pb(self.flisr.run(request.id))

    @streamed(Permission.READ, "watch FLISR runs")
    def WatchRuns(self, request: Any, context: grpc.ServicerContext,
                  operator: OperatorConfig) -> Iterator[pb.FlisrRun]:
        watch = self.flisr.watch()  # before the listing: a change racing it comes after, never lost in between
        context.add_callback(watch.close)
        try:
            for r in reversed(self.flisr.runs(limit=request.recent or 20)):
                yield run_pb(r)
            while context.is_active():
                run = watch.get(timeout_s=_STREAM_POLL_S)
                if run is None:
                    if watch.closed:
                        break
                    continue
                yield run_pb(run)
        finally:
            self.flisr.unwatch(watch)

    @handled(Permission.CONTROL, "approve a FLISR run")
    def Approve(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.FlisrRun:
        return run_pb(self.flisr.approve(request.id, operator))

    @handled(Permission.CONTROL, "reject a FLISR run")
    def Reject(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.FlisrRun:
        return run_pb(self.flisr.reject(request.id, operator, request.reason))

    @handled(Permission.CONTROL, "confirm a FLISR crew step")
    def ConfirmManualStep(self, request: Any, context: grpc.ServicerContext,
                          operator: OperatorConfig) -> pb.FlisrRun:
        return run_pb(self.flisr.confirm_manual_step(request.id, request.step, operator, request.note))

    @handled(Permission.READ, "plan FLISR for a fault")
    def PlanForFault(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.FlisrPlan:
        if not request.line.strip():
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "PlanForFault: name the faulted line")
        return plan_pb(self.flisr.plan_for_fault(request.line.strip()))


def register(server: grpc.Server, services: Services, flisr: FlisrService) -> list[str]:
    """Add the FlisrService to ``server``; returns its full service name."""
    pb_grpc.add_FlisrServiceServicer_to_server(FlisrServicer(services, flisr), server)
    return [pb.DESCRIPTOR.services_by_name["FlisrService"].full_name]
