"""Outage-record lifecycle in the store: stages, ETR, crew and cause; one trip seen by FLISR and the OMS is one
record whichever writes first; nested outages folded and unfolded; an older file gains the lifecycle columns; and the
reliability input built from steps, closings, planned and merged records, checked by hand."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from oms.outage_records import OutageRecordStore, OutageStatus, RecordStage, RestorationStep
from oms.reliability import interruptions_from_outage_records

T0 = 1_795_000_000_000  # 2026-11-18T11:06:40Z
MIN = 60_000


def _flisr(store: OutageRecordStore, ref: str = "run-1", started: int = T0, **kw: object):  # noqa: ANN202
    args: dict[str, object] = dict(source="flisr", source_ref=ref, feeder="F2", tripped_device="F2-CB",
                                   customers_interrupted=432, customers_still_off=432, started_ms=started)
    args.update(kw)
    return store.open_or_update(**args)  # type: ignore[arg-type]


def _scada(store: OutageRecordStore, ref: str = "s-P1", started: int = T0 + 400, **kw: object):  # noqa: ANN202
    args: dict[str, object] = dict(source="scada", source_ref=ref, feeder="F2", tripped_device="F2-CB",
                                   customers_interrupted=432, customers_still_off=432, started_ms=started,
                                   cause="trip of F2-CB")
    args.update(kw)
    return store.open_or_update(**args)  # type: ignore[arg-type]


def test_lifecycle_moves_along_and_survives_source_updates(tmp_path: Path) -> None:
    store = OutageRecordStore(tmp_path / "o.sqlite")
    rec = _scada(store)
    assert rec.stage is RecordStage.PREDICTED and rec.etr_ms == -1 and rec.cause == "trip of F2-CB"
    store.set_lifecycle(rec.id, stage="crew_assigned", crew="C1", etr_ms=T0 + 90 * MIN, note="crew C1 assigned")
    again = _scada(store, customers_still_off=400)  # the source writes again: its lifecycle stays
    assert (again.stage, again.crew, again.etr_ms, again.cause) == (RecordStage.CREW_ASSIGNED, "C1", T0 + 90 * MIN,
                                                                    "trip of F2-CB")
    assert again.log == ("crew C1 assigned",) and again.customers_still_off == 400
    with pytest.raises(ValueError, match="unknown stage 'repaired'"):
        store.set_lifecycle(rec.id, stage="repaired")
    with pytest.raises(ValueError, match="before its start"):
        store.close_record(rec.id, closed_ms=T0 - 1)
    closed = store.close_record(rec.id, "tree cleared", closed_ms=T0 + 80 * MIN, cause="tree contact")
    assert closed.status is OutageStatus.CLOSED and closed.stage is RecordStage.CLOSED
    assert closed.closed_ms == T0 + 80 * MIN and closed.cause == "tree contact" and closed.log[-1] == "tree cleared"
    assert store.set_lifecycle(rec.id, stage="on_site").stage is RecordStage.CLOSED  # closed stays closed
    store.close()


@pytest.mark.parametrize("flisr_first", [True, False])
def test_one_trip_seen_by_flisr_and_the_oms_is_one_record(tmp_path: Path, flisr_first: bool) -> None:
    store = OutageRecordStore(tmp_path / "o.sqlite")
    if flisr_first:
        flisr = _flisr(store)
        scada = _scada(store)
    else:
        scada = _scada(store)
        store.set_lifecycle(scada.id, stage="crew_assigned", crew="C7", etr_ms=T0 + 60 * MIN)
        flisr = _flisr(store)
    flisr, scada = store.get(flisr.id), store.get(scada.id)
    assert scada.merged_into == flisr.id and flisr.merged_into == 0
    assert store.canonical(scada.id).id == flisr.id
    if not flisr_first:  # the OMS's crew and ETR moved to the canonical record
        assert (flisr.stage, flisr.crew, flisr.etr_ms) == (RecordStage.CREW_ASSIGNED, "C7", T0 + 60 * MIN)
    assert flisr.cause == "trip of F2-CB" and any("merged into this record" in x for x in flisr.log)
    # lifecycle addressed to the merged record lands on the canonical one
    assert store.set_lifecycle(scada.id, stage="on_site").id == flisr.id
    assert store.get(flisr.id).stage is RecordStage.ON_SITE
    assert [r.id for r in store.list(include_merged=False)] == [flisr.id]
    # another trip of the same breaker much later is another outage
    later = _scada(store, ref="s-P9", started=T0 + 60 * MIN)
    assert later.merged_into == 0
    store.close()


def test_nested_records_fold_and_unfold(tmp_path: Path) -> None:
    store = OutageRecordStore(tmp_path / "o.sqlite")
    upper = _scada(store)
    nested = store.open_or_update(source="ami", source_ref="s-P2", feeder="F2", tripped_device="F2-FUSE",
                                  customers_interrupted=24, customers_still_off=24, started_ms=T0 - MIN)
    assert store.link(nested.id, upper.id).merged_into == upper.id
    assert store.link(nested.id, 0).merged_into == 0
    with pytest.raises(ValueError, match="into itself"):
        store.link(upper.id, upper.id)
    store.close()


def test_an_older_file_gains_the_lifecycle_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as c:  # the first release's table, one record in it
        c.executescript(OutageRecordStore.SCHEMA)
        c.execute("INSERT INTO outage_records (source, source_ref, feeder, tripped_device, faulted_elements, "
                  "isolated_boundary, customers_interrupted, customers_restored, customers_still_off, started_ms, "
                  "isolated_ms, restored_ms, status, notes, updated_ms) VALUES ('flisr', 'run-1', 'F1', 'F1-CB', "
                  "'[]', '[]', 10, 0, 10, 1000, -1, -1, 'open', '[]', 1000)")
    store = OutageRecordStore(path)
    rec = store.get(1)
    assert (rec.stage, rec.planned, rec.steps, rec.closed_ms, rec.merged_into) == (RecordStage.PREDICTED, False, (),
                                                                                 -1, 0)
    store.close()


def test_interruptions_from_records_by_hand(tmp_path: Path) -> None:
    store = OutageRecordStore(tmp_path / "o.sqlite")
    # OMS fuse outage: 24 customers off at T0; 20 back after 30 min, 4 after 50 min (two steps)
    fuse = store.open_or_update(source="ami", source_ref="s-P1", feeder="F1", tripped_device="F1-FUSE",
                                customers_interrupted=24, started_ms=T0, status="restored",
                                steps=(RestorationStep(T0 + 30 * MIN, 20), RestorationStep(T0 + 50 * MIN, 4)))
    store.close_record(fuse.id, closed_ms=T0 + 55 * MIN)
    # FLISR: 432 off, 318 back after 2 min (momentary: <= 5 min), 114 until the repair closes at 3 h
    flisr = _flisr(store, customers_restored=318, customers_still_off=114, restored_ms=T0 + 2 * MIN,
                   status="restored")
    store.close_record(flisr.id, closed_ms=T0 + 180 * MIN)
    _scada(store)  # merged into the FLISR record: not counted again
    # planned: 50 customers for 2 h
    planned = store.open_or_update(source="planned", source_ref="PL-1", feeder="F3", tripped_device="F3-LBS",
                                   customers_interrupted=50, started_ms=T0, planned=True, status="restored",
                                   steps=(RestorationStep(T0 + 120 * MIN, 50),))
    store.close_record(planned.id, closed_ms=T0 + 120 * MIN)
    # still open: ongoing, not counted
    store.open_or_update(source="ami", source_ref="s-P5", feeder="F4", tripped_device="F4-FUSE",
                         customers_interrupted=7, customers_still_off=7, started_ms=T0)
    got = sorted((i.customers, (i.end - i.start).total_seconds() / 60, i.planned, i.event_id)
                 for i in interruptions_from_outage_records(store.list()))
    assert got == [(4, 50.0, False, "ami/s-P1/step-2"), (20, 30.0, False, "ami/s-P1/step-1"),
                   (50, 120.0, True, "planned/PL-1/step-1"), (114, 180.0, False, "flisr/run-1/repair"),
                   (318, 2.0, False, "flisr/run-1")]
    # customer minutes by hand: 4*50 + 20*30 + 114*180 = 200 + 600 + 20520 unplanned sustained; 318*2 momentary
    assert sum(c * m for c, m, p, _ in got if not p and m > 5) == 21_320
    assert all(i.start == datetime(2026, 11, 18, 11, 6, 40) for i in interruptions_from_outage_records(store.list()))
    store.close()
