"""gRPC face of feeder reconfiguration (``dms/api/protos/reconfig.proto``, service ``Reconfiguration``): Propose
(READ) on the live state. Executing the sequence is a switching order's business (``switching.proto``)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import grpc

from dms.api.protos import reconfig_pb2 as pb
from dms.api.protos import reconfig_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, handled
from dms.reconfig.engine import StateProposal
from dms.reconfig.evaluate import Operating
from dms.reconfig.milp import Objective
from dms.reconfig.sequence import StepAction, TransferMode
from dms.reconfig.service import ReconfigService
from models.config import OperatorConfig
from scada.auth import Permission
from scada.services import Services

__all__ = ["ReconfigServicer", "proposal_pb", "register"]

_OBJECTIVE_TO_PB = {o: getattr(pb, f"RECONFIG_OBJECTIVE_{o.name}") for o in Objective}
_OBJECTIVE_FROM_PB = {v: k for k, v in _OBJECTIVE_TO_PB.items()}
_ACTION_TO_PB = {a: getattr(pb, f"RECONFIG_ACTION_{a.name}") for a in StepAction}
_MODE_TO_PB = {m: getattr(pb, f"RECONFIG_TRANSFER_{m.name}") for m in TransferMode}


def _f(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _figures(op: Operating, flow: Any | None) -> pb.ReconfigFigures:
    return pb.ReconfigFigures(
        losses_kw=_f(op.losses_mw * 1e3), v_min_pu=_f(op.v_min_pu), v_max_pu=_f(op.v_max_pu),
        max_loading_pct=_f(op.max_loading_pct), max_loading_element=op.max_loading_element,
        feeders=[pb.ReconfigFeeder(head=f.head, p_kw=_f(f.p_mw * 1e3), q_kvar=_f(f.q_mvar * 1e3),
                                   s_kva=_f(f.s_mva * 1e3), loading_pct=_f(f.loading_pct),
                                   rated=math.isfinite(f.loading_pct)) for f in op.feeders],
        open_switches=sorted(op.open_set),
        three_phase_losses_kw=_f(flow.loss_p_w / 1e3) if flow is not None else 0.0,
        three_phase_v_min_pu=_f(flow.v_min_pu) if flow is not None else 0.0)


def proposal_pb(p: StateProposal, state_label: str, elapsed_ms: float) -> pb.ReconfigProposal:
    r = p.result
    after_flow = p.three_phase_after if p.three_phase_after is not None else p.three_phase_before
    return pb.ReconfigProposal(
        network=r.network, state=state_label, objective=_OBJECTIVE_TO_PB[r.objective], to_open=list(r.to_open),
        to_close=list(r.to_close), before=_figures(r.before, p.three_phase_before), after=_figures(r.after, after_flow),
        steps=[pb.ReconfigStep(number=s.number, pair=s.pair, action=_ACTION_TO_PB[s.action], element=s.element,
                               mode=_MODE_TO_PB[s.mode], radial=s.radial, losses_kw=_f(s.losses_mw * 1e3),
                               v_min_pu=_f(s.v_min_pu), max_loading_pct=_f(s.max_loading_pct),
                               interrupted_kw=_f(s.interrupted_mw * 1e3), violations=list(s.violations))
               for s in r.sequence],
        improved=r.improved, acceptable=p.acceptable, new_violations=[v.text() for v in p.new_violations],
        algorithm=r.algorithm, notes=list(r.notes), elapsed_ms=elapsed_ms, ac_solves=r.ac_solves)


class ReconfigServicer(DmsServicerBase, pb_grpc.ReconfigurationServicer):
    def __init__(self, services: Services, reconfig: ReconfigService) -> None:
        super().__init__(services)
        self.reconfig = reconfig

    @handled(Permission.READ, "propose a feeder reconfiguration")
    def Propose(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.ReconfigProposal:
        options = self.reconfig.options
        objective = _OBJECTIVE_FROM_PB.get(request.objective)  # UNSPECIFIED: the service's own
        if objective is not None:
            options = dataclasses.replace(options, objective=objective)
        if request.band_low_pu or request.band_high_pu:  # an inverted band raises ReconfigError
            options = dataclasses.replace(options, v_low_pu=request.band_low_pu or options.v_low_pu,
                                          v_high_pu=request.band_high_pu or options.v_high_pu)
        started = time.perf_counter()
        proposal = self.reconfig.propose(options)
        return proposal_pb(proposal, proposal.state_label, (time.perf_counter() - started) * 1e3)


def register(server: grpc.Server, services: Services, reconfig: ReconfigService) -> list[str]:
    """Add the Reconfiguration service to ``server``; returns its full service name."""
    pb_grpc.add_ReconfigurationServicer_to_server(ReconfigServicer(services, reconfig), server)
    return [pb.DESCRIPTOR.services_by_name["Reconfiguration"].full_name]
