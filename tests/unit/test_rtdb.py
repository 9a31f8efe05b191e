import time

import numpy as np
import pytest

from models.config import parse_station_config
from models.points import DoubleState, Quality
from models.timebase import now_ms
from models.updates import Cause, InterrogationDone, LinkEvent, UpdateBatch, new_update_rows
from scada.errors import UnknownPointError
from scada.rtdb import Rtdb

CONFIG = """
[station]
name = "t"
[supervision]
stale_after_s = { analog = 0.6, double = 0 }
[[rtus]]
name = "R1"
common_address = 1
addresses = ["127.0.0.1:2404"]
[[rtus]]
name = "R2"
common_address = 2
addresses = ["127.0.0.1:2405"]
[[points]]
name = "CB"
kind = "double"
rtu = "R1"
address = 1
type = "M_DP_TB_1"
[[points]]
name = "I"
kind = "analog"
rtu = "R1"
address = 2
type = "M_ME_TF_1"
[[points]]
name = "V"
kind = "analog"
rtu = "R2"
address = 3
type = "M_ME_TF_1"
"""


class ListSoe:
    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def append(self, rows: np.ndarray) -> int:
        self.rows.append(rows.copy())
        return len(rows)


def batch(*rows: tuple[int, float, int, int, Cause]) -> UpdateBatch:
    arr = new_update_rows(len(rows))
    for i, (p, v, q, t, c) in enumerate(rows):
        arr[i] = (p, v, q, t, c)
    return UpdateBatch("test", arr, 0)


@pytest.fixture
def rtdb():
    db = Rtdb(parse_station_config(CONFIG), soe=ListSoe())
    db.start()
    yield db
    db.stop()


def test_initial_state_is_never_good(rtdb: Rtdb) -> None:
    snap = rtdb.snapshot()
    assert (snap["quality"] & int(Quality.INVALID | Quality.COMM_LOST)).all()


def test_batch_applies_and_publishes_in_order(rtdb: Rtdb) -> None:
    sub = rtdb.subscribe("t")
    rtdb.ingest(batch((0, 2, 0, 1000, Cause.INTERROGATED), (1, 100.0, 0, 1000, Cause.INTERROGATED)))
    cs = sub.get(timeout_s=2)
    assert cs is not None and list(cs.rows["point"]) == [0, 1]
    assert cs.status and list(cs.rows["seq"]) == [1, 2]
    # Several reports of one point in one batch: every intermediate change is seen, in order.
    rtdb.ingest(batch((0, 1, 0, 2000, Cause.SPONTANEOUS), (1, 100.0, 0, 2000, Cause.PERIODIC),
                      (0, 2, 0, 2100, Cause.SPONTANEOUS)))
    cs = sub.get(timeout_s=2)
    assert list(cs.rows["point"]) == [0, 0]  # the unchanged analog is not a change
    assert list(cs.rows["value"]) == [1, 2] and list(cs.rows["prev_value"]) == [2, 1]
    snap = rtdb.snapshot([0])[0]
    assert snap["value"] == DoubleState.ON and snap["source_time_ms"] == 2100 and snap["quality"] == 0
    soe = rtdb._soe.rows  # type: ignore[attr-defined]
    assert [list(r["value"]) for r in soe] == [[2.0], [1.0, 2.0]]


def test_link_loss_marks_rtu_comm_lost_and_value_restores(rtdb: Rtdb) -> None:
    rtdb.ingest(batch((0, 2, 0, 1, Cause.INTERROGATED), (1, 5.0, 0, 1, Cause.INTERROGATED),
                      (2, 11.0, 0, 1, Cause.INTERROGATED)))
    assert rtdb.flush()
    sub = rtdb.subscribe("t")
    rtdb.ingest(LinkEvent("test", "R1", False, reason="t"))
    cs = sub.get(timeout_s=2)
    assert sorted(cs.rows["point"]) == [0, 1]
    assert (cs.rows["quality"] & int(Quality.COMM_LOST)).all()
    assert rtdb.snapshot([2])[0]["quality"] == 0  # other RTU untouched
    rtdb.ingest(batch((0, 2, 0, 5, Cause.INTERROGATED)))  # GI after reconnect
    cs = sub.get(timeout_s=2)
    assert cs.rows["quality"][0] == 0


