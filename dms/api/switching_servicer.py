"""gRPC face of switch order management (``dms/api/protos/switching.proto``, service ``SwitchingOrders``)."""

from __future__ import annotations

import json
from typing import Any

import grpc

from dms.api.protos import switching_pb2 as pb
from dms.api.protos import switching_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, handled
from dms.switching.order import (
    OrderState,
    SimulationReport,
    StepAction,
    StepProblem,
    StepSpec,
    StepStatus,
    SwitchingOrder,
)
from dms.switching.service import ExecutionOutcome, SwitchingService
from models.config import OperatorConfig
from scada.auth import Permission
from scada.services import Services

__all__ = ["SwitchingServicer", "register"]

_ACTION_TO_PB = {a: getattr(pb, f"STEP_ACTION_{a.name}") for a in StepAction}
_ACTION_FROM_PB = {v: k for k, v in _ACTION_TO_PB.items()}
_STATUS_TO_PB = {s: getattr(pb, f"STEP_STATUS_{s.name}") for s in StepStatus}
_STATE_TO_PB = {s: getattr(pb, f"ORDER_STATE_{s.name}") for s in OrderState}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}


def order_pb(order: SwitchingOrder) -> pb.SwitchingOrder:
    return pb.SwitchingOrder(
        id=order.id, title=order.title, purpose=order.purpose, author=order.author, state=_STATE_TO_PB[order.state],
        created_ms=order.created_ms, updated_ms=order.updated_ms, approved_by=order.approved_by,
        network=order.network,
        steps=[pb.SwitchingStep(number=s.number, action=_ACTION_TO_PB[s.action], target=s.target,
                                target_mrid=s.target_mrid, telemetered=s.telemetered, note=s.note,
                                status=_STATUS_TO_PB[s.status], executed_by=s.executed_by,
                                executed_ms=s.executed_ms or 0, detail=s.detail) for s in order.steps])


def _problems(problems: tuple[StepProblem, ...]) -> list[pb.StepProblem]:
    return [pb.StepProblem(step=p.step, target=p.target, kind=p.kind.value, reason=p.reason) for p in problems]


def _simulation_pb(report: SimulationReport) -> pb.SimulationReply:
    return pb.SimulationReply(ok=report.ok, basis=report.basis, problems=_problems(report.problems), steps=[
        pb.StepSimulation(step=s.step, description=s.description, customers_off=s.customers_off,
                          customers_on=s.customers_on, customers_without_supply=s.customers_without_supply,
                          deenergised_loads=list(s.deenergised_loads), energised_loads=list(s.energised_loads),
                          flow_ok=s.flow_ok, flow_summary=s.flow_summary, new_violations=list(s.new_violations))
        for s in report.steps])


def _execution_pb(res: ExecutionOutcome) -> pb.ExecutionReply:
    return pb.ExecutionReply(order=order_pb(res.order), step=res.step.number if res.step else 0,
                             executed=res.executed, waiting_for_crew=res.waiting_for_crew, message=res.message)


class SwitchingServicer(DmsServicerBase, pb_grpc.SwitchingOrdersServicer):
    def __init__(self, services: Services, switching: SwitchingService) -> None:
        super().__init__(services)
        self.switching = switching

    @handled(Permission.CONTROL, "create a switching order")
    def CreateOrder(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        specs = []
        for i, s in enumerate(request.steps, start=1):
            if s.action not in _ACTION_FROM_PB:
                raise ValueError(f"switching order {request.title!r} step {i}: an action is required")
            specs.append(StepSpec(_ACTION_FROM_PB[s.action], s.target, s.note))
        return order_pb(self.switching.create_order(request.title, request.purpose, operator.name, specs))

    @handled(Permission.CONTROL, "import a switching plan")
    def ImportOrder(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        return order_pb(self.switching.import_document(request.json, operator.name))

    @handled(Permission.READ, "read switching orders")
    def GetOrder(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        return order_pb(self.switching.get(request.order_id))

    @handled(Permission.READ, "read switching orders")
    def ListOrders(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        state = _STATE_FROM_PB.get(request.state)
        return pb.ListOrdersReply(orders=[order_pb(o) for o in self.switching.list(state)])

    @handled(Permission.CONTROL, "validate a switching order")
    def Validate(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        report = self.switching.validate(request.order_id, operator.name)
        return pb.ValidationReply(ok=report.ok, problems=_problems(report.problems), basis=report.basis,
                                  order=order_pb(self.switching.get(request.order_id)))

    @handled(Permission.READ, "simulate a switching order")
    def Simulate(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        if request.study_id:
            self._authorise(context, Permission.STUDY, "simulate a switching order in a study")
        return _simulation_pb(self.switching.simulate(request.order_id, study_id=request.study_id or None))

    @handled(Permission.CONTROL, "approve a switching order")
    def Approve(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        return order_pb(self.switching.approve(request.order_id, operator))

    @handled(Permission.CONTROL, "execute a switching order")
    def ExecuteNextStep(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        return _execution_pb(self.switching.execute_next_step(request.order_id, operator))

    @handled(Permission.CONTROL, "execute a switching order")
    def Execute(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        results = self.switching.execute(request.order_id, operator)
        return pb.ExecuteReply(results=[_execution_pb(r) for r in results], order=order_pb(results[-1].order))

    @handled(Permission.CONTROL, "record a manual switching step")
    def RecordManualStep(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        return order_pb(self.switching.record_manual_step(request.order_id, request.step, operator,
                                                          request.done_at_ms or None, request.detail))

    @handled(Permission.CONTROL, "abort a switching order")
    def Abort(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        return order_pb(self.switching.abort(request.order_id, operator, request.reason))

    @handled(Permission.READ, "export a switching order")
    def Export(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        return pb.PlanDocument(json=json.dumps(self.switching.export_document(request.order_id), indent=2))


def register(server: grpc.Server, services: Services, switching: SwitchingService) -> list[str]:
    """Add the SwitchingOrders service to ``server``; returns its full service name."""
    pb_grpc.add_SwitchingOrdersServicer_to_server(SwitchingServicer(services, switching), server)
    return [pb.DESCRIPTOR.services_by_name["SwitchingOrders"].full_name]
