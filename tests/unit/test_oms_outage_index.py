"""Outages looked up by id in O(1) (``OutagePredictor.prediction``/``slo``, ``active_counts``) and the OMS's record
writes: the index follows every change of an outage (merged, revived, restored, closed by a rebase, new ones), and
one timeline change of a prediction is one transaction on the outage-record store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.network import NetworkModel
from models.sample_network import build_sample_network
from oms.connectivity import Connectivity, build_connectivity, plan_rebuild
from oms.events import EventKind, OmsEvent
from oms.outage_records import OutageRecordStore, RecordStage
from oms.prediction import OutagePredictor, PredictionState, SloState
from oms.service import EtrRules, OmsService, StormRules
from scada.rtdb import Rtdb
from scada.topology_service import TopologyService
from tests.support import sample_network_config

T0 = 1_790_000_000_000


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return build_sample_network()


@pytest.fixture(scope="module")
def conn(model: NetworkModel) -> Connectivity:
    return build_connectivity(model)


def meters_of(conn: Connectivity, device: str) -> list[str]:
    loads = conn.downstream_loads(conn.device(device).index)
    return [conn.meter_ids[i] for i in np.flatnonzero(np.isin(conn.meter_load, loads))]


def events(kind: EventKind, refs: list[str], t_ms: int, step_ms: int = 5) -> list[OmsEvent]:
    return [OmsEvent(t_ms + i * step_ms, kind, r) for i, r in enumerate(refs)]


def assert_index_matches_scan(pred: OutagePredictor) -> None:
    """The O(1) lookups answer what a scan of every outage answers (the reference the service used before)."""
    for p in pred.predictions():
        assert pred.prediction(p.id) == p, p.id
    for s in pred.slos():
        assert pred.slo(s.id) == s, s.id
    assert pred.active_counts == (len(pred.predictions(active_only=True)), len(pred.slos(active_only=True)))
    assert pred.prediction(f"P{len(pred.predictions()) + 1}") is None  # the next id: not made yet
    assert pred.slo(f"S{len(pred.slos()) + 1}") is None and pred.prediction("S1") is None


def test_lookup_by_id_follows_merge_revival_restoration_and_new_outages(conn: Connectivity) -> None:
    pred = OutagePredictor(conn)
    fuse = meters_of(conn, "F4-RMU01-TEE")
    rest = [m for m in meters_of(conn, "F4-CB") if m not in fuse]
    pred.ingest(events(EventKind.PON, fuse[:1], T0))
    pred.analyse(T0 + 200_000)  # a lone meter, held past slo_hold_s: a single light out
    assert_index_matches_scan(pred)
    [slo] = pred.slos()
    assert slo.state is SloState.OPEN and pred.active_counts == (0, 1)

    pred.ingest(events(EventKind.PON, fuse[1:], T0 + 210_000))
    pred.analyse(T0 + 220_000)
    assert_index_matches_scan(pred)
    [fuse_outage] = pred.predictions()  # new: found by its id
    assert pred.prediction(fuse_outage.id) == fuse_outage and fuse_outage.state is PredictionState.PREDICTED
    got = pred.slo(slo.id)  # the SLO is part of the fuse outage now, not the open one it was
    assert got is not None and (got.state, got.merged_into) == (SloState.MERGED, fuse_outage.id)
    assert pred.active_counts == (1, 0)

    pred.ingest(events(EventKind.PON, rest, T0 + 230_000))
    pred.analyse(T0 + 240_000)
    assert_index_matches_scan(pred)
    breaker = next(p for p in pred.predictions() if p.device == "F4-CB")
    merged = pred.prediction(fuse_outage.id)
    assert merged is not None and (merged.state, merged.merged_into) == (PredictionState.MERGED, breaker.id)
    assert pred.active_counts == (1, 0)

    pred.ingest(events(EventKind.PRN, rest, T0 + 600_000))  # the breaker recloses, the fuse stays blown
    pred.analyse(T0 + 610_000)
    assert_index_matches_scan(pred)
    again, back = pred.prediction(fuse_outage.id), pred.prediction(breaker.id)
    assert again is not None and (again.state, again.merged_into) == (PredictionState.PREDICTED, "")
    assert back is not None and (back.state, back.customers_off) == (PredictionState.RESTORED, len(fuse))
    assert pred.active_counts == (1, 0)

    pred.ingest(events(EventKind.PRN, fuse, T0 + 900_000))
    pred.analyse(T0 + 910_000)
    assert_index_matches_scan(pred)
    done = pred.prediction(fuse_outage.id)
    assert done is not None and done.state is PredictionState.RESTORED and pred.active_counts == (0, 0)


def test_lookup_by_id_follows_a_rebase_that_parks_and_closes(model: NetworkModel, conn: Connectivity) -> None:
    renamed = "F5-RMU07-TEE"  # the GIS update renames this fuse: to the OMS its device is gone
    new_model = dataclasses.replace(model, switches=tuple(
        dataclasses.replace(sw, name="F5-RMU07-FUSE") if sw.name == renamed else sw for sw in model.switches))
    pred = OutagePredictor(conn)
    pred.ingest(events(EventKind.PON, meters_of(conn, renamed)[:10], T0)
                + events(EventKind.PON, meters_of(conn, "F1-RMU08-TEE")[::2], T0))
    pred.analyse(T0 + 10_000)
    ids = {p.device: p.id for p in pred.predictions()}
    assert set(ids) == {renamed, "F1-RMU08-TEE"} and pred.active_counts == (2, 0)
    # FLISR isolates cable F1-C07: the fuse's RMU is dark, its prediction parked (active, device out of the tree)
    isolate = plan_rebuild(conn, model, {"F1-RMU06-LBS2": True, "F1-RMU07-LBS1": True})
    step = build_connectivity(model, isolate.switch_open)
    assert pred.rebase(step, reason="isolation", time_ms=T0 + 20_000).predictions_parked == (ids["F1-RMU08-TEE"],)
    assert_index_matches_scan(pred)
    assert pred.active_counts == (2, 0)
    # the model replaced: the renamed fuse's prediction closes (its device left the model)
    plan = plan_rebuild(step, new_model, np.array([sw.open for sw in new_model.switches]))
    report = pred.rebase(build_connectivity(new_model, plan.switch_open), reason="GIS update", time_ms=T0 + 30_000)
    assert report.predictions_closed == (ids[renamed],)
    assert_index_matches_scan(pred)
    closed = pred.prediction(ids[renamed])
    assert closed is not None and (closed.state, closed.device) == (PredictionState.CLOSED, renamed)
    assert pred.active_counts == (1, 0)
    pred.analyse(T0 + 40_000)  # its meters still report off: a new prediction under the new name
    assert_index_matches_scan(pred)
    fresh = [p for p in pred.predictions() if p.device == "F5-RMU07-FUSE"]
    assert len(fresh) == 1 and fresh[0].id not in ids.values() and pred.prediction(fresh[0].id) == fresh[0]


def test_service_etr_and_record_writes(tmp_path: Path) -> None:
    config = sample_network_config(tmp_path)
    assert config.network is not None
    rtdb = Rtdb(config)
    now = [T0 + 240_000]
    store = OutageRecordStore(tmp_path / "outages.sqlite")
    etr = EtrRules(dispatch_s=1800.0, storm_factor=3.0)
    oms = OmsService(config, rtdb, TopologyService(rtdb, config.network), tmp_path / "oms", store=store,
                     clock=lambda: now[0], etr=etr, storm=StormRules(active_outages=2))
    try:
        c = oms.connectivity
        fuse = meters_of(c, "F4-RMU01-TEE")
        rest = [m for m in meters_of(c, "F4-CB") if m not in fuse]

        def expected_etr(outage_id: str, factor: float) -> int:
            p = oms.predictor.prediction(outage_id)
            assert p is not None
            return int(p.first_event_ms + (etr.dispatch_s + oms.crews.repair.repair_s(p.device_kind)) * factor
                       * 1000)

        oms.submit(events(EventKind.PON, fuse, T0 + 100_000))
        oms.analyse()
        [p1] = oms.predictions()
        assert oms.estimated_restoration_ms(p1.id) == expected_etr(p1.id, 1.0)  # one outage: no storm
        assert store.get(oms.record_id(p1.id)).etr_ms == expected_etr(p1.id, 1.0)

        oms.submit(events(EventKind.PON, rest, T0 + 200_000))
        oms.analyse()
        p2 = next(p for p in oms.predictions() if p.device == "F4-CB")
        assert oms.predictor.prediction(p1.id).state is PredictionState.MERGED  # type: ignore[union-attr]
        assert not oms.storm()[0]  # one active outage (the merged one is not)
        assert oms.estimated_restoration_ms(p1.id) == expected_etr(p1.id, 1.0)  # found, merged: still answered
        rec1 = store.get(oms.record_id(p1.id))
        assert rec1.merged_into == oms.record_id(p2.id)

        # one timeline change of an existing prediction (SCADA confirms the breaker): one write, one transaction
        oms.submit([OmsEvent(T0 + 235_000, EventKind.SCADA_OPEN, "F4-CB")])
        trace: list[str] = []
        store.conn().set_trace_callback(trace.append)  # analyse runs on this thread: its connection
        oms.analyse()
        store.conn().set_trace_callback(None)
        assert oms.predictor.prediction(p2.id).state is PredictionState.CONFIRMED  # type: ignore[union-attr]
        writes = [s for s in trace if s.split()[0].upper() in ("INSERT", "UPDATE", "COMMIT")]
        assert [s.split()[0].upper() for s in writes] == ["UPDATE", "COMMIT"], trace
        rec2 = store.get(oms.record_id(p2.id))
        assert (rec2.stage, rec2.etr_ms) == (RecordStage.CONFIRMED, expected_etr(p2.id, 1.0))

        # a second outage elsewhere: two active, storm mode: every ETR stretches (O(1) active counts)
        oms.submit(events(EventKind.PON, meters_of(c, "F5-RMU07-TEE")[:10], T0 + 236_000))
        oms.analyse()
        p3 = next(p for p in oms.predictions() if p.device == "F5-RMU07-TEE")
        assert oms.storm()[0]
        assert oms.estimated_restoration_ms(p3.id) == expected_etr(p3.id, 3.0)
        assert oms.estimated_restoration_ms(p2.id) == expected_etr(p2.id, 3.0)
        assert store.get(oms.record_id(p3.id)).etr_ms == expected_etr(p3.id, 3.0)
        assert oms.estimated_restoration_ms("P99") == -1 and oms.estimated_restoration_ms("S1") == -1

        # the breaker back, the fuse still blown: the fuse's outage shows again, its record unfolds
        now[0] = T0 + 610_000
        oms.submit([OmsEvent(T0 + 600_000, EventKind.SCADA_CLOSE, "F4-CB")])
        oms.analyse()
        assert oms.predictor.prediction(p1.id).state is PredictionState.PREDICTED  # type: ignore[union-attr]
        rec1 = store.get(oms.record_id(p1.id))
        assert rec1.merged_into == 0 and rec1.stage is RecordStage.PREDICTED
        assert rec1.etr_ms == expected_etr(p1.id, 3.0)  # still two outages active: storm
        rec2 = store.get(oms.record_id(p2.id))
        back = oms.predictor.prediction(p2.id)
        assert back is not None and back.state is PredictionState.RESTORED
        restored_ms = back.timeline[-1].time_ms  # the record got stage restored and ETR, then closed (no crew)
        assert (rec2.stage, rec2.etr_ms, rec2.restored_ms) == (RecordStage.CLOSED, restored_ms, restored_ms)
    finally:
        oms.crews.close()
        store.close()
