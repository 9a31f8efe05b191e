"""The transmission-SCADA simulator process (``dscada iccp-sim``) on a free loopback port: our MMS client associates
as the station's distribution centre, reads TASE2_Version and points, starts a DS transfer set that reports
changes, operates a tie breaker over TASE.2 device control; SIGTERM stops the process cleanly and leaves the DR
snapshot files behind."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from open61850.data import BoolData, IntData

from iccp.mms.client import AeTitle, MmsAssociation, MmsAssociationRefused, MmsClientConfig, MmsEndpoint
from iccp.mms.client_codec import InformationReport
from iccp.mms.codec import DataAccessCode, ObjectName, VariableSpec
from iccp.recovery import SnapshotArchive
from iccp.tase2.model import (
    OUR_FEATURES,
    DSConditions,
    DSTransferSet,
    PointType,
    State,
    Tase2Version,
    TransferReportHeader,
    decode_bilateral_table_id,
    decode_features,
    decode_point,
)
from iccp.tase2.model import ObjectName as Tase2Name
from iccp.tase2.model import Scope as Tase2Scope

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "DSO1"
TABLE_ID = "BLT_SIM_1"
DSO = AeTitle((1, 3, 9999, 10), 10)
TSO = AeTitle((1, 3, 9999, 20), 20)

STATION = f"""
[station]
name = "iccp-sim-test"

[iccp]
ap_title = "1.3.9999.10"
ae_qualifier = 10

[[iccp.remotes]]
name = "TSO-ICCP"
addresses = ["127.0.0.1:10202"]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "{DOMAIN}"
bilateral_table_id = "{TABLE_ID}"

[[points]]
name = "TSO.FREQ_SYS"
kind = "analog"
rtu = "TSO-ICCP"
reference = "FREQ_SYS"

