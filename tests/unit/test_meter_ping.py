"""Meter pings: the pinger against the head-end service's real HTTP endpoint, the ping plan's spread, and the
predictor's handling of ping results (confirm, dissolve, verify a restoration)."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from models.network import NetworkModel
from models.sample_network import build_sample_network
from oms.connectivity import Connectivity, build_connectivity
from oms.events import EventKind, OmsEvent
from oms.meter_ping import (
    MeterPinger,
    MeterPingError,
    MeterRead,
    PingPolicy,
    PingVerdict,
    assess,
    ping_events,
    ping_plan,
)
from oms.prediction import OutagePredictor, Outcome, PredictionState
from rtu_sim.ami_headend import AmiOptions, meter_buses
from rtu_sim.ami_service import MAX_METERS_PER_READ, AmiHeadEndService

T0 = 1_790_000_000_000
FUSE = "F1-RMU03-TEE"


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return build_sample_network()


@pytest.fixture(scope="module")
def conn(model: NetworkModel) -> Connectivity:
    return build_connectivity(model)


def meters_of(conn: Connectivity, device: str) -> list[str]:
    loads = conn.downstream_loads(conn.device(device).index)
    return [conn.meter_ids[i] for i in np.flatnonzero(np.isin(conn.meter_load, loads))]


class Supply:
    """Energised buses the test controls (the head-end's supply callable)."""

    def __init__(self, n: int) -> None:
        self.mask = np.ones(n, dtype=bool)

    def __call__(self) -> np.ndarray:
        return self.mask.copy()


@pytest.fixture
def service(model: NetworkModel) -> Iterator[tuple[AmiHeadEndService, Supply]]:
    supply = Supply(len(model.buses))
    messages: list[dict[str, Any]] = []
    svc = AmiHeadEndService(model, supply, sink=messages.append, http_port=0,
                            options=AmiOptions(time_scale=0.01, poll_s=0.05))
    svc.start()
    try:
        yield svc, supply
    finally:
        svc.stop()
    assert not svc.headend.running


def test_pinger_reads_dead_live_and_unknown_meters(model: NetworkModel, conn: Connectivity,
                                                   service: tuple[AmiHeadEndService, Supply]) -> None:
    svc, supply = service
    buses = meter_buses(model)
    dead, live = meters_of(conn, FUSE)[0], meters_of(conn, "F2-CB")[0]
    supply.mask[buses[dead]] = False
    result = MeterPinger(svc.read_url, timeout_s=5).read([dead, live, "nope"])
    assert result.source == "AMI-HE" and result.unknown == ("nope",)
    by_meter = {r.meter: r for r in result.readings}
    assert by_meter[dead].energised is False and by_meter[dead].voltage_v == 0.0
    assert by_meter[live].energised is True and 200 < by_meter[live].voltage_v < 260  # 400 V network, L-N
    assert all(r.time_ms > T0 and r.power_on_count == 0 for r in result.readings)
    assert assess(result.readings) is PingVerdict.MIXED
    assert svc.stats().meter_reads == 2
    with urllib.request.urlopen(svc.read_url.replace("/meter-readings", "/health"), timeout=5) as r:
        assert json.loads(r.read())["meters"] == len(buses)


def test_pinger_errors_name_the_head_end_and_the_problem(service: tuple[AmiHeadEndService, Supply]) -> None:
    svc, _ = service
    with pytest.raises(MeterPingError, match=rf"head-end {svc.read_url}: HTTP 400 .*at most {MAX_METERS_PER_READ}"):
        MeterPinger(svc.read_url).read(["x"] * (MAX_METERS_PER_READ + 1))
    wrong = svc.read_url.replace("/meter-readings", "/readings")
    with pytest.raises(MeterPingError, match=r"HTTP 404 .*no resource '/readings'"):
        MeterPinger(wrong).read(["x"])
    request = urllib.request.Request(svc.read_url, data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError, match="400"):
        urllib.request.urlopen(request, timeout=5)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MeterPingError, match=rf"head-end http://127.0.0.1:{port}/meter-readings: unreachable"):
        MeterPinger(f"http://127.0.0.1:{port}/meter-readings", timeout_s=2).read(["x"])
    with pytest.raises(MeterPingError, match="not an http"):
        MeterPinger("ftp://x")


