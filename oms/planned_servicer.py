"""gRPC face of planned outages (``dms/api/protos/oms_planned.proto``, service ``dscada.oms.v1.PlannedOutages``):
Schedule, Notify, Reschedule, Cancel, Start and Complete need CONTROL (operators and engineers); List, Get,
Notifications and CustomerPlanned need READ. State refusals are FAILED_PRECONDITION, bad requests INVALID_ARGUMENT,
unknown outages NOT_FOUND, each with the service's own sentence."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc

from dms.api.protos import oms_planned_pb2 as pb
from dms.api.protos import oms_planned_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, abort, handled
from models.config import OperatorConfig
from oms.planned import (
    PlannedExecution,
    PlannedInputError,
    PlannedNotFoundError,
    PlannedOrigin,
    PlannedOutage,
    PlannedOutageError,
    PlannedOutageService,
    PlannedState,
)
from oms.planned_store import NotificationKind, PlannedNotification
from scada.auth import Permission
from scada.services import Services

__all__ = ["PlannedOutagesServicer", "register"]

_ORIGIN_PB = {PlannedOrigin.ASSET_MANAGEMENT: pb.PLANNED_ORIGIN_ASSET_MANAGEMENT,
              PlannedOrigin.FIELD_INTIMATION: pb.PLANNED_ORIGIN_FIELD_INTIMATION}
_ORIGIN = {v: k for k, v in _ORIGIN_PB.items()}
_STATE_PB = {s: getattr(pb, f"PLANNED_STATE_{s.name}") for s in PlannedState}
_STATE = {v: k for k, v in _STATE_PB.items()}
_KIND_PB = {k: getattr(pb, f"PLANNED_NOTICE_KIND_{k.name}") for k in NotificationKind}


def _outage_pb(o: PlannedOutage, svc: PlannedOutageService | None = None) -> pb.PlannedOutage:
    msg = pb.PlannedOutage(
        id=o.id, ref=o.ref, title=o.title, reason=o.reason, origin=_ORIGIN_PB[o.origin], switches=list(o.switches),
        earths=list(o.earths), start_ms=o.start_ms, end_ms=o.end_ms, state=_STATE_PB[o.state], created_by=o.created_by,
        created_ms=o.created_ms, updated_ms=o.updated_ms, customer_count=o.customer_count, feeder=o.feeder,
        basis=o.basis, isolation_order=o.isolation_order, restoration_order=o.restoration_order, record_id=o.record_id,
        isolated_ms=o.isolated_ms, restored_ms=o.restored_ms)
    if svc is not None:  # the details of Get
        msg.customers.extend(svc.customers(o.id))
        msg.audit.extend(pb.PlannedAudit(time_ms=a.time_ms, operator=a.operator, action=a.action, detail=a.detail)
                         for a in svc.audit(o.id))
    return msg


def _notice_pb(n: PlannedNotification) -> pb.PlannedNotification:
    return pb.PlannedNotification(seq=n.seq, outage_id=n.outage_id, consumer_number=n.consumer_number,
                                  kind=_KIND_PB[n.kind], start_ms=n.start_ms, end_ms=n.end_ms, text=n.text,
                                  created_ms=n.created_ms)


def _execution_pb(e: PlannedExecution) -> pb.PlannedExecutionReply:
    return pb.PlannedExecutionReply(outage=_outage_pb(e.outage), order_id=e.order.id if e.order else 0,
                                    waiting_for_crew=e.waiting_for_crew, message=e.message)


def _planned_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The service's errors as gRPC statuses (inside ``handled``, which maps the DMS/SCADA ones)."""

    @functools.wraps(fn)
    def call(self: Any, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Any:
        try:
            return fn(self, request, context, operator)
        except PlannedNotFoundError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except PlannedInputError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except PlannedOutageError as exc:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    return call


class PlannedOutagesServicer(DmsServicerBase, pb_grpc.PlannedOutagesServicer):
    def __init__(self, services: Services, planned: PlannedOutageService) -> None:
        super().__init__(services)
        self.planned = planned

    @handled(Permission.CONTROL, "schedule a planned outage")
    @_planned_errors
    def Schedule(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.PlannedOutage:
        if request.origin not in _ORIGIN:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"planned outage {request.title!r}: origin must be asset management or field intimation")
        o = self.planned.schedule(title=request.title, reason=request.reason, origin=_ORIGIN[request.origin],
                                  switches=list(request.switches), earths=list(request.earths),
                                  start_ms=request.start_ms, end_ms=request.end_ms, operator=operator.name,
                                  notify=not request.hold_notifications)
        return _outage_pb(o)

    @handled(Permission.CONTROL, "notify the customers of a planned outage")
    @_planned_errors
    def Notify(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.PlannedOutage:
        return _outage_pb(self.planned.notify(request.id, operator.name))

    @handled(Permission.CONTROL, "reschedule a planned outage")
    @_planned_errors
    def Reschedule(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.PlannedOutage:
        return _outage_pb(self.planned.reschedule(request.id, request.start_ms, request.end_ms, operator.name))

    @handled(Permission.CONTROL, "cancel a planned outage")
    @_planned_errors
    def Cancel(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.PlannedOutage:
        return _outage_pb(self.planned.cancel(request.id, operator.name, request.reason))

    @handled(Permission.READ, "list planned outages")
    @_planned_errors
    def List(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.ListPlannedReply:
        state = _STATE.get(request.state) if request.state else None
        return pb.ListPlannedReply(outages=[_outage_pb(o) for o in self.planned.list(
            state=state, active_only=request.active_only)])

    @handled(Permission.READ, "read a planned outage")
    @_planned_errors
    def Get(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.PlannedOutage:
        return _outage_pb(self.planned.get(request.id), self.planned)

    @handled(Permission.READ, "read planned-outage notifications")
    @_planned_errors
    def Notifications(self, request: Any, context: grpc.ServicerContext,
                      operator: OperatorConfig) -> pb.NotificationsReply:
        notes = self.planned.notifications(request.since_seq, request.limit or 1000)
        return pb.NotificationsReply(notifications=[_notice_pb(n) for n in notes],
                                     last_seq=notes[-1].seq if notes else request.since_seq)

    @handled(Permission.READ, "read a customer's planned outages")
    @_planned_errors
    def CustomerPlanned(self, request: Any, context: grpc.ServicerContext,
                        operator: OperatorConfig) -> pb.CustomerPlannedReply:
        if not request.customer.strip():
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "customer planned outages: consumer number is empty")
        return pb.CustomerPlannedReply(outages=[_outage_pb(o) for o in self.planned.customer_planned(request.customer)])

    @handled(Permission.CONTROL, "start a planned outage")
    @_planned_errors
    def Start(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.PlannedExecutionReply:
        return _execution_pb(self.planned.start_outage(request.id, operator))

    @handled(Permission.CONTROL, "complete a planned outage")
    @_planned_errors
    def Complete(self, request: Any, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.PlannedExecutionReply:
        return _execution_pb(self.planned.complete_outage(request.id, operator))


def register(server: grpc.Server, services: Services, planned: PlannedOutageService) -> list[str]:
    """Add the PlannedOutages service to ``server``; returns its full service name."""
    pb_grpc.add_PlannedOutagesServicer_to_server(PlannedOutagesServicer(services, planned), server)
    return [pb.DESCRIPTOR.services_by_name["PlannedOutages"].full_name]
