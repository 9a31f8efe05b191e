"""``dscada serve`` with an ``[iccp]`` block, as real processes: the server subprocess imports points from the
transmission simulator subprocess (``dscada iccp-sim``) over TASE.2 and publishes a field point and a device to its
own peer; the test talks to it only over gRPC (ScadaClient) and TASE.2 (MmsAssociation as the peer).

Scenario: the ICCP line is printed and the remote's points arrive good; the peer reads the published point with its
value and operates the published breaker (select, operate -> IEC 104 command to the RTU, audited); the simulator is
stopped (SIGTERM): the remote's points go COMM_LOST; it is started again on the same port with the same DR snapshot
folder: the points are good again and the historian holds every snapshot row of the outage window that the gap
recovery read (backfilled from the DR files); SIGTERM stops the server with exit code 0 and no process left.
A listen address in use is refused with one line and exit code 1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from iccp_stations import OUR_AP_TITLE, TSO_AP_TITLE, field_station, tso_peer
from open61850.data import IntData
from support import free_port, wait_for

from iccp.mms import ObjectName
from iccp.mms.client import AeTitle, MmsAssociation, MmsClientConfig, MmsEndpoint
from iccp.recovery import SnapshotArchive
from iccp.tase2.model import DataFlags, PointType, State, decode_point
from models.config import load_station_config
from models.points import Quality
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ClientError, ScadaClient

REPO = Path(__file__).resolve().parents[2]
OUR = AeTitle(*OUR_AP_TITLE)
TSO = AeTitle(*TSO_AP_TITLE)
TOKEN = "op-token"
DOMAIN = "DSO1"
REMOTE_POINTS = {"TSO.FREQ": "FREQ_SYS", "TSO.TIE1_MW": "TIE1_MW", "TSO.CB_T1": "CB_T1_STATE"}

#: The field station and our peer "TSO" (iccp_stations), an operator for the gRPC client, and the remote centre the
#: simulator plays (its DR folder relative to the station file), importing frequency, a tie flow and a tie breaker.
REMOTE = """
[[operators]]
name = "op"
role = "operator"
token = "{token}"

[[iccp.remotes]]
name = "TSO-ICCP"
addresses = ["127.0.0.1:{sim_port}"]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "{domain}"
bilateral_table_id = "BLT_SIM_1"
interval_s = 1
reconnect_backoff_s = 4
reconnect_backoff_max_s = 4
dr_directory = "dr/tso"

[[points]]
name = "TSO.FREQ"
kind = "analog"
rtu = "TSO-ICCP"
reference = "FREQ_SYS"
units = "Hz"

[[points]]
name = "TSO.TIE1_MW"
kind = "analog"
rtu = "TSO-ICCP"
reference = "TIE1_MW"
units = "MW"

[[points]]
name = "TSO.CB_T1"
kind = "double"
rtu = "TSO-ICCP"
reference = "CB_T1_STATE"
"""

#: iccp.gap_recovery's line per attempt (dscada -v): samples inserted, the gap [start, end), the parts no file covered
_RECOVERED = re.compile(r"ICCP remote TSO-ICCP: recovered (\d+) samples of \[(\d+), (\d+)\) from \d+ files "
                        r"\(missing (\(.*\))\)$", re.MULTILINE)


@dataclass
class Proc:
    """A ``dscada`` subprocess in its own session (its process group holds every child it spawns); stdout is read
    by a thread so the pipe never fills, stderr goes to a file."""

    name: str
    proc: subprocess.Popen[str]
    log: Path
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, name: str, args: list[str], log: Path) -> Proc:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with log.open("a", encoding="utf-8") as err:
            proc = subprocess.Popen([sys.executable, "-m", "scada.cli", *args], cwd=REPO, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        p = cls(name, proc, log)
        p.reader = threading.Thread(target=p._read, args=(proc.stdout,), name=f"{name}-stdout", daemon=True)
        p.reader.start()
        return p

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines) + f"\n--- {self.log.name} ---\n" + self.log.read_text(encoding="utf-8")[-4000:]

    def wait_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not print /{pattern}/ (exit code {self.proc.poll()}):\n{self.output()}")

    def terminate(self, timeout_s: float) -> tuple[int, float]:
        """SIGTERM to the process itself (not its group: it must stop its own children); (exit code, seconds)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        if self.reader is not None:
            self.reader.join(5)
        return code, time.monotonic() - t0

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill_all(self) -> None:
        """Clean-up after a failure: the whole group, whatever is left of it."""
        if self.group_alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


