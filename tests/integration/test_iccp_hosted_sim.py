"""The station's RTU simulator hosts its ICCP remote centre (``iccp.sim.hosted``): the transmission simulator serves
the imported points to the centre's supervised TASE.2 client, imports the centre's published points through the
centre's TASE.2 server (the other direction), and a link cut turns the imported points COMM_LOST, after which the
gap is backfilled into the historian from the DR snapshot files the simulator kept writing."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from iccp_stations import field_station, tso_peer, tso_remote  # noqa: E402
from support import wait_for  # noqa: E402

from iccp.service import IccpServices  # noqa: E402
from models.config import StationConfig, load_station_config  # noqa: E402
from models.points import Quality  # noqa: E402
from models.samples import free_tcp_ports  # noqa: E402
from rtu_sim.errors import UnknownRtuError  # noqa: E402
from rtu_sim.simulator import RtuSimulator  # noqa: E402
from scada.server import ControlCenter  # noqa: E402

# a quick reconnect and recovery retry, so the outage below is recovered in seconds
REMOTE_TIMING = "interval_s = 1\nreconnect_backoff_max_s = 1\nrecovery_retry_s = 0.5\n"


def _station(folder: Path) -> StationConfig:
    rtu, listen, tso = free_tcp_ports(3)
    text = (field_station("hosted", rtu_port=rtu) + f'\n[server]\ndata_dir = "{folder.as_posix()}"\n'
            + tso_peer(listen) + tso_remote(tso, extra=REMOTE_TIMING))
    path = folder / "station.toml"
    path.write_text(text, encoding="utf-8")
    return load_station_config(path)


@dataclass
class Running:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    iccp: IccpServices


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    config = _station(tmp_path)
    sim = RtuSimulator(config, seed=3, physics=False, iccp_snapshot_interval_s=1.0)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    iccp = IccpServices.for_center(center)
    assert iccp is not None
    try:
        sim.start()
        center.start()
        iccp.start()
        yield Running(config, sim, center, iccp)
    finally:
        iccp.stop()
        center.stop()
        sim.stop()


def _qualities(r: Running, names: list[str]) -> list[int]:
    snap = r.center.rtdb.snapshot([r.center.rtdb.point_id(n) for n in names])
    return [int(q) for q in snap["quality"]]


@pytest.mark.timeout(120)
def test_the_hosted_transmission_centre_exchanges_both_ways_and_its_outage_is_backfilled(running: Running) -> None:
    r = running
    assert r.sim.rtu_names == ("R1",) and r.sim.transmission_names == ("TSO-ICCP",)
    tso = r.sim.transmission("TSO-ICCP")
    imported = ["TSO.FREQ", "TSO.CB_T1"]
    wait_for(lambda: _qualities(r, imported) == [0, 0], 30, "the imported points good")
    freq = r.center.rtdb.snapshot([r.center.rtdb.point_id("TSO.FREQ")])["value"][0]
    assert 49.5 <= freq <= 50.5

    # the other direction: the simulator's own TASE.2 client reads what our server publishes to it
    importer = tso.importer
    assert importer is not None
    bad = Quality.INVALID | Quality.COMM_LOST  # F1-P comes over IEC 104 without a time tag: TIME_INVALID there

    def valid() -> bool:
        got = importer.values()
        return set(got) == {"F1_P", "CB1_STATE"} and not any(v.quality & bad for v in got.values())

    wait_for(valid, 30, "the transmission side to import F1-P and CB1 as valid values")
    r.sim.set_value("F1-P", 1234.5)
    wait_for(lambda: abs(importer.values()["F1_P"].value - 1234.5) < 1e-3, 15,
             "a change of F1-P at the field to reach the transmission side")
    assert importer.values()["F1_P"].point == "F1-P"

    tso.cut_link()
    t_cut = time.monotonic()
    wait_for(lambda: all(q & Quality.COMM_LOST for q in _qualities(r, imported)), 15, "COMM_LOST after the cut")
    assert not importer.link_up and tso.link_cut
    time.sleep(max(0.0, 2.5 - (time.monotonic() - t_cut)))  # an outage spanning at least two snapshot files
    tso.restore_link()
    wait_for(lambda: _qualities(r, imported) == [0, 0], 30, "the imported points good after the link came back")
    wait_for(lambda: importer.link_up, 30, "the transmission side's import to reassociate")
    recovery = r.iccp.recovery
    assert recovery is not None
    job, result = wait_for(lambda: next((x for x in recovery.results if x[1].complete), None), 30,
                           "a complete recovery of the outage from the DR snapshot files")
    assert job.remote == "TSO-ICCP" and job.end_ms - job.start_ms >= 2000
    assert result.files_read >= 2 and result.inserted + result.already_present >= 1 and not result.missing
    rows = r.center.historian.query(r.center.rtdb.point_id("TSO.FREQ"), job.start_ms + 1, job.end_ms - 1)
    assert any(int(q) == 0 for q in rows.samples["quality"]), "no good frequency sample inside the recovered outage"


def test_a_simulator_of_the_remote_alone(tmp_path: Path) -> None:
    config = _station(tmp_path)
    sim = RtuSimulator(config, ["TSO-ICCP"], physics=False)
    try:
        assert sim.rtu_names == () and sim.transmission_names == ("TSO-ICCP",)
        with pytest.raises(UnknownRtuError, match="ICCP remote 'R1' is not simulated here"):
            sim.transmission("R1")
    finally:
        sim.stop()
