"""Alarm manager: limits with hysteresis, state alarms, lifecycle, shelving, persistence, flood and subscribers."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from models.config import StationConfig, parse_station_config
from models.points import Priority, Quality
from models.updates import Cause
from scada.alarm_rules import limit_levels, rounds
from scada.alarms import (
    Alarm,
    AlarmError,
    AlarmEventKind,
    AlarmKind,
    AlarmManager,
    AlarmState,
)
from scada.changes import CHANGE_DTYPE, ChangeSet, Subscription

T0_MS = 1_750_000_000_000  # a fixed wall-clock origin; every test drives its own clock

HEADER = """
[station]
name = "alarm test"

[alarms]
shelve_max_s = 3600

[[rtus]]
name = "RTU1"
common_address = 1
addresses = ["127.0.0.1:2404"]
"""

POINTS = """
[[points]]
name = "F1/I"
kind = "analog"
rtu = "RTU1"
address = 1
type = "M_ME_NC_1"
units = "A"
description = "F1 current"
limits = { lolo = 5.0, lo = 10.0, hi = 100.0, hihi = 120.0, deadband = 5.0 }
limit_priority = "medium"

[[points]]
name = "F1/CB"
kind = "double"
rtu = "RTU1"
address = 2
type = "M_DP_TB_1"
state_alarms = [{ value = 1, priority = "high", text = "Feeder breaker open" },
                { value = 3, priority = "critical", text = "Feeder breaker indeterminate" }]

[[points]]
name = "F2/CB"
kind = "double"
rtu = "RTU1"
address = 3
type = "M_DP_TB_1"
state_alarms = [{ value = 1, priority = "high", text = "Feeder breaker open" }]

[[points]]
name = "F1/PROT"
kind = "single"
rtu = "RTU1"
address = 4
type = "M_SP_TB_1"
state_alarms = [{ value = 1, priority = "high", text = "Protection operated" }]

