"""gRPC face of Volt/VAR control (``dms/api/protos/voltvar.proto``, service ``VoltVar``): Propose (READ),
Execute (CONTROL), GetCounters (READ)."""

from __future__ import annotations

import math
from typing import Any

import grpc

from dms.api.protos import voltvar_pb2 as pb
from dms.api.protos import voltvar_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, handled
from dms.voltvar.engine import ControlKind, FlowFigures, Objective, VoltVarAction
from dms.voltvar.service import ActionStatus, StoredProposal, VoltVarService, band_of
from models.config import OperatorConfig
from scada.auth import Permission
from scada.services import Services

__all__ = ["VoltVarServicer", "register"]

_OBJECTIVE_TO_PB = {o: getattr(pb, f"VOLTVAR_OBJECTIVE_{o.name}") for o in Objective}
_OBJECTIVE_FROM_PB = {v: k for k, v in _OBJECTIVE_TO_PB.items()}
_KIND_TO_PB = {k: getattr(pb, f"VOLTVAR_CONTROL_KIND_{k.name}") for k in ControlKind}
_STATUS_TO_PB = {s: getattr(pb, f"VOLTVAR_ACTION_STATUS_{s.name}") for s in ActionStatus}


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def action_pb(a: VoltVarAction) -> pb.VoltVarAction:
    return pb.VoltVarAction(kind=_KIND_TO_PB[a.kind], element=a.element, phases=a.phases, before=a.before,
                            after=a.after, operations=a.operations)


def figures_pb(f: FlowFigures) -> pb.VoltVarFigures:
    return pb.VoltVarFigures(converged=f.converged, loss_kw=_finite(f.loss_p_w / 1e3),
                             demand_kw=_finite(f.load_p_w / 1e3), v_min_pu=_finite(f.v_min_pu),
                             v_max_pu=_finite(f.v_max_pu), voltage_violations=f.voltage_violations,
                             violations=[v.text() for v in f.violations])


def proposal_pb(stored: StoredProposal) -> pb.VoltVarProposal:
    p = stored.proposal
    return pb.VoltVarProposal(
        id=stored.id, network=p.network, state=p.state_label, objective=_OBJECTIVE_TO_PB[p.objective],
        band_low_pu=p.band.low_pu, band_high_pu=p.band.high_pu, actions=[action_pb(a) for a in p.actions],
        before=figures_pb(p.before), after=figures_pb(p.after), feasible=p.feasible, verified=p.verified,
        new_violations=[v.text() for v in p.new_violations], blocked=list(p.blocked), message=p.message,
        flows=p.flows, elapsed_ms=p.elapsed_ms)


class VoltVarServicer(DmsServicerBase, pb_grpc.VoltVarServicer):
    def __init__(self, services: Services, voltvar: VoltVarService) -> None:
        super().__init__(services)
        self.voltvar = voltvar

    @handled(Permission.READ, "propose Volt/VAR actions")
    def Propose(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.VoltVarProposal:
        objective = _OBJECTIVE_FROM_PB.get(request.objective)  # UNSPECIFIED: the service's own
        band = band_of(request.band_low_pu, request.band_high_pu)  # an inverted band raises DmsError
        return proposal_pb(self.voltvar.propose(objective=objective, band=band))

    @handled(Permission.CONTROL, "execute a Volt/VAR proposal")
    def Execute(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.VoltVarExecuteReply:
        report = self.voltvar.execute(request.proposal_id, operator)
        return pb.VoltVarExecuteReply(
            proposal_id=report.proposal_id, completed=report.completed, message=report.message,
            results=[pb.VoltVarActionResult(action=action_pb(r.action), point=r.point, value=r.value,
                                            status=_STATUS_TO_PB[r.status], detail=r.detail, elapsed_ms=r.elapsed_ms)
                     for r in report.results])

    @handled(Permission.READ, "read Volt/VAR operation counters")
    def GetCounters(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.VoltVarCounters:
        return pb.VoltVarCounters(counters=[
            pb.VoltVarCounter(element=c.element, kind=_KIND_TO_PB[c.kind], day=c.day, used=c.used, limit=c.limit,
                              left=c.left) for c in self.voltvar.counters()])


def register(server: grpc.Server, services: Services, voltvar: VoltVarService) -> list[str]:
    """Add the VoltVar service to ``server``; returns its full service name."""
    pb_grpc.add_VoltVarServicer_to_server(VoltVarServicer(services, voltvar), server)
    return [pb.DESCRIPTOR.services_by_name["VoltVar"].full_name]
