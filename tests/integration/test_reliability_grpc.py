"""The Reliability gRPC service on a real control centre (sample station, no adapters): outage records of yesterday
in the centre's outage store give the hand-computed indices per feeder over gRPC, the daily report comes back as CSV
text and PNG bytes with its paths, a viewer may read it, a caller without a token may not, and bad requests are
refused by name."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import sample_centre

from dms.api.protos import oms_reliability_pb2 as pb
from dms.api.protos import oms_reliability_pb2_grpc as pb_grpc
from oms import reliability_servicer
from oms.outage_records import OutageRecordStore, OutageStatus, RestorationStep
from oms.reliability_service import ReliabilityService
from scada.server import ControlCenter

VIEWER = (("authorization", "Bearer viewer-demo-token"),)
OFFSET = timedelta(hours=5, minutes=30)
NT = 2257


def _ms(day: date, hh: int, mm: int = 0) -> int:
    local = datetime(day.year, day.month, day.day, hh, mm)
    return int((local - OFFSET).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass
class _Server:
    center: Any
    store: OutageRecordStore
    rel: ReliabilityService
    stub: Any


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    made: list[Any] = []

    def attach(center: ControlCenter) -> tuple[list[Any], Callable[[Any], list[str]]]:
        assert center.topology is not None
        store = OutageRecordStore(center.data_dir / "outages.sqlite")
        made.extend([store, ReliabilityService(store, center.topology.model, center.data_dir, utc_offset=OFFSET)])
        return made, lambda server: reliability_servicer.register(server, center.services, made[1])

    with sample_centre(tmp_path, attach) as (center, channel):
        yield _Server(center, made[0], made[1], pb_grpc.ReliabilityStub(channel))


def test_indices_and_daily_report_over_grpc(server: _Server) -> None:
    day = server.rel.local_now().date() - timedelta(days=1)
    store = server.store
    # F1: 200 customers off 10:00, 150 back at 10:45 (step), the other 50 closed at 12:00; F3: 60 for 90 min planned
    f1 = store.open_or_update(source="flisr", source_ref="run-1", feeder="F1", tripped_device="F1-CB",
                              customers_interrupted=200, customers_restored=150, customers_still_off=50,
                              started_ms=_ms(day, 10), restored_ms=_ms(day, 10, 45), status=OutageStatus.RESTORED,
                              steps=(RestorationStep(_ms(day, 10, 45), 150, "FLISR"),))
    store.close_record(f1.id, "repaired", closed_ms=_ms(day, 12))
    store.open_or_update(source="planned", source_ref="m-1", feeder="F3", tripped_device="F3-LBS",
                         customers_interrupted=60, customers_restored=60, started_ms=_ms(day, 9),
                         restored_ms=_ms(day, 10, 30), status=OutageStatus.RESTORED, planned=True,
                         steps=(RestorationStep(_ms(day, 10, 30), 60, "done"),))
    ni, cmi = 200, 150 * 45 + 50 * 120  # 12,750 customer minutes

    reply = server.stub.Indices(pb.IndicesRequest(start_ms=_ms(day, 0), end_ms=_ms(day + timedelta(days=1), 0),
                                                  group_by=pb.RELIABILITY_GROUP_BY_FEEDER), metadata=VIEWER,
                                timeout=30)
    assert reply.period_start_local == f"{day.isoformat()}T00:00:00"
    assert reply.indices.customers_served == NT and reply.indices.customer_interruptions == ni
    assert reply.indices.saidi_min == pytest.approx(cmi / NT)
    assert reply.indices.caidi_min == pytest.approx(cmi / ni)
    assert reply.indices.asai == pytest.approx(1 - cmi / 60 / (NT * 24))
    assert reply.planned.saidi_min == pytest.approx(60 * 90 / NT)
    assert (reply.records_total, reply.records_planned) == (3, 1)
    assert not reply.has_med and not reply.HasField("indices_excluding_med")
    groups = {g.name: g.indices for g in reply.groups}
    assert groups["F1"].saifi == pytest.approx(200 / 510) and groups["F1"].saidi_min == pytest.approx(cmi / 510)
    assert groups["F3"].customer_interruptions == 0 and len(groups) == 6

    report = server.stub.DailyReport(pb.DailyReportRequest(), metadata=VIEWER, timeout=60)  # "" = yesterday
    assert report.day == day.isoformat()
    assert report.indices.saidi_min == pytest.approx(cmi / NT)
    files = {f.name: f for f in report.files}
    assert sorted(files) == ["daily_indices.csv", "daily_saidi.png", "feeders.csv", "indices.csv",
                             "worst_feeders.png"]
    assert files["daily_saidi.png"].content[:4] == b"\x89PNG" and files["daily_saidi.png"].media_type == "image/png"
    assert Path(files["worst_feeders.png"].path).read_bytes() == files["worst_feeders.png"].content
    assert Path(report.directory) == server.center.data_dir / "reports" / "reliability" / day.isoformat()
    rows = {(r["scope"], r["name"], r["basis"]): r for r in csv.DictReader(io.StringIO(report.indices_csv))}
    assert float(rows[("feeder", "F1", "unplanned")]["saidi_min"]) == pytest.approx(cmi / 510, rel=1e-5)
    assert server.rel.history.rows(day, day)[0].saidi_min == pytest.approx(cmi / NT)


def test_refusals(server: _Server) -> None:
    today = server.rel.local_now().date()
    with pytest.raises(grpc.RpcError) as err:
        server.stub.Indices(pb.IndicesRequest(start_ms=10, end_ms=20), timeout=30)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        server.stub.Indices(pb.IndicesRequest(start_ms=20, end_ms=10), metadata=VIEWER, timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "not after start_ms" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        server.stub.DailyReport(pb.DailyReportRequest(day="10/03/2026"), metadata=VIEWER, timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "not an ISO date" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        server.stub.DailyReport(pb.DailyReportRequest(day=(today + timedelta(days=2)).isoformat()), metadata=VIEWER,
                                timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "has not begun" in err.value.details()