[[points]]
name = "F1/U"
kind = "analog"
rtu = "RTU1"
address = 5
type = "M_ME_NC_1"
"""

I1, CB1, CB2, PROT, U1 = 0, 1, 2, 3, 4


class Clock:
    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def change_set(*rows: tuple, t_ms: int = T0_MS) -> ChangeSet:
    """Rows are (point, value[, quality[, cause[, prev_value]]])."""
    a = np.zeros(len(rows), dtype=CHANGE_DTYPE)
    for i, r in enumerate(rows):
        point, value = r[0], r[1]
        quality = r[2] if len(r) > 2 else 0
        cause = r[3] if len(r) > 3 else Cause.SPONTANEOUS
        prev = r[4] if len(r) > 4 else math.nan
        a[i] = (point, value, int(quality), t_ms + i, t_ms + i + 50, i + 1, int(cause), prev)
    return ChangeSet(rows=a, status=True, commit_monotonic=time.monotonic())


@pytest.fixture
def config() -> StationConfig:
    return parse_station_config(HEADER + POINTS, "test.toml")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def mgr(config: StationConfig, clock: Clock, tmp_path: Path):
    m = AlarmManager(config, tmp_path / "alarms.sqlite", clock_ms=clock)
    try:
        yield m
    finally:
        m.stop()


def only(mgr: AlarmManager, **kw: object) -> Alarm:
    got = mgr.list(**kw)  # type: ignore[arg-type]
    assert len(got) == 1, got
    return got[0]


# ---------------------------------------------------------------------------------------------- pure rules


def test_limit_levels_vectorised_with_hysteresis() -> None:
    lim = np.array([[5.0, 10.0, 100.0, 120.0]] * 8)
    db = np.full(8, 5.0)
    values = np.array([50, 100, 97, 95, 125, 114, 8, 12.0])
    current = np.array([0, 0, 1, 1, 1, 2, 0, -1], dtype=np.int8)
    got = limit_levels(values, current, lim, db)
    # 100 reaches HI; 97 held (inside by < 5); 95 clears; 125 escalates; 114 steps HIHI->HI; 8 LO; 12 held LO
    assert got.tolist() == [0, 1, 1, 0, 2, 1, -1, -1]
    disabled = limit_levels(np.array([1e9]), np.zeros(1, dtype=np.int8), np.full((1, 4), np.nan), np.zeros(1))
    assert disabled.tolist() == [0]


def test_rounds_keep_per_point_order() -> None:
    pts = np.array([7, 3, 7, 7, 3, 1])
    got = [r.tolist() for r in rounds(pts)]
    assert got == [[0, 1, 5], [2, 4], [3]]
    assert [r.tolist() for r in rounds(np.array([4, 2, 9]))] == [[0, 1, 2]]


# ---------------------------------------------------------------------------------------------- limits


def test_limit_alarm_hysteresis_and_invalid_quality(mgr: AlarmManager) -> None:
    assert mgr.process(change_set((I1, 50.0))) == 0
    assert mgr.process(change_set((I1, 105.0))) == 1
    a = only(mgr)
    assert (a.kind, a.condition, a.priority, a.state, a.point_name) == (
        AlarmKind.LIMIT, "HI", Priority.MEDIUM, AlarmState.ACTIVE_UNACKED, "F1/I")
    assert "F1 current" in a.text and "100 A" in a.text
    assert a.raised_ms == T0_MS  # field time tag, not the receive time
    # back inside, but by less than the 5 A deadband: still in alarm
    assert mgr.process(change_set((I1, 97.0))) == 0
    assert only(mgr).state is AlarmState.ACTIVE_UNACKED
    # INVALID and COMM_LOST rows neither clear nor raise
    assert mgr.process(change_set((I1, 20.0, Quality.INVALID), (I1, 20.0, Quality.COMM_LOST))) == 0
    assert mgr.process(change_set((I1, 500.0, Quality.INVALID))) == 0
    assert only(mgr).condition == "HI"
    assert mgr.process(change_set((I1, 94.9))) == 1
    cleared = only(mgr)
    assert (cleared.id, cleared.state, cleared.value) == (a.id, AlarmState.CLEARED_UNACKED, 94.9)
    # low side, with its own hysteresis
    mgr.acknowledge(None, "op")
    assert mgr.process(change_set((I1, 9.0))) == 1
    lo = only(mgr)
    assert lo.condition == "LO" and lo.id != a.id
    assert mgr.process(change_set((I1, 14.0))) == 0
    assert mgr.process(change_set((I1, 15.0))) == 1
    assert only(mgr).state is AlarmState.CLEARED_UNACKED


def test_hi_to_hihi_escalation_and_back(mgr: AlarmManager) -> None:
    mgr.process(change_set((I1, 110.0)))
    a = only(mgr)
    mgr.acknowledge([a.id], "op")
    assert only(mgr).state is AlarmState.ACTIVE_ACKED
    sub = mgr.subscribe()
    assert mgr.process(change_set((I1, 125.0))) == 1
    ev = sub.get(1.0)
    assert ev is not None and ev.kind is AlarmEventKind.UPDATED
    hihi = only(mgr)
    # same record, more severe condition and priority, and the operator must acknowledge again
    assert (hihi.id, hihi.condition, hihi.priority, hihi.state) == (a.id, "HIHI", Priority.HIGH,
                                                                    AlarmState.ACTIVE_UNACKED)
    assert hihi.acked_by is None and "high-high" in hihi.text
    mgr.acknowledge([a.id], "op")
    # 116 is inside HIHI by less than the deadband: held; 114 steps down to HI and keeps the acknowledgement
    assert mgr.process(change_set((I1, 116.0))) == 0
    assert mgr.process(change_set((I1, 114.0))) == 1
    hi = only(mgr)
    assert (hi.id, hi.condition, hi.priority, hi.state) == (a.id, "HI", Priority.MEDIUM, AlarmState.ACTIVE_ACKED)
    # acknowledged + return to normal closes it into history
    assert mgr.process(change_set((I1, 50.0))) == 1
    assert mgr.list() == []
    hist = mgr.history()
    assert [h.id for h in hist] == [a.id] and hist[0].state is AlarmState.CLOSED
    sub.close()


def test_several_rows_of_one_point_in_one_change_set(mgr: AlarmManager) -> None:
    sub = mgr.subscribe()
    assert mgr.process(change_set((I1, 105.0), (I1, 130.0), (I1, 50.0), (CB1, 1.0), (CB1, 2.0))) == 5
    kinds = []
    while (ev := sub.get(0)) is not None:
        kinds.append((ev.alarm.point, ev.kind, ev.alarm.condition))
    assert kinds == [(I1, AlarmEventKind.RAISED, "HI"), (I1, AlarmEventKind.UPDATED, "HIHI"),
                     (I1, AlarmEventKind.CLEARED, "HIHI"), (CB1, AlarmEventKind.RAISED, "state=1"),
                     (CB1, AlarmEventKind.CLEARED, "state=1")]
    assert {a.state for a in mgr.list()} == {AlarmState.CLEARED_UNACKED}


# ---------------------------------------------------------------------------------------------- states


def test_state_alarms_and_cause(mgr: AlarmManager) -> None:
    mgr.process(change_set((CB1, 1.0, 0, Cause.RETURN_REMOTE, 2.0), (CB2, 1.0, 0, Cause.SPONTANEOUS, 2.0),
                           (PROT, 1.0, 0, Cause.INTERROGATED, 0.0), (U1, 1e6)))
    by_point = {a.point: a for a in mgr.list()}
    assert set(by_point) == {CB1, CB2, PROT}  # U1 has no limits
    assert (by_point[CB1].text, by_point[CB1].priority) == ("Feeder breaker open (commanded)", Priority.LOW)
    assert (by_point[CB2].text, by_point[CB2].priority) == ("Feeder breaker open", Priority.HIGH)
    assert (by_point[PROT].text, by_point[PROT].priority) == ("Protection operated", Priority.HIGH)
    assert by_point[CB1].condition == "state=1" and by_point[CB1].kind is AlarmKind.STATE
    # sorted by priority: HIGH ones before the LOW commanded one
    assert mgr.list()[-1].point == CB1
    # a different alarm state of the same point is a distinct condition: state=1 returns to normal, state=3 raises
    mgr.process(change_set((CB1, 3.0, 0, Cause.SPONTANEOUS, 1.0)))
    cb1 = {a.condition: a for a in mgr.list() if a.point == CB1}
    assert cb1["state=1"].state is AlarmState.CLEARED_UNACKED
    assert (cb1["state=3"].state, cb1["state=3"].priority) == (AlarmState.ACTIVE_UNACKED, Priority.CRITICAL)
    # a COMM_LOST quality change is not a per-point alarm and does not clear anything
    before = mgr.counts()
    assert mgr.process(change_set((CB2, 1.0, Quality.COMM_LOST, Cause.SUPERVISION, 1.0))) == 0
    assert mgr.counts() == before


def test_spontaneous_repeat_of_alarm_state_counts_an_occurrence(mgr: AlarmManager) -> None:
    mgr.process(change_set((CB2, 1.0, 0, Cause.SPONTANEOUS, 2.0)))
    a = only(mgr)
    mgr.acknowledge(None, "op")
    # trip, reclose and trip again reported only as OFF with a new time tag
    assert mgr.process(change_set((CB2, 1.0, 0, Cause.SPONTANEOUS, 1.0))) == 1
    again = only(mgr)
    assert (again.id, again.occurrences, again.state) == (a.id, 2, AlarmState.ACTIVE_UNACKED)
    # a general interrogation confirming the same state is not a new occurrence
    assert mgr.process(change_set((CB2, 1.0, 0, Cause.INTERROGATED, 1.0))) == 0


def test_lifecycle_both_paths_and_reopen(mgr: AlarmManager, clock: Clock) -> None:
    # path 1: ACTIVE_UNACKED -> ack -> ACTIVE_ACKED -> RTN -> CLOSED
    mgr.process(change_set((PROT, 1.0)))
    a = only(mgr)
    clock.now_ms = T0_MS + 1000
    acked = mgr.acknowledge([a.id], "alice")
    assert [(x.state, x.acked_by, x.acked_ms) for x in acked] == [(AlarmState.ACTIVE_ACKED, "alice", T0_MS + 1000)]
    assert mgr.acknowledge([a.id], "bob") == []  # already acknowledged: nothing changes
    mgr.process(change_set((PROT, 0.0), t_ms=T0_MS + 2000))
    closed = mgr.get(a.id)
    assert (closed.state, closed.cleared_ms, closed.acked_by) == (AlarmState.CLOSED, T0_MS + 2000, "alice")
    assert mgr.list() == [] and [x.id for x in mgr.list(include_closed=True)] == [a.id]
    # path 2: ACTIVE_UNACKED -> RTN -> CLEARED_UNACKED -> re-raise reopens -> RTN -> ack -> CLOSED
    mgr.process(change_set((PROT, 1.0), t_ms=T0_MS + 3000))
    b = only(mgr)
    assert b.id != a.id and b.occurrences == 1
    mgr.process(change_set((PROT, 0.0), t_ms=T0_MS + 4000))
    assert only(mgr).state is AlarmState.CLEARED_UNACKED
    mgr.process(change_set((PROT, 1.0), t_ms=T0_MS + 5000))
    reopened = only(mgr)
    assert (reopened.id, reopened.state, reopened.occurrences, reopened.cleared_ms) == (
        b.id, AlarmState.ACTIVE_UNACKED, 2, None)
    mgr.process(change_set((PROT, 0.0), t_ms=T0_MS + 6000))
    clock.now_ms = T0_MS + 7000
    done = mgr.acknowledge(None, "carol")
    assert [(x.id, x.state, x.acked_by) for x in done] == [(b.id, AlarmState.CLOSED, "carol")]
    assert mgr.list() == []
    assert [h.id for h in mgr.history()] == [b.id, a.id]  # most recently closed first
    assert [h.id for h in mgr.history(start_ms=T0_MS + 2500)] == [b.id]
    assert [h.id for h in mgr.history(end_ms=T0_MS + 2500)] == [a.id]
    assert mgr.counts() == {"active_unacked": 0, "active_acked": 0, "cleared_unacked": 0, "closed": 2, "shelved": 0}


def test_system_alarms(mgr: AlarmManager) -> None:
    sub = mgr.subscribe()
    a = mgr.raise_system("link:RTU1", "RTU RTU1 communication lost", Priority.HIGH)
    assert (a.point, a.kind, a.condition, a.state) == (-1, AlarmKind.SYSTEM, "link:RTU1", AlarmState.ACTIVE_UNACKED)
    assert mgr.raise_system("link:RTU1", "RTU RTU1 communication lost", Priority.HIGH).id == a.id
    assert mgr.clear_system("link:RTU1").state is AlarmState.CLEARED_UNACKED
    assert mgr.clear_system("link:RTU1") is None
    assert mgr.clear_system("never-raised") is None
    again = mgr.raise_system("link:RTU1", "RTU RTU1 communication lost", Priority.HIGH)
    assert (again.id, again.occurrences) == (a.id, 2)
    kinds = [ev.kind for ev in iter(lambda: sub.get(0), None)]
    assert kinds == [AlarmEventKind.RAISED, AlarmEventKind.CLEARED, AlarmEventKind.RAISED]
    sub.close()


# ---------------------------------------------------------------------------------------------- operators


def test_errors_name_the_alarm(mgr: AlarmManager) -> None:
    mgr.process(change_set((PROT, 1.0)))
    a = only(mgr)
    with pytest.raises(AlarmError, match="alarm 999: cannot acknowledge, no such alarm"):
        mgr.acknowledge([a.id, 999], "op")
    assert only(mgr).state is AlarmState.ACTIVE_UNACKED  # refused as a whole
    with pytest.raises(AlarmError, match=f"alarm {a.id}: .*must be > 0"):
        mgr.shelve(a.id, "op", 0, "noise")
    with pytest.raises(AlarmError, match="alarm 12345: no such alarm"):
        mgr.get(12345)
    mgr.acknowledge(None, "op")
    mgr.process(change_set((PROT, 0.0)))
    with pytest.raises(AlarmError, match=f"alarm {a.id}: cannot shelve, the alarm is closed"):
        mgr.shelve(a.id, "op", 60, "noise")


def test_shelving_with_expiry(mgr: AlarmManager, clock: Clock) -> None:
    mgr.process(change_set((CB1, 1.0), (CB2, 1.0)))
    a, b = sorted(mgr.list(), key=lambda x: x.point)
    sub = mgr.subscribe()
    s = mgr.shelve(a.id, "op", 600, "maintenance on F1")
    assert (s.shelved_until_ms, s.shelved_by, s.shelve_reason) == (T0_MS + 600_000, "op", "maintenance on F1")
    assert [x.id for x in mgr.list()] == [b.id]
    assert {x.id for x in mgr.list(include_shelved=True)} == {a.id, b.id}
    assert mgr.counts()["shelved"] == 1
    # acknowledge-all only touches visible alarms
    assert [x.id for x in mgr.acknowledge(None, "op")] == [b.id]
    assert mgr.get(a.id).state is AlarmState.ACTIVE_UNACKED
    mgr.tick(T0_MS + 599_999)
    assert mgr.get(a.id).shelved_until_ms == T0_MS + 600_000
    mgr.tick(T0_MS + 600_000)
    assert mgr.get(a.id).shelved_until_ms is None
    assert [ev.kind for ev in iter(lambda: sub.get(0), None)] == [
        AlarmEventKind.SHELVED, AlarmEventKind.ACKNOWLEDGED, AlarmEventKind.UNSHELVED]
    # expiry is also checked on access, and the duration is capped at alarms.shelve_max_s (3600 s here)
    capped = mgr.shelve(a.id, "op", 10 * 3600, "long job")
    assert capped.shelved_until_ms == T0_MS + 3_600_000
    clock.now_ms = T0_MS + 3_600_000
    assert {x.id for x in mgr.list()} == {a.id, b.id}
    # explicit unshelve
    mgr.shelve(b.id, "op", 60, "x")
    assert mgr.unshelve(b.id, "op").shelved_until_ms is None
    assert {x.id for x in mgr.list()} == {a.id, b.id}
    sub.close()


def test_restart_keeps_acks_shelving_and_evaluation_state(config: StationConfig, tmp_path: Path) -> None:
    db = tmp_path / "alarms.sqlite"
    clock = Clock()
    m1 = AlarmManager(config, db, clock_ms=clock)
    try:
        m1.process(change_set((I1, 105.0), (CB1, 1.0), (CB2, 1.0), (PROT, 1.0)))
        ids = {a.point: a.id for a in m1.list()}
        m1.acknowledge([ids[CB1]], "alice")
        m1.shelve(ids[CB2], "bob", 1800, "faulty aux contact")
        m1.process(change_set((PROT, 0.0)))
        m1.raise_system("link:RTU1", "RTU RTU1 communication lost", Priority.HIGH)
        before = {a.id: a for a in m1.list(include_shelved=True)}
    finally:
        m1.stop()
    m2 = AlarmManager(config, db, clock_ms=clock)
    try:
        after = {a.id: a for a in m2.list(include_shelved=True)}
        assert after == before
        assert after[ids[CB1]].acked_by == "alice" and after[ids[CB1]].state is AlarmState.ACTIVE_ACKED
        assert after[ids[CB2]].shelved_by == "bob" and ids[CB2] not in {a.id for a in m2.list()}
        assert after[ids[PROT]].state is AlarmState.CLEARED_UNACKED
        # evaluation state came back too: 97 A is inside the HI deadband (no event), 94 A clears it
        assert m2.process(change_set((I1, 97.0))) == 0
        assert m2.process(change_set((I1, 94.0))) == 1
        assert m2.get(ids[I1]).state is AlarmState.CLEARED_UNACKED
        # breaker still open after restart: a GI confirming it raises nothing; closing it closes the acked alarm
        assert m2.process(change_set((CB1, 1.0, 0, Cause.INTERROGATED, 1.0))) == 0
        m2.process(change_set((CB1, 2.0)))
        assert m2.get(ids[CB1]).state is AlarmState.CLOSED
        # new ids continue after the old ones
        new = m2.raise_system("adapter:iec104", "restarting", Priority.HIGH)
        assert new.id > max(before)
    finally:
        m2.stop()


# ---------------------------------------------------------------------------------------------- flood


def flood_config(n: int) -> StationConfig:
    pts = "".join(
        f'\n[[points]]\nname = "P{i}"\nkind = "analog"\nrtu = "RTU1"\naddress = {i + 1}\ntype = "M_ME_NC_1"\n'
        f"limits = {{ hi = 100.0, hihi = 200.0, deadband = 1.0 }}\n"
        for i in range(n)
    )
    return parse_station_config(HEADER + pts, "flood.toml")


@pytest.mark.timeout(60)
def test_flood_of_5000_alarms_in_one_transaction(tmp_path: Path) -> None:
    n = 5000
    config = flood_config(n)
    clock = Clock()
    m = AlarmManager(config, tmp_path / "alarms.sqlite", clock_ms=clock)
    try:
        sub = m.subscribe(max_pending=100_000)
        rows = np.zeros(n, dtype=CHANGE_DTYPE)
        rows["point"] = np.arange(n)
        rows["value"] = np.where(np.arange(n) % 2 == 0, 150.0, 250.0)  # half HI, half HIHI
        rows["source_time_ms"] = T0_MS
        rows["recv_time_ms"] = T0_MS + 10
        rows["seq"] = np.arange(1, n + 1)
        rows["cause"] = Cause.SPONTANEOUS
        rows["prev_value"] = 50.0
        statements: list[str] = []
        m.store.conn().set_trace_callback(statements.append)  # process() runs on this thread, so on this connection
        t = time.perf_counter()
        emitted = m.process(ChangeSet(rows, False, time.monotonic()))
        t_process = time.perf_counter() - t
        m.store.conn().set_trace_callback(None)
        assert emitted == n
        assert sum(s.strip().upper().startswith("COMMIT") for s in statements) == 1
        t = time.perf_counter()
        listed = m.list()
        t_list = time.perf_counter() - t
        assert len(listed) == n
        assert listed[0].priority == Priority.HIGH and listed[-1].priority == Priority.MEDIUM
        assert sum(a.condition == "HIHI" for a in listed) == n // 2
        t = time.perf_counter()
        acked = m.acknowledge(None, "op")
        t_ack = time.perf_counter() - t
        assert len(acked) == n and m.counts()["active_acked"] == n
        assert sub.pending == 2 * n and sub.drops == 0
        # everything back to normal: all close in one more change set
        rows["value"] = 10.0
        rows["seq"] += n
        t = time.perf_counter()
        assert m.process(ChangeSet(rows, False, time.monotonic())) == n
        t_clear = time.perf_counter() - t
        assert m.list() == [] and len(m.history(limit=10 * n)) == n
        print(f"\nflood {n}: process {t_process * 1e3:.1f} ms, list {t_list * 1e3:.1f} ms, "
              f"ack all {t_ack * 1e3:.1f} ms, clear {t_clear * 1e3:.1f} ms")
    finally:
        m.stop()


# ---------------------------------------------------------------------------------------------- subscribers


def test_slow_subscriber_drops_oldest_and_counts(mgr: AlarmManager) -> None:
    slow = mgr.subscribe(max_pending=10)
    fast = mgr.subscribe(max_pending=1000)
    for i in range(25):
        mgr.raise_system(f"sys{i}", f"system alarm {i}", Priority.MEDIUM)
    assert (slow.pending, slow.drops) == (10, 15)
    assert [slow.get(0).alarm.condition for _ in range(10)] == [f"sys{i}" for i in range(15, 25)]
    assert slow.get(0) is None
    assert (fast.pending, fast.drops) == (25, 0)
    slow.close()
    mgr.raise_system("after", "after close", Priority.LOW)
    assert slow.get(0) is None and fast.pending == 26
    with pytest.raises(AlarmError, match="max_pending"):
        mgr.subscribe(max_pending=0)
    fast.close()


@pytest.mark.timeout(60)
def test_thread_reads_subscription(mgr: AlarmManager) -> None:
    events = mgr.subscribe()
    source = Subscription("alarms", max_pending=16)
    mgr.start(source)
    source.offer(change_set((CB2, 1.0)))
    ev = events.get(5.0)
    assert ev is not None and ev.kind is AlarmEventKind.RAISED and ev.alarm.point == CB2
    mgr.stop()
    assert events.closed and source.closed
