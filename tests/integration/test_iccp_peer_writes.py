"""Peer writes to writable RTDB points (iccp.tase2.peer_writes) through a running control centre: our MMS client,
associated as the TSO peer with the centre's TASE.2 server, writes

* a set-point of the field RTU (an IEC 104 outstation of rtu_sim): a set-point command on the SCADA command path,
  executed by the simulated field and audited as the peer's operator;
* a value of a remote-centre point: it enters the RTDB with the written quality and time, RTDB and gRPC subscribers
  see it, and it is audited;

and the refusals: a value of another TASE.2 type is type-inconsistent, an entry outside ``write`` and a point a
field front end feeds are object-access-denied, an operator without the role is refused; the station
configuration refuses a ``write`` entry a peer could never write."""

from __future__ import annotations

import dataclasses
import socket
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

from open61850.data import BitStringData, IntData, StructureData  # noqa: E402
from support import wait_for  # noqa: E402

from iccp.mms import DataAccessCode, ObjectName  # noqa: E402
from iccp.mms.client import AeTitle, MmsAssociation, MmsClientConfig, MmsEndpoint  # noqa: E402
from iccp.tase2.bilateral import BilateralPoint  # noqa: E402
from iccp.tase2.model import (  # noqa: E402
    CurrentSource,
    DataFlags,
    PointType,
    PointValue,
    Validity,
    decode_point,
    encode_point,
)
from models.config import load_station_config  # noqa: E402
from models.errors import ConfigError  # noqa: E402
from models.points import Quality  # noqa: E402

OUR = ((1, 3, 9999, 10), 10)
TSO = ((1, 3, 9999, 20), 20)
DOMAIN = "DSO1"
T0_MS = 1_795_000_000_000  # whole seconds: a TASE.2 TimeStamp has no milliseconds
VIEWER_TOKEN = "viewer-token-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _station(rtu_port: int, *, write: str = 'write = [{ point = "TAP-SP", name = "TAP_SP" }, '
                                             '{ point = "TSO.SCHED", name = "SCHED_MW", type = "Data_RealQTimeTag" }]',
             operator: str = 'operator = "iccp-tso"') -> str:
    return f"""
[station]
name = "iccp-peer-writes"

[[operators]]
name = "iccp-tso"
role = "operator"
token = "iccp-tso-token"

[[operators]]
name = "iccp-viewer"
role = "viewer"
token = "{VIEWER_TOKEN}"

[[rtus]]
name = "R1"
common_address = 1
addresses = ["127.0.0.1:{rtu_port}"]

[[points]]
name = "F1-P"
kind = "analog"
rtu = "R1"
address = 101
type = "M_ME_NC_1"
sim = {{ nominal = 3.5 }}

[[points]]
name = "TAP-SP"
kind = "setpoint"
rtu = "R1"
address = 2021
type = "M_ME_NC_1"
units = "kV"
control = {{ type = "setpoint_float", address = 6021, mode = "direct" }}
sim = {{ nominal = 11.0 }}

[iccp]
ap_title = "1.3.9999.10"
ae_qualifier = 10
listen = "127.0.0.1:0"

[[iccp.peers]]
name = "TSO"
ap_title = "1.3.9999.20"
ae_qualifier = 20
bilateral_table_id = "BLT_1"
domain = "{DOMAIN}"
{operator}
read = [{{ point = "F1-P", name = "F1_P", type = "Data_RealQ" }},
        {{ point = "TSO.SCHED", name = "SCHED_MW_R", type = "Data_RealQTimeTag" }}]
{write}

[[iccp.remotes]]
name = "TSO-ICCP"
addresses = ["127.0.0.1:1"]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "{DOMAIN}"
bilateral_table_id = "BLT_1"

[[points]]
name = "TSO.SCHED"
kind = "analog"
rtu = "TSO-ICCP"
reference = "SCHED_MW"
units = "MW"
"""


@dataclasses.dataclass
class Centre:
    center: Any
    services: Any
    sim: Any


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    from iccp.service import IccpServices
    from rtu_sim.simulator import RtuSimulator
    from scada.server import ControlCenter

    folder = tmp_path_factory.mktemp("iccp-writes")
    (folder / "station.toml").write_text(_station(_free_port()), encoding="utf-8")
    config = load_station_config(folder / "station.toml")
    sim = RtuSimulator(config, ["R1"], seed=1, physics=False)
    center = ControlCenter(config, data_dir=folder / "data", grpc_address="127.0.0.1:0")
    services = IccpServices.for_center(center)
    assert services is not None
    sim.start()
    try:
        center.start()
        try:
            services.start()
            try:
                sp = center.rtdb.point_id("TAP-SP")
                wait_for(lambda: int(center.rtdb.snapshot([sp])[0]["quality"]) == Quality.GOOD, 30,
                         "the set-point's value from the field (GI)")
                yield Centre(center, services, sim)
            finally:
                services.stop()
        finally:
            center.stop()
    finally:
        sim.stop()


