"""Data recovery after an ICCP link outage (the seed's "ICCP / FTP (for DR)"): periodic snapshot files.

Choice: **snapshot files, not a historical read.** TASE.2 Blocks 1, 2 and 5 have no service to read the past (a
transfer set reports the present; Block 8/9 objects are rarely implemented), and the outage that must be bridged is
usually the very association a historical read would need. So the sending side writes one file per interval holding
everything it reported in that interval; the files travel by a separate path (FTP/SFTP, rsync, a shared mount: any
transport that delivers the directory, which stays outside this module), and the receiving side, once the link is
back, reads the files that cover the outage and backfills the historian (``scada.historian.Historian.backfill``).
Costs: the current interval is only available once its file is closed (up to ``interval_s`` later; recovery reports
the part not yet covered so the caller retries), and the files cost disk space (bounded by ``retention_s``).

Directory layout, written only by ``SnapshotWriter``:

- ``<source>_<start>_<end>.csv`` (UTC ``YYYYmmddTHHMMSSfffZ``), one per interval [start, end); intervals are aligned
  to multiples of ``interval_s`` except the first after a (re)start and the last at ``close``.
- ``manifest.json``: ``{"format": "dscada-iccp-dr", "version": 1, "source", "interval_s", "columns", "files":
  [{"name", "start_ms", "end_ms", "rows", "sha256"}, ...]}`` in time order. Only files listed there exist for a
  reader; a file is written before the manifest that lists it and deleted (retention) after the manifest that
  drops it. Both are written atomically (temporary file, fsync, rename, fsync of the directory).

CSV format (UTF-8, header line, ``,`` separated, no quoting needed: point names are MMS identifiers)::

    kind,point,value,flags,time_utc
    state,FREQ_SYS,49.9981,,2026-11-27T05:34:00.000Z
    change,TIE1_MW,6.214,,2026-11-27T05:34:01.000Z
    change,TIE1_MW,6.2,QUESTIONABLE|TIME_INVALID,2026-11-27T05:34:02.000Z

``kind`` is ``state`` (every point's value in force at the interval start, with the time of its last change, which
may be earlier) or ``change`` (a report by exception inside the interval, in time order). ``value`` is the
shortest text that round-trips the float (``nan`` allowed); ``flags`` are ``models.points.Quality`` member names
joined by ``|``, empty when good; ``time_utc`` is ISO 8601 UTC with milliseconds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np

from iccp.errors import IccpError
from iccp.sim.transmission import PointValue
from models.points import Quality
from scada.historian import BACKFILL_DTYPE, Historian

__all__ = [
    "COLUMNS",
    "FORMAT",
    "MANIFEST_NAME",
    "RecoveryError",
    "RecoveryResult",
    "RowKind",
    "SnapshotArchive",
    "SnapshotFile",
    "SnapshotRow",
    "SnapshotWriter",
    "recover_gap",
]

FORMAT = "dscada-iccp-dr"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
COLUMNS = ("kind", "point", "value", "flags", "time_utc")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class RecoveryError(IccpError):
    """A snapshot directory, manifest or file that cannot be written or read as specified (names the file)."""


class RowKind(StrEnum):
    STATE = "state"
    CHANGE = "change"


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A manifest entry: the file ``name`` covers [start_ms, end_ms)."""

    name: str
    start_ms: int
    end_ms: int
    rows: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    kind: RowKind
    point: str
    value: float
    quality: Quality
    time_ms: int


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """What ``recover_gap`` did for the gap [start_ms, end_ms).

    ``missing`` lists the parts of the gap no file covers yet (retry later, or they are lost to retention);
    ``inserted`` counts samples written; ``already_present`` the rows the historian had already (idempotent replay).
    """

    start_ms: int
    end_ms: int
    files_read: int
    rows_in_gap: int
    inserted: int
    already_present: int
    unmapped_points: tuple[str, ...]
    missing: tuple[tuple[int, int], ...]

    @property
    def complete(self) -> bool:
        return not self.missing


