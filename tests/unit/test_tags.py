import threading

import pytest

from models.points import PointDef, PointKind, PointSource
from scada.errors import ScadaError
from scada.tags import TagError, TagKind, TagStore


def _point(name: str, element: str = "") -> PointDef:
    return PointDef(0, name, PointKind.DOUBLE, PointSource("iec104", "R1", 1, 1, "M_DP_TB_1"), element=element)


CB1 = _point("F1.CB.pos", element="F1.CB")
CB1_TRIP = _point("F1.CB.trip", element="F1.CB")
CB2 = _point("F2.CB.pos", element="F2.CB")
LONE = _point("LONE.pos")


@pytest.fixture
def store(tmp_path):
    s = TagStore(tmp_path / "tags.sqlite")
    try:
        yield s
    finally:
        s.close()


def test_hold_on_point_name_blocks_only_that_point(store):
    t = store.place("F1.CB.pos", TagKind.HOLD, "alice", "relay test in progress")
    assert (t.target, t.kind, t.operator, t.reason, t.active) == ("F1.CB.pos", TagKind.HOLD, "alice",
                                                                  "relay test in progress", True)
    assert t.placed_ms > 0
    assert [x.id for x in store.blocking(CB1)] == [t.id]
    assert store.blocking(CB1_TRIP) == [] and store.blocking(CB2) == []


def test_clearance_on_element_blocks_every_point_of_the_element(store):
    t = store.place("F1.CB", "clearance", "bob", "PTW 2024-117: earthed for work")
    assert t.kind is TagKind.CLEARANCE
    assert [x.id for x in store.blocking(CB1)] == [t.id]
    assert [x.id for x in store.blocking(CB1_TRIP)] == [t.id]
    assert store.blocking(CB2) == [] and store.blocking(LONE) == []


def test_info_tag_does_not_block(store):
    store.place("F2.CB", TagKind.INFO, "carol", "spring charge motor noisy")
    store.place("LONE.pos", TagKind.INFO, "carol", "check wiring")
    assert store.blocking(CB2) == [] and store.blocking(LONE) == []
    assert len(store.active()) == 2 and [t.target for t in store.active("F2.CB")] == ["F2.CB"]


def test_point_and_element_tags_both_reported_oldest_first(store):
    a = store.place("F1.CB", TagKind.HOLD, "alice", "one")
    b = store.place("F1.CB.pos", TagKind.CLEARANCE, "bob", "two")
    assert [t.id for t in store.blocking(CB1)] == [a.id, b.id]


def test_removal_unblocks_and_is_kept_in_history(store):
    t = store.place("F1.CB", TagKind.HOLD, "alice", "hold for switching programme 12")
    r = store.remove(t.id, "bob", "programme complete")
    assert not r.active and r.removed_by == "bob" and r.removal_reason == "programme complete"
    assert r.removed_ms is not None and r.removed_ms >= t.placed_ms
    assert store.blocking(CB1) == [] and store.active() == []
    (h,) = store.history("F1.CB")
    assert h == r
    with pytest.raises(TagError, match=rf"tag {t.id} on 'F1.CB'.*already removed by bob"):
        store.remove(t.id, "carol")
    with pytest.raises(TagError, match="tag 999: no such tag"):
        store.remove(999, "carol")


def test_reason_target_kind_and_operator_are_validated(store):
    with pytest.raises(TagError, match="F1.CB.*reason is required"):
        store.place("F1.CB", TagKind.HOLD, "alice", "   ")
    with pytest.raises(TagError, match="F1.CB.*unknown tag kind 'lock'"):
        store.place("F1.CB", "lock", "alice", "x")
    with pytest.raises(TagError, match="without a target"):
        store.place(" ", TagKind.HOLD, "alice", "x")
    with pytest.raises(TagError, match="F1.CB.*operator"):
        store.place("F1.CB", TagKind.HOLD, "", "x")
    assert issubclass(TagError, ScadaError)
    assert store.active() == []


def test_tags_survive_restart(tmp_path):
    path = tmp_path / "tags.sqlite"
    s = TagStore(path)
    try:
        kept = s.place("F1.CB", TagKind.CLEARANCE, "alice", "PTW 7")
        gone = s.place("F2.CB", TagKind.HOLD, "alice", "temporary")
        s.remove(gone.id, "bob", "done")
    finally:
        s.close()
    s = TagStore(path)
    try:
        assert s.active() == [kept]
        assert [t.id for t in s.blocking(CB1)] == [kept.id] and s.blocking(CB2) == []
        assert s.get(gone.id).removed_by == "bob"
        newer = s.place("F2.CB", TagKind.HOLD, "carol", "again")
        assert newer.id > gone.id  # ids are never reused
    finally:
        s.close()


@pytest.mark.timeout(60)
def test_concurrent_removal_succeeds_once(store):
    t = store.place("F1.CB", TagKind.HOLD, "alice", "x")
    results: list[str] = []

    def remove(who: str) -> None:
        try:
            store.remove(t.id, who)
            results.append("ok")
        except TagError:
            results.append("refused")

    threads = [threading.Thread(target=remove, args=(f"op{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert sorted(results) == ["ok", "refused", "refused", "refused"]
