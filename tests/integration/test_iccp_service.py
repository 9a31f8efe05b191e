"""The distribution centre's own ICCP services (iccp.service) on a running ControlCenter: our MMS client associates
with the centre's TASE.2 server as the configured peer and reads RTDB values with their flags; an unknown AP title is
refused; a remote's link outage seen by the RTDB is backfilled into the historian from its DR directory (a relative
``dr_directory`` of the station TOML); everything stops cleanly."""

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

from iccp_stations import OUR_AP_TITLE, TSO_AP_TITLE, field_station, tso_peer  # noqa: E402
from support import wait_for  # noqa: E402

from iccp.errors import MmsError  # noqa: E402
from iccp.mms import ObjectName  # noqa: E402
from iccp.mms.client import AeTitle, MmsAssociation, MmsAssociationRefused, MmsClientConfig, MmsEndpoint  # noqa: E402
from iccp.tase2.model import DataFlags, PointType, State, Validity, decode_point  # noqa: E402
from models.config import load_station_config  # noqa: E402
from models.points import Priority, Quality  # noqa: E402
from models.updates import Cause, LinkEvent, UpdateBatch, new_update_rows  # noqa: E402

OUR = OUR_AP_TITLE
TSO = TSO_AP_TITLE
OTHER = ((1, 3, 9999, 30), 30)
T0_MS = 1_795_000_000_000

STATION = field_station("iccp-service") + tso_peer() + """
[[iccp.remotes]]
name = "TSO-ICCP"
addresses = ["127.0.0.1:1"]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "DSO1"
bilateral_table_id = "BLT_1"
dr_directory = "dr/tso"

[[points]]
name = "TSO.FREQ"
kind = "analog"
rtu = "TSO-ICCP"
reference = "FREQ_SYS"
units = "Hz"
"""


