"""The AMI head-end on live data: the sample station's simulators (grid physics) with the head-end service beside
them, sending EndDeviceEvents to a control centre's OMS over gRPC. A cable fault trips a feeder breaker -> last gasps
arrive through gRPC -> the OMS predicts the breaker (it does not see SCADA here: no adapters) -> the OMS pings the
meters that did not report through the head-end's HTTP endpoint -> dead -> confirmed -> the breaker closes ->
power-on events restore the outage -> pinging verifies the restoration (the silent meters are back too)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from support import free_port, sample_network_config

from dms.api.protos import oms_pb2 as pb
from dms.api.protos import oms_pb2_grpc as pb_grpc
from models.points import DoubleState
from oms import api_servicer
from oms.meter_ping import MeterPinger, PingVerdict, assess, ping_plan
from oms.outage_records import OutageRecordStore
from oms.prediction import Outcome, Prediction
from oms.service import OmsService
from rtu_sim.ami_headend import AmiOptions, meter_buses
from rtu_sim.ami_service import AmiHeadEndService
from rtu_sim.simulator import RtuSimulator
from scada.server import ControlCenter

VIEWER = (("authorization", "Bearer viewer-demo-token"),)
# 30 s last gasp +/- 10 s -> 2-4 s; no late events (they would come 30 s later, after the restoration)
OPTIONS = AmiOptions(time_scale=0.1, poll_s=0.2, late_share=0.0, duplicate_share=0.05)


@dataclass
class Live:
    sim: RtuSimulator
    center: ControlCenter
    oms: OmsService
    ami: AmiHeadEndService
    stub: Any


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    config = sample_network_config(tmp_path_factory.mktemp("ami"))
    sim = RtuSimulator(config, seed=5)
    assert sim.physics is not None
    center = ControlCenter(config, grpc_address="127.0.0.1:0", start_adapters=False)
    assert center.topology is not None
    store = OutageRecordStore(center.data_dir / "outages.sqlite")
    http_port = free_port()  # the head-end's meter-read endpoint, known to the OMS before either starts
    oms = OmsService(config, center.rtdb, center.topology, center.data_dir, store=store, period_s=0.5,
                     headend_url=f"http://127.0.0.1:{http_port}")
    center.add_grpc_registrar(lambda server: api_servicer.register(server, center.services, oms))
    ami: AmiHeadEndService | None = None
    channel = None
    sim.start()
    try:
        center.start()
        oms.start()
        ami = AmiHeadEndService(sim.physics.model, sim.physics, grpc_address=f"127.0.0.1:{center.grpc_port}",
                                token="operator-demo-token", http_port=http_port, seed=3, options=OPTIONS, retry_s=0.2)
        ami.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{center.grpc_port}")
        yield Live(sim, center, oms, ami, pb_grpc.OutageServiceStub(channel))
    finally:
        if channel is not None:
            channel.close()
        if ami is not None:
            ami.stop()
        oms.stop()
        center.stop()
        sim.stop()
        store.close()


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def _outage(live: Live, device: str) -> pb.Outage | None:
    reply = live.stub.ListOutages(pb.ListOutagesRequest(active_only=False), metadata=VIEWER, timeout=10)
    return next((o for o in reversed(reply.outages) if o.device == device and o.source != "slo"), None)


def _prediction(live: Live, device: str) -> Prediction:
    return next(p for p in reversed(live.oms.predictions()) if p.device == device)


def test_feeder_trip_predicted_from_live_last_gasps_confirmed_by_pings_and_restored(live: Live) -> None:
    model = live.sim.physics.model  # type: ignore[union-attr]
    f1 = {m for m, bus in meter_buses(model).items()
          if model.buses[bus].feeder_mrid == next(f.mrid for f in model.feeders if f.name == "F1")}
    silent = f1 & live.ami.headend.silent_meters
    assert len(f1) == 510 and silent
    _wait("the head-end's baseline", lambda: live.ami.headend.stats().polls >= 2)
    started = time.monotonic()

    fault = live.sim.place_fault("F1-C01")
    assert fault.tripped == ("F1-CB",)
    outage = _wait("the breaker predicted from last gasps sent over gRPC",
                   lambda: (o := _outage(live, "F1-CB")) is not None and o.pons >= len(f1) - len(silent) and o)
    predict_s = time.monotonic() - started
    assert outage.state in ("predicted", "confirmed")  # the OMS's pings may have confirmed it already
    assert outage.source == "ami" and outage.customers_affected == len(f1)
    stats = live.ami.stats()
    assert stats.sent >= 1 and stats.overflow == stats.rejected == 0
    # every reporter of F1 once (duplicates deduplicated), plus the silent ones the OMS's pings found dead; nothing
    # from other feeders
    off = {m for m, o in zip(live.oms.connectivity.meter_ids, live.oms.predictor.off_mask(), strict=True) if o}
    assert f1 - silent <= off <= f1
    assert live.oms.predictor.counts[Outcome.DUPLICATE] >= 1  # duplicates delivered and recognised

    # The OMS itself pings meters below the device that did not report (the silent ones): all dead -> confirmed.
    outage = _wait("confirmed by the OMS's own pings",
                   lambda: (o := _outage(live, "F1-CB")) and o.state == "confirmed" and o, 15)
    assert any("confirmed by meter ping" in line for line in outage.timeline)
    p = _prediction(live, "F1-CB")
    assert not p.scada_confirmed  # no SCADA in this centre: the pings confirmed it
    # the same check by hand through the head-end endpoint: the meters below that did not report read dead
    pinger = MeterPinger(live.ami.read_url, timeout_s=5)
    plan = ping_plan(live.oms.predictor, p, 6)
    assert plan and set(plan) <= silent and assess(pinger.read(plan).readings) is PingVerdict.ALL_DEAD

    # Restoration: the fault is cleared and the breaker closed in the field -> power-on events restore it; the
    # silent meters never send one: the OMS's checking pings find them energised and give them back.
    live.sim.clear_fault()
    live.sim.set_value("F1-CB.Pos", float(DoubleState.ON))
    restore_started = time.monotonic()
    outage = _wait("the outage restored", lambda: (o := _outage(live, "F1-CB")) and o.state == "restored" and o)
    restore_s = time.monotonic() - restore_started
    _wait("every meter back on (PRNs, then the checking pings)", lambda: live.oms.meters_off == 0, 15)
    result = pinger.read(sorted(silent)[:5])
    assert all(r.energised and r.power_on_count == 1 for r in result.readings)
    print(f"\nAMI live: F1-CB predicted {predict_s:.1f} s after the trip (30 s last gasp x {OPTIONS.time_scale}), "
          f"restored {restore_s:.1f} s after closing; {live.ami.stats().events_sent} events in "
          f"{live.ami.stats().sent} messages")
