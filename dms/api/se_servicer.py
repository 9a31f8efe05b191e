"""gRPC face of the real-time state estimator (``dms/api/protos/se.proto``, service ``StateEstimationService``):
GetEstimate, WatchEstimates, ListBadData (READ); RunEstimate (CONTROL: it may flag points QUESTIONABLE)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from dms.api.protos import se_pb2 as pb
from dms.api.protos import se_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, handled, streamed
from dms.se.realtime import RealtimeEstimator
from dms.se.results import EstimateResult
from models.config import OperatorConfig
from scada.auth import Permission
from scada.services import Services

__all__ = ["SeServicer", "estimate_pb", "register"]

_STREAM_POLL_S = 0.5


def estimate_pb(r: EstimateResult, *, include_branches: bool = False) -> pb.SeEstimate:
    n = r.nodes
    nodes = [pb.SeNodeVoltage(node=str(x["node"]), bus=str(x["bus"]), phase=str(x["phase"]), v_pu=float(x["v_pu"]),
                              v_kv=float(x["v_kv"]), angle_deg=float(x["angle_deg"]),
                              v_sigma_pu=float(x["v_sigma_pu"]), angle_sigma_deg=float(x["angle_sigma_deg"]),
                              observable=bool(x["observable"])) for x in n]
    branches = [pb.SeBranchFlow(element=str(b["element"]), terminal=int(b["terminal"]), bus=str(b["bus"]),
                                phase=str(b["phase"]), p_w=float(b["p_w"]), q_var=float(b["q_var"]),
                                i_a=float(b["i_a"])) for b in r.branches] if include_branches else []
    return pb.SeEstimate(
        time_ms=r.time_ms, network=r.network, trigger=r.trigger, converged=r.converged, error=r.error,
        loss_p_w=r.loss_p_w, loss_q_var=r.loss_q_var, objective=r.objective, chi2_threshold=r.chi2_threshold,
        chi2_passed=r.chi2_passed, bad_data_detected=r.bad_data_detected,
        bad_data=[_bad_pb(b) for b in r.bad_data], unobservable_buses=r.unobservable_buses,
        deenergised_buses=r.deenergised_buses, excluded=[pb.SeExcluded(point=p, reason=why) for p, why in r.excluded],
        measurements=r.measurements, telemetered=r.telemetered, iterations=r.iterations, solve_ms=r.solve_ms,
        summary=r.summary(), nodes=nodes, branches=branches)


def _bad_pb(b: Any) -> pb.SeBadMeasurement:
    return pb.SeBadMeasurement(measurement=b.measurement, value=b.value, estimate=b.estimate,
                               normalized_residual=b.normalized_residual)


class SeServicer(DmsServicerBase, pb_grpc.StateEstimationServiceServicer):
    def __init__(self, services: Services, estimator: RealtimeEstimator) -> None:
        super().__init__(services)
        self.estimator = estimator

    @handled(Permission.READ, "read the state estimate")
    def GetEstimate(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.SeEstimate:
        r = self.estimator.latest()
        if r is None:
            raise LookupError("no state estimate yet: the estimator has not run")
        return estimate_pb(r, include_branches=request.include_branches)

    @streamed(Permission.READ, "watch state estimates")
    def WatchEstimates(self, request: Any, context: grpc.ServicerContext,
                       operator: OperatorConfig) -> Iterator[pb.SeEstimate]:
        sub = self.estimator.subscribe(f"grpc:{operator.name}")  # before reading the latest: nothing lost between
        context.add_callback(sub.close)
        try:
            latest = self.estimator.latest()
            if latest is not None:
                yield estimate_pb(latest, include_branches=request.include_branches)
            while context.is_active():
                r = sub.get(timeout_s=_STREAM_POLL_S)
                if r is None:
                    if sub.closed:
                        break
                    continue
                if latest is not None and r is latest:
                    continue
                yield estimate_pb(r, include_branches=request.include_branches)
        finally:
            self.estimator.unsubscribe(sub)

    @handled(Permission.CONTROL, "run a state estimate")
    def RunEstimate(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.SeEstimate:
        return estimate_pb(self.estimator.run_now("request"), include_branches=request.include_branches)

    @handled(Permission.READ, "list bad data")
    def ListBadData(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.SeBadDataList:
        return pb.SeBadDataList(bad_data=[_bad_pb(b) for b in self.estimator.bad_data()],
                                flagged_points=sorted(self.estimator.flagged_points()))


def register(server: grpc.Server, services: Services, estimator: RealtimeEstimator) -> list[str]:
    """Add the StateEstimationService to ``server``; returns its full service name."""
    pb_grpc.add_StateEstimationServiceServicer_to_server(SeServicer(services, estimator), server)
    return [pb.DESCRIPTOR.services_by_name["StateEstimationService"].full_name]