def _connect(port: int) -> MmsAssociation:
    config = MmsClientConfig((MmsEndpoint("127.0.0.1", port),), calling=AeTitle(*TSO), called=AeTitle(*OUR),
                             request_timeout_s=20.0)
    return MmsAssociation.connect(config)


def _icc(item: str) -> ObjectName:
    return ObjectName.in_domain(DOMAIN, item)


def _real_q(value: float) -> StructureData:
    return encode_point(PointType.DATA_REAL_Q, PointValue(value))


def _audit(c: Centre, point: str) -> list[Any]:
    return c.center.audit.query(point=c.center.rtdb.point_id(point))


@pytest.mark.timeout(90)
def test_a_set_point_write_is_a_command_executed_by_the_field_and_audited_as_the_peer(centre: Centre) -> None:
    executed = centre.sim.stats().commands_executed
    with _connect(centre.services.port) as assoc:
        assert assoc.write([_icc("TAP_SP")], [_real_q(11.25)]) == (None,)  # answers after the field did
    assert centre.sim.value("TAP-SP") == pytest.approx(11.25, abs=1e-4)
    assert centre.sim.stats().commands_executed == executed + 1
    entries = [e for e in _audit(centre, "TAP-SP") if e.outcome.value != "refused"]
    assert {e.operator for e in entries} == {"iccp-tso"}
    assert {e.outcome.value for e in entries} >= {"sent", "answered"}
    assert all(e.value == pytest.approx(11.25) for e in entries)
    # the field's feedback reaches the RTDB as usual
    sp = centre.center.rtdb.point_id("TAP-SP")
    wait_for(lambda: abs(float(centre.center.rtdb.snapshot([sp])[0]["value"]) - 11.25) < 1e-4, 10,
             "the set-point's feedback in the RTDB")
    # an operator's HOLD tag blocks the peer's set-point like any command
    tag = centre.center.tags.place("TAP-SP", "hold", "engineer-on-site", "OLTC maintenance")
    try:
        with _connect(centre.services.port) as assoc:
            assert assoc.write([_icc("TAP_SP")], [_real_q(10.5)]) == (DataAccessCode.OBJECT_ACCESS_DENIED,)
    finally:
        centre.center.tags.remove(tag.id, "engineer-on-site", "done")
    assert centre.sim.value("TAP-SP") == pytest.approx(11.25, abs=1e-4)
    assert [(e.operator, e.reason) for e in _audit(centre, "TAP-SP") if e.outcome.value == "refused"] == [
        ("iccp-tso", "tagged")]


@pytest.mark.timeout(90)
def test_a_value_write_enters_the_rtdb_with_its_quality_and_time(centre: Centre) -> None:
    from scada.api.client import ScadaClient

    rtdb = centre.center.rtdb
    sched = rtdb.point_id("TSO.SCHED")
    sub = rtdb.subscribe("test-peer-writes", points=[sched])
    grpc_values: list[Any] = []
    with ScadaClient(f"127.0.0.1:{centre.center.grpc_port}", VIEWER_TOKEN) as client:
        stream = client.subscribe(["TSO.SCHED"])
        try:
            while not next(stream).end_of_snapshot:  # after the snapshot the subscription is live
                pass
            written = PointValue(42.5, DataFlags(Validity.SUSPECT, CurrentSource.ENTERED), T0_MS)
            with _connect(centre.services.port) as assoc:
                assert assoc.write([_icc("SCHED_MW")],
                                   [encode_point(PointType.DATA_REAL_Q_TIMETAG, written)]) == (None,)
                row = wait_for(lambda: [r for r in [rtdb.snapshot([sched])[0]] if float(r["value"]) == 42.5], 10,
                               "the written value in the RTDB")[0]
                assert Quality(int(row["quality"])) == Quality.QUESTIONABLE | Quality.SUBSTITUTED
                assert int(row["source_time_ms"]) == T0_MS
                # the peer reads back what it wrote, with the flags it wrote
                back = decode_point(PointType.DATA_REAL_Q_TIMETAG, assoc.read_one(_icc("SCHED_MW_R")))
                assert (back.value, back.flags.validity, back.flags.source, back.time_ms) == (
                    42.5, Validity.SUSPECT, CurrentSource.ENTERED, T0_MS)
            cs = wait_for(lambda: sub.get(timeout_s=0.2), 10, "the RTDB change set")
            assert [(int(r["point"]), float(r["value"])) for r in cs.rows] == [(sched, 42.5)]
            for msg in stream:
                grpc_values.extend(v for v in msg.values if v.name == "TSO.SCHED" and v.value == 42.5)
                if grpc_values:
                    break
        finally:
            stream.cancel()
            rtdb.unsubscribe(sub)
    assert grpc_values[0].source_time_ms == T0_MS
    assert grpc_values[0].quality == Quality.QUESTIONABLE | Quality.SUBSTITUTED
    entries = [e for e in _audit(centre, "TSO.SCHED") if e.outcome.value == "sent"]
    assert [(e.operator, e.action, e.value) for e in entries] == [("iccp-tso", "tase2_write", 42.5)]