# ------------------------------------------------------------------------------------------------------- writing
class SnapshotWriter:
    """Sending side: collects the reported values per interval and writes one file per interval.

    Call ``start`` once with the full state, then ``record`` after every batch of changes (their times must not go
    back before the current interval), and ``close`` to write the interval in progress.
    """

    def __init__(self, directory: str | Path, *, source: str, interval_s: float = 60.0,
                 retention_s: float = 7 * 86_400.0) -> None:
        if not _SOURCE_RE.match(source):
            raise RecoveryError(f"snapshot source name {source!r} must be 1-64 letters, digits, '_' or '-'")
        if not (interval_s >= 1.0 and math.isfinite(interval_s)):
            raise RecoveryError(f"snapshot writer {source}: interval_s must be at least 1 s, not {interval_s}")
        if not retention_s >= interval_s:
            raise RecoveryError(f"snapshot writer {source}: retention_s {retention_s} is shorter than one interval")
        self.directory = Path(directory)
        self.source = source
        self.interval_ms = int(round(interval_s * 1000.0))
        self.retention_ms = int(round(retention_s * 1000.0))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecoveryError(f"{self.directory}: cannot create the snapshot directory: {exc}") from exc
        manifest = self.directory / MANIFEST_NAME
        self._files: list[SnapshotFile] = list(_read_manifest(manifest)) if manifest.exists() else []
        self._remove_orphans()
        self._state: dict[str, PointValue] = {}
        self._changes: list[PointValue] = []
        self._start_ms = -1
        self._end_ms = -1

    @property
    def files(self) -> tuple[SnapshotFile, ...]:
        return tuple(self._files)

    def start(self, state: Sequence[PointValue], now_ms: int) -> None:
        """Open the first interval at ``now_ms`` with ``state`` (every point's value in force)."""
        self._state = {v.name: v for v in state}
        self._changes = []
        self._start_ms = int(now_ms)
        self._end_ms = self._next_boundary(self._start_ms)

    def record(self, now_ms: int, changes: Iterable[PointValue]) -> tuple[SnapshotFile, ...]:
        """Close the intervals that ended by ``now_ms`` (writing their files), then add ``changes``."""
        if self._start_ms < 0:
            raise RecoveryError(f"snapshot writer {self.source}: record before start")
        written = []
        while now_ms >= self._end_ms:
            written.append(self._flush(self._end_ms))
        for v in changes:
            self._changes.append(v)
        return tuple(written)

    def close(self, now_ms: int) -> SnapshotFile | None:
        """Write the interval in progress as [start, now_ms + 1 ms), so it holds what was reported at ``now_ms``."""
        if self._start_ms < 0:
            return None
        written = None
        while now_ms >= self._end_ms:
            written = self._flush(self._end_ms)
        if now_ms + 1 > self._start_ms:
            written = self._flush(int(now_ms) + 1)
        self._start_ms = -1
        return written

    # ------------------------------------------------------------------------------------------------ internal
    def _next_boundary(self, t_ms: int) -> int:
        return (t_ms // self.interval_ms + 1) * self.interval_ms

    def _flush(self, end_ms: int) -> SnapshotFile:
        start = self._start_ms
        inside = [v for v in self._changes if v.time_ms < end_ms]
        later = [v for v in self._changes if v.time_ms >= end_ms]
        buf = io.StringIO(newline="")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for v in self._state.values():
            w.writerow((RowKind.STATE.value, v.name, _fmt_value(v.value), _fmt_flags(v.quality), _fmt_time(v.time_ms)))
        for v in sorted(inside, key=lambda v: v.time_ms):  # stable: equal times keep their report order
            w.writerow((RowKind.CHANGE.value, v.name, _fmt_value(v.value), _fmt_flags(v.quality),
                        _fmt_time(v.time_ms)))
        data = buf.getvalue().encode("utf-8")
        name = f"{self.source}_{_stamp(start)}_{_stamp(end_ms)}.csv"
        entry = SnapshotFile(name, start, end_ms, len(self._state) + len(inside), hashlib.sha256(data).hexdigest())
        _atomic_write(self.directory / name, data)
        self._files = [f for f in self._files if f.name != name] + [entry]
        self._files.sort(key=lambda f: (f.start_ms, f.end_ms))
        cutoff = end_ms - self.retention_ms
        expired = [f for f in self._files if f.end_ms <= cutoff]
        self._files = [f for f in self._files if f.end_ms > cutoff]
        self._write_manifest()
        for f in expired:  # after the manifest dropped them: a reader never sees a listed file missing
            (self.directory / f.name).unlink(missing_ok=True)
        for v in inside:
            self._state[v.name] = v
        self._changes = later
        self._start_ms = end_ms
        self._end_ms = self._next_boundary(end_ms)
        return entry

    def _write_manifest(self) -> None:
        doc = {
            "format": FORMAT, "version": FORMAT_VERSION, "source": self.source,
            "interval_s": self.interval_ms / 1000.0, "columns": list(COLUMNS),
            "files": [{"name": f.name, "start_ms": f.start_ms, "end_ms": f.end_ms, "rows": f.rows,
                       "sha256": f.sha256} for f in self._files],
        }
        _atomic_write(self.directory / MANIFEST_NAME, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))

    def _remove_orphans(self) -> None:
        """Delete our CSV files the manifest does not list (a crash between file and manifest write)."""
        listed = {f.name for f in self._files}
        for p in self.directory.glob(f"{self.source}_*.csv"):
            if p.name not in listed:
                p.unlink(missing_ok=True)
        for p in self.directory.glob(".*.tmp"):
            p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------- reading
