"""Controls of a simulated IEC 61850 IED while it reports a heavy load of changes.

libiec61850's server thread runs the control handlers (Python) while holding its data-model lock; the simulator's
report path takes that same lock. Taken through the SWIG binding (which keeps the GIL while it waits), the two
deadlocked within a few commands under load; the simulator now waits for the lock without the GIL."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import free_port, wait_for

from models.config import load_station_config
from models.points import DoubleState
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.server import ControlCenter

OPERATOR = "operator-token-61850"


def _station(port: int, analogs: int, data_dir: Path) -> str:
    head = f"""
[station]
name = "61850 under load"

[server]
grpc_address = "127.0.0.1:0"
data_dir = "{data_dir.as_posix()}"

[[operators]]
name = "op"
role = "operator"
token = "{OPERATOR}"

[[rtus]]
name = "IED-L"
protocol = "iec61850"
addresses = ["127.0.0.1:{port}"]
max_updates_per_s = 5000

[[points]]
name = "CB"
kind = "double"
rtu = "IED-L"
type = "DPC"
reference = "LD0/XCBR1.Pos"
control = {{ type = "double", reference = "LD0/XCBR1.Pos", mode = "sbo_enhanced" }}
sim = {{ nominal = 2 }}
"""
    return head + "".join(
        f'\n[[points]]\nname = "P{i}"\nkind = "analog"\nrtu = "IED-L"\ntype = "MV"\n'
        f'reference = "LD0/MMXU{i + 1}.TotW"\nunits = "kW"\nsim = {{ nominal = 100 }}\n' for i in range(analogs))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_controls_while_the_ied_reports_a_heavy_load(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(_station(free_port(), 40, tmp_path / "data"), encoding="utf-8")
    config = load_station_config(path)
    with RtuSimulator(config, seed=5, physics=False) as sim, \
            ControlCenter(config, grpc_address="127.0.0.1:0") as center, \
            ScadaClient(f"127.0.0.1:{center.grpc_port}", OPERATOR) as op:
        wait_for(lambda: all(v.quality == 0 for v in op.read()), 30, "all points good")
        sim.start_change_load(3000, status_share=0.0)
        state = DoubleState.ON
        for _ in range(15):
            state = DoubleState.OFF if state == DoubleState.ON else DoubleState.ON
            op.select("CB", state)
            res = op.operate("CB", state)
            assert res.status == pb.CONTROL_STATUS_SUCCESS, res
            wait_for(lambda state=state: op.read(["CB"])[0].value == state, 10, f"CB feedback {state.name}")
        sim.stop_change_load()
        assert sim.stats().commands_executed >= 15
