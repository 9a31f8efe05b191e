"""gRPC face of the live OMS (``dms/api/protos/oms.proto``, service ``dscada.oms.v1.OutageService``):
SubmitMeterEvents, SubmitTroubleCall, UpdateRecord, CloseRecord, AddCrew and ReportCrewStatus (CONTROL: they change
what the OMS believes or does); ListOutages, OutageSummary, WatchOutages, ListRecords, GetRecord, CustomerStatus,
BreakerStatus and ListCrews (READ)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc

from dms.api.protos import oms_pb2 as pb
from dms.api.protos import oms_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, abort, handled, streamed
from models.config import OperatorConfig
from oms.crews import Assignment, Crew, CrewError, UnknownCrewError
from oms.errors import OmsError
from oms.events import format_time_ms
from oms.outage_records import OutageRecord
from oms.prediction import IngestReport, Outcome, Prediction, SingleLightOut
from oms.service import OmsService
from scada.auth import Permission
from scada.errors import ScadaError
from scada.services import Services

__all__ = ["OutageServicer", "register"]

log = logging.getLogger(__name__)


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

    def _audit(self, operator: OperatorConfig, action: str, what: str, ref: int, detail: str) -> None:
        try:
            self.s.audit.record(operator=operator.name, role=operator.role.value, point=-1, point_name=what,
                                action=action, value=float(ref), outcome="answered", reason="oms",
                                field_detail=detail)
        except ScadaError:
            log.exception("OMS: audit record of %s failed", action)

    def _lifecycle(self, outage_id: str) -> dict[str, Any]:
        rid = self.oms.record_id(outage_id)
        if not rid:
            return {"stage": "", "cause": "", "planned": False, "crew": ""}
        r = self.oms.store.canonical(rid)
        return {"stage": r.stage.value, "cause": r.cause, "planned": r.planned, "crew": r.crew, "record_id": r.id}

    def _prediction_pb(self, p: Prediction) -> pb.Outage:
        return pb.Outage(id=p.id, source=self.oms.source_of(p), device=p.device, device_kind=p.device_kind,
                         feeder=p.feeder, state=p.state.value, customers_affected=p.customers_affected,
                         customers_off=p.customers_off, started_ms=p.first_event_ms, last_event_ms=p.last_event_ms,
                         pons=p.pons, calls=p.calls, prns=p.prns, etr_ms=self.oms.estimated_restoration_ms(p.id),
                         merged_into=p.merged_into, timeline=_timeline(p.timeline), **self._lifecycle(p.id))

    def _slo_pb(self, s: SingleLightOut) -> pb.Outage:
        return pb.Outage(id=s.id, source="slo", device=s.meter, device_kind="meter", state=s.state.value,
                         customers_affected=1, customers_off=1 if s.state.value == "open" else 0,
                         started_ms=s.first_event_ms, last_event_ms=s.last_event_ms, pons=s.pons, calls=s.calls,
                         etr_ms=self.oms.estimated_restoration_ms(s.id), merged_into=s.merged_into,
                         timeline=_timeline(s.timeline), **self._lifecycle(s.id))

    def _outage_pb(self, o: Prediction | SingleLightOut) -> pb.Outage:
        return self._prediction_pb(o) if isinstance(o, Prediction) else self._slo_pb(o)

    @staticmethod
    def _record_pb(r: OutageRecord) -> pb.Outage:
        return pb.Outage(id=f"record-{r.id}", source=r.source, device=r.tripped_device, feeder=r.feeder,
                         state=r.status.value, customers_affected=r.customers_interrupted,
                         customers_off=r.customers_still_off if r.restored_ms >= 0 else r.customers_interrupted,
                         started_ms=r.started_ms, last_event_ms=r.updated_ms, record_id=r.id, etr_ms=r.etr_ms,
                         timeline=[*r.notes, *r.log], stage=r.stage.value, cause=r.cause, planned=r.planned,
                         crew=r.crew)

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


    @handled(Permission.READ, "read the outage summary")
    def OutageSummary(self, request: Any, context: grpc.ServicerContext,
                      operator: OperatorConfig) -> pb.OutageSummaryReply:
        s = self.oms.summary(request.top or 10)
        return pb.OutageSummaryReply(
            storm=s.storm, storm_reason=s.storm_reason, active_outages=s.active_outages, confirmed=s.confirmed,
            single_lights_out=s.single_lights_out, customers_off=s.customers_off, meters_off=s.meters_off,
            events_last_minute=s.events_last_minute, events_total=s.events_total, crews_busy=s.crews_busy,
            crews_available=s.crews_available, outages_waiting_for_crew=s.waiting_for_crew,
            feeders=[pb.FeederOutages(feeder=f.feeder, outages=f.outages, customers_off=f.customers_off)
                     for f in s.feeders],
            largest=[self._prediction_pb(p) for p in s.largest], text=s.text)

    @streamed(Permission.READ, "watch outages")
    def WatchOutages(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> Iterator[Any]:
        watch = self.oms.watch()
        try:
            if request.include_snapshot:
                for p in self.oms.predictions(active_only=True):
                    yield self._prediction_pb(p)
                for s in self.oms.slos(active_only=True):
                    yield self._slo_pb(s)
            while context.is_active():
                o = watch.get(timeout_s=0.5)
                if o is not None:
                    yield self._outage_pb(o)
                elif watch.closed:
                    return
        finally:
            self.oms.unwatch(watch)

    @handled(Permission.READ, "list outage records")
    def ListRecords(self, request: Any, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.ListRecordsReply:
        recs = self.oms.store.list(status=request.status or None, since_ms=request.since_ms or None,
                                   limit=request.limit or 200)
        return pb.ListRecordsReply(records=[_record_full_pb(r) for r in recs])

    @handled(Permission.READ, "read an outage record")
    def GetRecord(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.OutageRecord:
        return _record_full_pb(self.oms.store.get(request.record_id))

    @handled(Permission.CONTROL, "update an outage record")
    def UpdateRecord(self, request: Any, context: grpc.ServicerContext,
                     operator: OperatorConfig) -> pb.OutageRecord:
        if not (request.cause or request.note):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"outage record {request.record_id}: nothing to update (give a cause or a note)")
        rec = self.oms.update_record(request.record_id, cause=request.cause, note=request.note,
                                     operator=operator.name)
        self._audit(operator, "oms_update_record", f"outage record {rec.id}", rec.id, request.cause or request.note)
        return _record_full_pb(rec)

    @handled(Permission.CONTROL, "close an outage record")
    def CloseRecord(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.OutageRecord:
        try:
            rec = self.oms.close_record(request.record_id, note=request.note, closed_ms=request.closed_ms,
                                        cause=request.cause, operator=operator.name)
        except OmsError as exc:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self._audit(operator, "oms_close_record", f"outage record {rec.id}", rec.id, request.note)
        return _record_full_pb(rec)

    @handled(Permission.CONTROL, "add a crew")
    def AddCrew(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.Crew:
        try:
            crew = Crew(request.id, request.name or request.id, (request.x, request.y), request.shift_start_ms,
                        request.shift_end_ms, frozenset(request.skills), tuple(request.equipment),
                        request.status or "available", updated_ms=self.oms.clock())
            added = self.oms.add_crew(crew)
        except CrewError as exc:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._audit(operator, "oms_add_crew", f"crew {added.id}", 0, ", ".join(sorted(s.value for s in added.skills)))
        return _crew_pb(added)

    @handled(Permission.READ, "list crews")
    def ListCrews(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.ListCrewsReply:
        return pb.ListCrewsReply(crews=[_crew_pb(c) for c in self.oms.crews.crews()],
                                 assignments=[_assignment_pb(a) for a in self.oms.assignments()],
                                 waiting=[w.outage_id for w in self.oms.waiting_work()])

    @handled(Permission.CONTROL, "report a crew status")
    def ReportCrewStatus(self, request: Any, context: grpc.ServicerContext,
                         operator: OperatorConfig) -> pb.CrewStatusReply:
        try:
            stage = self.oms.report_crew_status(request.crew_id, request.status, request.time_ms,
                                                location=(request.x, request.y) if request.has_location else None)
        except UnknownCrewError as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except CrewError as exc:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        self._audit(operator, "oms_crew_status", f"crew {request.crew_id}", 0, request.status)
        return pb.CrewStatusReply(stage=stage.value if stage is not None else "",
                                  crew=_crew_pb(self.oms.crews.crew(request.crew_id)))


def _record_full_pb(r: OutageRecord) -> pb.OutageRecord:
    return pb.OutageRecord(
        id=r.id, source=r.source, source_ref=r.source_ref, feeder=r.feeder, device=r.tripped_device,
        status=r.status.value, stage=r.stage.value, cause=r.cause, planned=r.planned, crew=r.crew, etr_ms=r.etr_ms,
        customers_interrupted=r.customers_interrupted, customers_still_off=r.customers_still_off,
        started_ms=r.started_ms, restored_ms=r.restored_ms, closed_ms=r.closed_ms, merged_into=r.merged_into,
        steps=[pb.RestorationStep(time_ms=s.time_ms, customers=s.customers, note=s.note) for s in r.steps],
        notes=[*r.notes, *r.log], faulted_elements=list(r.faulted_elements),
        isolated_boundary=list(r.isolated_boundary))


def _crew_pb(c: Crew) -> pb.Crew:
    return pb.Crew(id=c.id, name=c.name, x=c.location[0], y=c.location[1], shift_start_ms=c.shift_start_ms,
                   shift_end_ms=c.shift_end_ms, skills=sorted(s.value for s in c.skills), equipment=list(c.equipment),
                   status=c.status.value, outage_id=c.outage_id)


def _assignment_pb(a: Assignment) -> pb.Assignment:
    return pb.Assignment(outage_id=a.outage_id, crew_id=a.crew_id, stage=a.stage.value, assigned_ms=a.assigned_ms,
                         stage_ms=a.stage_ms, travel_s=a.travel_s, repair_s=a.repair_s, etr_ms=a.etr_ms)


def register(server: grpc.Server, services: Services, oms_service: OmsService) -> list[str]:
    """Add the OutageService to ``server``; returns its full service name."""
    pb_grpc.add_OutageServiceServicer_to_server(OutageServicer(services, oms_service), server)
    return [pb.DESCRIPTOR.services_by_name["OutageService"].full_name]