def test_ping_plan_spreads_over_branches_and_skips_reported_meters(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    f1 = meters_of(conn, "F1-CB")
    reported = f1[::2]  # every other meter of the feeder
    pred.ingest([OmsEvent(T0 + i, EventKind.PON, m) for i, m in enumerate(reported)])
    predictions, _ = pred.analyse()
    (p,) = [p for p in predictions if p.state is PredictionState.PREDICTED]
    plan = ping_plan(pred, p, 8)
    assert len(plan) == 8 == len(set(plan)) and not set(plan) & set(reported) and set(plan) <= set(f1)
    dts = {conn.chain(m)[0].name for m in plan}
    assert len(dts) == 8  # F1 has 8 DTs: one meter from each before a second one from any
    assert ping_plan(pred, p, 0) == []


def _reads(meters: list[str], energised: bool, t_ms: int) -> list[MeterRead]:
    return [MeterRead(m, energised, 230.0 if energised else 0.0, t_ms, 0) for m in meters]


def test_dead_pings_confirm_a_predicted_fuse(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    fuse = meters_of(conn, FUSE)
    reported = fuse[: len(fuse) // 2]
    pred.ingest([OmsEvent(T0 + i, EventKind.PON, m) for i, m in enumerate(reported)])
    (p,) = pred.analyse()[0]
    assert (p.device, p.state) == (FUSE, PredictionState.PREDICTED)
    plan = ping_plan(pred, p, 4)
    events = ping_events(_reads(plan, False, T0 + 60_000), T0 + 60_000)
    assert {e.kind for e in events} == {EventKind.PING_OFF} and assess(_reads(plan, False, 0)) is PingVerdict.ALL_DEAD
    report = pred.ingest(events)
    assert report.counts[Outcome.APPLIED] == 4
    assert pred.ingest(events).counts[Outcome.DUPLICATE] == 4  # the same reads again change nothing
    (p,) = pred.analyse(T0 + 61_000)[0]
    assert p.state is PredictionState.CONFIRMED and not p.scada_confirmed
    assert p.timeline[-1].note.startswith("confirmed by meter ping: 4 meters below read dead")
    assert pred.meters_off == len(reported) + 4  # the pinged meters count as off


def test_energised_pings_dissolve_a_wrong_prediction(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    f1 = meters_of(conn, "F1-CB")
    reported = f1[::3]  # a third of the feeder, spread: predicts the breaker
    pred.ingest([OmsEvent(T0 + i, EventKind.PON, m) for i, m in enumerate(reported)])
    (p,) = [p for p in pred.analyse()[0] if p.state is PredictionState.PREDICTED]
    assert p.device == "F1-CB"
    plan = ping_plan(pred, p, 6)
    reads = _reads(plan, True, T0 + 60_000)
    assert assess(reads) is PingVerdict.MOSTLY_ENERGISED
    pred.ingest(ping_events(reads, T0 + 60_000))
    active = {q.device for q in pred.analyse(T0 + 61_000)[0] if q.state in (PredictionState.PREDICTED,
                                                                             PredictionState.CONFIRMED)}
    assert "F1-CB" not in active  # the breaker is not out: the evidence points lower (or at single lights out)


def test_pings_after_a_restoration_verify_it(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    fuse = meters_of(conn, FUSE)
    silent = fuse[::5]  # never sent a last gasp
    pred.ingest([OmsEvent(T0 + i, EventKind.PON, m) for i, m in enumerate(fuse) if m not in silent])
    pred.analyse()
    no_prn = [m for m in fuse if m not in silent][-3:]  # restoration: PRNs from all but three meters
    pred.ingest([OmsEvent(T0 + 600_000 + i, EventKind.PRN, m) for i, m in enumerate(fuse)
                 if m not in silent and m not in no_prn])
    (p,) = pred.analyse(T0 + 600_500)[0]
    assert p.state is PredictionState.RESTORED
    plan = ping_plan(pred, p, len(no_prn) + 3)
    assert plan[:len(no_prn)] == sorted(no_prn, key=fuse.index)  # the meters still believed off come first
    assert set(plan[len(no_prn):]) <= set(fuse) - set(no_prn)
    # the head-end says: the first meter without PRN is back after all, the others are still dead, and one of the
    # silent meters believed restored is dead too (a nested outage / SLO behind the fuse)
    dead_silent = next(m for m in plan[len(no_prn):] if m in silent) if set(plan) & set(silent) else silent[0]
    reads = _reads(no_prn[:1], True, T0 + 601_000) + _reads(no_prn[1:] + [dead_silent], False, T0 + 601_000)
    report = pred.ingest(ping_events(reads, T0 + 601_000))
    assert report.counts[Outcome.APPLIED] == len(reads)
    assert pred.meters_off == len(no_prn)  # -1 back, +1 silent one found dead
    assert not pred.off_mask()[conn.meter_index[no_prn[0]]] and pred.off_mask()[conn.meter_index[dead_silent]]


def test_ping_policy_pings_each_outage_once_and_retries_a_failed_read(
        conn: Connectivity, service: tuple[AmiHeadEndService, Supply]) -> None:
    svc, _ = service
    pred = OutagePredictor(conn)
    fuse = meters_of(conn, FUSE)
    pred.ingest([OmsEvent(T0 + i, EventKind.PON, m) for i, m in enumerate(fuse[: len(fuse) // 2])])
    (p,) = pred.analyse()[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}/meter-readings"
    clock = [0.0]
    policy = PingPolicy(MeterPinger(dead_url, timeout_s=2), meters_per_outage=3, retry_s=30,
                        monotonic=lambda: clock[0])
    plans = policy.plan(pred, pred.predictions())
    assert list(plans) == [(p.id, PredictionState.PREDICTED)] and len(plans[(p.id, p.state)]) == 3
    assert policy.read(plans, T0 + 60_000) == [] and policy.failures == 1  # head-end down: nothing, counted
    assert policy.plan(pred, pred.predictions()) == {}  # not again before retry_s
    clock[0] = 31.0
    policy.pinger = MeterPinger(svc.read_url)
    plans = policy.plan(pred, pred.predictions())
    events = policy.read(plans, T0 + 90_000)
    assert [e.kind for e in events] == [EventKind.PING_ON] * 3  # the test supply keeps every bus energised
    assert policy.plan(pred, pred.predictions()) == {}
