from __future__ import annotations

from pathlib import Path

import pytest

from oms.outage_records import OutageRecordStore, OutageStatus


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