@pytest.fixture()
def centre(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    from iccp.service import IccpServices
    from scada.server import ControlCenter

    (tmp_path / "station.toml").write_text(STATION, encoding="utf-8")
    config = load_station_config(tmp_path / "station.toml")
    # Adapters stay down: the values come from this test, the link events too.
    center = ControlCenter(config, data_dir=tmp_path / "data", grpc_address="127.0.0.1:0", start_adapters=False)
    services = IccpServices.for_center(center, recovery_retry_s=0.2)
    assert services is not None
    center.start()
    try:
        services.start()
        yield center, services
    finally:
        services.stop()
        center.stop()


def _connect(port: int, who: tuple[tuple[int, ...], int] = TSO) -> MmsAssociation:
    config = MmsClientConfig((MmsEndpoint("127.0.0.1", port),), calling=AeTitle(*who), called=AeTitle(*OUR),
                             request_timeout_s=10.0)
    return MmsAssociation.connect(config)


def _publish(center: Any, values: list[tuple[str, float, int, int]]) -> None:
    rows = new_update_rows(len(values))
    for i, (name, value, quality, t_ms) in enumerate(values):
        rows[i] = (center.rtdb.point_id(name), value, quality, t_ms, Cause.SPONTANEOUS)
    center.rtdb.ingest(UpdateBatch("iec104", rows, int(time.time() * 1000)))
    ids = [center.rtdb.point_id(n) for n, *_ in values]
    wait_for(lambda: [float(r["value"]) for r in center.rtdb.snapshot(ids)] == [v for _, v, *_ in values], 10,
             "the values in the RTDB")


def test_dr_directory_is_resolved_against_the_station_file(tmp_path: Path) -> None:
    (tmp_path / "station.toml").write_text(STATION, encoding="utf-8")
    config = load_station_config(tmp_path / "station.toml")
    assert config.iccp is not None
    assert config.iccp.remote("TSO-ICCP").dr_directory == str((tmp_path / "dr" / "tso").resolve())


def test_peer_reads_rtdb_values_with_flags_and_unknown_peer_is_refused(centre: tuple[Any, Any]) -> None:
    center, services = centre
    assert services.port > 0 and services.devices is not None
    _publish(center, [("F1-P", 12.5, int(Quality.GOOD), T0_MS + 250), ("CB1", 2, int(Quality.QUESTIONABLE), -1)])
    with _connect(services.port) as assoc:
        assert assoc.read_one(ObjectName.in_domain("DSO1", "Bilateral_Table_ID")).value == "BLT_1"
        p = decode_point(PointType.DATA_REAL_Q_TIMETAG, assoc.read_one(ObjectName.in_domain("DSO1", "F1_P")))
        assert p.value == pytest.approx(12.5) and p.flags == DataFlags() and p.time_ms == T0_MS
        cb = decode_point(PointType.DATA_STATE_Q, assoc.read_one(ObjectName.in_domain("DSO1", "CB1_STATE")))
        assert cb.value == State.ON and cb.flags.validity is Validity.SUSPECT
        # a new RTDB value is what the next read returns
        _publish(center, [("F1-P", -3.25, int(Quality.INVALID), T0_MS + 5000)])
        p = decode_point(PointType.DATA_REAL_Q_TIMETAG, assoc.read_one(ObjectName.in_domain("DSO1", "F1_P")))
        assert p.value == pytest.approx(-3.25) and p.flags.validity is Validity.NOT_VALID
    with pytest.raises(MmsAssociationRefused):
        _connect(services.port, OTHER)
    assert services.server is not None and services.server.stats.refused == 1


def test_link_outage_of_a_remote_is_backfilled_from_its_dr_directory(centre: tuple[Any, Any], tmp_path: Path) -> None:
    from iccp.recovery import SnapshotWriter
    from iccp.sim.transmission import PointValue as SimValue

    center, services = centre
    assert services.recovery is not None
    writer = SnapshotWriter(tmp_path / "dr" / "tso", source="TSO", interval_s=1.0)
    writer.start([SimValue("FREQ_SYS", 50.0, Quality.GOOD, T0_MS)], T0_MS)
    writer.record(T0_MS + 1500, [SimValue("FREQ_SYS", 49.9, Quality.GOOD, T0_MS + 1500)])
    writer.close(T0_MS + 3999)
    center.rtdb.ingest(LinkEvent("iccp", "TSO-ICCP", False, time_ms=T0_MS + 1000))
    center.rtdb.ingest(LinkEvent("iccp", "TSO-ICCP", True, "127.0.0.1:1", time_ms=T0_MS + 3000))
    wait_for(lambda: services.recovery.results, 15, "the gap recovery after the link came back")
    job, result = services.recovery.results[0]
    assert (job.remote, job.start_ms, job.end_ms) == ("TSO-ICCP", T0_MS + 1000, T0_MS + 3000)
    assert result.complete and result.inserted == 1


def test_a_transfer_set_alarm_reaches_the_operators(centre: tuple[Any, Any]) -> None:
    center, services = centre
    assert services.server is not None and services.server.on_alarm is not None
    # what the server calls when a critical report stays unacknowledged after its retries
    services.server.on_alarm("TSO", "DSTransferSet01", "critical report 7 not acknowledged after 2 retries")
    alarm = next(a for a in center.alarms.list() if a.key == "system:iccp:TSO:DSTransferSet01")
    assert alarm.priority is Priority.HIGH and "not acknowledged" in alarm.text and "TSO" in alarm.text


def test_services_stop_cleanly(tmp_path: Path) -> None:
    from iccp.service import IccpServices
    from scada.server import ControlCenter

    (tmp_path / "station.toml").write_text(STATION, encoding="utf-8")
    config = load_station_config(tmp_path / "station.toml")
    center = ControlCenter(config, data_dir=tmp_path / "data", grpc_address="127.0.0.1:0", start_adapters=False)
    services = IccpServices.for_center(center)
    assert services is not None
    before = {t.name for t in threading.enumerate()}
    center.start()
    try:
        services.start()
        port = services.port
        with _connect(port) as assoc:
            assert assoc.read_one(ObjectName.in_domain("DSO1", "Bilateral_Table_ID")).value == "BLT_1"
        services.stop()
        services.stop()  # idempotent
        with pytest.raises((MmsError, OSError)):
            _connect(port)
        names = {t.name for t in threading.enumerate()}
        assert not {"iccp-server-changes", "iccp-gap-recovery"} & names, names - before
    finally:
        services.stop()
        center.stop()


def test_station_without_iccp_server_or_recovery_gets_no_services(tmp_path: Path) -> None:
    from iccp.service import IccpServices
    from scada.server import ControlCenter

    text = STATION.replace('dr_directory = "dr/tso"\n', "")
    text = text.replace('listen = "127.0.0.1:0"\n', "").split("[[iccp.peers]]")[0] + "[[iccp.remotes]]" + \
        text.split("[[iccp.remotes]]")[1]
    (tmp_path / "station.toml").write_text(text, encoding="utf-8")
    config = load_station_config(tmp_path / "station.toml")
    assert config.iccp is not None and not config.iccp.peers
    center = ControlCenter(config, data_dir=tmp_path / "data", grpc_address="127.0.0.1:0", start_adapters=False)
    try:
        assert IccpServices.for_center(center) is None
    finally:
        center.stop()
