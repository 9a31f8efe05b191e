"""A silent link (no TCP close, e.g. a dead GPRS modem) is found by IEC 104 link supervision.

lib60870 (under c104) sends a TESTFR after t3 without traffic and every t3 after that, and closes the link when three
are unanswered: a silent link is declared lost about 4 x t3 after its last frame (measured: 8 s at t3 = 2 s)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import FreezableRelay, sample_config_on_free_ports, wait_for

from models.config import load_station_config
from models.points import Quality
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ScadaClient
from scada.server import ControlCenter

T1_S, T3_S = 2, 2


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_silent_link_goes_comm_lost_within_four_t3(tmp_path: Path) -> None:
    rtu = "FRTU-RMU2"
    sim_config, path = sample_config_on_free_ports(tmp_path)
    sim_port = int(sim_config.rtu(rtu).addresses[0].rsplit(":", 1)[1])
    relay = FreezableRelay(sim_port)
    # The server reaches the FRTU through the relay, with short supervision timers.
    text = path.read_text().replace(f"127.0.0.1:{sim_port}\"]", f"127.0.0.1:{relay.port}\"]\nt1_s = {T1_S}\n"
                                                                  f"t3_s = {T3_S}")
    server_path = tmp_path / "server.toml"
    server_path.write_text(text)
    config = load_station_config(server_path)
    assert config.rtu(rtu).t1_s == T1_S
    names = [p.name for p in config.points_of_rtu(rtu)]
    sim = RtuSimulator(sim_config, seed=4)
    sim.start()
    try:
        with ControlCenter(config, grpc_address="127.0.0.1:0") as center, \
                ScadaClient(f"127.0.0.1:{center.grpc_port}", "operator-demo-token") as op:
            wait_for(lambda: all(v.quality == 0 for v in op.read()), 30, "GI through the relay")
            relay.freeze()
            t0 = time.monotonic()
            wait_for(lambda: all(v.quality & Quality.COMM_LOST for v in op.read(names)), 4 * T3_S + 10,
                     "comm-lost on the silent link")
            elapsed = time.monotonic() - t0
            assert T3_S <= elapsed <= 4 * T3_S + 2.0, elapsed  # found by the timers, not by a closed socket
            assert all(v.quality & Quality.COMM_LOST == 0 for v in op.read(["RMU1/I", "SHN/F1/I"]))
            relay.thaw()
            wait_for(lambda: all(v.quality == 0 for v in op.read(names)), 30, "reconnect and GI after the silence")
    finally:
        sim.stop()
        relay.close()