@pytest.mark.timeout(90)
def test_wrong_type_and_entries_outside_write_are_refused(centre: Centre) -> None:
    with _connect(centre.services.port) as assoc:
        state_shaped = StructureData([BitStringData(bytes([0x40]), 0)])
        assert assoc.write([_icc("TAP_SP"), _icc("SCHED_MW"), _icc("SCHED_MW")],
                           [IntData(3), _real_q(1.0), state_shaped]) == (DataAccessCode.TYPE_INCONSISTENT,) * 3
        assert assoc.write([_icc("F1_P"), _icc("SCHED_MW_R"), _icc("NOT_THERE"), ObjectName.vcc("SCHED_MW")],
                           [_real_q(1.0), _real_q(1.0), _real_q(1.0),
                            _real_q(1.0)]) == (DataAccessCode.OBJECT_ACCESS_DENIED,) * 4
        assert assoc.write([_icc("TAP_SP")], [_real_q(float("nan"))]) == (DataAccessCode.OBJECT_VALUE_INVALID,)


@pytest.mark.timeout(90)
def test_a_read_only_rtdb_point_and_an_operator_without_the_role_are_denied(centre: Centre) -> None:
    server = centre.services.server
    original = server.config
    table = original.peers[0]
    # a table that (wrongly) grants a write of a field measurement: the configuration refuses it, the server too
    granted = dataclasses.replace(table, points=(*table.points, BilateralPoint("F1_P_W", "F1-P", PointType.DATA_REAL_Q,
                                                                               writable=True)))
    try:
        server.config = dataclasses.replace(original, peers=(granted,))
        with _connect(server.port) as assoc:
            assert assoc.write([_icc("F1_P_W")], [_real_q(9.0)]) == (DataAccessCode.OBJECT_ACCESS_DENIED,)
        refused = [e for e in _audit(centre, "F1-P") if e.outcome.value == "refused"]
        assert [(e.operator, e.reason) for e in refused] == [("iccp-tso", "read_only")]
        server.config = dataclasses.replace(original, peers=(dataclasses.replace(table, operator="iccp-viewer"),))
        with _connect(server.port) as assoc:
            assert assoc.write([_icc("SCHED_MW"), _icc("TAP_SP")],
                               [encode_point(PointType.DATA_REAL_Q_TIMETAG, PointValue(7.0, time_ms=T0_MS)),
                                _real_q(11.0)]) == (DataAccessCode.OBJECT_ACCESS_DENIED,) * 2
        reasons = {(e.point_name, e.reason) for e in centre.center.audit.query(operator="iccp-viewer")}
        assert reasons == {("TSO.SCHED", "not_authorised"), ("TAP-SP", "not_authorised")}
    finally:
        server.config = original
    rtdb = centre.center.rtdb
    assert float(rtdb.snapshot([rtdb.point_id("TSO.SCHED")])[0]["value"]) != 7.0


@pytest.mark.parametrize(("write", "operator", "message"), [
    ('write = [{ point = "F1-P", name = "F1_P_W" }]', 'operator = "iccp-tso"',
     r"write\[0\]: point 'F1-P' is fed by iec104 RTU 'R1': a peer may write only set-points and points of a remote"),
    ('write = ["TSO.SCHED"]', "",
     r"operator: a peer with writes needs the SCADA operator its writes are audited as"),
])
def test_the_configuration_refuses_writes_a_peer_could_never_make(tmp_path: Path, write: str, operator: str,
                                                                  message: str) -> None:
    (tmp_path / "station.toml").write_text(_station(2404, write=write, operator=operator), encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_station_config(tmp_path / "station.toml")


def test_a_remote_centre_point_is_writable_in_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "station.toml").write_text(_station(2404), encoding="utf-8")
    config = load_station_config(tmp_path / "station.toml")
    assert config.iccp is not None
    table = config.iccp.peers[0]
    assert [(bp.name, bp.point, bp.type) for bp in table.points if bp.writable] == [
        ("TAP_SP", "TAP-SP", PointType.DATA_REAL_Q), ("SCHED_MW", "TSO.SCHED", PointType.DATA_REAL_Q_TIMETAG)]


