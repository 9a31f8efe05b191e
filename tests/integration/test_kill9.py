"""SOE durability: every status event a gRPC subscriber has seen survives a kill -9 of the server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import free_port, sample_config_on_free_ports, wait_for

from rtu_sim.simulator import RtuSimulator
from scada.api.client import ClientError, ScadaClient

OPERATOR = "operator-demo-token"
REPO = Path(__file__).resolve().parents[2]


def _serve(config_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "scada.cli", "serve", "--config", str(config_path),
                             "--address", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _ready(client: ScadaClient) -> bool:
    try:
        return all(v.quality == 0 for v in client.read())
    except ClientError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill9_loses_no_seen_event(tmp_path: Path) -> None:
    config, path = sample_config_on_free_ports(tmp_path)
    port = free_port()
    sim = RtuSimulator(config, seed=3)
    sim.start()
    server = _serve(path, port)
    try:
        with ScadaClient(f"127.0.0.1:{port}", OPERATOR) as op:
            op.wait_ready(30)
            wait_for(lambda: _ready(op), 40, "server up and GI complete")
            status = [p.name for p in config.points if p.kind.is_status and p.control is None]
            status_ids = {p.id for p in config.points if p.kind.is_status}
            seen: list[int] = []
            stream = op.subscribe(status)

            def read() -> None:
                try:
                    for msg in stream:
                        if not msg.snapshot:
                            seen.extend(v.seq for v in msg.values if v.point in status_ids and v.cause != 60)
                except ClientError:
                    pass  # the server was killed under the stream: expected

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            for i in range(60):  # a burst of protection/FPI events
                name = status[i % len(status)]
                sim.set_value(name, float((i // len(status)) % 2 == 0))
                time.sleep(0.01)
            wait_for(lambda: len(seen) >= 30, 15, "events on the subscription")
            os.killpg(server.pid, signal.SIGKILL)  # the server and its adapter process, no clean-up at all
            server.wait(10)
            stream.cancel()
            reader.join(5)
        seen_now = sorted(set(seen))
        server = _serve(path, port)
        with ScadaClient(f"127.0.0.1:{port}", OPERATOR) as op:
            op.wait_ready(30)
            journal = {e.seq for e in op.soe(limit=10_000)}
        missing = [s for s in seen_now if s not in journal]
        assert not missing, f"{len(missing)} of {len(seen_now)} seen events lost by kill -9"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        sim.stop()