class SnapshotArchive:
    """Receiving side: the files of a snapshot directory, read through its manifest and checked."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def files(self) -> tuple[SnapshotFile, ...]:
        manifest = self.directory / MANIFEST_NAME
        if not manifest.exists():
            return ()
        return _read_manifest(manifest)

    def read(self, entry: SnapshotFile) -> tuple[SnapshotRow, ...]:
        path = self.directory / entry.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RecoveryError(f"{path}: listed in the manifest but cannot be read: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise RecoveryError(f"{path}: SHA-256 differs from the manifest (file damaged or replaced)")
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(reader, None)
        if tuple(header or ()) != COLUMNS:
            raise RecoveryError(f"{path}: header {header} is not {','.join(COLUMNS)}")
        rows = []
        for line_no, rec in enumerate(reader, start=2):
            if len(rec) != len(COLUMNS):
                raise RecoveryError(f"{path}:{line_no}: {len(rec)} fields, expected {len(COLUMNS)}")
            kind, point, value, flags, time_utc = rec
            try:
                rows.append(SnapshotRow(RowKind(kind), point, float(value), _parse_flags(flags), _parse_time(time_utc)))
            except ValueError as exc:
                raise RecoveryError(f"{path}:{line_no}: {exc}") from exc
        if len(rows) != entry.rows:
            raise RecoveryError(f"{path}: {len(rows)} rows, the manifest says {entry.rows}")
        return tuple(rows)

    def coverage_gaps(self, start_ms: int, end_ms: int) -> tuple[tuple[int, int], ...]:
        """The parts of [start_ms, end_ms) that no listed file covers."""
        missing = []
        t = start_ms
        for f in self.files():
            if f.end_ms <= t or f.start_ms >= end_ms:
                continue
            if f.start_ms > t:
                missing.append((t, f.start_ms))
            t = max(t, f.end_ms)
            if t >= end_ms:
                break
        if t < end_ms:
            missing.append((t, end_ms))
        return tuple(missing)


def recover_gap(archive: SnapshotArchive, historian: Historian, point_ids: Mapping[str, int], start_ms: int,
                end_ms: int) -> RecoveryResult:
    """Backfill ``historian`` with every value the sender reported in [start_ms, end_ms).

    ``start_ms`` is the time from which nothing was received (the last received report + 1 ms, or the time the link
    was lost), ``end_ms`` the time live data resumed. ``point_ids`` maps the sender's point names (TASE.2 names) to
    RTDB point ids; names it lacks are reported in ``unmapped_points`` and skipped. Safe to call again (e.g. once the
    file covering the end of the gap exists): samples already stored are not duplicated.
    """
    if end_ms <= start_ms:
        raise RecoveryError(f"{archive.directory}: recovery window end {end_ms} must be after start {start_ms}")
    used = [f for f in archive.files() if f.end_ms > start_ms and f.start_ms < end_ms]
    seen: dict[tuple[int, int], SnapshotRow] = {}
    unmapped: set[str] = set()
    for f in used:
        for r in archive.read(f):
            if not start_ms <= r.time_ms < end_ms:
                continue
            pid = point_ids.get(r.point)
            if pid is None:
                unmapped.add(r.point)
                continue
            # a state row repeats the last change of the previous file: same point and time, keep the first
            seen.setdefault((pid, r.time_ms), r)
    rows = np.zeros(len(seen), dtype=BACKFILL_DTYPE)
    if seen:
        keys = list(seen)
        rows["point"] = [k[0] for k in keys]
        rows["time_ms"] = [k[1] for k in keys]
        rows["value"] = [seen[k].value for k in keys]
        rows["quality"] = [int(seen[k].quality) for k in keys]
    inserted = historian.backfill(rows)
    return RecoveryResult(start_ms, end_ms, len(used), len(rows), inserted, len(rows) - inserted,
                          tuple(sorted(unmapped)), archive.coverage_gaps(start_ms, end_ms))


# ------------------------------------------------------------------------------------------------------- helpers
def _read_manifest(path: Path) -> tuple[SnapshotFile, ...]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecoveryError(f"{path}: cannot read the snapshot manifest: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RecoveryError(f"{path}: not a {FORMAT} manifest")
    if doc.get("version") != FORMAT_VERSION:
        raise RecoveryError(f"{path}: manifest version {doc.get('version')!r}, this reader knows {FORMAT_VERSION}")
    try:
        return tuple(SnapshotFile(str(e["name"]), int(e["start_ms"]), int(e["end_ms"]), int(e["rows"]),
                                  str(e["sha256"])) for e in doc["files"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecoveryError(f"{path}: malformed file entry in the manifest: {exc!r}") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # make the rename itself durable
        finally:
            os.close(fd)
    except OSError as exc:
        raise RecoveryError(f"{path}: cannot write atomically: {exc}") from exc


def _fmt_value(v: float) -> str:
    return repr(float(v))  # shortest round-tripping text; 'nan', 'inf' parse back with float()


def _fmt_flags(q: Quality) -> str:
    return "|".join(Quality(q).names())


def _parse_flags(text: str) -> Quality:
    q = Quality.GOOD
    for name in filter(None, text.split("|")):
        if name not in Quality.__members__:
            raise ValueError(f"unknown quality flag {name!r}")
        q |= Quality[name]
    return q


def _fmt_time(t_ms: int) -> str:
    dt = datetime.fromtimestamp(t_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{t_ms % 1000:03d}Z"


def _parse_time(text: str) -> int:
    if not (len(text) == 24 and text.endswith("Z") and text[19] == "."):
        raise ValueError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SS.fffZ")
    dt = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1000 + int(text[20:23])


def _stamp(t_ms: int) -> str:
    dt = datetime.fromtimestamp(t_ms // 1000, tz=UTC)
    return f"{dt:%Y%m%dT%H%M%S}{t_ms % 1000:03d}Z"
