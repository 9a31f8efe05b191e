"""The ``[iccp]`` timing keys reach what they configure: ``[[iccp.remotes]] keepalive_s`` is the period of the
client's keep-alive reads (counted by our TASE.2 server on loopback), ``recovery_retry_s`` the retry period of each
remote's gap recovery (two remotes, two periods)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from iccp.gap_recovery import GapRecovery
from iccp.mms import MmsServerConfig
from iccp.tase2.client import Tase2Client
from iccp.tase2.point_source import InMemoryPointSource
from iccp.tase2.server import Tase2Server
from models.config import StationConfig, parse_station_config
from models.updates import LinkEvent
from scada.historian import Historian
from tests.support import wait_for

T0_MS = 1_795_000_000_000

TSO_STATION = """
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

[iccp]
ap_title = "1.3.9999.20"
ae_qualifier = 20
listen = "127.0.0.1:0"

[[iccp.peers]]
name = "DSO"
ap_title = "1.3.9999.10"
ae_qualifier = 10
bilateral_table_id = "BLT_1"
domain = "DSO1"
read = [{ point = "FREQ", name = "FREQ_SYS", type = "Data_RealQTimeTag" }]
"""

_REMOTE = """
[[iccp.remotes]]
name = "{name}"
addresses = ["127.0.0.1:{port}"]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "DSO1"
bilateral_table_id = "BLT_1"
interval_s = 3600
integrity_s = 0
connect_timeout_s = 2
request_timeout_s = 5
dr_directory = "{dr}"
{extra}
[[points]]
name = "{name}.FREQ"
kind = "analog"
rtu = "{name}"
reference = "FREQ_SYS"
"""


def _station(tmp_path: Path, port: int) -> StationConfig:
    text = '[station]\nname = "dso"\n\n[iccp]\nap_title = "1.3.9999.10"\nae_qualifier = 10\n'
    text += _REMOTE.format(name="TSO-A", port=port, dr="dr/a", extra="keepalive_s = 0.3\nrecovery_retry_s = 0.3\n")
    text += _REMOTE.format(name="TSO-B", port=port, dr="dr/b", extra="")  # the defaults: 5 s and 30 s
    for d in ("a", "b"):
        (tmp_path / "dr" / d).mkdir(parents=True)
    return parse_station_config(text, str(tmp_path / "station.toml"))


class _Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.interrogated = 0

    def on_rows(self, remote: str, rows: Sequence[Any]) -> None:
        pass

    def on_link(self, remote: str, up: bool, address: str, reason: str, time_ms: int) -> None:
        pass

    def on_interrogated(self, remote: str, time_ms: int) -> None:
        with self.lock:
            self.interrogated += 1

    def count(self, name: str, n: float = 1.0) -> None:
        pass


@pytest.fixture
def tso(tmp_path: Path) -> Iterator[Tase2Server]:
    cfg = parse_station_config(TSO_STATION, str(tmp_path / "tso.toml"))
    assert cfg.iccp is not None
    source = InMemoryPointSource(cfg.points)
    source.update([("FREQ", 50.0, 0, T0_MS)])
    server = Tase2Server(cfg.iccp, source, mms=MmsServerConfig(host="127.0.0.1", port=0))
    server.start()
    yield server
    server.stop()


def _keep_alive_reads(server: Tase2Server, config: StationConfig, remote: str, window_s: float) -> int:
    """Reads the server answers for ``remote``'s client during ``window_s`` after its first full read."""
    assert config.iccp is not None
    sink = _Sink()
    client = Tase2Client(config.iccp.remote(remote), config.iccp.identity, config.points_of_rtu(remote), sink)
    client.start()
    try:
        wait_for(lambda: sink.interrogated >= 1, 20, f"{remote}: association, transfer set and first read")
        before = server.stats.reads
        time.sleep(window_s)
        return server.stats.reads - before
    finally:
        client.stop()


def test_keepalive_s_sets_the_client_keep_alive_period(tmp_path: Path, tso: Tase2Server) -> None:
    config = _station(tmp_path, tso.port)
    assert config.iccp is not None
    assert [r.keepalive_s for r in config.iccp.remotes] == [0.3, 5.0]
    fast = _keep_alive_reads(tso, config, "TSO-A", 3.0)  # every 0.3 s: about 10 reads of Bilateral_Table_ID
    slow = _keep_alive_reads(tso, config, "TSO-B", 3.0)  # every 5 s: none within 3 s of the first read
    assert fast >= 5, fast
    assert slow == 0, slow


def test_recovery_retry_s_is_per_remote(tmp_path: Path) -> None:
    """Empty DR directories: every recovery is incomplete and retried after its remote's recovery_retry_s."""
    config = _station(tmp_path, 10202)  # no socket: recovery reads files only
    assert config.iccp is not None
    remotes = config.iccp.remotes
    assert [r.recovery_retry_s for r in remotes] == [0.3, 30.0]
    historian = Historian(tmp_path / "h.sqlite", config.points)
    recovery = GapRecovery(config, historian, {r.name: r.dr_directory for r in remotes if r.dr_directory},
                           retry_s={r.name: r.recovery_retry_s for r in remotes}, max_attempts=3)
    recovery.start()
    try:
        for name in ("TSO-A", "TSO-B"):
            recovery.on_link(LinkEvent("iccp", name, False, time_ms=T0_MS))
            recovery.on_link(LinkEvent("iccp", name, True, time_ms=T0_MS + 5000))

        def attempts(name: str) -> int:
            return sum(1 for job, _ in list(recovery.results) if job.remote == name)

        wait_for(lambda: attempts("TSO-A") >= 3 and attempts("TSO-B") >= 1, 15, "three attempts of TSO-A")
        assert attempts("TSO-B") == 1  # its next try is 30 s away
        assert all(not result.complete for _, result in recovery.results)
    finally:
        recovery.stop()
        historian.close()
