import math
import time

import numpy as np
import pytest

from models.points import PointDef, PointKind, PointSource, Quality
from models.updates import Cause
from scada.changes import CHANGE_DTYPE, ChangeSet
from scada.errors import UnknownPointError
from scada.historian import Historian, HistorianError

DAY_MS = 86_400_000


def _point(i: int, kind: PointKind, deadband: float = 0.0) -> PointDef:
    return PointDef(i, f"P{i}", kind, PointSource("iec104", "R1", 1, i, ""), historian_deadband=deadband)


POINTS = [
    _point(0, PointKind.ANALOG, 1.0),
    _point(1, PointKind.ANALOG, 0.0),
    _point(2, PointKind.DOUBLE, 5.0),  # a deadband on a status point is ignored: every change is kept
    _point(3, PointKind.COMMAND),
    _point(4, PointKind.COUNTER, 10.0),
]

_seq = iter(range(1, 10**9))


def _cs(points, values, t_ms, *, quality=0, source=True) -> ChangeSet:
    n = len(points)
    rows = np.zeros(n, dtype=CHANGE_DTYPE)
    rows["point"] = points
    rows["value"] = values
    rows["quality"] = quality
    rows["source_time_ms"] = t_ms if source else -1
    rows["recv_time_ms"] = np.asarray(t_ms) + 7
    rows["seq"] = [next(_seq) for _ in range(n)]
    rows["cause"] = Cause.SPONTANEOUS
    return ChangeSet(rows=rows, status=False, commit_monotonic=time.monotonic())


@pytest.fixture
def hist(tmp_path):
    h = Historian(tmp_path / "h.sqlite", POINTS, max_interval_s=10.0)
    try:
        yield h
    finally:
        h.close()


def _raw(h: Historian, point: int) -> np.ndarray:
    return h.query(point, 0, 10**13).samples


def test_deadband_against_last_stored_value(hist):
    series = [(0, 10.0, 0), (1_000, 10.5, 0), (2_000, 10.9, 0), (3_000, 11.2, 0), (4_000, 10.5, 0),
              (5_000, 10.6, int(Quality.QUESTIONABLE)), (6_000, 10.7, int(Quality.QUESTIONABLE)), (7_000, 9.5, 0)]
    stored = [hist.process(_cs([0], [v], [t], quality=q)) for t, v, q in series]
    # 10.0 first; 10.5/10.9 within 1.0 of 10.0; 11.2 moved 1.2; 10.5 within 0.7 of 11.2; quality change;
    # 10.7 within; 9.5 moved 1.1 from 10.6 (and quality changed back)
    assert stored == [1, 0, 0, 1, 0, 1, 0, 1]
    got = _raw(hist, 0)
    assert got["time_ms"].tolist() == [0, 3_000, 5_000, 7_000]
    assert got["value"].tolist() == [10.0, 11.2, 10.6, 9.5]
    assert got["quality"].tolist() == [0, 0, int(Quality.QUESTIONABLE), 0]


def test_zero_deadband_and_status_points_store_every_change(hist):
    for k in range(6):
        hist.process(_cs([1, 2], [100.0 + k * 1e-9, float(1 + k % 2)], [k * 100, k * 100]))
    assert len(_raw(hist, 1)) == 6
    assert _raw(hist, 2)["value"].tolist() == [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]


def test_command_points_are_not_historised(hist):
    assert hist.process(_cs([3], [1.0], [0])) == 0
    assert hist.count() == 0


def test_max_interval_forces_a_sample_inside_the_deadband(hist):
    # max_interval_s = 10
    for t, v in [(0, 50.0), (4_000, 50.1), (9_999, 50.2), (10_000, 50.3), (15_000, 50.4), (20_500, 50.1)]:
        hist.process(_cs([0], [v], [t]))
    assert _raw(hist, 0)["time_ms"].tolist() == [0, 10_000, 20_500]


def test_receive_time_used_when_source_time_missing(hist):
    hist.process(_cs([1], [1.0], [5_000], source=False))
    assert _raw(hist, 1)["time_ms"].tolist() == [5_007]


def test_several_rows_of_one_point_in_one_change_set_match_sequential_processing(tmp_path):
    """The vectorised ranks must decide exactly as one row at a time would."""
    rng = np.random.default_rng(7)
    n = 3_000
    pts = rng.integers(0, 5, n)
    vals = np.round(rng.normal(0, 3, n).cumsum(), 3)
    times = np.sort(rng.integers(0, 200_000, n))
    qual = (rng.random(n) < 0.05).astype(int) * int(Quality.INVALID)
    a = Historian(tmp_path / "a.sqlite", POINTS, max_interval_s=10.0)
    b = Historian(tmp_path / "b.sqlite", POINTS, max_interval_s=10.0)
    try:
        for lo in range(0, n, 250):  # batches with many rows per point
            a.process(_cs(pts[lo:lo + 250], vals[lo:lo + 250], times[lo:lo + 250], quality=qual[lo:lo + 250]))
        for i in range(n):
            b.process(_cs(pts[i:i + 1], vals[i:i + 1], times[i:i + 1], quality=qual[i:i + 1]))
        assert a.stored_rows == b.stored_rows
        for p in (0, 1, 2, 4):
            ra, rb = _raw(a, p), _raw(b, p)
            assert np.array_equal(ra, rb), f"point {p} differs"
        assert 0 < a.count(0) < np.count_nonzero(pts == 0)  # the deadband did drop samples
        assert a.count(1) == np.count_nonzero(pts == 1)  # deadband 0 kept them all
    finally:
        a.close()
        b.close()


