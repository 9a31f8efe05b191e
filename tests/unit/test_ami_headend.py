"""AMI head-end simulator on the sample network: last gasps for a tripped feeder, restorations, meter reads."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from models.network import NetworkModel
from models.sample_network import build_sample_network
from oms.end_device_events import parse_message, to_oms_events
from oms.events import EventKind, OmsEvent
from rtu_sim.ami_headend import AmiError, AmiHeadEnd, AmiOptions, PhysicsRead, meter_buses, options_from_mapping
from rtu_sim.physics import GridPhysics

FAST = AmiOptions(time_scale=0.01, poll_s=0.05, late_extra_s=100.0, duplicate_share=0.05, max_batch=100)


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return build_sample_network()


class Collector:
    """The sink: parses every message through the OMS side, as the OMS ingest would."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        self.events: list[OmsEvent] = []

    def __call__(self, message: dict[str, Any]) -> None:
        events = to_oms_events(parse_message(message))
        with self.lock:
            self.messages.append(message)
            self.events.extend(events)

    def meters(self, kind: EventKind) -> Counter[str]:
        with self.lock:
            return Counter(e.ref for e in self.events if e.kind is kind)


def _wait(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _feeder_meters(model: NetworkModel, feeder: str) -> set[str]:
    mrid = next(f.mrid for f in model.feeders if f.name == feeder)
    return {m for m, bus in meter_buses(model).items() if model.buses[bus].feeder_mrid == mrid}


def test_trip_sends_last_gasps_for_the_feeder_and_restoration_sends_power_on(model: NetworkModel) -> None:
    physics = GridPhysics(model, noise_pct=0)
    physics.solve()
    sink = Collector()
    ami = AmiHeadEnd(model, physics, sink, seed=3, options=FAST)
    f1 = _feeder_meters(model, "F1")
    expected = f1 - ami.silent_meters
    assert len(f1) == 510 and 0 < len(f1 & ami.silent_meters) < 100  # ~10 % never report
    ami.start()
    try:
        _wait(lambda: ami.stats().polls >= 2)
        result, _ = physics.place_fault("F1-C01")
        assert result.tripped == ("F1-CB",)
        physics.solve()  # the physics driver re-solves after every switching
        _wait(lambda: set(sink.meters(EventKind.PON)) == expected)
        pons = sink.meters(EventKind.PON)
        assert any(n > 1 for n in pons.values())  # duplicates delivered
        assert max(len(m["Payload"]["EndDeviceEvents"]["EndDeviceEvent"]) for m in sink.messages) <= FAST.max_batch
        with sink.lock:
            first = [e for e in sink.events if e.kind is EventKind.PON]
        assert all(e.received_ms >= e.time_ms for e in first)
        # A late share arrives about late_extra_s * time_scale = 1 s after the bulk.
        lag = sorted(e.received_ms - e.time_ms for e in first)
        assert lag[-1] - lag[0] > 500

        dead = next(iter(expected))
        reading = ami.read(dead)
        assert not reading.energised and reading.voltage_v == 0
        live = next(iter(_feeder_meters(model, "F2")))
        reading = ami.read(live)
        assert reading.energised and 200 < reading.voltage_v < 270  # 433 V LL -> 250 V LN

        physics.clear_fault("F1-C01")
        physics.set_switch("F1-CB", True)
        physics.solve()
        _wait(lambda: set(sink.meters(EventKind.PRN)) == expected)
        assert ami.read(dead).energised
        with sink.lock:
            counts = {json_event["Assets"]["mRID"]: json_event["EndDeviceEventDetails"][0]["value"]
                      for m in sink.messages for json_event in m["Payload"]["EndDeviceEvents"]["EndDeviceEvent"]
                      if json_event["EndDeviceEventType"]["ref"] == "3.26.0.216"}
        assert set(counts.values()) == {"1"}  # first power-on of each meter since the head-end started
    finally:
        ami.stop()
    assert not ami.running
    stats = ami.stats()
    assert stats.power_off_sent == sum(sink.meters(EventKind.PON).values()) and stats.sink_errors == 0
    assert set(sink.meters(EventKind.PON)) <= f1 and set(sink.meters(EventKind.PRN)) <= f1  # none for others


class Clock:
    def __init__(self) -> None:
        self.t = 1_795_000_000.0

    def __call__(self) -> float:
        return self.t


def test_momentary_interruption_is_suppressed_and_counts_follow_outages(model: NetworkModel) -> None:
    n = len(model.buses)
    alive = np.ones(n, dtype=bool)
    clock = Clock()
    sink = Collector()
    options = AmiOptions(never_report_share=0, late_share=0, duplicate_share=0, jitter_s=0)
    ami = AmiHeadEnd(model, lambda: alive.copy(), sink, options=options, clock=clock)
    meter = next(iter(_feeder_meters(model, "F4")))
    bus = meter_buses(model)[meter]
    assert ami.poll() == 0  # baseline
    alive[bus] = False
    clock.t += 1
    ami.poll()
    clock.t += 10
    alive[bus] = True
    ami.poll()  # back within the 30 s last-gasp delay: no power-off
    clock.t += 60
    assert ami.poll() == len([m for m, b in meter_buses(model).items() if b == bus])  # power-on only
    assert not sink.meters(EventKind.PON) and sink.meters(EventKind.PRN)[meter] == 1
    assert ami.stats().suppressed > 0
    alive[bus] = False
    clock.t += 1
    ami.poll()
    clock.t += 29.9
    ami.poll()
    assert not sink.meters(EventKind.PON)
    clock.t += 0.2
    ami.poll()
    assert sink.meters(EventKind.PON)[meter] == 1
    pon = next(e for m in sink.messages for e in m["Payload"]["EndDeviceEvents"]["EndDeviceEvent"]
               if e["Assets"]["mRID"] == meter and e["EndDeviceEventType"]["ref"] == "3.26.0.85")
    assert pon["EndDeviceEventDetails"] == [{"name": "PowerOffCount", "value": "2"}]
    assert ami.read(meter).energised is False
    assert ami.read(meter).time_ms == int(clock.t * 1000)


def test_models_without_usage_points_name_meters_by_load(model: NetworkModel) -> None:
    bare = dataclasses.replace(model, customers=())
    meters = meter_buses(bare)
    assert len(meters) == sum(ld.customer_count for ld in model.loads)
    load = model.loads[0]
    assert meters[f"{load.name}-1"] == meters[f"{load.name}-{load.customer_count}"] == load.bus
    ami = AmiHeadEnd(bare, lambda: {load.bus}, Collector())
    reading = ami.read(f"{load.name}-1")
    assert reading.energised and reading.voltage_v == pytest.approx(433 / 3 ** 0.5)


def test_sink_and_supply_failures_are_counted_not_fatal(model: NetworkModel) -> None:
    clock = Clock()
    calls = {"n": 0}

    def supply() -> set[int]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("scada link down")
        return set() if calls["n"] > 2 else set(range(len(model.buses)))

    def sink(_: dict[str, Any]) -> None:
        raise RuntimeError("OMS down")

    ami = AmiHeadEnd(model, supply, sink, options=AmiOptions(jitter_s=0, late_share=0), clock=clock)
    ami.poll()
    ami.poll()
    ami.poll()
    clock.t += 31
    assert ami.poll() == 0
    stats = ami.stats()
    assert stats.supply_errors == 1 and stats.sink_errors >= 1 and stats.power_off_sent == 0


def test_solve_mode_reads_switching_without_a_driver(model: NetworkModel) -> None:
    physics = GridPhysics(model, noise_pct=0)
    sink = Collector()
    options = dataclasses.replace(FAST, physics_read=PhysicsRead.SOLVE, never_report_share=0, late_share=0)
    ami = AmiHeadEnd(model, physics, sink, options=options)
    ami.poll()
    physics.set_switch("F6-CB", False)
    _wait(lambda: (ami.poll(), set(sink.meters(EventKind.PON)) == _feeder_meters(model, "F6"))[1])


def test_options_and_meters_are_validated(model: NetworkModel) -> None:
    with pytest.raises(AmiError, match=r"AmiOptions\.time_scale must be > 0"):
        AmiOptions(time_scale=0)
    with pytest.raises(AmiError, match=r"AmiOptions\.never_report_share must be in \[0, 1\]"):
        AmiOptions(never_report_share=1.5)
    with pytest.raises(AmiError, match="unknown AMI option"):
        options_from_mapping({"time_scal": 0.1})
    assert options_from_mapping({"physics_read": "solve"}).physics_read is PhysicsRead.SOLVE
    ami = AmiHeadEnd(model, lambda: (), Collector())
    with pytest.raises(AmiError, match="no meter '999'"):
        ami.read("999")
    ami.start()
    with pytest.raises(AmiError, match="already started"):
        ami.start()
    ami.stop()
    assert not ami.running
