"""The billing feed over gRPC on the sample station (no adapters): feeder-head active power goes through the RTDB's
update path into the historian, the day (local time +05:30) is integrated into 15-minute and hourly blocks with a
communication loss showing as missing blocks, an operator's manual value is recorded with the operator, refused to
a viewer and kept by a recomputation, and the day is exported as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from support import sample_centre, wait_for

from dms.api.protos import oms_billing_pb2 as pb
from dms.api.protos import oms_billing_pb2_grpc as pb_grpc
from models.points import Quality
from models.timebase import now_ms
from models.updates import Cause, UpdateBatch, new_update_rows
from oms import billing_servicer
from oms.billing import BillingService
from scada.server import ControlCenter

OPERATOR = (("authorization", "Bearer operator-demo-token"),)
VIEWER = (("authorization", "Bearer viewer-demo-token"),)
IST = timedelta(hours=5, minutes=30)
H = 3_600_000


@dataclass
class _Server:
    center: Any
    billing: BillingService
    stub: Any


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    made: list[BillingService] = []

    def attach(center: ControlCenter) -> tuple[list[Any], Callable[[Any], list[str]]]:
        assert center.config.network is not None
        made.append(BillingService(center.config, center.historian, center.config.network, center.data_dir, IST,
                                   audit=center.audit))
        return made, lambda server: billing_servicer.register(server, center.services, made[0])

    with sample_centre(tmp_path, attach) as (center, channel):
        yield _Server(center, made[0], pb_grpc.BillingFeedStub(channel))


def test_daily_energy_of_a_feeder_from_its_head_power_through_the_rtdb(server: _Server) -> None:
    center, stub, billing = server.center, server.stub, server.billing
    day = billing.local_day(now_ms()) - timedelta(days=3)
    t0, t_end = billing.day_window(day)
    assert datetime.fromtimestamp(t0 / 1000, tz=UTC).strftime("%H:%M") == "18:30"
    phases = next(m for m in billing.meters if m.feeder == "F1").power_points
    # per phase 100/110/120 kW all day, a ramp 0 -> 240 kW (summed) over local hour 12, the link lost 06:00-08:00
    rows = []
    for k, p in enumerate(phases):
        base = 100.0 + 10 * k
        rows += [(p, base, 0, t0 - H)]
        rows += [(p, 0.0, int(Quality.COMM_LOST | Quality.INVALID), t0 + 6 * H), (p, base, 0, t0 + 8 * H)]
        rows += [(p, 80.0 * m / 60, 0, t0 + 12 * H + m * 60_000) for m in range(61)]  # minute samples
        rows += [(p, base, 0, t0 + 13 * H)]
    batch = new_update_rows(len(rows))
    for i, (p, v, q, t) in enumerate(rows):
        batch[i] = (p, v, q, t, Cause.SPONTANEOUS)
    center.rtdb.ingest(UpdateBatch("test", batch, 0))
    assert center.rtdb.flush(5)
    # every row differs from the one before it, so the RTDB publishes each and the historian (deadband 0) keeps it
    wait_for(lambda: sum(center.historian.count(p) for p in phases) >= len(rows), 15.0, "the historian samples")

    # the scheduler computed the last days when it started (possibly before these samples): recompute this one
    reply = stub.DailyEnergy(pb.DailyEnergyRequest(day=day.isoformat(), feeder="F1", resolution_min=15,
                                                   recompute=True), metadata=VIEWER)
    assert reply.day == day.isoformat() and reply.utc_offset == "+05:30" and (reply.start_ms, reply.end_ms) == (
        t0, t_end)
    (f1,) = reply.feeders
    blocks = f1.blocks
    assert f1.feeder == "F1" and len(blocks) == 96 and blocks[0].start_local.startswith(f"{day.isoformat()}T00:00")
    assert all(b.quality == pb.BILLING_QUALITY_GOOD and b.kwh == pytest.approx(330.0 / 4) for b in blocks[:24])
    assert all(b.quality == pb.BILLING_QUALITY_MISSING and not b.has_kwh for b in blocks[24:32])
    assert blocks[32].quality == pb.BILLING_QUALITY_GOOD and blocks[32].source == pb.BILLING_SOURCE_INTEGRATED
    # the ramp: 240 kW * (k + 0.5) / 4 mean in quarter k, for a quarter hour
    ramp = [b.kwh for b in blocks[48:52]]
    assert np.allclose(ramp, [240.0 * (k + 0.5) / 4 / 4 for k in range(4)])
    assert not f1.has_total and f1.quality == pb.BILLING_QUALITY_MISSING

    hours = stub.DailyEnergy(pb.DailyEnergyRequest(day=day.isoformat(), feeder="F1", resolution_min=60),
                             metadata=VIEWER).feeders[0].blocks
    assert len(hours) == 24 and hours[12].kwh == pytest.approx(120.0) and hours[0].kwh == pytest.approx(330.0)
    assert hours[6].quality == pb.BILLING_QUALITY_MISSING and hours[8].quality == pb.BILLING_QUALITY_GOOD

    request = pb.ManualValueRequest(feeder="F1", start_ms=t0 + 6 * H, resolution_min=60, kwh=325.0,
                                    reason="substation meter read by the crew")
    with pytest.raises(grpc.RpcError) as exc:
        stub.EnterManualValue(request, metadata=VIEWER)
    assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED
    block = stub.EnterManualValue(request, metadata=OPERATOR).block
    assert block.quality == pb.BILLING_QUALITY_MANUAL and block.operator == "operator" and block.kwh == 325.0
    with pytest.raises(grpc.RpcError) as exc:
        stub.EnterManualValue(pb.ManualValueRequest(feeder="F9", start_ms=t0, kwh=1.0, reason="x"), metadata=OPERATOR)
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND and "F9" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        stub.DailyEnergy(pb.DailyEnergyRequest(day="yesterday"), metadata=VIEWER)
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "yesterday" in exc.value.details()

    again = stub.DailyEnergy(pb.DailyEnergyRequest(day=day.isoformat(), feeder="F1", resolution_min=60,
                                                   recompute=True), metadata=VIEWER)
    kept = again.feeders[0].blocks[6]
    assert (kept.kwh, kept.quality, kept.source, kept.operator) == (
        325.0, pb.BILLING_QUALITY_MANUAL, pb.BILLING_SOURCE_MANUAL, "operator")
    assert again.computed_ms >= reply.computed_ms
    audit = center.audit.query(operator="operator")
    assert any(e.action == "billing_manual_value" and e.value == 325.0 for e in audit)

    export = stub.ExportCsv(pb.ExportCsvRequest(day=day.isoformat()), metadata=VIEWER)
    assert export.filename == f"billing-{day.isoformat()}.csv"
    table = list(csv.DictReader(io.StringIO(export.csv)))
    assert len(table) == 6 * (96 + 24)
    manual = [r for r in table if r["quality"] == "manual"]
    assert len(manual) == 1 and manual[0]["feeder"] == "F1" and manual[0]["operator"] == "operator"