def test_stale_supervision_marks_not_topical(rtdb: Rtdb) -> None:
    rtdb.ingest(batch((0, 2, 0, 1, Cause.INTERROGATED), (1, 5.0, 0, 1, Cause.INTERROGATED),
                      (2, 11.0, 0, 1, Cause.INTERROGATED)))
    assert rtdb.flush()
    sub = rtdb.subscribe("t")
    deadline = time.monotonic() + 3
    stale: set[int] = set()
    while time.monotonic() < deadline and stale != {1, 2}:
        cs = sub.get(timeout_s=0.5)
        if cs is not None:
            stale |= {int(p) for p, q in zip(cs.rows["point"], cs.rows["quality"], strict=True)
                      if q & int(Quality.NOT_TOPICAL)}
    assert stale == {1, 2}  # the analogs; the double has no age limit here
    assert rtdb.snapshot([0])[0]["quality"] == 0


def test_interrogation_done_confirms_unchanged_points(rtdb: Rtdb) -> None:
    """A polled device reports only changes; its completed scan keeps the unchanged points from going stale and
    clears a stale mark without a value."""
    rtdb.ingest(batch((0, 2, 0, 1, Cause.INTERROGATED), (1, 5.0, 0, 1, Cause.INTERROGATED),
                      (2, 11.0, 0, 1, Cause.INTERROGATED)))
    assert rtdb.flush()
    rtu_of = {p.id: p.source.rtu for p in rtdb.config.points}
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # R1's scans keep confirming point 1 while point 2 (R2) goes stale
        rtdb.ingest(InterrogationDone("test", rtu_of[1], now_ms()))
        time.sleep(0.1)
    assert rtdb.flush()
    assert rtdb.snapshot([1])[0]["quality"] == 0
    assert rtdb.snapshot([2])[0]["quality"] & int(Quality.NOT_TOPICAL)
    sub = rtdb.subscribe("t")
    rtdb.ingest(InterrogationDone("test", rtu_of[2], now_ms()))
    cs = sub.get(timeout_s=2)
    assert cs is not None and list(cs.rows["point"]) == [2] and cs.rows["quality"][0] == 0
    assert cs.rows["cause"][0] == Cause.INTERROGATED


def test_slow_subscriber_is_coalesced_not_blocking(rtdb: Rtdb) -> None:
    slow = rtdb.subscribe("slow", max_pending=4)
    fast = rtdb.subscribe("fast", max_pending=10_000)
    t0 = time.monotonic()
    for i in range(200):
        rtdb.ingest(batch((1, float(i), 0, i, Cause.SPONTANEOUS)))
    assert rtdb.flush()
    assert time.monotonic() - t0 < 5
    got = []
    while (cs := fast.get(timeout_s=0.1)) is not None:
        got.extend(cs.rows["value"])
    assert got == [float(i) for i in range(200)]
    last = None
    while (cs := slow.get(timeout_s=0.1)) is not None:
        last = cs
    assert last is not None and last.rows["value"][-1] == 199.0
    assert slow.drops > 0 and rtdb.stats().changes == 200


def test_subscribe_with_snapshot_filters_points(rtdb: Rtdb) -> None:
    rtdb.ingest(batch((2, 11.0, 0, 1, Cause.INTERROGATED)))
    assert rtdb.flush()
    snap, sub = rtdb.subscribe_with_snapshot("t", points=[2])
    assert len(snap) == 1 and snap[0]["value"] == 11.0
    rtdb.ingest(batch((1, 3.0, 0, 2, Cause.SPONTANEOUS), (2, 11.2, 0, 2, Cause.SPONTANEOUS)))
    cs = sub.get(timeout_s=2)
    assert list(cs.rows["point"]) == [2] and cs.rows["seq"][0] > snap[0]["seq"]


def test_unknown_points(rtdb: Rtdb) -> None:
    with pytest.raises(UnknownPointError, match="unknown point 'nope'"):
        rtdb.point_id("nope")
    with pytest.raises(UnknownPointError):
        rtdb.snapshot([99])