def _sim(station: Path, port: int, snapshots: Path, log: Path) -> Proc:
    """``dscada iccp-sim`` playing the station's remote on its address (``port``), DR files every second."""
    sim = Proc.start("iccp-sim", ["iccp-sim", "--config", str(station), "--seed", "5", "--period-s", "0.2",
                                  "--snapshots", str(snapshots), "--snapshot-interval-s", "1"], log)
    sim.wait_line(rf"listening on 127\.0\.0\.1:{port}\b", 30)
    return sim


def _values(client: ScadaClient, names: list[str]) -> dict[str, tuple[float, int]]:
    try:
        return {v.name: (v.value, v.quality) for v in client.read(names)}
    except ClientError:
        return {}


def _all_quality(client: ScadaClient, names: list[str], pred: Callable[[int], object]
                 ) -> dict[str, tuple[float, int]] | None:
    """The values of ``names`` when every quality satisfies ``pred``; None otherwise (or when unreachable)."""
    got = _values(client, names)
    return got if len(got) == len(names) and all(pred(q) for _, q in got.values()) else None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_serve_with_iccp_against_the_iccp_sim(tmp_path: Path) -> None:
    grpc_port, iccp_port, sim_port, rtu_port = free_port(), free_port(), free_port(), free_port()
    station = tmp_path / "station.toml"
    station.write_text(field_station("iccp-serve", rtu_port=rtu_port, analog_type="M_ME_TF_1") + tso_peer(iccp_port)
                       + REMOTE.format(token=TOKEN, sim_port=sim_port, domain=DOMAIN), encoding="utf-8")
    snapshots = tmp_path / "dr" / "tso"  # the station's relative dr_directory: the simulator writes, we read
    config = load_station_config(station)
    remote = list(REMOTE_POINTS)
    rtu = RtuSimulator(config, rtus=["R1"], seed=5, physics=False)
    procs: list[Proc] = []
    rtu.start()
    try:
        sim = _sim(station, sim_port, snapshots, tmp_path / "sim1.log")
        procs.append(sim)
        server = Proc.start("dscada serve", ["-v", "serve", "--config", str(station), "--data-dir",
                                             str(tmp_path / "data"), "--address", f"127.0.0.1:{grpc_port}"],
                            tmp_path / "serve.log")
        procs.append(server)

        # (a) the ICCP line, then the remote's points good over gRPC
        server.wait_line(r"dscada: serving 'iccp-serve'", 60)
        server.wait_line(rf"ICCP/TASE\.2 server on port {iccp_port} for TSO", 20)
        with ScadaClient(f"127.0.0.1:{grpc_port}", TOKEN) as op:
            op.wait_ready(20)
            good = wait_for(lambda: _all_quality(op, remote, lambda q: q == 0), 30, "the remote's points good")
            assert 49.0 < good["TSO.FREQ"][0] < 51.0 and good["TSO.CB_T1"][0] == 2.0  # tie breaker closed

            # (b) the peer reads the published field point, with the value the server holds
            rtu.set_value("F1-P", 12.5)
            rtu.set_value("CB1", 2.0)  # closed
            wait_for(lambda: _values(op, ["F1-P", "CB1"]) == {"F1-P": (12.5, 0), "CB1": (2.0, 0)}, 20,
                     "F1-P = 12.5 and CB1 closed, good, over gRPC")
            peer = MmsClientConfig((MmsEndpoint("127.0.0.1", iccp_port),), calling=TSO, called=OUR,
                                   connect_timeout_s=10.0, request_timeout_s=10.0)
            with MmsAssociation.connect(peer) as assoc:
                assert assoc.read_one(ObjectName.in_domain(DOMAIN, "Bilateral_Table_ID")).value == "BLT_1"
                p = decode_point(PointType.DATA_REAL_Q_TIMETAG, assoc.read_one(ObjectName.in_domain(DOMAIN, "F1_P")))
                assert p.value == pytest.approx(12.5) and p.flags == DataFlags()  # time-tagged at the RTU: time valid
                assert p.time_ms is not None and abs(p.time_ms - time.time() * 1000) < 60_000
                # and operates the published device: select, operate OPEN -> IEC 104 command -> the RTU's breaker
                cb = decode_point(PointType.DATA_STATE_Q, assoc.read_one(ObjectName.in_domain(DOMAIN, "CB1_STATE")))
                assert cb.value == State.ON
                assert assoc.read_one(ObjectName.in_domain(DOMAIN, "CB1_CTL_SBO")) is not None
                assert list(assoc.write([ObjectName.in_domain(DOMAIN, "CB1_CTL")], [IntData(0)])) == [None]
                wait_for(lambda: _values(op, ["CB1"]).get("CB1") == (1.0, 0), 20, "CB1 open over gRPC")
                assert rtu.value("CB1") == 1.0
                assoc.release()
            actions = {(a.operator, a.action) for a in op.audit(point="CB1")}
            assert {("iccp-tso", "tase2_select"), ("iccp-tso", "select"), ("iccp-tso", "execute")} <= actions, actions

            # (c) the simulator stops: COMM_LOST; it comes back on the same port and folder: good again, and the
            # outage window of the historian is backfilled from its DR snapshot files
            t_stop_ms = time.time() * 1000
            code, _ = sim.terminate(20)
            assert code == 0, sim.output()
            assert not sim.group_alive()
            wait_for(lambda: _all_quality(op, remote, lambda q: q & int(Quality.COMM_LOST)), 20,
                     "the remote's points COMM_LOST after the simulator stopped")
            sim = _sim(station, sim_port, snapshots, tmp_path / "sim2.log")
            procs.append(sim)
            wait_for(lambda: _all_quality(op, remote, lambda q: q == 0), 30, "the remote's points good again")
            t_good_ms = time.time() * 1000
            # The first recovery attempt runs at link-up and reads the closed files only: the simulator's first file
            # closes up to one snapshot interval (1 s) after its restart, so the client's reconnect_backoff_s of 4 s
            # usually lets the first attempt find it; otherwise the retry 30 s later does (dscada serve's retry_s).
            recovered = wait_for(lambda: [m for m in _RECOVERED.finditer(server.log.read_text(encoding="utf-8"))
                                          if int(m.group(1)) > 0], 50, "a gap recovery that inserted samples")
            start_ms, end_ms = int(recovered[0].group(2)), int(recovered[0].group(3))
            assert t_stop_ms <= start_ms < end_ms <= t_good_ms  # link down after the stop, up before the good values
            # The simulator was down for part of the gap (no file covers it: "missing", retried until the attempts
            # run out), and a file still open at this attempt is read by a later one; the rest must be stored.
            uncovered = [(int(a), int(b)) for a, b in re.findall(r"\((\d+), (\d+)\)", recovered[0].group(4))]
            archive = SnapshotArchive(snapshots)
            expected = {(name, r.time_ms): r.value for f in archive.files() for r in archive.read(f)
                        for name, ref in REMOTE_POINTS.items() if r.point == ref and start_ms <= r.time_ms < end_ms
                        and not any(a <= r.time_ms < b for a, b in uncovered)}
            assert expected, "no snapshot row inside the recovered window"
            stored = {}
            for name in REMOTE_POINTS:
                h = op.history(name, start_ms=start_ms, end_ms=end_ms)
                stored |= {(name, s.time_ms): s.value for s in h.samples}
            missing = {k: v for k, v in expected.items() if stored.get(k) != pytest.approx(v)}
            assert not missing, f"{len(missing)} of {len(expected)} snapshot rows not in the historian: {missing}"

        # (d) SIGTERM: exit code 0 within a bound, adapters and all gone
        code, took_s = server.terminate(30)
        assert code == 0, server.output()
        assert "dscada: stopping" in "".join(server.lines)
        wait_for(lambda: not server.group_alive(), 10, "no process left in the server's group")
        print(f"server stopped in {took_s:.2f} s")
    finally:
        for p in reversed(procs):
            p.kill_all()
        rtu.stop()


@pytest.mark.timeout(90)
def test_serve_refuses_an_iccp_listen_address_in_use(tmp_path: Path) -> None:
    """The TASE.2 server cannot listen: one line naming the address, exit code 1, the centre stopped, no traceback."""
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        station = tmp_path / "station.toml"
        station.write_text(field_station("iccp-busy", rtu_port=free_port()) + tso_peer(port)
                           + REMOTE.format(token=TOKEN, sim_port=free_port(), domain=DOMAIN), encoding="utf-8")
        server = Proc.start("dscada serve", ["serve", "--config", str(station), "--data-dir", str(tmp_path / "data"),
                                             "--address", f"127.0.0.1:{free_port()}"], tmp_path / "serve.log")
        try:
            code = server.proc.wait(60)
            err = server.log.read_text(encoding="utf-8")
            assert code == 1, server.output()
            assert f"dscada: cannot start the ICCP services: MMS server cannot listen on 127.0.0.1:{port}" in err, err
            assert "Traceback" not in err and "dscada: serving" not in "".join(server.lines), server.output()
            wait_for(lambda: not server.group_alive(), 10, "no process left in the server's group")
        finally:
            server.kill_all()
    finally:
        busy.close()
