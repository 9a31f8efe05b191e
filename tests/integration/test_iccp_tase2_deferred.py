"""TASE.2 device control off the MMS server loop (deferred responses) and release under report load, over loopback
with our MMS client: a slow field answer must not stall other associations (nor the same association's other
requests), a release or abort while an operate is pending ends cleanly, and a release while a transfer set pushes
reports at a high rate concludes (no fall-back to abort)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from open61850.data import BoolData, IntData  # noqa: E402
from support import wait_for  # noqa: E402

from iccp.mms import DataAccessCode, ObjectName, VariableSpec  # noqa: E402
from iccp.mms.client import (  # noqa: E402
    AeTitle,
    CloseReason,
    MmsAssociation,
    MmsClientConfig,
    MmsConnectionLost,
    MmsEndpoint,
)
from iccp.mms.client_codec import InformationReport  # noqa: E402
from iccp.tase2.bilateral import (  # noqa: E402
    ApTitle,
    BilateralDevice,
    BilateralPoint,
    BilateralTable,
    PeerIdentity,
    TransferSetLimits,
)
from iccp.tase2.devices import CallbackDevices  # noqa: E402
from iccp.tase2.model import DeviceDef, DSConditions, DSTransferSet, PointType, TransferReportHeader  # noqa: E402
from iccp.tase2.model import ObjectName as Tase2Name  # noqa: E402
from iccp.tase2.model import Scope as Tase2Scope  # noqa: E402
from iccp.tase2.point_source import InMemoryPointSource  # noqa: E402
from iccp.tase2.server import Tase2Server  # noqa: E402
from models.iccp_config import IccpConfig  # noqa: E402
from models.points import PointDef, PointKind, PointSource, Quality  # noqa: E402

OUR = PeerIdentity(ApTitle((1, 3, 9999, 10)), 10)
TSO = PeerIdentity(ApTitle((1, 3, 9999, 20)), 20)
DOMAIN = "DSO1"
FIELD_DELAY_S = 2.0
N_LOAD_POINTS = 3000


def _pdef(i: int, name: str, kind: PointKind) -> PointDef:
    return PointDef(i, name, kind, PointSource("iec104", "RTU1", 1, 100 + i, "M_ME_TF_1"))


POINTS = (_pdef(0, "SS1-P", PointKind.ANALOG), _pdef(1, "F1-CB", PointKind.DOUBLE),
          *(_pdef(10 + i, f"L{i}", PointKind.ANALOG) for i in range(N_LOAD_POINTS)))
TABLE = BilateralTable(
    "TSO", "BLT_DSO1_TSO", TSO, DOMAIN,
    points=(BilateralPoint("SS1_P", "SS1-P", PointType.DATA_REAL_Q_TIMETAG),
            BilateralPoint("F1_CB", "F1-CB", PointType.DATA_STATE_Q_TIMETAG),
            *(BilateralPoint(f"L{i}", f"L{i}", PointType.DATA_REAL_Q) for i in range(N_LOAD_POINTS))),
    devices=(BilateralDevice(DeviceDef("F1_CB_CTL"), "F1-CB"),),
    limits=TransferSetLimits(max_transfer_sets=4, max_data_sets=4, max_data_set_size=N_LOAD_POINTS + 8,
                             min_interval_s=1, min_integrity_s=1),
    operator="iccp-tso")
CONFIG = IccpConfig(OUR, None, (TABLE,))


class SlowField:
    """A field whose answer takes FIELD_DELAY_S (the SCADA command path waiting for the RTU)."""

    def __init__(self) -> None:
        self.operated: list[tuple[str, float, float]] = []  # (device, value, finished monotonic)

    def __call__(self, device: BilateralDevice, value: float) -> str | None:
        time.sleep(FIELD_DELAY_S)
        self.operated.append((device.device.name, value, time.monotonic()))
        return None


@pytest.fixture()
def env() -> Iterator[tuple[Tase2Server, InMemoryPointSource, SlowField]]:
    source = InMemoryPointSource(POINTS)
    now_ms = int(time.time() * 1000)
    source.update([("SS1-P", 12.5, Quality.GOOD, now_ms), ("F1-CB", 2, Quality.GOOD, now_ms),
                   *((f"L{i}", float(i), Quality.GOOD, now_ms) for i in range(N_LOAD_POINTS))])
    field = SlowField()
    server = Tase2Server(CONFIG, source, devices=CallbackDevices(field, select_timeout_s=30.0))
    server.start()
    try:
        yield server, source, field
    finally:
        server.stop()


def _connect(server: Tase2Server, reports: Any = None, **config: Any) -> MmsAssociation:
    mms = MmsClientConfig((MmsEndpoint("127.0.0.1", server.port),),
                          calling=AeTitle(TSO.ap_title.arcs, TSO.ae_qualifier),
                          called=AeTitle(OUR.ap_title.arcs, OUR.ae_qualifier), request_timeout_s=10.0, **config)
    return MmsAssociation.connect(mms, on_information_report=reports)


def _icc(item: str) -> ObjectName:
    return ObjectName.in_domain(DOMAIN, item)


class _Operate(threading.Thread):
    """Select then operate F1_CB_CTL on ``assoc`` in the background; ``result`` is the write outcome or the error."""

    def __init__(self, assoc: MmsAssociation) -> None:
        super().__init__(daemon=True)
        self.assoc = assoc
        self.result: object = "not done"
        self.finished = 0.0
        assoc.read_one(_icc("F1_CB_CTL_SBO"))  # select (fast: only the operate waits for the field)

    def run(self) -> None:
        try:
            self.result = self.assoc.write([_icc("F1_CB_CTL")], [IntData(1)])
        except Exception as exc:  # noqa: BLE001 - examined by the test
            self.result = exc
        self.finished = time.monotonic()


def test_reads_are_answered_while_an_operate_waits_for_the_field(env: Any) -> None:
    server, _source, field = env
    with _connect(server) as operator, _connect(server) as reader:
        op = _Operate(operator)
        started = time.monotonic()
        op.start()
        wait_for(lambda: server.device_jobs == 1, 5, "the operate on a worker")
        latencies: list[float] = []
        same: list[float] = []
        while op.is_alive() and time.monotonic() - started < 10:
            t0 = time.monotonic()
            assert reader.read_one(_icc("SS1_P")) is not None
            latencies.append(time.monotonic() - t0)
            t0 = time.monotonic()
            # the operating association's own other requests are answered too (several outstanding)
            assert operator.read_one(_icc("F1_CB")) is not None
            same.append(time.monotonic() - t0)
            time.sleep(0.02)
        op.join(10)
        assert op.result == (None,), op.result
        assert op.finished - started >= FIELD_DELAY_S * 0.95
        assert field.operated and field.operated[0][:2] == ("F1_CB_CTL", 1)
        assert len(latencies) >= 10, latencies  # kept on reading during the 2 s operate
        print(f"read latency during a {FIELD_DELAY_S:g} s operate: other association max "
              f"{max(latencies) * 1000:.1f} ms ({len(latencies)} reads), same association max "
              f"{max(same) * 1000:.1f} ms")
        assert max(latencies) < 0.5 and max(same) < 0.5, (latencies, same)


def test_release_while_an_operate_is_pending_answers_it_first(env: Any) -> None:
    server, _source, _field = env
    operator = _connect(server, release_timeout_s=5.0)
    op = _Operate(operator)
    op.start()
    time.sleep(0.3)
    result = operator.release()
    op.join(10)
    assert result.concluded, result
    assert op.result == (None,), op.result  # answered before the Conclude-Response
    assert operator.close_reason is CloseReason.RELEASED
    with _connect(server) as again:
        assert again.read_one(_icc("SS1_P")) is not None


def test_abort_while_an_operate_is_pending_drops_the_answer_cleanly(env: Any) -> None:
    server, _source, field = env
    operator = _connect(server)
    op = _Operate(operator)
    op.start()
    time.sleep(0.3)
    operator.abort()
    op.join(10)
    assert isinstance(op.result, MmsConnectionLost), op.result
    wait_for(lambda: field.operated, 2 * FIELD_DELAY_S + 5, "the field answer after the abort")
    wait_for(lambda: not server.mms.associations(), 5, "the aborted association gone")
    with _connect(server) as again:  # the server goes on; the dropped answer did not break anything
        assert again.read_one(_icc("SS1_P")) is not None
        assert again.read([_icc("F1_CB_CTL")]) == (DataAccessCode.OBJECT_ACCESS_DENIED,)


def test_too_many_pending_device_operations_are_refused_not_queued() -> None:
    source = InMemoryPointSource(POINTS)
    field = SlowField()
    server = Tase2Server(CONFIG, source, devices=CallbackDevices(field), device_workers=1, max_device_jobs=1)
    server.start()
    try:
        with _connect(server) as first, _connect(server) as second:
            op = _Operate(first)
            op.start()
            wait_for(lambda: server.device_jobs == 1, 5, "the first operate on the worker")
            assert second.read([_icc("F1_CB_CTL_SBO")]) == (DataAccessCode.TEMPORARILY_UNAVAILABLE,)
            op.join(10)
            assert op.result == (None,)
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------- release under load


@pytest.mark.slow
def test_release_under_a_report_storm_concludes(env: Any) -> None:
    server, source, _field = env
    members = [f"L{i}" for i in range(N_LOAD_POINTS)]
    stop = threading.Event()

    def storm() -> None:  # every point changes every 30 ms: RBE reports as fast as the server can make them
        k = 0
        while not stop.is_set():
            k += 1
            now_ms = int(time.time() * 1000)
            source.update([(f"L{i}", float(k * 10_000 + i), Quality.GOOD, now_ms) for i in range(N_LOAD_POINTS)])
            time.sleep(0.03)

    storming = threading.Thread(target=storm, daemon=True)
    storming.start()
    try:
        for attempt in range(3):
            received: list[int] = []
            after_conclude: list[InformationReport] = []
            slow = threading.Event()
            holder: list[MmsAssociation] = []

            def on_report(report: InformationReport, received: list[int] = received,
                          slow: threading.Event = slow, holder: list[MmsAssociation] = holder,
                          after_conclude: list[InformationReport] = after_conclude) -> None:
                received.append(len(report.results))
                if holder and holder[0]._concluded.is_set():  # dispatched in arrival order on the receive thread
                    after_conclude.append(report)
                if slow.is_set():
                    time.sleep(0.05)  # a receiver slower than the server: reports queue up on the way

            assoc = _connect(server, on_report, release_timeout_s=2.0)
            holder.append(assoc)
            name = f"DSL{attempt}"
            assoc.define_named_variable_list(_icc(name), [_icc(h) for h in TransferReportHeader.NAMES] +
                                             [_icc(m) for m in members])
            ts = Tase2Name.decode(assoc.read_one(_icc("Next_DSTransfer_Set")))
            value = DSTransferSet(Tase2Name(Tase2Scope.ICC, DOMAIN, name), interval_s=1,
                                  conditions=DSConditions.CHANGE | DSConditions.INTERVAL, rbe=True)
            comps = [(n, v) for n, v in zip(DSTransferSet.COMPONENTS, value.encode().members, strict=True)
                     if n != "Status"]
            assert assoc.write([VariableSpec(_icc(ts.name), (n,)) for n, _ in comps],
                               [v for _, v in comps]) == (None,) * len(comps)
            assert assoc.write([VariableSpec(_icc(ts.name), ("Status",))], [BoolData(True)]) == (None,)
            wait_for(lambda received=received: sum(received) > 3 * N_LOAD_POINTS, 20, "the report storm")
            slow.set()
            time.sleep(1.5)  # a backlog builds up in the server's send buffer and the sockets
            t0 = time.monotonic()
            result = assoc.release()
            took = time.monotonic() - t0
            assert result.concluded and assoc.close_reason is CloseReason.RELEASED, (attempt, result, took)
            assert not after_conclude, "an information report followed the Conclude-Response"
            print(f"release {attempt} under load: {took * 1000:.0f} ms after {len(received)} reports")
            with _connect(server) as cleanup:
                wait_for(lambda: not any(e for e in server.transfer_sets().values() for e in e), 10,
                         "the transfer set freed")
                cleanup.delete_named_variable_list(_icc(name))
    finally:
        stop.set()
        storming.join(5)
