from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from oms.outage_records import LifecycleChange, LifecycleRule, OutageRecordStore, OutageStatus, RecordStage


def _open(store: OutageRecordStore, ref: str = "run-1", **kw: object) -> object:
    args: dict[str, object] = dict(source="flisr", source_ref=ref, feeder="F2", tripped_device="F2-CB",
                                   faulted_elements=("F2-C04",), customers_interrupted=432, customers_still_off=432,
                                   started_ms=1000)
    args.update(kw)
    return store.open_or_update(**args)  # type: ignore[arg-type]


def test_open_then_update_keeps_one_record_per_source_ref(tmp_path: Path) -> None:
    store = OutageRecordStore(tmp_path / "outages.sqlite")
    first = _open(store)
    assert first.id > 0 and first.status is OutageStatus.OPEN and first.faulted_elements == ("F2-C04",)
    second = _open(store, isolated_boundary=("F2-RMU03-LBS2", "F2-RMU06-LBS1"), customers_restored=318,
                   customers_still_off=114, isolated_ms=5000, restored_ms=8000, status="restored",
                   notes=("114 customers stay off until repair",))
    assert second.id == first.id
    assert store.get(first.id) == second
    assert store.find("flisr", "run-1") == second
    other = _open(store, ref="run-2", feeder="F5")
    assert other.id != first.id
    assert [r.id for r in store.list()] == [other.id, first.id]
    assert [r.id for r in store.list(status=OutageStatus.RESTORED)] == [first.id]
    assert [r.id for r in store.list(feeder="F5")] == [other.id]
    store.close()
    reopened = OutageRecordStore(tmp_path / "outages.sqlite")  # records outlive a restart
    assert reopened.get(first.id) == second
    reopened.close()


def test_a_closed_record_stays_closed(tmp_path: Path) -> None:
    store = OutageRecordStore(tmp_path / "outages.sqlite")
    rec = _open(store)
    closed = store.close_record(rec.id, "cable jointed")
    assert closed.status is OutageStatus.CLOSED and closed.log[-1] == "cable jointed"
    late = _open(store, status="restored")
    assert late.status is OutageStatus.CLOSED
    store.close()


def test_bad_requests_name_the_problem(tmp_path: Path) -> None:
    store = OutageRecordStore(tmp_path / "outages.sqlite")
    with pytest.raises(ValueError, match="unknown status 'fixed'"):
        _open(store, status="fixed")
    with pytest.raises(ValueError, match="source_ref must not be empty"):
        _open(store, ref="")
    with pytest.raises(LookupError, match="no outage record 42"):
        store.get(42)
    store.close()


def _two_steps(store: OutageRecordStore, *, merged_into: int | None, lifecycle: LifecycleChange | None,
               **fields: Any) -> None:
    """The OMS's writes before they were one transaction: update, link, read the canonical record, lifecycle."""
    rec = store.open_or_update(**fields)
    if merged_into is not None:
        rec = store.link(rec.id, merged_into)
    if lifecycle is None:
        return
    canonical = store.canonical(rec.id)
    order = list(RecordStage)
    if lifecycle.rule is LifecycleRule.ALWAYS or (
            lifecycle.stage is not None and order.index(lifecycle.stage) > order.index(canonical.stage)):
        store.set_lifecycle(rec.id, stage=lifecycle.stage, etr_ms=lifecycle.etr_ms)


def _contents(store: OutageRecordStore) -> list[object]:
    """The stored records without their wall-clock stamps (two stores write them a millisecond apart): whether a
    record was closed is kept, not when."""
    return [replace(r, updated_ms=0, closed_ms=min(r.closed_ms, 1)) for r in store.list()]


def test_update_with_lifecycle_is_one_transaction_with_the_results_of_separate_writes(tmp_path: Path) -> None:
    one, two = OutageRecordStore(tmp_path / "one.sqlite"), OutageRecordStore(tmp_path / "two.sqlite")
    scada = dict(source="scada", source_ref="run7-P1", feeder="F2", tripped_device="F2-CB", started_ms=1000,
                 customers_interrupted=432, customers_still_off=432)
    fuse = dict(source="ami", source_ref="run7-P2", feeder="F2", tripped_device="F2-RMU03-TEE", started_ms=900,
                customers_interrupted=44, customers_still_off=44)
    flisr = dict(source="flisr", source_ref="run-1", feeder="F2", tripped_device="F2-CB", started_ms=1500)
    later = LifecycleRule.IF_LATER_STAGE
    steps: list[tuple[dict[str, Any], int | None, LifecycleChange | None]] = [
        (scada, None, LifecycleChange(RecordStage.CONFIRMED, 5000)),
        (fuse, None, LifecycleChange(RecordStage.PREDICTED, 4000)),
        (fuse, 1, None),  # folded into the breaker's record (id 1 in both stores)
        (flisr, None, None),  # FLISR's record of the same trip: the scada record merges into it
        (scada, None, LifecycleChange(RecordStage.CONFIRMED, 6000, rule=later)),  # not later: kept
        (scada, None, LifecycleChange(RecordStage.EN_ROUTE, 7000, rule=later)),  # later: lands on FLISR's record
        (fuse | dict(customers_still_off=40), None, LifecycleChange(RecordStage.CONFIRMED, 8000)),  # folded
        (fuse | dict(customers_still_off=30), 0, LifecycleChange(RecordStage.PREDICTED, 8500)),  # unfolded
        (scada | dict(status="restored", restored_ms=9000), None, LifecycleChange(RecordStage.RESTORED, 9000)),
    ]
    for fields, merged_into, lifecycle in steps:
        rec = one.open_or_update(**fields, merged_into=merged_into, lifecycle=lifecycle)  # type: ignore[arg-type]
        assert one.get(rec.id) == rec  # returned as stored
        _two_steps(two, merged_into=merged_into, lifecycle=lifecycle, **fields)
        assert _contents(one) == _contents(two), (fields["source_ref"], lifecycle)
    canonical = one.find("flisr", "run-1")
    assert canonical is not None and (canonical.stage, canonical.etr_ms) == (RecordStage.RESTORED, 9000)
    one.close_record(2, "fuse replaced")
    two.close_record(2, "fuse replaced")
    closed_late = (fuse, None, LifecycleChange(RecordStage.CONFIRMED, 9900))
    one.open_or_update(**closed_late[0], lifecycle=closed_late[2])  # type: ignore[arg-type]
    _two_steps(two, merged_into=None, lifecycle=closed_late[2], **closed_late[0])
    assert _contents(one) == _contents(two) and one.get(2).stage is RecordStage.CLOSED

    trace: list[str] = []
    one.conn().set_trace_callback(trace.append)
    one.open_or_update(**fuse | dict(customers_still_off=0), lifecycle=LifecycleChange(RecordStage.RESTORED, 9950))
    one.conn().set_trace_callback(None)
    assert [s.split()[0].upper() for s in trace if not s.upper().startswith("SELECT")] == ["BEGIN", "UPDATE",
                                                                                            "COMMIT"]
    with pytest.raises(ValueError, match="rule if_later_stage needs a stage"):
        LifecycleChange(etr_ms=1, rule=later)
    one.close()
    two.close()
