"""Historian: compressed time series of every point, read back raw or in time buckets.

Status points keep every change. Analog, counter and set-point values are deadband-compressed: a change is stored
when it moved more than the point's ``historian_deadband`` from the last *stored* value, when its quality changed,
or when ``max_interval_s`` has passed since the last stored sample (deadband 0 stores every change). The historian
only sees changes, so a value holds until the next sample; ``HistoryResult.previous`` gives the value in force at the
start of a window.

The compression decision is vectorised: the rows of a change set are ranked by their occurrence within their point
(several reports of one point in one transaction are all kept by the RTDB), and each rank is decided for all points
at once, so the cost is a handful of numpy operations per change set, not a Python loop per row.

After a restart the first change of every point is stored (the compression state is not restored): that marks the
restart in each series at the cost of one row per point.

``backfill`` inserts historical samples as given (data recovered after a link outage, see ``iccp.recovery``),
skipping any (point, time) that already has a sample, so a replay adds nothing.

Samples live in one clustered table keyed by (point, time, seq), so a range read of one point is one index range.
Purge deletes per point along that key, so it never scans the whole table.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.points import PointDef, PointKind
from models.timebase import now_ms as _now_ms
from scada.changes import CHANGE_DTYPE, ChangeSet
from scada.errors import ScadaError, StorageError, UnknownPointError
from scada.sqlite_store import SqliteStore

__all__ = ["BACKFILL_DTYPE", "BUCKET_DTYPE", "SAMPLE_DTYPE", "HistorianError", "HistoryResult", "Historian"]

#: One stored sample. ``time_ms`` is the source time if the field gave one, else the receive time.
SAMPLE_DTYPE = np.dtype([("time_ms", "<i8"), ("value", "<f8"), ("quality", "<u2")])

#: One historical sample to insert with ``Historian.backfill`` (e.g. recovered after a link outage).
BACKFILL_DTYPE = np.dtype([("point", "<i4"), ("time_ms", "<i8"), ("value", "<f8"), ("quality", "<u2")])

#: ``seq`` of backfilled rows: below every RTDB sequence (they start at 1), so it never collides with a live row.
_BACKFILL_SEQ = 0

#: One time bucket of a downsampled series. ``mean`` is the arithmetic mean of the samples in the bucket (not
#: time-weighted); min/max/mean ignore NaN values; ``quality`` is the bitwise OR of the samples' quality (worst).
BUCKET_DTYPE = np.dtype(
    [
        ("start_ms", "<i8"),
        ("min", "<f8"),
        ("max", "<f8"),
        ("mean", "<f8"),
        ("last", "<f8"),  # value of the last sample in the bucket
        ("quality", "<u2"),
        ("count", "<i4"),
    ]
)

_MS_PER_DAY = 86_400_000
_HISTORISED = frozenset(
    {PointKind.SINGLE, PointKind.DOUBLE, PointKind.ANALOG, PointKind.COUNTER, PointKind.SETPOINT}
)


class HistorianError(ScadaError):
    """A history request that cannot be answered as asked (bad window or bucket size)."""


@dataclass(frozen=True, slots=True, eq=False)  # eq on numpy fields would raise, not compare
class HistoryResult:
    """Samples of one point in [start_ms, end_ms).

    Raw (``bucket_ms == 0``): ``samples`` holds every stored sample in time order and ``buckets`` is empty.
    Downsampled (``bucket_ms > 0``): ``buckets`` holds the non-empty buckets, each starting at
    ``start_ms + k * bucket_ms``, and ``samples`` is empty.
    ``previous`` is the last sample before ``start_ms`` (0 or 1 rows): the value in force when the window opens.
    """

    point: int
    point_name: str
    start_ms: int
    end_ms: int
    bucket_ms: int
    samples: np.ndarray  # SAMPLE_DTYPE
    buckets: np.ndarray  # BUCKET_DTYPE
    previous: np.ndarray  # SAMPLE_DTYPE, length 0 or 1

    @property
    def raw(self) -> bool:
        return self.bucket_ms == 0


class Historian(SqliteStore):
    """Deadband-compressed sample store; ``process`` runs on the historian subscriber thread."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS samples (
        point INTEGER NOT NULL,
        time_ms INTEGER NOT NULL,   -- source time, else receive time (UTC epoch ms)
        seq INTEGER NOT NULL,       -- RTDB sequence: orders samples of one point within one millisecond
        value REAL,                 -- NULL stands for NaN
        quality INTEGER NOT NULL,
        PRIMARY KEY (point, time_ms, seq)
    ) WITHOUT ROWID;
    """

    def __init__(
        self,
        path: str | Path,
        points: Sequence[PointDef],
        *,
        retention_days: float = 14.0,
        max_interval_s: float = 900.0,
        durable: bool = False,
    ) -> None:
        if not retention_days > 0:
            raise HistorianError(f"{path}: retention_days must be positive, not {retention_days}")
        if not max_interval_s > 0:
            raise HistorianError(f"{path}: max_interval_s must be positive, not {max_interval_s}")
        super().__init__(path, durable=durable)
        self.retention_days = retention_days
        self.max_interval_s = max_interval_s
        self._points = list(points)
        n = len(self._points)
        self._historised = np.array([p.kind in _HISTORISED for p in self._points], dtype=bool)
        self._is_status = np.array([p.kind.is_status for p in self._points], dtype=bool)
        self._deadband = np.array([max(p.historian_deadband, 0.0) for p in self._points], dtype=np.float64)
        # compression state: the last stored sample of each point
        self._has_last = np.zeros(n, dtype=bool)
        self._last_value = np.full(n, np.nan)
        self._last_quality = np.zeros(n, dtype=np.uint16)
        self._last_time_ms = np.zeros(n, dtype=np.int64)
        self.stored_rows = 0
        self.seen_rows = 0

    # ------------------------------------------------------------------------------------------------- write
    def process(self, cs: ChangeSet) -> int:
        """Store what the compression keeps of one change set; returns the number of rows stored."""
        rows = cs.rows
        if rows.dtype != CHANGE_DTYPE:
            raise StorageError(f"{self.path}: change rows must have CHANGE_DTYPE, not {rows.dtype}")
        n_points = len(self._points)
        point = rows["point"]
        rows = rows[(point >= 0) & (point < n_points)]
        rows = rows[self._historised[rows["point"]]]
        self.seen_rows += len(cs.rows)
        if not len(rows):
            return 0
        keep = self._select(rows)
        kept = rows[keep]
        if not len(kept):
            return 0
        src = kept["source_time_ms"]
        t = np.where(src >= 0, src, kept["recv_time_ms"])
        params = zip(
            kept["point"].tolist(), t.tolist(), kept["seq"].tolist(), kept["value"].tolist(),
            kept["quality"].tolist(), strict=True,
        )
        try:
            with self.conn() as c:
                # OR REPLACE: a replayed (point, time, seq) after a restart overwrites instead of failing the batch
                c.executemany(
                    "INSERT OR REPLACE INTO samples (point, time_ms, seq, value, quality) VALUES (?, ?, ?, ?, ?)",
                    params,
                )
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store {len(kept)} historian sample(s): {exc}") from exc
        self.stored_rows += len(kept)
        return len(kept)

    def backfill(self, rows: np.ndarray) -> int:
        """Insert historical samples (``BACKFILL_DTYPE``) as given, without compression; returns the number inserted.

        Idempotent per (point, time): a row whose point already has a sample at that millisecond (live or backfilled)
        is skipped, as is a repeat of a (point, time) within ``rows`` (the first wins), so replaying a recovery is
        harmless. Rows are stored in (point, time) order in one transaction; points that are not historised are
        skipped. The compression state is left alone: backfilled samples lie behind the live edge.
        """
        if rows.dtype != BACKFILL_DTYPE:
            raise StorageError(f"{self.path}: backfill rows must have BACKFILL_DTYPE, not {rows.dtype}")
        if not len(rows):
            return 0
        point = rows["point"]
        bad = (point < 0) | (point >= len(self._points))
        if bad.any():
            raise UnknownPointError(f"{self.path}: backfill names point id {int(point[bad][0])}, not in the historian")
        rows = rows[self._historised[point]]
        rows = rows[np.lexsort((rows["time_ms"], rows["point"]))]  # stable: the first of equal keys stays first
        params = zip(rows["point"].tolist(), rows["time_ms"].tolist(), rows["value"].tolist(),
                     rows["quality"].tolist(), strict=True)
        try:
            c = self.conn()
            before = c.total_changes
            with c:
                c.executemany(
                    "INSERT INTO samples (point, time_ms, seq, value, quality) SELECT ?1, ?2, ?5, ?3, ?4 "
                    "WHERE NOT EXISTS (SELECT 1 FROM samples WHERE point = ?1 AND time_ms = ?2)",
                    ((p, t, v, q, _BACKFILL_SEQ) for p, t, v, q in params),
                )
            inserted = c.total_changes - before
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot backfill {len(rows)} historian sample(s): {exc}") from exc
        self.stored_rows += inserted
        return inserted

    def _select(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask of the rows to store; updates the compression state as if they were stored."""
        n = len(rows)
        point = rows["point"].astype(np.intp)
        value = rows["value"]
        quality = rows["quality"]
        src = rows["source_time_ms"]
        t = np.where(src >= 0, src, rows["recv_time_ms"])
        # occurrence rank of each row within its point, in sequence order
        order = np.argsort(point, kind="stable")
        sp = point[order]
        new_group = np.empty(n, dtype=bool)
        new_group[0] = True
        np.not_equal(sp[1:], sp[:-1], out=new_group[1:])
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        rank = np.empty(n, dtype=np.intp)
        rank[order] = np.arange(n) - group_start
        keep = np.zeros(n, dtype=bool)
        max_interval_ms = self.max_interval_s * 1000.0
        max_rank = int(rank.max())
        for r in range(max_rank + 1):
            idx = np.arange(n) if max_rank == 0 else np.flatnonzero(rank == r)
            p = point[idx]
            v = value[idx]
            q = quality[idx]
            tt = t[idx]
            last_v = self._last_value[p]
            db = self._deadband[p]
            with np.errstate(invalid="ignore"):
                moved = np.abs(v - last_v) > db
            store = (
                ~self._has_last[p]
                | self._is_status[p]
                | (db == 0.0)
                | moved
                | (np.isnan(v) != np.isnan(last_v))
                | (q != self._last_quality[p])
                | ((tt - self._last_time_ms[p]) >= max_interval_ms)
            )
            sel = idx[store]
            keep[sel] = True
            ps = p[store]  # unique within one rank, so plain fancy assignment is exact
            self._has_last[ps] = True
            self._last_value[ps] = v[store]
            self._last_quality[ps] = q[store]
            self._last_time_ms[ps] = tt[store]
        return keep

    def purge(self, now_ms: int | None = None) -> int:
        """Delete samples older than the retention; returns the number deleted."""
        now = _now_ms() if now_ms is None else int(now_ms)
        cutoff = now - int(self.retention_days * _MS_PER_DAY)
        try:
            c = self.conn()
            (top,) = c.execute("SELECT MAX(point) FROM samples").fetchone()
            if top is None:
                return 0
            before = c.total_changes
            with c:
                # one range delete per point along the primary key: never a full-table scan
                c.executemany(
                    "DELETE FROM samples WHERE point = ? AND time_ms < ?", ((pid, cutoff) for pid in range(top + 1))
                )
            return c.total_changes - before
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot purge samples older than {cutoff} ms: {exc}") from exc

    # -------------------------------------------------------------------------------------------------- read
    def query(
        self,
        point: int,
        start_ms: int,
        end_ms: int,
        *,
        bucket_s: float | None = None,
        max_points: int | None = None,
    ) -> HistoryResult:
        """Samples of ``point`` in [start_ms, end_ms): raw, or in buckets of ``bucket_s`` and/or at most
        ``max_points`` buckets (the wider of the two bucket sizes wins)."""
        if not 0 <= point < len(self._points):
            raise UnknownPointError(f"{self.path}: no point with id {point} in the historian")
        name = self._points[point].name
        start_ms, end_ms = int(start_ms), int(end_ms)
        if end_ms <= start_ms:
            raise HistorianError(f"history of {name!r}: end_ms {end_ms} must be after start_ms {start_ms}")
        bucket_ms = 0
        if bucket_s is not None:
            if not (bucket_s > 0 and math.isfinite(bucket_s)):
                raise HistorianError(f"history of {name!r}: bucket_s must be a positive number, not {bucket_s}")
            bucket_ms = max(1, math.ceil(bucket_s * 1000.0))
        if max_points is not None:
            if max_points <= 0:
                raise HistorianError(f"history of {name!r}: max_points must be positive, not {max_points}")
            bucket_ms = max(bucket_ms, -(-(end_ms - start_ms) // max_points))
        try:
            c = self.conn()
            got = c.execute(
                "SELECT time_ms, value, quality FROM samples WHERE point = ? AND time_ms >= ? AND time_ms < ? "
                "ORDER BY time_ms, seq",
                (point, start_ms, end_ms),
            ).fetchall()
            prev = c.execute(
                "SELECT time_ms, value, quality FROM samples WHERE point = ? AND time_ms < ? "
                "ORDER BY time_ms DESC, seq DESC LIMIT 1",
                (point, start_ms),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read the history of {name!r}: {exc}") from exc
        samples = _samples(got)
        previous = _samples(prev)
        if bucket_ms == 0:
            return HistoryResult(point, name, start_ms, end_ms, 0, samples, np.zeros(0, BUCKET_DTYPE), previous)
        buckets = _bucketise(samples, start_ms, bucket_ms)
        return HistoryResult(point, name, start_ms, end_ms, bucket_ms, np.zeros(0, SAMPLE_DTYPE), buckets, previous)

    def count(self, point: int | None = None) -> int:
        sql, args = ("SELECT COUNT(*) FROM samples", ()) if point is None else (
            "SELECT COUNT(*) FROM samples WHERE point = ?", (point,))
        try:
            (n,) = self.conn().execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot count samples: {exc}") from exc
        return int(n)


def _samples(got: list[tuple]) -> np.ndarray:
    # numpy turns a NULL (None, a stored NaN) into NaN when filling a float field
    return np.array(got, dtype=SAMPLE_DTYPE) if got else np.zeros(0, dtype=SAMPLE_DTYPE)


def _bucketise(samples: np.ndarray, start_ms: int, bucket_ms: int) -> np.ndarray:
    """Aggregate time-ordered samples into the non-empty buckets of width ``bucket_ms`` from ``start_ms``."""
    if not len(samples):
        return np.zeros(0, dtype=BUCKET_DTYPE)
    k = (samples["time_ms"] - start_ms) // bucket_ms
    first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])  # samples are time-ordered, so buckets are runs
    last = np.r_[first[1:], len(samples)] - 1
    v = samples["value"]
    finite = ~np.isnan(v)
    n_finite = np.add.reduceat(finite.astype(np.int64), first)
    out = np.zeros(len(first), dtype=BUCKET_DTYPE)
    out["start_ms"] = start_ms + k[first] * bucket_ms
    out["min"] = np.fmin.reduceat(v, first)  # fmin/fmax skip NaN unless all are NaN
    out["max"] = np.fmax.reduceat(v, first)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean"] = np.where(n_finite > 0, np.add.reduceat(np.where(finite, v, 0.0), first) / n_finite, np.nan)
    out["last"] = v[last]
    out["quality"] = np.bitwise_or.reduceat(samples["quality"], first)
    out["count"] = last - first + 1
    return out
