"""The TASE.2 client of the control centre against our TASE.2 server (``iccp.tase2.server``) on loopback:
association with our AP titles, bilateral-table check, data sets, transfer sets, reports -> RTDB with quality and
time in both report shapes the server sends; link loss -> COMM_LOST -> reconnect -> values again; the supervised
adapter process inside a ControlCenter; data recovery from DR snapshot files on the server side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from iccp.mms import MmsServerConfig
from iccp.tase2.client import Tase2Client
from iccp.tase2.model import Tase2Version
from iccp.tase2.point_source import InMemoryPointSource
from iccp.tase2.server import ReportShape, Tase2Server
from models.config import StationConfig, parse_station_config
from models.points import Quality
from tests.support import wait_for

DOMAIN = "SS_DSO"
TABLE = "BLT_SS_TSO_1"
OUR_TITLE = (1, 3, 9999, 10)


T0_MS = 1_795_000_000_000  # a fixed source time, whole seconds (Data_TimeStamp carries seconds)
#: The transmission side: its own station file, publishing to us (1.3.9999.10/10) under TABLE in DOMAIN.
REMOTE_STATION = """
[station]
name = "tso"

[[rtus]]
name = "T"
common_address = 1
addresses = ["127.0.0.1:2404"]

[[points]]
name = "FREQ"
kind = "analog"
rtu = "T"
address = 1
type = "M_ME_NC_1"

[[points]]
name = "TIE1"
kind = "analog"
rtu = "T"
address = 2
type = "M_ME_NC_1"

[[points]]
name = "CB1"
kind = "double"
rtu = "T"
address = 3
type = "M_DP_TB_1"

[[points]]
name = "MWH1"
kind = "counter"
rtu = "T"
address = 4
type = "M_IT_NA_1"

[iccp]
ap_title = "1.3.9999.20"
ae_qualifier = 20
listen = "127.0.0.1:0"

[[iccp.peers]]
name = "DSO"
ap_title = "1.3.9999.10"
ae_qualifier = 10
bilateral_table_id = "{table}"
domain = "SS_DSO"
read = [
    {{ point = "FREQ", name = "FREQ_SYS", type = "Data_RealQTimeTag" }},
    {{ point = "TIE1", name = "TIE1_MW", type = "Data_RealQTimeTagExtended" }},
    {{ point = "CB1", name = "CB_T1_STATE", type = "Data_StateQTimeTag" }},
    {{ point = "MWH1", name = "MWH_SENT_T1", type = "Data_RealQ" }},
]
"""
INITIAL = [("FREQ", 50.01, 0, T0_MS), ("TIE1", 12.5, 0, T0_MS + 250), ("CB1", 2, 0, T0_MS),
           ("MWH1", 1234.0, int(Quality.QUESTIONABLE), -1)]

STATION = """
[station]
name = "iccp-client-test"

[server]
data_dir = "{data}"

[iccp]
ap_title = "1.3.9999.10"
ae_qualifier = 10

[[iccp.remotes]]
name = "TSO-ICCP"
addresses = [{addresses}]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "SS_DSO"
bilateral_table_id = "BLT_SS_TSO_1"
interval_s = 1
integrity_s = 0
buffer_time_s = 0
max_data_set_size = 6
connect_timeout_s = 1
request_timeout_s = 2
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 1
keepalive_s = 1

[[points]]
name = "TSO.FREQ_SYS"
kind = "analog"
rtu = "TSO-ICCP"
reference = "FREQ_SYS"

[[points]]
name = "TSO.TIE1_MW"
kind = "analog"
rtu = "TSO-ICCP"
reference = "TIE1_MW"
type = "Data_RealQTimeTagExtended"

[[points]]
name = "TSO.CB_T1"
kind = "double"
rtu = "TSO-ICCP"
reference = "CB_T1_STATE"
type = "Data_StateQTimeTag"

