"""gRPC face of the billing feed (``dms/api/protos/oms_billing.proto``, service ``dscada.oms.v1.BillingFeed``):
DailyEnergy and ExportCsv (READ), EnterManualValue (CONTROL: it changes what the utility bills; the operator is
recorded with the value and in the audit log)."""

from __future__ import annotations

from datetime import date
from typing import Any

import grpc

from dms.api.protos import oms_billing_pb2 as pb
from dms.api.protos import oms_billing_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, abort, handled
from models.config import OperatorConfig
from oms.billing import BillingError, BillingService, BlockQuality, EnergyBlock, EnergySource, FeederDay
from scada.auth import Permission
from scada.services import Services

__all__ = ["BillingFeedServicer", "register"]

_QUALITY = {BlockQuality.GOOD: pb.BILLING_QUALITY_GOOD, BlockQuality.ESTIMATED: pb.BILLING_QUALITY_ESTIMATED,
            BlockQuality.MISSING: pb.BILLING_QUALITY_MISSING, BlockQuality.MANUAL: pb.BILLING_QUALITY_MANUAL}
_SOURCE = {EnergySource.COUNTER: pb.BILLING_SOURCE_COUNTER, EnergySource.INTEGRATED: pb.BILLING_SOURCE_INTEGRATED,
           EnergySource.MANUAL: pb.BILLING_SOURCE_MANUAL, EnergySource.MIXED: pb.BILLING_SOURCE_MIXED,
           EnergySource.NONE: pb.BILLING_SOURCE_NONE}


def _day(context: grpc.ServicerContext, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"billing day {text!r} is not a date YYYY-MM-DD")


def _refuse(context: grpc.ServicerContext, exc: BillingError) -> None:
    code = grpc.StatusCode.NOT_FOUND if isinstance(exc, LookupError) else grpc.StatusCode.INVALID_ARGUMENT
    abort(context, code, str(exc))


def _offset_text(billing: BillingService) -> str:
    minutes = int(billing.utc_offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class BillingFeedServicer(DmsServicerBase, pb_grpc.BillingFeedServicer):
    def __init__(self, services: Services, billing: BillingService) -> None:
        super().__init__(services)
        self.billing = billing

    def _block_pb(self, b: EnergyBlock) -> pb.BillingBlock:
        return pb.BillingBlock(start_ms=b.start_ms, start_local=self.billing.local_text(b.start_ms),
                               has_kwh=b.kwh is not None, kwh=b.kwh or 0.0, quality=_QUALITY[b.quality],
                               source=_SOURCE[b.source], operator=b.operator, reason=b.reason,
                               entered_ms=b.entered_ms)

    def _feeder_pb(self, fd: FeederDay) -> pb.FeederEnergy:
        total = fd.total_kwh
        return pb.FeederEnergy(feeder=fd.feeder, resolution_min=fd.resolution_min,
                               blocks=[self._block_pb(b) for b in fd.blocks], has_total=total is not None,
                               total_kwh=total or 0.0, quality=_QUALITY[fd.quality])

    @handled(Permission.READ, "read daily energy values")
    def DailyEnergy(self, request: Any, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.DailyEnergyReply:
        day = _day(context, request.day)
        try:
            if request.recompute:
                self.billing.compute_day(day)
            energy = self.billing.daily_energy(day, request.feeder or None, request.resolution_min or 15)
        except BillingError as exc:
            _refuse(context, exc)
        return pb.DailyEnergyReply(day=day.isoformat(), utc_offset=_offset_text(self.billing),
                                   start_ms=energy.start_ms, end_ms=energy.end_ms, computed_ms=energy.computed_ms,
                                   feeders=[self._feeder_pb(fd) for fd in energy.feeders])

    @handled(Permission.CONTROL, "enter a manual energy value")
    def EnterManualValue(self, request: Any, context: grpc.ServicerContext,
                         operator: OperatorConfig) -> pb.ManualValueReply:
        try:
            block = self.billing.enter_manual_value(request.feeder, request.start_ms, request.kwh, request.reason,
                                                    operator.name, role=operator.role.value,
                                                    resolution=request.resolution_min or 15)
        except BillingError as exc:
            _refuse(context, exc)
        return pb.ManualValueReply(block=self._block_pb(block))

    @handled(Permission.READ, "export daily energy values")
    def ExportCsv(self, request: Any, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.ExportCsvReply:
        day = _day(context, request.day)
        try:
            text = self.billing.export_csv(day, request.resolution_min or None)
        except BillingError as exc:
            _refuse(context, exc)
        return pb.ExportCsvReply(filename=f"billing-{day.isoformat()}.csv", csv=text)


def register(server: grpc.Server, services: Services, billing: BillingService) -> list[str]:
    """Add the BillingFeed service to ``server``; returns its full service name."""
    pb_grpc.add_BillingFeedServicer_to_server(BillingFeedServicer(services, billing), server)
    return [pb.DESCRIPTOR.services_by_name["BillingFeed"].full_name]
