"""Real-time state estimation on the sample station: simulators (IEC 104, Modbus, IEC 61850, DNP3) -> front ends ->
RTDB -> RealtimeEstimator -> gRPC. The estimate converges, its voltages match the simulator's own flow, a corrupted
current measurement is flagged QUESTIONABLE with an alarm and cleared again, and GetEstimate works over gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from support import sample_network_config, wait_for

from dms.api import se_servicer
from dms.api.protos import se_pb2 as pb
from dms.api.protos import se_pb2_grpc as pb_grpc
from dms.se.realtime import ALARM_PREFIX, RealtimeEstimator, RealtimeOptions
from models.config import StationConfig
from models.points import PointKind, Quality
from rtu_sim.simulator import RtuSimulator
from scada.server import ControlCenter
from scada.topology_service import UpdateCause

OPERATOR = (("authorization", "Bearer operator-demo-token"),)
CORRUPTED = "F1-CB.A.ph_A"


@dataclass
class Live:
    config: StationConfig
    sim: RtuSimulator
    center: ControlCenter
    se: RealtimeEstimator
    channel: grpc.Channel
    stub: pb_grpc.StateEstimationServiceStub


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("se_live")
    config = sample_network_config(folder)
    sim = RtuSimulator(config, seed=5)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    holder: dict[str, RealtimeEstimator] = {}
    center.add_grpc_registrar(lambda server: se_servicer.register(server, center.services, holder["se"]))
    sim.start()
    channel = None
    se = None
    try:
        assert center.topology is not None
        se = RealtimeEstimator.for_center(center, options=RealtimeOptions(period_s=120.0))
        holder["se"] = se
        center.start()
        analogs = [p.id for p in config.points if p.kind is PointKind.ANALOG and p.source.frontend != "calculated"]
        wait_for(lambda: not (center.rtdb.snapshot(analogs)["quality"] != 0).any(), 90, "all analogs good")
        se.start()
        wait_for(lambda: se.latest() is not None, 60, "the first estimate")
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        yield Live(config, sim, center, se, channel, pb_grpc.StateEstimationServiceStub(channel))
    finally:
        if channel is not None:
            channel.close()
        if se is not None:
            se.stop()
        center.stop()
        sim.stop()


def _voltage_error(live: Live) -> tuple[float, float]:
    r = live.se.latest()
    assert r is not None and r.converged, r.summary() if r else "no estimate"
    physics = live.sim.physics
    assert physics is not None and physics.last is not None
    bus_index = {b.name: b.index for b in live.config.network.buses}  # type: ignore[union-attr]
    truth = np.array([physics.last.bus_v_ln_kv[bus_index[str(b)]] for b in r.nodes["bus"]])
    ok = r.nodes["observable"] & (truth > 0)
    err_pu = np.abs(r.nodes["v_kv"][ok] - truth[ok]) / (r.nodes["v_kv"][ok] / r.nodes["v_pu"][ok])
    return float(err_pu.max()), float(err_pu.mean())


def test_the_live_estimate_converges_close_to_the_simulator_flow(live: Live) -> None:
    r = live.se.run_now()
    assert r.converged, r.summary()
    assert r.chi2_passed, r.summary()
    assert r.telemetered > 150
    assert not r.unobservable_buses
    assert not r.bad_data, r.bad_data
    worst, mean = _voltage_error(live)
    print(f"\n{r.summary()}\n|V| error vs the simulator's flow: max {worst:.5f} pu, mean {mean:.5f} pu")
    # The simulator runs a balanced pandapower flow with its own transformer model: agreement within 1 %.
    assert worst < 0.01
    assert np.isfinite(r.nodes["v_sigma_pu"]).all()
    est = live.se.load_estimates()
    assert est is not None and len(est[0]) == len(live.config.network.loads)  # type: ignore[union-attr]
    assert (est[0] >= 0).all()
    # Open ties carry no current: their points are listed as excluded, not used.
    assert any("LBS2" in point for point, _ in r.excluded)


def test_a_corrupted_current_is_flagged_questionable_with_an_alarm_and_cleared(live: Live) -> None:
    pid = live.center.rtdb.point_id(CORRUPTED)
    true_value = float(live.center.rtdb.snapshot([pid])["value"][0])
    live.sim.set_value(CORRUPTED, true_value * 3.0 + 50.0)
    try:
        wait_for(lambda: abs(live.center.rtdb.snapshot([pid])["value"][0] - true_value) > 40, 20,
                 "the corrupted value in the RTDB")
        r = live.se.run_now()
        names = [b.measurement for b in r.bad_data]
        assert CORRUPTED in names, r.summary()
        bad = next(b for b in r.bad_data if b.measurement == CORRUPTED)
        print(f"\nflagged {CORRUPTED}: reads {bad.value:.1f} A, estimate {bad.estimate:.1f} A, normalised residual "
              f"{bad.normalized_residual:.1f}")
        assert bad.normalized_residual > 3
        assert abs(bad.estimate - true_value) < 0.1 * true_value + 5
        wait_for(lambda: live.center.rtdb.snapshot([pid])["quality"][0] & Quality.QUESTIONABLE, 10,
                 "QUESTIONABLE on the corrupted point")
        key = "system:" + ALARM_PREFIX + CORRUPTED
        alarm = next(a for a in live.center.alarms.list() if a.key == key)
        assert CORRUPTED in alarm.text and "normalised residual" in alarm.text and alarm.cleared_ms is None
        listed = live.stub.ListBadData(pb.SeListBadDataRequest(), metadata=OPERATOR)
        assert CORRUPTED in listed.flagged_points
    finally:
        live.sim.set_value(CORRUPTED, true_value)  # reported at once; then the physics drives it again
        live.sim.release(CORRUPTED)
    wait_for(lambda: abs(live.center.rtdb.snapshot([pid])["value"][0] - true_value) < 0.2 * true_value + 5, 30,
             "the true value again")
    r = live.se.run_now()
    assert CORRUPTED not in [b.measurement for b in r.bad_data], r.summary()
    assert CORRUPTED not in live.se.flagged_points()
    wait_for(lambda: not live.center.rtdb.snapshot([pid])["quality"][0] & Quality.QUESTIONABLE, 10,
             "QUESTIONABLE cleared")
    key = "system:" + ALARM_PREFIX + CORRUPTED
    assert all(a.cleared_ms is not None for a in live.center.alarms.list(include_closed=True) if a.key == key)


def test_grpc_get_run_and_watch_estimates(live: Live) -> None:
    got = live.stub.GetEstimate(pb.SeGetEstimateRequest(include_branches=True), metadata=OPERATOR)
    assert got.converged and got.nodes and got.branches
    assert got.network == live.config.network.name  # type: ignore[union-attr]
    watch = live.stub.WatchEstimates(pb.SeWatchRequest(), metadata=OPERATOR, timeout=60)
    first = next(watch)
    assert first.converged
    ran = live.stub.RunEstimate(pb.SeRunEstimateRequest(), metadata=OPERATOR)
    assert ran.trigger == "request" and ran.converged
    nxt = next(watch)
    assert nxt.time_ms >= first.time_ms and nxt.trigger == "request"
    watch.cancel()
    with pytest.raises(grpc.RpcError) as err:
        live.stub.GetEstimate(pb.SeGetEstimateRequest())  # no token
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_topology_change_triggers_an_estimate(live: Live) -> None:
    before = live.se.runs
    assert live.center.topology is not None
    live.center.topology.republish(UpdateCause.MARKING)
    wait_for(lambda: live.se.runs > before, 60, "an estimate after the topology update")
    r = live.se.latest()
    assert r is not None and r.trigger == "topology"


def test_the_estimator_runs_in_a_study_on_edited_measurements_without_touching_real_time(live: Live) -> None:
    """A study takes the RTDB snapshot: the estimate there matches real time; a measurement the engineer edits to a
    wrong value is caught as bad data in the study only (the real point keeps its quality, no alarm)."""
    from dms.live_state import LiveStateSource
    from dms.study import EditKind, RunKind, StudyEdit, StudyManager
    from dms.study.runners import state_estimation_runner

    assert live.center.topology is not None
    source = LiveStateSource(live.config, live.center.rtdb, live.center.topology)
    manager = StudyManager(source.state, live.center.rtdb.snapshot,
                           point_ids={p.name: p.id for p in live.config.points})
    case = manager.open("what if F4-CB.A.ph_A were wrong", "engineer")
    clean = case.run(RunKind.STATE_ESTIMATION, "", state_estimation_runner(live.config))
    assert clean.ok and not clean.result.bad_data, clean.summary
    target = "F4-CB.A.ph_A"
    pid = live.center.rtdb.point_id(target)
    true_a = float(live.center.rtdb.snapshot([pid])["value"][0])
    case.edit(StudyEdit(EditKind.MEASUREMENT, target, true_a * 3.0))
    dirty = case.run(RunKind.STATE_ESTIMATION, "", state_estimation_runner(live.config))
    assert target in {b.measurement for b in dirty.result.bad_data}, dirty.summary
    row = live.center.rtdb.snapshot([pid])[0]
    assert not int(row["quality"]) & int(Quality.QUESTIONABLE)
    assert not any(a.key == ALARM_PREFIX + target for a in live.center.alarms.list())
