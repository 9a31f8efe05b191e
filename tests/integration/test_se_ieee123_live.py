"""The same three-phase estimator on the project's IEEE123.xml Y-bus with measurements produced by the simulators:
the IEEE 123 station (IEC 104 + DNP3 RTUs, unbalanced physics) -> front ends -> RTDB -> RealtimeEstimator. The
estimate converges and matches the simulator's own per-phase voltages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import requires_reference_feeders, wait_for

from dms.se.realtime import RealtimeEstimator, RealtimeOptions
from models.config import StationConfig, load_station_config
from models.points import PointKind
from models.samples import relocate_station_text
from rtu_sim.grid_driver import PhysicsSettings
from rtu_sim.physics import FlowMethod
from rtu_sim.simulator import RtuSimulator
from scada.server import ControlCenter

pytestmark = requires_reference_feeders()

STATION = Path(__file__).resolve().parents[1] / "data" / "ieee123_station.toml"


@dataclass
class System:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    se: RealtimeEstimator


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("se123")
    path = tmp / "station.toml"
    path.write_text(relocate_station_text(STATION.read_text(encoding="utf-8"), tmp / "data", STATION.parent),
                    encoding="utf-8")
    config = load_station_config(path)
    sim = RtuSimulator(config, seed=11, physics=PhysicsSettings(period_s=300.0, noise_pct=0.2,
                                                               flow=FlowMethod.THREE_PHASE))
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    sim.start()
    se = None
    try:
        center.start()
        analogs = [p.id for p in config.points if p.kind is PointKind.ANALOG]
        wait_for(lambda: not (center.rtdb.snapshot(analogs)["quality"] != 0).any(), 90, "all analogs good")
        se = RealtimeEstimator.for_center(center, options=RealtimeOptions(period_s=300.0))
        yield System(config, sim, center, se)
    finally:
        if se is not None:
            se.stop()
        center.stop()
        sim.stop()


def test_the_estimator_runs_on_ieee123_with_simulator_measurements(system: System) -> None:
    r = system.se.run_now()
    assert r.converged, r.summary()
    assert not r.unobservable_buses
    physics = system.sim.physics
    assert physics is not None and physics.last is not None and physics.last.phases is not None
    truth_by = physics.last.phases.v_ln_kv
    bus_index = {b.name: b.index for b in system.config.network.buses}  # type: ignore[union-attr]
    truth = np.array([truth_by.get((bus_index[str(n["bus"])], str(n["phase"])), 0.0) for n in r.nodes])
    ok = r.nodes["observable"] & (truth > 0)
    base_kv = r.nodes["v_kv"] / r.nodes["v_pu"]
    err = np.abs(r.nodes["v_kv"][ok] - truth[ok]) / base_kv[ok]
    print(f"\n{r.summary()}\nIEEE 123 |V| error vs the simulator's three-phase flow: max {err.max():.5f} pu, "
          f"mean {err.mean():.5f} pu over {ok.sum()} nodes; bad data {[b.measurement for b in r.bad_data]}")
    assert r.telemetered > 500
    assert err.mean() < 0.002
    assert err.max() < 0.01
