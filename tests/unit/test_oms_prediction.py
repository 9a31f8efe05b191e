"""Outage prediction on the sample network: fuse, breaker trip, SLO, nested outage, storm, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from models.sample_network import build_sample_network
from oms.connectivity import Connectivity, DeviceKind, UnknownElementError, build_connectivity
from oms.errors import OmsError
from oms.events import EventKind, OmsEvent, read_events_csv, write_events_csv
from oms.prediction import OutagePredictor, Outcome, PredictionRules, PredictionState, SloState
from tests.support import IEEE123, requires_reference_feeders

T0 = 1_790_000_000_000  # event-time origin (UTC ms)


@pytest.fixture(scope="module")
def conn() -> Connectivity:
    return build_connectivity(build_sample_network())


def meters_of(conn: Connectivity, device: str) -> list[str]:
    loads = conn.downstream_loads(conn.device(device).index)
    return [conn.meter_ids[i] for i in np.flatnonzero(np.isin(conn.meter_load, loads))]


def pons(meters: list[str], t_ms: int = T0 + 30_000, step_ms: int = 50) -> list[OmsEvent]:
    return [OmsEvent(t_ms + i * step_ms, EventKind.PON, m) for i, m in enumerate(meters)]


def active(pred: OutagePredictor) -> dict[str, PredictionState]:
    return {p.device: p.state for p in pred.predictions(active_only=True)}


def test_connectivity_chain_of_a_customer(conn: Connectivity) -> None:
    chain = conn.chain(conn.meter_ids[0])  # first customer of F1-RMU01
    names = [d.name for d in chain]
    assert names[:2] == ["F1-RMU01-DT", "F1-RMU01-TEE"]
    assert names.index("F1-CB") < names.index("SS-INC1") < names.index("SS-GRID1") == len(names) - 1
    assert chain[1].kind is DeviceKind.FUSE and chain[1].protective
    assert conn.device("F1-CB").customers == 510 and conn.device("SS-GRID1").customers == 1226
    assert conn.device("SS-GRID1").customers + conn.device("SS-GRID2").customers == len(conn.meter_ids) == 2257
    with pytest.raises(UnknownElementError, match="no meter 'nope'"):
        conn.meter("nope")


def test_fuse_operation_with_partial_pons_predicts_the_fuse(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    fuse_meters = meters_of(conn, "F1-RMU03-TEE")
    reporting = fuse_meters[: int(len(fuse_meters) * 0.4)]  # 40 %: some meters never send their last gasp
    pred.ingest(pons(reporting))
    predictions, slos = pred.analyse()
    assert [(p.device, p.state) for p in predictions] == [("F1-RMU03-TEE", PredictionState.PREDICTED)]
    p = predictions[0]
    assert p.device_kind == "fuse" and p.feeder == "F1"
    assert p.customers_affected == len(fuse_meters) and p.pons == len(reporting)
    assert p.first_event_ms == T0 + 30_000 and p.last_event_ms == T0 + 30_000 + 50 * (len(reporting) - 1)
    assert slos == []


def test_few_fuses_on_a_feeder_do_not_make_a_breaker_outage(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    for k in (2, 4, 7):
        pred.ingest(pons(meters_of(conn, f"F1-RMU0{k}-TEE")))
    pred.analyse()
    assert active(pred) == {f"F1-RMU0{k}-TEE": PredictionState.PREDICTED for k in (2, 4, 7)}


def test_breaker_trip_confirmed_by_scada_and_closed(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    feeder = meters_of(conn, "F2-CB")
    pred.ingest(pons(feeder[: len(feeder) // 4]))  # early last gasps: a quarter of the feeder
    pred.ingest([OmsEvent(T0, EventKind.SCADA_OPEN, "F2-CB", "trip")])
    predictions, _ = pred.analyse()
    assert [(p.device, p.state, p.scada_confirmed) for p in predictions] == [
        ("F2-CB", PredictionState.CONFIRMED, True)]
    assert predictions[0].first_event_ms == T0 and predictions[0].customers_affected == 432
    pred.ingest([OmsEvent(T0 + 600_000, EventKind.SCADA_CLOSE, "F2-CB")])
    predictions, slos = pred.analyse()
    assert predictions[0].state is PredictionState.RESTORED and predictions[0].customers_off == 0
    assert pred.meters_off == 0 and pred.presumed_restored == len(feeder) // 4 and slos == []


def test_breakers_seen_tripping_are_separate_outages_not_one_upstream(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    for cb in ("F1-CB", "F2-CB", "F3-CB"):
        pred.ingest([OmsEvent(T0, EventKind.SCADA_OPEN, cb)])
        pred.ingest(pons(meters_of(conn, cb)))
    pred.analyse()
    assert active(pred) == {cb: PredictionState.CONFIRMED for cb in ("F1-CB", "F2-CB", "F3-CB")}


def test_single_light_out_is_not_a_device_outage(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    dt_meters = meters_of(conn, "F2-RMU02-TEE")
    pred.ingest([OmsEvent(T0, EventKind.PON, dt_meters[3]),
                 OmsEvent(T0 + 150_000, EventKind.CALL, dt_meters[3], "no supply, neighbours have power")])
    predictions, slos = pred.analyse()
    assert predictions == []
    assert [(s.meter, s.dt, s.state, s.pons, s.calls) for s in slos] == [
        (dt_meters[3], "F2-RMU02-DT", SloState.OPEN, 1, 1)]
    pred.ingest([OmsEvent(T0 + 3_600_000, EventKind.PRN, dt_meters[3])])
    _, slos = pred.analyse()
    assert slos[0].state is SloState.RESTORED and [e.state for e in slos[0].timeline] == ["open", "restored"]


def test_slos_merge_into_a_device_outage_as_evidence_arrives(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    dt_meters = meters_of(conn, "F4-RMU01-TEE")
    pred.ingest(pons(dt_meters[:1]))
    _, slos = pred.analyse()
    assert slos == []  # not yet: a lone meter waits for its neighbours' reports (slo_hold_s)
    _, slos = pred.analyse(T0 + 30_000 + 120_000)
    assert len(slos) == 1 and slos[0].state is SloState.OPEN
    pred.ingest(pons(dt_meters[1:], T0 + 160_000))
    predictions, slos = pred.analyse()
    assert [p.device for p in predictions] == ["F4-RMU01-TEE"]
    assert slos[0].state is SloState.MERGED and slos[0].merged_into == predictions[0].id


def test_nested_outage_restored_in_two_steps(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    feeder = meters_of(conn, "F5-CB")
    nested = set(meters_of(conn, "F5-RMU03-TEE"))
    pred.ingest(pons(feeder, step_ms=10))
    pred.analyse()
    assert active(pred) == {"F5-CB": PredictionState.PREDICTED}
    # Step 1: the breaker recloses; the fuse of RMU03 stays blown.
    pred.ingest([OmsEvent(T0 + 1_800_000, EventKind.PRN, m) for m in feeder if m not in nested])
    predictions, _ = pred.analyse()
    by_device = {p.device: p for p in predictions}
    breaker, fuse = by_device["F5-CB"], by_device["F5-RMU03-TEE"]
    assert breaker.state is PredictionState.RESTORED and breaker.customers_off == len(nested)
    assert breaker.prns == len(feeder) - len(nested)
    assert fuse.state is PredictionState.PREDICTED and fuse.first_event_ms <= T0 + 30_000 + 10 * len(feeder)
    # Step 2: the fuse is replaced.
    pred.ingest([OmsEvent(T0 + 5_400_000, EventKind.PRN, m) for m in nested])
    predictions, slos = pred.analyse()
    assert {p.device: (p.state, p.customers_off) for p in predictions} == {
        "F5-CB": (PredictionState.RESTORED, len(nested)), "F5-RMU03-TEE": (PredictionState.RESTORED, 0)}
    assert active(pred) == {} and slos == [] and pred.meters_off == 0


def test_storm_burst_collapses_into_the_substation_outage(conn: Connectivity) -> None:
    rng = np.random.default_rng(6)
    pred = OutagePredictor(conn)
    area = meters_of(conn, "SS-GRID1")
    reporting = [m for m in area if rng.random() < 0.85]
    events = [OmsEvent(T0 + 30_000 + int(rng.integers(0, 30_000)), EventKind.PON, m) for m in reporting]
    events += [OmsEvent(T0 + 31_000 + int(rng.integers(0, 30_000)), EventKind.PON, m)  # duplicates
               for m in rng.choice(reporting, 400)]
    events += [OmsEvent(T0 + 60_000 + int(rng.integers(0, 60_000)), EventKind.CALL, m, "no power")
               for m in rng.choice(area, 200, replace=False)]
    order = rng.permutation(len(events))
    first_fuse = meters_of(conn, "F2-RMU05-TEE")  # its meters report first: a fuse prediction, later absorbed
    pred.ingest(pons(first_fuse, T0 + 20_000, 1))
    pred.analyse()
    assert active(pred) == {"F2-RMU05-TEE": PredictionState.PREDICTED}
    for chunk in np.array_split(order, 10):
        pred.ingest([events[i] for i in chunk])
        pred.analyse()
    predictions, slos = pred.analyse()
    assert active(pred) == {"SS-INC1": PredictionState.PREDICTED}
    top = next(p for p in predictions if p.device == "SS-INC1")
    assert top.customers_affected == 1226 and top.feeder == "" and top.calls > 0
    by_id = {p.id: p for p in predictions}
    merged = next(p for p in predictions if p.device == "F2-RMU05-TEE")
    while merged.merged_into:  # fuse -> feeder breaker -> incomer, as the evidence grew
        merged = by_id[merged.merged_into]
    assert merged is top and len(predictions) <= 12
    assert slos == [] and pred.counts[Outcome.DUPLICATE] >= 400  # no flood of would-be SLOs either


def test_bad_input_has_clear_outcomes_and_nothing_is_lost(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    m = meters_of(conn, "F6-RMU02-TEE")
    events = [
        OmsEvent(T0, EventKind.PON, "999999999999"),  # unknown meter
        OmsEvent(T0, EventKind.SCADA_OPEN, "NO-SUCH-CB"),  # unknown switch
        OmsEvent(T0 + 1_000, EventKind.PON, m[0]),
        OmsEvent(T0 + 2_000, EventKind.PON, m[0]),  # duplicate
        OmsEvent(T0 + 5_000, EventKind.PRN, m[1]),  # PRN stamped before its PON: skewed meter clock
        OmsEvent(T0 + 9_000, EventKind.PON, m[1]),
        OmsEvent(T0 + 3_000, EventKind.PRN, m[2]),  # restoration of a meter that never went off
        # a meter clock hours ahead: re-stamped with the head-end receipt time
        OmsEvent(T0 + 3 * 3_600_000, EventKind.PON, m[3], received_ms=T0 + 4_000),
    ]
    report = pred.ingest(events)
    assert report.total == len(events) == sum(report.counts.values())
    assert report.counts[Outcome.UNKNOWN] == 2 and set(report.unknown_refs) == {"999999999999", "NO-SUCH-CB"}
    assert report.counts[Outcome.DUPLICATE] == 1
    # The early PRN of m[1] is held as "without PON" until its PON pairs with it; m[2]'s stays unpaired.
    assert report.counts[Outcome.PRN_BEFORE_PON] == 1 and report.counts[Outcome.PRN_WITHOUT_PON] == 2
    assert report.counts[Outcome.APPLIED] == 2 and report.clock_corrected == 1
    assert len(pred.not_applied) == len(events) - 2
    # Out of order across batches: a PRN stamped before the PON already applied.
    late = pred.ingest([OmsEvent(T0, EventKind.PRN, m[0])])
    assert late.counts[Outcome.PRN_BEFORE_PON] == 1
    _, slos = pred.analyse(T0 + 200_000)
    assert [(s.meter, s.first_event_ms) for s in slos] == [(m[3], T0 + 4_000)]  # only the re-stamped meter is off
    assert pred.meters_off == 1


def test_rules_are_validated() -> None:
    with pytest.raises(OmsError, match="min_share must be within 0..1"):
        PredictionRules(min_share=1.5)
    with pytest.raises(OmsError, match="min_meters"):
        PredictionRules(min_meters=0)


def test_events_csv_round_trip_and_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    events = [OmsEvent(T0, EventKind.PON, "170011010001"), OmsEvent(T0 + 1, EventKind.CALL, "1", "dark, x", T0 + 9)]
    path = write_events_csv(tmp_path / "ev.csv", events)
    assert read_events_csv(path) == events
    bad = tmp_path / "bad.csv"
    bad.write_text("time,kind,id\n2026-11-27T03:10:00Z,pon,1\n2026-11-27T03:10:00Z,blink,2\n")
    with pytest.raises(OmsError, match=r"bad.csv:3: unknown kind 'blink'"):
        read_events_csv(bad)
    bad.write_text("time,kind,id\nyesterday,pon,1\n")
    with pytest.raises(OmsError, match=r"bad.csv:2: time 'yesterday'"):
        read_events_csv(bad)


@requires_reference_feeders()
def test_ieee123_synthetic_meters_predict_at_switches() -> None:
    from models.cim import load_cim

    conn = build_connectivity(load_cim(IEEE123))
    assert len(conn.meter_ids) == 91 and all("-" in m for m in conn.meter_ids)
    switch = max((d for d in conn.devices if d.kind is DeviceKind.SWITCH and d.customers < 40),
                 key=lambda d: d.customers)
    assert switch.predictable  # the published feeder has no protective switch
    pred = OutagePredictor(conn)
    pred.ingest(pons(meters_of(conn, switch.name)))
    predictions, slos = pred.analyse()
    assert [p.device for p in predictions] == [switch.name] and slos == []


def test_fuse_then_breaker_then_step_restoration_reactivates_the_fuse(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    nested = meters_of(conn, "F6-RMU04-TEE")
    pred.ingest(pons(nested))
    pred.analyse()
    feeder = meters_of(conn, "F6-CB")
    pred.ingest([OmsEvent(T0 + 600_000, EventKind.SCADA_OPEN, "F6-CB")])
    pred.ingest(pons([m for m in feeder if m not in nested], T0 + 630_000, 1))
    pred.analyse()
    fuse = next(p for p in pred.predictions() if p.device == "F6-RMU04-TEE")
    assert active(pred) == {"F6-CB": PredictionState.CONFIRMED} and fuse.state is PredictionState.MERGED
    pred.ingest([OmsEvent(T0 + 1_800_000, EventKind.PRN, m) for m in feeder if m not in set(nested)])
    pred.ingest([OmsEvent(T0 + 1_800_000, EventKind.SCADA_CLOSE, "F6-CB")])
    pred.analyse()
    fuse = next(p for p in pred.predictions() if p.device == "F6-RMU04-TEE")
    assert [e.state for e in fuse.timeline] == ["predicted", "merged", "predicted"]
    assert fuse.first_event_ms == T0 + 30_000 and active(pred) == {"F6-RMU04-TEE": PredictionState.PREDICTED}