[[points]]
name = "TSO.MWH_SENT_T1"
kind = "counter"
rtu = "TSO-ICCP"
reference = "MWH_SENT_T1"
type = "Data_RealQ"
"""


def _station(tmp_path: Path, ports: Sequence[int], extra: str = "") -> StationConfig:
    text = STATION.format(data=tmp_path / "data", addresses=", ".join(f'"127.0.0.1:{p}"' for p in ports))
    text = text.replace("interval_s = 1\n", f"interval_s = 1\n{extra}")
    return parse_station_config(text, str(tmp_path / "station.toml"))


class _Remote:
    """Our TASE.2 server with an in-memory point source, restartable on the same port (a link loss)."""

    def __init__(self, tmp_path: Path, table_id: str = TABLE, shape: ReportShape = ReportShape.VARIABLE_LIST) -> None:
        cfg = parse_station_config(REMOTE_STATION.format(table=table_id), str(tmp_path / "tso.toml"))
        assert cfg.iccp is not None
        self.config = cfg.iccp
        self.source = InMemoryPointSource(cfg.points)
        self.source.update(INITIAL)
        self.shape = shape
        self.port = 0
        self.server: Tase2Server | None = None

    def start(self) -> None:
        self.server = Tase2Server(self.config, self.source, mms=MmsServerConfig(host="127.0.0.1", port=self.port),
                                  report_shape=self.shape)
        self.server.start()
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def set(self, point: str, value: float, quality: int, time_ms: int) -> None:
        self.source.set(point, value, quality, time_ms)


@pytest.fixture(params=list(ReportShape))
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Remote]:
    r = _Remote(tmp_path, shape=request.param)
    r.start()
    yield r
    r.stop()


@pytest.fixture
def tso(tmp_path: Path) -> Iterator[_Remote]:
    r = _Remote(tmp_path)
    r.start()
    yield r
    r.stop()


class _Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[Any] = []
        self.links: list[tuple[bool, str, str]] = []
        self.interrogated = 0
        self.counters: dict[str, float] = {}

    def on_rows(self, remote: str, rows: Sequence[Any]) -> None:
        with self.lock:
            self.rows.extend(rows)

    def on_link(self, remote: str, up: bool, address: str, reason: str, time_ms: int) -> None:
        with self.lock:
            self.links.append((up, address, reason))

    def on_interrogated(self, remote: str, time_ms: int) -> None:
        with self.lock:
            self.interrogated += 1

    def count(self, name: str, n: float = 1.0) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0.0) + n

    def latest(self, point: int, cause: int | None = None) -> Any:
        with self.lock:
            rows = [r for r in self.rows if r.point == point and (cause is None or r.cause == cause)]
        return rows[-1] if rows else None


def _client(config: StationConfig, sink: _Sink) -> Tase2Client:
    assert config.iccp is not None
    return Tase2Client(config.iccp.remote("TSO-ICCP"), config.iccp.identity, config.points_of_rtu("TSO-ICCP"), sink)


def test_client_imports_reports_and_rides_through_a_link_loss(tmp_path: Path, remote: _Remote) -> None:
    config = _station(tmp_path, [remote.port])
    ids = {p.source.reference: p.id for p in config.points_of_rtu("TSO-ICCP")}
    sink = _Sink()
    client = _client(config, sink)
    client.start()
    try:
        wait_for(lambda: sink.interrogated >= 1, 15, "association, data sets, transfer sets and the first read")
        assert sink.links[0][:2] == (True, f"127.0.0.1:{remote.port}")
        assert remote.server is not None  # it accepts only our calling AP title / AE qualifier (1.3.9999.10/10)
        assert sorted(remote.server.transfer_sets()["DSO"]) == [("DSTransferSet01", True), ("DSTransferSet02", True)]
        assert client.info is not None and client.info.bilateral_table_id == TABLE
        assert client.info.version == Tase2Version() and 1 in client.info.features
        # 4 points, 6 members a data set with the 4 header members first: two data sets, two transfer sets
        assert [ds.name.item for ds in client.data_sets] == ["DSCADA_DS01", "DSCADA_DS02"]
        assert all(ds.transfer_set is not None for ds in client.data_sets)
        freq = sink.latest(ids["FREQ_SYS"], 20)
        assert (freq.value, freq.quality, freq.source_time_ms) == (pytest.approx(50.01), 0, T0_MS)
        tie = sink.latest(ids["TIE1_MW"], 20)
        assert tie.source_time_ms == T0_MS + 250  # the extended time stamp keeps milliseconds
        assert sink.latest(ids["CB_T1_STATE"], 20).value == 2  # ON / closed: the double point state itself
        mwh = sink.latest(ids["MWH_SENT_T1"], 20)
        # no source time at the remote: its time-stamp quality bit says invalid (iccp.tase2.mapping)
        suspect_no_time = int(Quality.QUESTIONABLE | Quality.TIME_INVALID)
        assert (mwh.value, mwh.quality, mwh.source_time_ms) == (1234.0, suspect_no_time, -1)

        # RBE: only the changed member, as a list of variables with the header; quality and time carried over
        remote.set("FREQ", 49.87, int(Quality.INVALID | Quality.TIME_INVALID), T0_MS + 5000)
        row = wait_for(lambda: sink.latest(ids["FREQ_SYS"], 3), 10, "the RBE report")
        assert row.value == pytest.approx(49.87) and row.source_time_ms == T0_MS + 5000
        assert row.quality == int(Quality.INVALID | Quality.TIME_INVALID)
        # interval reports on the data set name carry every member
        wait_for(lambda: sink.latest(ids["MWH_SENT_T1"], 1), 10, "an interval report")

        # link loss: the remote goes away -> link down; it comes back on the same port -> everything again
        remote.stop()
        wait_for(lambda: any(not up for up, _, _ in sink.links), 10, "link down")
        assert not client.up
        before = sink.interrogated
        remote.set("TIE1", -3.5, 0, T0_MS + 9000)  # changed while down
        remote.start()
        wait_for(lambda: sink.interrogated > before, 20, "reconnect, data sets and transfer sets again")
        assert sink.links[-1][0] is True
        assert sink.latest(ids["TIE1_MW"], 20).value == -3.5
        assert sink.counters["transfer_sets_enabled"] == 4 and sink.counters["data_sets_defined"] == 4
    finally:
        client.stop()
    server = remote.server
    assert server is not None
    wait_for(lambda: not server.transfer_sets().get("DSO"), 10, "transfer sets freed on release")


def test_bilateral_table_mismatch_is_an_error_and_no_data_flows(tmp_path: Path) -> None:
    r = _Remote(tmp_path, table_id="BLT_SOMEONE_ELSE")
    r.start()
    sink = _Sink()
    client = _client(_station(tmp_path, [r.port]), sink)
    client.start()
    try:
        wait_for(lambda: sink.counters.get("bilateral_table_mismatch"), 10, "the table-id check")
        time.sleep(0.3)
        assert sink.rows == [] and sink.links == [] and sink.interrogated == 0
        assert r.server is not None and not r.server.transfer_sets().get("DSO")
    finally:
        client.stop()
        r.stop()


def test_backup_address_when_the_primary_is_down(tmp_path: Path, tso: _Remote) -> None:
    from tests.support import free_port

    remote = tso

    sink = _Sink()
    client = _client(_station(tmp_path, [free_port(), remote.port]), sink)
    client.start()
    try:
        wait_for(lambda: sink.interrogated >= 1, 15, "association with the backup")
        assert sink.links[0][:2] == (True, f"127.0.0.1:{remote.port}")
    finally:
        client.stop()


def test_critical_reports_are_acknowledged(tmp_path: Path, tso: _Remote) -> None:
    sink = _Sink()
    client = _client(_station(tmp_path, [tso.port], extra="critical = true\n"), sink)
    client.start()
    try:
        wait_for(lambda: sink.counters.get("critical_acks", 0) >= 4, 15, "acknowledged interval reports")
        assert tso.server is not None
        (engine,) = tso.server.engines()
        wait_for(lambda: engine.stats.acks >= 4, 10, "the server counting the acknowledgements")
        assert engine.stats.critical_retransmits == 0 and engine.stats.critical_unacked == 0
        assert "critical_ack_failures" not in sink.counters
    finally:
        client.stop()


@pytest.mark.slow
def test_control_centre_imports_over_iccp_with_comm_lost_and_recovery(tmp_path: Path, tso: _Remote) -> None:
    from scada.server import ControlCenter

    remote = tso

    config = _station(tmp_path, [remote.port])
    ids = {p.source.reference: p.id for p in config.points_of_rtu("TSO-ICCP")}
    every = list(ids.values())
    with ControlCenter(config, grpc_address="127.0.0.1:0") as center:
        assert "iccp" in center.supervisors

        def snap() -> Any:
            return center.rtdb.snapshot(every)

        wait_for(lambda: (snap()["quality"] & int(Quality.COMM_LOST) == 0).all(), 30, "values over ICCP in the RTDB")
        s = snap()
        freq = s[every.index(ids["FREQ_SYS"])]
        assert freq["value"] == pytest.approx(50.01) and freq["source_time_ms"] == T0_MS and freq["quality"] == 0
        assert center.rtdb.rtu_link_up("TSO-ICCP")

        remote.set("FREQ", 49.95, 0, T0_MS + 7000)
        wait_for(lambda: snap()[every.index(ids["FREQ_SYS"])]["value"] == pytest.approx(49.95), 10, "RBE in RTDB")

        remote.stop()
        wait_for(lambda: (snap()["quality"] & int(Quality.COMM_LOST) != 0).all(), 15, "COMM_LOST on link loss")
        assert not center.rtdb.rtu_link_up("TSO-ICCP")
        remote.start()
        wait_for(lambda: (snap()["quality"] & int(Quality.COMM_LOST) == 0).all(), 30, "values again after reconnect")
        assert center.rtdb.rtu_link_up("TSO-ICCP")


def test_gap_recovery_backfills_the_historian_from_dr_snapshots(tmp_path: Path) -> None:
    """The server side of data recovery: link down/up events (as the adapter sends them) -> recover_gap from the
    remote's DR directory -> the historian holds what was reported during the outage."""
    from iccp.gap_recovery import GapRecovery
    from iccp.recovery import SnapshotWriter
    from iccp.sim.transmission import PointValue as SimValue
    from models.updates import LinkEvent
    from scada.historian import Historian

    config = _station(tmp_path, [10202])  # no socket here: the address is never dialled
    ids = {p.source.reference: p.id for p in config.points_of_rtu("TSO-ICCP")}
    t0 = 1_795_000_020_000
    dr = tmp_path / "dr"
    writer = SnapshotWriter(dr, source="TSO", interval_s=1.0)
    writer.start([SimValue("FREQ_SYS", 50.0, Quality.GOOD, t0)], t0)
    writer.record(t0 + 1500, [SimValue("FREQ_SYS", 49.9, Quality.GOOD, t0 + 1500)])
    writer.record(t0 + 2500, [SimValue("FREQ_SYS", 49.8, Quality.QUESTIONABLE, t0 + 2500)])
    writer.close(t0 + 3999)
    historian = Historian(tmp_path / "h.sqlite", config.points)
    recovery = GapRecovery(config, historian, {"TSO-ICCP": dr}, retry_s=0.2, max_attempts=2)
    recovery.start()
    try:
        recovery.on_link(LinkEvent("iccp", "TSO-ICCP", False, time_ms=t0 + 1000))
        recovery.on_link(LinkEvent("iccp", "TSO-ICCP", True, time_ms=t0 + 3000))
        wait_for(lambda: recovery.results, 10, "the recovery attempt")
        job, result = recovery.results[0]
        assert (job.start_ms, job.end_ms) == (t0 + 1000, t0 + 3000) and result.complete
        assert result.inserted == 2 and result.unmapped_points == ()
    finally:
        recovery.stop()
    got = historian.conn().execute("SELECT time_ms, value, quality FROM samples WHERE point = ? ORDER BY time_ms",
                                   (ids["FREQ_SYS"],)).fetchall()
    historian.close()
    assert got == [(t0 + 1500, 49.9, 0), (t0 + 2500, 49.8, int(Quality.QUESTIONABLE))]
