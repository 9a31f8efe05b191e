"""gRPC face of the reliability indices (``dms/api/protos/oms_reliability.proto``, service
``dscada.oms.v1.Reliability``): Indices over any period, grouped by feeder, substation or division, and DailyReport
(the CSV text, PNG bytes and paths of one day's report). Both READ."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import grpc

from dms.api.protos import oms_reliability_pb2 as pb
from dms.api.protos import oms_reliability_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, abort, handled
from models.config import OperatorConfig
from oms.med import MedThreshold
from oms.reliability import GroupBy, Indices, ReliabilityError
from oms.reliability_service import ReliabilityService
from scada.auth import Permission
from scada.services import Services

__all__ = ["ReliabilityServicer", "register"]

_GROUP_BY = {pb.RELIABILITY_GROUP_BY_UNSPECIFIED: None, pb.RELIABILITY_GROUP_BY_FEEDER: GroupBy.FEEDER,
             pb.RELIABILITY_GROUP_BY_SUBSTATION: GroupBy.SUBSTATION, pb.RELIABILITY_GROUP_BY_DIVISION: GroupBy.DIVISION}
_MEDIA = {".csv": "text/csv", ".png": "image/png"}
MAX_PERIOD_DAYS = 3660  # ten years: a longer request is a mistake (and a slow one)


def indices_pb(ix: Indices) -> pb.ReliabilityIndices:
    return pb.ReliabilityIndices(**{name: getattr(ix, name) for name in Indices.__slots__})


def _med_pb(m: MedThreshold) -> pb.MajorEventThreshold:
    return pb.MajorEventThreshold(alpha=m.alpha, beta=m.beta, t_med_min=m.t_med_min, history_days=m.history_days,
                                  zero_days_dropped=m.zero_days_dropped,
                                  history_first_day=m.first_day.isoformat() if m.first_day else "",
                                  history_last_day=m.last_day.isoformat() if m.last_day else "")


class ReliabilityServicer(DmsServicerBase, pb_grpc.ReliabilityServicer):
    def __init__(self, services: Services, reliability: ReliabilityService) -> None:
        super().__init__(services)
        self.rel = reliability

    @handled(Permission.READ, "read reliability indices")
    def Indices(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.IndicesReply:
        if request.end_ms <= request.start_ms:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"reliability indices: end_ms {request.end_ms} is not after start_ms {request.start_ms}")
        if request.end_ms - request.start_ms > MAX_PERIOD_DAYS * 86_400_000:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"reliability indices: the period is longer than {MAX_PERIOD_DAYS} days")
        if request.group_by not in _GROUP_BY:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"reliability indices: unknown group_by {request.group_by}")
        start, end = self.rel.local_time(request.start_ms), self.rel.local_time(request.end_ms)
        try:
            a = self.rel.assess(start, end, _GROUP_BY[request.group_by])
        except ReliabilityError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        reply = pb.IndicesReply(
            start_ms=request.start_ms, end_ms=request.end_ms, period_start_local=start.isoformat(),
            period_end_local=end.isoformat(), momentary_threshold_s=a.momentary_threshold_s,
            records_total=a.records_total, records_planned=a.records_planned, indices=indices_pb(a.indices),
            planned=indices_pb(a.planned), has_med=a.med is not None,
            major_event_days=[d.isoformat() for d in a.major_event_days])
        if a.med is not None:
            reply.med.CopyFrom(_med_pb(a.med))
        if a.indices_excluding_med is not None:
            reply.indices_excluding_med.CopyFrom(indices_pb(a.indices_excluding_med))
        for name, ix in a.groups.items():
            g = reply.groups.add(name=name, indices=indices_pb(ix))
            if name in a.groups_excluding_med:
                g.indices_excluding_med.CopyFrom(indices_pb(a.groups_excluding_med[name]))
        return reply

    @handled(Permission.READ, "read a daily reliability report")
    def DailyReport(self, request: Any, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.DailyReportReply:
        if request.day:
            try:
                day = date.fromisoformat(request.day)
            except ValueError:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                      f"daily reliability report: day {request.day!r} is not an ISO date (YYYY-MM-DD)")
        else:
            day = self.rel.local_now().date() - timedelta(days=1)
        try:
            report = self.rel.daily_report(day)
        except ReliabilityError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        reply = pb.DailyReportReply(day=day.isoformat(), directory=str(report.directory),
                                    indices_csv=report.indices_csv.read_text(encoding="utf-8"),
                                    indices=indices_pb(report.assessment.indices),
                                    has_med=report.assessment.med is not None,
                                    t_med_min=report.assessment.med.t_med_min if report.assessment.med else 0.0,
                                    major_event_day=report.major_event_day)
        for path in report.paths():
            reply.files.add(name=path.name, path=str(path), media_type=_MEDIA.get(path.suffix, ""),
                            content=path.read_bytes())
        return reply


def register(server: grpc.Server, services: Services, reliability: ReliabilityService) -> list[str]:
    """Add the Reliability service to ``server``; returns its full service name."""
    pb_grpc.add_ReliabilityServicer_to_server(ReliabilityServicer(services, reliability), server)
    return [pb.DESCRIPTOR.services_by_name["Reliability"].full_name]
