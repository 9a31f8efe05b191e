"""gRPC face of the live OMS (``dms/api/protos/oms.proto``, service ``dscada.oms.v1.OutageService``):
SubmitMeterEvents and SubmitTroubleCall (CONTROL: they change what the OMS believes), ListOutages, CustomerStatus and
BreakerStatus (READ)."""

from __future__ import annotations

from typing import Any

import grpc

from dms.api.protos import oms_pb2 as pb
from dms.api.protos import oms_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, abort, handled
from models.config import OperatorConfig
from oms.errors import OmsError
from oms.events import format_time_ms
from oms.outage_records import OutageRecord
from oms.prediction import IngestReport, Outcome, Prediction, SingleLightOut
from oms.service import OmsService
from scada.auth import Permission
from scada.services import Services

__all__ = ["OutageServicer", "register"]


def _ingest_pb(r: IngestReport) -> pb.IngestReply:
    return pb.IngestReply(total=r.total, applied=r.counts.get(Outcome.APPLIED, 0),
                          outcomes={k.value: v for k, v in r.counts.items() if v},
                          clock_corrected=r.clock_corrected, unknown_refs=list(r.unknown_refs))


def _timeline(entries: Any) -> list[str]:
    return [f"{format_time_ms(e.time_ms)} {e.state} {e.note}" for e in entries]


class OutageServicer(DmsServicerBase, pb_grpc.OutageServiceServicer):
    def __init__(self, services: Services, oms: OmsService) -> None:
        super().__init__(services)
        self.oms = oms

    def _prediction_pb(self, p: Prediction) -> pb.Outage:
        return pb.Outage(id=p.id, source="scada" if p.scada_confirmed and not (p.pons or p.calls) else "ami",
                         device=p.device, device_kind=p.device_kind, feeder=p.feeder, state=p.state.value,
                         customers_affected=p.customers_affected, customers_off=p.customers_off,
                         started_ms=p.first_event_ms, last_event_ms=p.last_event_ms, pons=p.pons, calls=p.calls,
                         prns=p.prns, record_id=self.oms.record_id(p.id), etr_ms=self.oms.etr_ms(p.id),
                         merged_into=p.merged_into, timeline=_timeline(p.timeline))

    def _slo_pb(self, s: SingleLightOut) -> pb.Outage:
        return pb.Outage(id=s.id, source="slo", device=s.meter, device_kind="meter", state=s.state.value,
                         customers_affected=1, customers_off=1 if s.state.value == "open" else 0,
                         started_ms=s.first_event_ms, last_event_ms=s.last_event_ms, pons=s.pons, calls=s.calls,
                         etr_ms=self.oms.etr_ms(s.id), merged_into=s.merged_into, timeline=_timeline(s.timeline))

    @staticmethod
    def _record_pb(r: OutageRecord) -> pb.Outage:
        return pb.Outage(id=f"record-{r.id}", source=r.source, device=r.tripped_device, feeder=r.feeder,
                         state=r.status.value, customers_affected=r.customers_interrupted,
                         customers_off=r.customers_still_off if r.restored_ms >= 0 else r.customers_interrupted,
                         started_ms=r.started_ms, last_event_ms=r.updated_ms, record_id=r.id, etr_ms=-1,
                         timeline=list(r.notes))

    @handled(Permission.CONTROL, "submit AMI meter events")
    def SubmitMeterEvents(self, request: Any, context: grpc.ServicerContext,
                          operator: OperatorConfig) -> pb.IngestReply:
        try:
            return _ingest_pb(self.oms.submit_end_device_events(request.end_device_events_json))
        except OmsError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    @handled(Permission.CONTROL, "submit a trouble call")
    def SubmitTroubleCall(self, request: Any, context: grpc.ServicerContext,
                          operator: OperatorConfig) -> pb.IngestReply:
        if not request.customer:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "trouble call: customer (consumer number) is empty")
        # an unknown consumer number raises UnknownElementError, a LookupError: NOT_FOUND naming it
        return _ingest_pb(self.oms.submit_call(request.customer, request.time_ms, request.text))

    @handled(Permission.READ, "list outages")
    def ListOutages(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.ListOutagesReply:
        active = request.active_only
        outages = [self._prediction_pb(p) for p in self.oms.predictions(active_only=active)]
        outages += [self._slo_pb(s) for s in self.oms.slos(active_only=active)]
        outages += [self._record_pb(r) for r in self.oms.other_records(active_only=active)]
        return pb.ListOutagesReply(outages=outages, meters_off=self.oms.meters_off)

    @handled(Permission.READ, "read customer outage status")
    def CustomerStatus(self, request: Any, context: grpc.ServicerContext,
                       operator: OperatorConfig) -> pb.CustomerStatusReply:
        out = []
        for customer in request.customers:
            c = self.oms.customer_status(customer)
            out.append(pb.CustomerStatus(customer=c.customer, known=c.known, out=c.out, outage_id=c.outage_id,
                                         device=c.device, since_ms=c.since_ms, etr_ms=c.etr_ms, text=c.text))
        return pb.CustomerStatusReply(customers=out)

    @handled(Permission.READ, "read breaker status")
    def BreakerStatus(self, request: Any, context: grpc.ServicerContext,
                      operator: OperatorConfig) -> pb.BreakerStatusReply:
        now = self.oms.clock()
        return pb.BreakerStatusReply(breakers=[
            pb.BreakerState(name=b.name, kind=b.kind, feeder=b.feeder, closed=b.closed, uncertain=b.uncertain,
                            changed_ms=b.changed_ms, cause=b.cause, outage_id=b.outage_id, etr_ms=b.etr_ms,
                            expected_duration_s=max(0.0, (b.etr_ms - now) / 1000) if b.etr_ms >= 0 else 0.0)
            for b in self.oms.breaker_status()])


def register(server: grpc.Server, services: Services, oms_service: OmsService) -> list[str]:
    """Add the OutageService to ``server``; returns its full service name."""
    pb_grpc.add_OutageServiceServicer_to_server(OutageServicer(services, oms_service), server)
    return [pb.DESCRIPTOR.services_by_name["OutageService"].full_name]