class _SlowField:
    """The adapter side of the command path, answering after ``delay_s`` (a slow field round trip); on execute the
    set-point's new value reaches the RTDB as its feedback."""

    def __init__(self, rtdb: Any, delay_s: float) -> None:
        self.rtdb = rtdb
        self.delay_s = delay_s
        self.service: Any = None
        self.requests: list[Any] = []
        self.timers: list[threading.Timer] = []

    def send_control(self, req: Any) -> bool:
        self.requests.append(req)
        timer = threading.Timer(self.delay_s, self._answer, args=(req,))
        self.timers.append(timer)
        timer.start()
        return True

    def _answer(self, req: Any) -> None:
        from models.commands import ControlResult, ControlStatus
        from models.updates import Cause, UpdateBatch, new_update_rows

        self.service.on_control_result(ControlResult(req.request_id, ControlStatus.SUCCESS, "ok"))
        rows = new_update_rows(1)
        rows[0] = (req.point, req.value, 0, int(time.time() * 1000), Cause.RETURN_REMOTE)
        self.rtdb.ingest(UpdateBatch("field", rows, 0))


@pytest.mark.timeout(60)
def test_a_set_point_write_waiting_for_the_field_holds_no_other_association() -> None:
    from iccp.tase2.devices import CommandServiceDevices
    from iccp.tase2.peer_writes import RtdbPeerWrites
    from iccp.tase2.point_source import RtdbPointSource
    from iccp.tase2.server import Tase2Server
    from models.config import parse_station_config
    from models.updates import Cause, LinkEvent, UpdateBatch, new_update_rows
    from scada.commands import CommandService
    from scada.rtdb import Rtdb

    config = parse_station_config(_station(2404))
    assert config.iccp is not None
    rtdb = Rtdb(config)
    rtdb.start()
    rows = new_update_rows(2)
    rows[0] = (rtdb.point_id("F1-P"), 3.5, 0, T0_MS, Cause.INTERROGATED)
    rows[1] = (rtdb.point_id("TAP-SP"), 11.0, 0, T0_MS, Cause.INTERROGATED)
    rtdb.ingest(UpdateBatch("t", rows, 0))
    rtdb.ingest(LinkEvent("t", "R1", True))
    assert rtdb.flush()
    field = _SlowField(rtdb, delay_s=1.5)
    audit: list[dict[str, Any]] = []

    class Audit:
        def record(self, **fields: Any) -> None:
            audit.append(fields)

    commands = CommandService(rtdb, field, audit=Audit())
    field.service = commands
    devices = CommandServiceDevices(commands, config.points, config.operators, audit=Audit())
    writes = RtdbPeerWrites(rtdb, devices, config.operators, audit=Audit())
    published = [bp.point for t in config.iccp.peers for bp in t.points]
    source = RtdbPointSource(rtdb, published, writes=writes)
    source.start()
    server = Tase2Server(config.iccp, source)  # no device control: the worker pool serves the writes
    server.start()
    outcome: list[Any] = []
    try:
        with _connect(server.port) as writer, _connect(server.port) as reader:
            thread = threading.Thread(target=lambda: outcome.append(writer.write([_icc("TAP_SP")], [_real_q(11.5)])))
            t0 = time.monotonic()
            thread.start()
            wait_for(lambda: field.requests, 10, "the set-point command at the field")
            p = decode_point(PointType.DATA_REAL_Q, reader.read_one(_icc("F1_P")))
            read_s = time.monotonic() - t0
            assert p.value == 3.5 and read_s < 1.2 and not outcome  # answered while the command waits
            thread.join(15)
            assert outcome == [(None,)] and time.monotonic() - t0 >= 1.4
        assert [(r.action.value, r.value) for r in field.requests] == [("direct", 11.5)]
        assert {a["operator"] for a in audit} == {"iccp-tso"}
    finally:
        server.stop()
        source.stop()
        rtdb.stop()
        for timer in field.timers:
            timer.cancel()
