"""The OMS follows the network: connectivity rebuilt after a reconfiguration (FLISR: section switches opened, a
normally-open tie closed) or a model replacement, with the predictor's state carried over by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.config import OperatorConfig, Role
from models.network import NetworkModel
from models.sample_network import build_sample_network
from oms.connectivity import Connectivity, build_connectivity, plan_rebuild
from oms.events import EventKind, OmsEvent
from oms.prediction import OutagePredictor, PredictionState, SloState
from scada.rtdb import Rtdb
from scada.topology_service import TopologyService, UpdateCause
from tests.support import IEEE123, requires_reference_feeders, sample_network_config

T0 = 1_790_000_000_000
ISOLATE = {"F1-RMU06-LBS2": True, "F1-RMU07-LBS1": True}  # fault on cable F1-C07: open both its ends
TIE = {"F1-RMU08-LBS2": False}  # close the F1-F2 normally-open point: F2 picks up F1-RMU07/08
TRANSFERRED = ("F1-RMU07", "F1-RMU08")
OPERATOR = OperatorConfig("alice", Role.OPERATOR, "t")


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return build_sample_network()


@pytest.fixture(scope="module")
def normal(model: NetworkModel) -> Connectivity:
    return build_connectivity(model)


def rebuilt(conn: Connectivity, model: NetworkModel, changes: dict[str, bool]) -> Connectivity:
    plan = plan_rebuild(conn, model, changes)
    assert plan.needed
    return build_connectivity(model, plan.switch_open)


def meters_below(conn: Connectivity, device: str) -> list[str]:
    loads = conn.downstream_loads(conn.device(device).index)
    return [conn.meter_ids[i] for i in np.flatnonzero(np.isin(conn.meter_load, loads))]


def meters_of_rmus(conn: Connectivity, prefixes: tuple[str, ...]) -> list[str]:
    loads = [i for i, n in enumerate(conn.load_names) if n.startswith(prefixes)]
    return [conn.meter_ids[i] for i in np.flatnonzero(np.isin(conn.meter_load, loads))]


def events(kind: EventKind, refs: list[str], t_ms: int, step_ms: int = 20) -> list[OmsEvent]:
    return [OmsEvent(t_ms + i * step_ms, kind, r) for i, r in enumerate(refs)]


def test_plan_rebuild_tells_feeding_changes_from_outage_evidence(model: NetworkModel, normal: Connectivity) -> None:
    assert not plan_rebuild(normal, model, {}).needed
    trip = plan_rebuild(normal, model, {"F1-CB": True, "F1-RMU08-TEE": True})
    assert not trip.needed and trip.switch_open == {}  # protective openings are evidence
    assert trip.evidence == ("F1-CB", "F1-RMU08-TEE") and trip.feeding_changes == ()
    tie = plan_rebuild(normal, model, TIE)
    assert tie.needed and tie.feeding_changes == ("F1-RMU08-LBS2",) and not tie.model_changed
    sections = plan_rebuild(normal, model, ISOLATE | {"F1-CB": True})
    assert set(sections.feeding_changes) == set(ISOLATE) and sections.evidence == ("F1-CB",)
    by_name = {sw.mrid: sw.name for sw in model.switches}
    built_open = {by_name[k] for k, v in sections.switch_open.items() if v}
    assert set(ISOLATE) <= built_open and "F1-CB" not in built_open  # the trip stays closed in the tree
    # the whole of F1 transferred to F2 through the tie, F1-CB opened as the new open point: not an outage
    transfer = plan_rebuild(normal, model, TIE | {"F1-CB": True})
    assert set(transfer.feeding_changes) == {"F1-CB", *TIE} and transfer.evidence == ()
    assert rebuilt(normal, model, TIE | {"F1-CB": True}).device("F2-CB").customers == \
        normal.device("F2-CB").customers + normal.device("F1-CB").customers
    flisr = plan_rebuild(normal, model, ISOLATE | TIE | {"F1-CB": True})  # F1-CB's side is dead: a trip
    assert flisr.evidence == ("F1-CB",) and set(flisr.feeding_changes) == set(ISOLATE | TIE)
    # live states as an array following model.switches (TopologySnapshot.switch_closed negated)
    live = np.array([sw.open for sw in model.switches])
    assert not plan_rebuild(normal, model, live).needed
    live[[i for i, sw in enumerate(model.switches) if sw.name == "SS-BC"]] = False  # bus coupler closed
    assert plan_rebuild(normal, model, live).feeding_changes == ("SS-BC",)
    # a breaker open when the connectivity was built (OMS started during an outage) closing is a feeding change,
    # and a first build takes the normal states as base: the tripped breaker is kept closed, as evidence
    first = plan_rebuild(None, model, {"F2-CB": True})
    assert first.needed and first.evidence == ("F2-CB",)
    started_open = build_connectivity(model, {"F2-CB": True})
    assert plan_rebuild(started_open, model, {"F2-CB": False}).feeding_changes == ("F2-CB",)


def test_reconfiguration_traces_the_transferred_meters_through_the_tie(model: NetworkModel,
                                                                       normal: Connectivity) -> None:
    moved = meters_of_rmus(normal, TRANSFERRED)
    assert moved and all("F1-CB" in {d.name for d in normal.chain(m)} for m in moved)
    conn = rebuilt(normal, model, ISOLATE | TIE)
    for m in moved:
        names = [d.name for d in conn.chain(m)]
        assert "F1-RMU08-LBS2" in names and "F2-CB" in names and "F1-CB" not in names, names
    assert conn.device("F2-CB").customers == normal.device("F2-CB").customers + len(moved)
    assert conn.device("F1-CB").customers == normal.device("F1-CB").customers - len(moved)


def test_pon_storm_after_reconfiguration_predicts_the_new_feeding_breaker(model: NetworkModel,
                                                                        normal: Connectivity) -> None:
    conn = rebuilt(normal, model, ISOLATE | TIE)
    storm = meters_below(conn, "F2-CB")[::3] + meters_below(conn, "F2-CB")[1::3]  # two thirds report
    pred = OutagePredictor(normal)
    report = pred.rebase(conn, reason="FLISR restoration", time_ms=T0)
    assert report.meters_kept == len(normal.meter_ids) and report.meters_dropped == 0
    pred.ingest(events(EventKind.PON, storm, T0 + 30_000, step_ms=2))
    predictions, slos = pred.analyse(T0 + 60_000)
    assert [(p.device, p.customers_affected) for p in predictions] == [("F2-CB", conn.device("F2-CB").customers)]
    assert slos == []
    # the same reports against the normal topology name another device (they span F1 and F2 there)
    stale = OutagePredictor(normal)
    stale.ingest(events(EventKind.PON, storm, T0 + 30_000, step_ms=2))
    assert [p.device for p in stale.analyse(T0 + 60_000)[0]] != ["F2-CB"]


def test_fuse_prediction_survives_a_flisr_sequence_with_its_id(model: NetworkModel, normal: Connectivity) -> None:
    pred = OutagePredictor(normal)
    fuse_meters = meters_below(normal, "F1-RMU08-TEE")
    pred.ingest(events(EventKind.PON, fuse_meters[: len(fuse_meters) // 2], T0))
    [p1] = pred.analyse(T0 + 10_000)[0]
    assert p1.device == "F1-RMU08-TEE" and p1.state is PredictionState.PREDICTED
    # FLISR step 1 (after a later cable fault on F1-C07): isolate, the fuse's RMU is dark meanwhile
    step1 = rebuilt(normal, model, ISOLATE)
    r1 = pred.rebase(step1, reason="FLISR isolation", time_ms=T0 + 20_000)
    assert r1.predictions_parked == (p1.id,) and r1.meters_dark == len(meters_of_rmus(normal, TRANSFERRED))
    [parked] = pred.predictions(active_only=True)
    assert parked.id == p1.id and parked.device == "F1-RMU08-TEE" and "de-energised by switching" in \
        parked.timeline[-1].note
    pred.analyse(T0 + 25_000)  # no evidence in the dark area: nothing new, the parked prediction stays
    assert [p.id for p in pred.predictions(active_only=True)] == [p1.id]
    # step 2: the tie closes; the fuse is still blown, its meters stay off, the rest of the dark area is back
    step2 = rebuilt(step1, model, TIE)
    r2 = pred.rebase(step2, reason="FLISR restoration", time_ms=T0 + 30_000)
    assert r2.predictions_kept == (p1.id,) and r2.predictions_parked == () and r2.presumed_energised == 0
    [again] = pred.analyse(T0 + 40_000)[0]
    assert (again.id, again.device, again.state) == (p1.id, "F1-RMU08-TEE", PredictionState.PREDICTED)
    assert again.customers_affected == len(fuse_meters)
    # the fuse replaced: PRNs restore the same prediction
    pred.ingest(events(EventKind.PRN, fuse_meters[: len(fuse_meters) // 2], T0 + 50_000))
    [done] = pred.analyse(T0 + 60_000)[0]
    assert done.id == p1.id and done.state is PredictionState.RESTORED and done.customers_off == 0


def test_breaker_outage_through_a_flisr_sequence(model: NetworkModel, normal: Connectivity) -> None:
    pred = OutagePredictor(normal)
    f1 = meters_below(normal, "F1-CB")
    pred.ingest([OmsEvent(T0, EventKind.SCADA_OPEN, "F1-CB")] + events(EventKind.PON, f1[::2], T0 + 30_000, 5))
    [p1] = pred.analyse(T0 + 40_000)[0]
    assert (p1.device, p1.state) == ("F1-CB", PredictionState.CONFIRMED)
    plan = plan_rebuild(normal, model, ISOLATE | {"F1-CB": True})
    assert plan.evidence == ("F1-CB",)
    step1 = build_connectivity(model, plan.switch_open)
    r1 = pred.rebase(step1, reason="FLISR isolation", time_ms=T0 + 50_000)
    moved = meters_of_rmus(normal, TRANSFERRED)
    assert r1.predictions_recounted == (p1.id,) and r1.open_devices_dropped == ()
    assert pred.predictions(active_only=True)[0].customers_affected == len(f1) - len(moved)
    pred.ingest([OmsEvent(T0 + 60_000, EventKind.SCADA_CLOSE, "F1-CB")])  # upstream part restored
    step2 = rebuilt(step1, model, TIE)
    r2 = pred.rebase(step2, reason="FLISR restoration", time_ms=T0 + 70_000)
    assert r2.presumed_energised == len(set(f1[::2]) & set(moved))  # the transferred area is supplied again
    predictions, slos = pred.analyse(T0 + 80_000)
    assert [(p.id, p.state) for p in predictions] == [(p1.id, PredictionState.RESTORED)]
    assert pred.meters_off == 0 and slos == []


def test_model_replacement_drops_a_loads_meters_and_closes_a_vanished_device(model: NetworkModel,
                                                                              normal: Connectivity) -> None:
    load = normal.load_names.index(next(n for n in normal.load_names if n.startswith("F3-RMU05")))
    gone = [normal.meter_ids[m] for m in np.flatnonzero(normal.meter_load == load)]
    renamed = "F5-RMU07-TEE"  # a fuse the GIS update renames: to the OMS its device is gone
    new_model = dataclasses.replace(
        model, customers=tuple(c for c in model.customers if c.load != load),
        switches=tuple(dataclasses.replace(sw, name="F5-RMU07-FUSE") if sw.name == renamed else sw
                       for sw in model.switches))
    pred = OutagePredictor(normal)
    lone = meters_below(normal, "F2-RMU01-DT")[0]
    pred.ingest(events(EventKind.PON, gone[:3], T0) + events(EventKind.PON, meters_below(normal, renamed)[:10], T0)
                + events(EventKind.CALL, [lone], T0))
    predictions, slos = pred.analyse(T0 + 200_000)
    ids = {p.device: p.id for p in predictions}
    assert list(ids) == [renamed] and {s.meter for s in slos} == {lone, *gone[:3]}  # lone meters: SLOs
    plan = plan_rebuild(normal, new_model, np.array([sw.open for sw in new_model.switches]))
    assert plan.needed and plan.model_changed and plan.feeding_changes == ()
    report = pred.rebase(build_connectivity(new_model, plan.switch_open), reason="GIS update 42", time_ms=T0 + 1)
    assert report.meters_dropped == len(gone) and report.dropped_off == 3
    assert set(report.dropped_meters) == set(gone[:20]) and report.meters_added == 0
    assert report.predictions_closed == (ids[renamed],)
    assert set(report.slos_closed) == {s.id for s in slos if s.meter in gone}
    closed = next(p for p in pred.predictions() if p.id == ids[renamed])
    assert closed.state is PredictionState.CLOSED and closed.device == renamed
    assert "no longer in network model" in closed.timeline[-1].note and "GIS update 42" in closed.timeline[-1].note
    assert pred.meters_off == 10 + 1 and [s.meter for s in pred.slos(active_only=True)] == [lone]
    assert pred.predictions(active_only=True) == []
    assert {s.meter for s in pred.slos() if s.state is SloState.CLOSED} == set(gone[:3])
    # the renamed fuse's meters still report off: the next analysis predicts it under its new name
    predictions, _ = pred.analyse(T0 + 300_000)
    assert {p.device for p in predictions if p.state is PredictionState.PREDICTED} == {"F5-RMU07-FUSE"}


def test_meters_behind_a_new_open_point_close_their_slo(model: NetworkModel, normal: Connectivity) -> None:
    pred = OutagePredictor(normal)
    lone = meters_of_rmus(normal, ("F1-RMU08",))[0]
    pred.ingest(events(EventKind.PON, [lone], T0))
    [slo] = pred.analyse(T0 + 200_000)[1]
    report = pred.rebase(rebuilt(normal, model, ISOLATE), reason="isolation", time_ms=T0 + 210_000)
    assert report.slos_closed == (slo.id,)
    [closed] = pred.slos()
    assert closed.state is SloState.CLOSED and closed.meter == lone and "behind an open point" in \
        closed.timeline[-1].note
    assert pred.analyse(T0 + 400_000) == ([], [closed])  # a dark meter is no SLO


def test_rebase_carries_every_per_meter_state_array(normal: Connectivity) -> None:
    pred = OutagePredictor(normal)
    m, d = len(normal.meter_ids), normal.n_devices
    assert m != d
    per_meter = {k for k in dir(pred) if isinstance(getattr(pred, k, None), np.ndarray)
                 and getattr(pred, k).shape == (m,)}
    assert per_meter == set(OutagePredictor._METER_STATE)  # a new state array must be carried by rebase too


@requires_reference_feeders()
def test_ieee123_rebase_after_closing_a_tie() -> None:
    from models.cim import load_cim

    model = load_cim(IEEE123)
    conn = build_connectivity(model)
    normally_open = [sw.name for sw in model.switches if sw.open]
    assert normally_open
    plan = plan_rebuild(conn, model, {normally_open[0]: False})
    assert plan.needed and plan.feeding_changes == (normally_open[0],)
    pred = OutagePredictor(conn)
    report = pred.rebase(build_connectivity(model, plan.switch_open), reason="tie closed")
    assert report.meters_kept == len(conn.meter_ids) and report.meters_dropped == 0


def test_following_the_topology_service(tmp_path: Path) -> None:
    """The contract OmsService relies on: TopologyService updates (manual states of switches whose RTU is silent,
    then a model replacement) drive plan_rebuild/rebase from ``update.snapshot``."""
    config = sample_network_config(tmp_path)
    assert config.network is not None
    topology = TopologyService(Rtdb(config), config.network)
    snap, sub = topology.subscribe("oms-connectivity")
    try:
        plan = plan_rebuild(None, snap.model, ~snap.switch_closed)
        conn = build_connectivity(snap.model, plan.switch_open)
        pred = OutagePredictor(conn)
        moved = meters_of_rmus(conn, TRANSFERRED)
        pred.ingest(events(EventKind.PON, moved[:3], T0))
        for name, open_ in (ISOLATE | TIE).items():
            topology.set_manual_switch_state(name, not open_, OPERATOR, "FLISR test")
        reports = []
        while (update := sub.get(timeout_s=0.0)) is not None:
            plan = plan_rebuild(conn, update.snapshot.model, ~update.snapshot.switch_closed)
            if plan.needed:
                conn = build_connectivity(update.snapshot.model, plan.switch_open)
                reports.append(pred.rebase(conn, reason=f"topology v{update.version} ({update.cause.value})",
                                           time_ms=T0 + 1000))
        assert len(reports) == 3 and reports[-1].meters_dark == 0  # isolation, isolation, tie
        assert "F2-CB" in {d.name for d in conn.chain(moved[0])}
        assert pred.meters_off == 0 and reports[-1].presumed_energised == 3  # supplied again through the tie
        topology.replace_model(dataclasses.replace(config.network, customers=config.network.customers[10:]))
        update = sub.get(timeout_s=1.0)
        assert update is not None and update.cause is UpdateCause.MODEL
        plan = plan_rebuild(conn, update.snapshot.model, ~update.snapshot.switch_closed)
        assert plan.needed and plan.model_changed and plan.feeding_changes == ()
        new = build_connectivity(update.snapshot.model, plan.switch_open)
        assert "F2-CB" in {d.name for d in new.chain(moved[0])}  # the live switch states carried over
        assert pred.rebase(new, reason="model replaced").meters_dropped == 10
    finally:
        topology.unsubscribe(sub)
        topology.stop()