[[points]]
name = "TSO.CB_T1"
kind = "double"
rtu = "TSO-ICCP"
reference = "CB_T1_STATE"
"""


class SimProcess:
    def __init__(self, proc: subprocess.Popen[str], port: int, snapshots: Path, lines: list[str]) -> None:
        self.proc, self.port, self.snapshots, self.lines = proc, port, snapshots, lines

    def config(self, calling: AeTitle = DSO) -> MmsClientConfig:
        return MmsClientConfig(endpoints=(MmsEndpoint("127.0.0.1", self.port),), calling=calling, called=TSO,
                               connect_timeout_s=10.0, request_timeout_s=10.0)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    station = tmp_path / "station.toml"
    station.write_text(STATION, encoding="utf-8")
    snapshots = tmp_path / "dr"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scada.cli", "iccp-sim", "--config", str(station), "--listen", "127.0.0.1:0",
         "--seed", "3", "--period-s", "0.2", "--snapshots", str(snapshots), "--snapshot-interval-s", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    port = 0
    deadline = time.monotonic() + 30.0
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline and not port:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        assert port, f"simulator did not report its port: {''.join(lines)}"
        yield SimProcess(proc, port, snapshots, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _stop(sim: SimProcess) -> str:
    sim.proc.send_signal(signal.SIGTERM)
    out, _ = sim.proc.communicate(timeout=20)
    return "".join(sim.lines) + out


def test_association_reads_and_refusal(sim: SimProcess) -> None:
    with pytest.raises(MmsAssociationRefused):
        MmsAssociation.connect(sim.config(calling=AeTitle((1, 3, 9999, 99), 99))).close()
    with MmsAssociation.connect(sim.config()) as assoc:
        assert Tase2Version.decode(assoc.read_one(ObjectName.vcc("TASE2_Version"))).major in (1996, 2000)
        assert decode_features(assoc.read_one(ObjectName.vcc("Supported_Features"))) >= OUR_FEATURES
        table = decode_bilateral_table_id(assoc.read_one(ObjectName.in_domain(DOMAIN, "Bilateral_Table_ID")))
        assert table == TABLE_ID
        freq_raw = assoc.read_one(ObjectName.in_domain(DOMAIN, "FREQ_SYS"))
        freq = decode_point(PointType.DATA_REAL_Q_TIMETAG, freq_raw)
        assert 49.5 <= freq.value <= 50.5 and freq.time_ms is not None and abs(freq.time_ms - time.time() * 1e3) < 60e3
        cb = decode_point(PointType.DATA_STATE_Q_TIMETAG, assoc.read_one(ObjectName.in_domain(DOMAIN, "CB_T1_STATE")))
        assert cb.value == State.ON
        results = assoc.read([ObjectName.in_domain(DOMAIN, "NO_SUCH_POINT")])
        assert isinstance(results[0], DataAccessCode)
        # the points are read-only for the distribution centre
        assert assoc.write([ObjectName.in_domain(DOMAIN, "FREQ_SYS")], [freq_raw])[0] is not None
        assoc.release()
    out = _stop(sim)
    assert sim.proc.returncode == 0, out
    assert "stopping" in out


def test_transfer_set_reports_changes_device_control_and_clean_stop(sim: SimProcess) -> None:
    reports: queue.Queue[InformationReport] = queue.Queue()
    with MmsAssociation.connect(sim.config(), on_information_report=reports.put) as assoc:
        members = ["Transfer_Set_Name", "Transfer_Set_Time_Stamp", "DSConditions_Detected", "Event_Code_Detected",
                   "FREQ_SYS", "TIE1_MW", "CB_T1_STATE", "MWH_SENT_T1"]
        ds = ObjectName.in_domain(DOMAIN, "DS_SIM_TEST")
        assoc.define_named_variable_list(ds, [ObjectName.in_domain(DOMAIN, m) for m in members])
        ts = Tase2Name.decode(assoc.read_one(ObjectName.in_domain(DOMAIN, "Next_DSTransfer_Set")))
        assert ts.scope is Tase2Scope.ICC and ts.domain == DOMAIN
        ts_name = ObjectName.in_domain(ts.domain, ts.name)
        attrs = DSTransferSet(Tase2Name(Tase2Scope.ICC, DOMAIN, "DS_SIM_TEST"), interval_s=60, integrity_check_s=60,
                              conditions=DSConditions.INTERVAL | DSConditions.INTEGRITY | DSConditions.CHANGE,
                              rbe=True)
        comps = [(n, v) for n, v in zip(DSTransferSet.COMPONENTS, attrs.encode().members, strict=True)
                 if n != "Status"]
        failures = assoc.write([VariableSpec(ts_name, (n,)) for n, _ in comps], [v for _, v in comps])
        assert list(failures) == [None] * len(comps)
        assert list(assoc.write([VariableSpec(ts_name, ("Status",))], [BoolData(True)])) == [None]

        # RBE reports carry the changed members only; the energy counter moves every second or so
        seen: set[str] = set()
        deadline = time.monotonic() + 10.0
        while "MWH_SENT_T1" not in seen and time.monotonic() < deadline:
            header, values = _next_report(reports, members, deadline - time.monotonic())
            assert header.transfer_set == ts and header.conditions & DSConditions.CHANGE
            assert values and set(values) <= set(members)
            seen |= set(values)
        assert "MWH_SENT_T1" in seen

        # open the tie breaker over device control: select, then operate 0 = OPEN
        check_back = assoc.read_one(ObjectName.in_domain(DOMAIN, "CB_T1_SBO"))
        assert check_back is not None
        assert list(assoc.write([ObjectName.in_domain(DOMAIN, "CB_T1")], [IntData(0)])) == [None]
        deadline = time.monotonic() + 10.0
        state = None
        while time.monotonic() < deadline:
            _, values = _next_report(reports, members, deadline - time.monotonic())
            if "CB_T1_STATE" in values:
                state = decode_point(PointType.DATA_STATE_Q_TIMETAG, values["CB_T1_STATE"]).value
                if state == State.OFF:
                    break
        assert state == State.OFF
        assoc.release()
    time.sleep(1.5)  # let at least one 1 s snapshot interval close
    out = _stop(sim)
    assert sim.proc.returncode == 0, out
    archive = SnapshotArchive(sim.snapshots)
    files = archive.files()
    assert len(files) >= 2, out
    rows = [r for f in files for r in archive.read(f)]
    assert any(r.point == "CB_T1_STATE" and r.value == 1.0 for r in rows)  # the open breaker was recorded
    assert files[-1].end_ms <= time.time() * 1000 + 1


def _next_report(reports: queue.Queue[InformationReport], members: list[str], timeout_s: float
                 ) -> tuple[TransferReportHeader, dict[str, object]]:
    report = reports.get(timeout=max(0.1, timeout_s))
    if report.variables:
        named = {v.name.item: r for v, r in zip(report.variables, report.results, strict=False) if not v.component}
    else:
        assert len(report.results) == len(members)
        named = dict(zip(members, report.results, strict=True))
    header = TransferReportHeader.decode({n: v for n, v in named.items() if n in TransferReportHeader.NAMES})
    return header, {n: v for n, v in named.items() if n not in TransferReportHeader.NAMES}