def test_buckets_of_a_known_series(hist):
    # point 1 (deadband 0): one sample per second, value = second, t = 0..99 s; one questionable, one invalid NaN
    t = np.arange(100) * 1_000
    v = np.arange(100, dtype=float)
    q = np.zeros(100, dtype=int)
    q[13] = int(Quality.QUESTIONABLE)
    v[57] = np.nan
    q[57] = int(Quality.INVALID)
    for i in range(100):
        hist.process(_cs([1], [v[i]], [t[i]], quality=q[i]))

    r = hist.query(1, 0, 100_000, bucket_s=10.0)
    assert not r.raw and r.bucket_ms == 10_000 and len(r.samples) == 0
    b = r.buckets
    assert b["start_ms"].tolist() == list(range(0, 100_000, 10_000))
    assert b["count"].tolist() == [10] * 10
    assert b["min"].tolist() == [10.0 * k for k in range(10)]
    assert b["max"].tolist() == [10.0 * k + 9 for k in range(10)]
    assert b["last"].tolist() == [10.0 * k + 9 for k in range(10)]
    means = [10.0 * k + 4.5 for k in range(10)]
    means[5] = (sum(range(50, 60)) - 57) / 9  # NaN ignored by the mean
    assert np.allclose(b["mean"], means)
    assert b["quality"].tolist() == [0, int(Quality.QUESTIONABLE), 0, 0, 0, int(Quality.INVALID), 0, 0, 0, 0]

    # at most 4 buckets over 100 s: 25 s each
    r = hist.query(1, 0, 100_000, max_points=4)
    assert r.bucket_ms == 25_000 and r.buckets["count"].tolist() == [25] * 4
    assert r.buckets["start_ms"].tolist() == [0, 25_000, 50_000, 75_000]
    # the wider of bucket_s and the max_points bucket wins
    assert hist.query(1, 0, 100_000, bucket_s=50.0, max_points=4).bucket_ms == 50_000
    # a window starting mid-way: buckets are aligned on the window start, empty ones are left out
    r = hist.query(1, 95_500, 130_000, bucket_s=2.0)
    assert r.buckets["start_ms"].tolist() == [95_500, 97_500] and r.buckets["count"].tolist() == [2, 2]
    assert r.previous["time_ms"].tolist() == [95_000] and r.previous["value"].tolist() == [95.0]


def test_raw_query_window_is_half_open_and_gives_previous(hist):
    for k in range(10):
        hist.process(_cs([1], [float(k)], [k * 1_000]))
    r = hist.query(1, 3_000, 6_000)
    assert r.raw and r.samples["time_ms"].tolist() == [3_000, 4_000, 5_000] and len(r.buckets) == 0
    assert r.previous["value"].tolist() == [2.0]
    assert len(hist.query(1, 0, 500).previous) == 0
    assert r.point_name == "P1"


def test_query_errors_name_the_problem(hist):
    with pytest.raises(UnknownPointError, match="42"):
        hist.query(42, 0, 1)
    with pytest.raises(HistorianError, match="P0.*after"):
        hist.query(0, 10, 10)
    with pytest.raises(HistorianError, match="bucket_s"):
        hist.query(0, 0, 10, bucket_s=0.0)
    with pytest.raises(HistorianError, match="max_points"):
        hist.query(0, 0, 10, max_points=0)


def test_retention_purge_and_persistence(tmp_path):
    path = tmp_path / "h.sqlite"
    now = 1_700_000_000_000
    h = Historian(path, POINTS, retention_days=1.0)
    try:
        h.process(_cs([1, 4], [1.0, 1.0], [now - 2 * DAY_MS, now - 2 * DAY_MS]))
        h.process(_cs([1, 4], [2.0, 100.0], [now - DAY_MS - 1, now - DAY_MS - 1]))
        h.process(_cs([1, 4], [3.0, 200.0], [now - DAY_MS // 2, now - DAY_MS // 2]))
        assert h.count() == 6
    finally:
        h.close()
    h = Historian(path, POINTS, retention_days=1.0)  # a restart keeps the samples
    try:
        assert h.count() == 6
        assert h.purge(now_ms=now) == 4
        assert _raw(h, 1)["value"].tolist() == [3.0]
        assert _raw(h, 4)["value"].tolist() == [200.0]
        assert h.purge(now_ms=now) == 0
    finally:
        h.close()


def test_process_cost_per_1000_rows(tmp_path, capsys):
    """2,000 analog points changing at 2,000/s: one 1,000-row change set every half second."""
    n_points = 2_000
    pts = [_point(i, PointKind.ANALOG, 0.5) for i in range(n_points)]
    h = Historian(tmp_path / "h.sqlite", pts)
    rng = np.random.default_rng(1)
    level = rng.uniform(0, 100, n_points)
    try:
        sets = []
        for k in range(40):
            ids = rng.choice(n_points, 1_000, replace=False)
            level[ids] += rng.normal(0, 0.5, 1_000)
            sets.append(_cs(ids, level[ids], np.full(1_000, k * 500)))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        stored = sum(h.process(cs) for cs in sets)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        with capsys.disabled():
            print(f"\nhistorian process: {cpu / 40 * 1e3:.2f} ms CPU ({wall / 40 * 1e3:.2f} ms wall) per 1,000 rows, "
                  f"{stored / 40_000:.0%} stored")
        assert 0 < stored < 40_000
        assert wall / 40 < 0.1  # loose bound on a shared machine
    finally:
        h.close()


def test_nan_values_round_trip(hist):
    hist.process(_cs([1], [math.nan], [0], quality=int(Quality.INVALID)))
    hist.process(_cs([1], [1.0], [1_000]))
    got = _raw(hist, 1)
    assert math.isnan(got["value"][0]) and got["value"][1] == 1.0
