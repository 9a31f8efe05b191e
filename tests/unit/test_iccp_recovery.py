import json
import time

import numpy as np
import pytest

from iccp.recovery import (
    COLUMNS,
    MANIFEST_NAME,
    RecoveryError,
    RowKind,
    SnapshotArchive,
    SnapshotWriter,
    recover_gap,
)
from iccp.sim import PointValue, SimPointType, TransmissionConfig, TransmissionSystem
from models.points import PointDef, PointKind, PointSource, Quality
from models.updates import Cause
from scada.changes import CHANGE_DTYPE, ChangeSet
from scada.errors import StorageError, UnknownPointError
from scada.historian import BACKFILL_DTYPE, Historian

T0 = 1_790_000_012_345  # deliberately not on a minute boundary
END = 10**14


# ---------------------------------------------------------------------------------------------------- historian
def _points(names_kinds):
    return [PointDef(i, name, kind, PointSource("iccp", "TRANSCO", 0, i, "")) for i, (name, kind) in
            enumerate(names_kinds)]


def _backfill_rows(rows):
    out = np.zeros(len(rows), dtype=BACKFILL_DTYPE)
    for i, r in enumerate(rows):
        out[i] = r
    return out


_seq = iter(range(1, 10**9))


def _live(hist: Historian, values: list[tuple[int, float, int, int]]) -> int:
    """Feed (point, value, quality, time_ms) through the live path, as the RTDB change set would."""
    rows = np.zeros(len(values), dtype=CHANGE_DTYPE)
    for i, (p, v, q, t) in enumerate(values):
        rows[i]["point"], rows[i]["value"], rows[i]["quality"] = p, v, q
        rows[i]["source_time_ms"], rows[i]["recv_time_ms"] = t, t + 5
        rows[i]["seq"], rows[i]["cause"] = next(_seq), Cause.SPONTANEOUS
    return hist.process(ChangeSet(rows=rows, status=False, commit_monotonic=time.monotonic()))


def test_historian_backfill_is_ordered_idempotent_and_respects_live_samples(tmp_path):
    pts = _points([("A", PointKind.ANALOG), ("S", PointKind.DOUBLE), ("C", PointKind.COMMAND)])
    h = Historian(tmp_path / "h.sqlite", pts)
    try:
        _live(h, [(0, 1.0, 0, 1000), (0, 5.0, 0, 5000)])
        rows = _backfill_rows([
            (0, 3000, 3.0, int(Quality.QUESTIONABLE)),
            (0, 2000, 2.0, 0),
            (0, 5000, 99.0, 0),  # a live sample exists at this time: kept as it is
            (1, 2500, 2.0, 0),
            (0, 3000, 33.0, 0),  # repeat of (point, time) in the batch: the first wins
            (2, 2000, 1.0, 0),  # a command point is not historised
            (0, 4000, float("nan"), int(Quality.INVALID)),
        ])
        assert h.backfill(rows) == 4
        got = h.query(0, 0, END).samples
        assert got["time_ms"].tolist() == [1000, 2000, 3000, 4000, 5000]
        assert got["value"][:3].tolist() == [1.0, 2.0, 3.0] and np.isnan(got["value"][3]) and got["value"][4] == 5.0
        assert got["quality"].tolist() == [0, 0, int(Quality.QUESTIONABLE), int(Quality.INVALID), 0]
        assert h.query(1, 0, END).samples["value"].tolist() == [2.0]
        assert h.backfill(rows) == 0  # replay: nothing new
        assert h.count() == 6
        # the live path after a backfill still works and keeps compressing against the live edge
        assert _live(h, [(0, 6.0, 0, 6000)]) == 1
        assert h.backfill(np.zeros(0, dtype=BACKFILL_DTYPE)) == 0
        with pytest.raises(UnknownPointError, match="point id 7"):
            h.backfill(_backfill_rows([(7, 1, 1.0, 0)]))
        with pytest.raises(StorageError, match="BACKFILL_DTYPE"):
            h.backfill(np.zeros(1, dtype=CHANGE_DTYPE))
    finally:
        h.close()


# ---------------------------------------------------------------------------------------------------- files
def _drive(sim: TransmissionSystem, writer: SnapshotWriter, seconds: int, log: list[PointValue] | None = None):
    for _ in range(seconds):
        changes = sim.step(1.0)
        if log is not None:
            log.extend(changes)
        writer.record(sim.now_ms, changes)


def test_snapshot_files_round_trip(tmp_path):
    sim = TransmissionSystem(seed=9, start_ms=T0)
    w = SnapshotWriter(tmp_path, source="TRANSCO", interval_s=60.0)
    w.start(sim.snapshot(), sim.now_ms)
    log: list[PointValue] = []
    for k in range(300):
        if k == 70:
            sim.force_quality("TIE1_MW", Quality.QUESTIONABLE | Quality.TIME_INVALID)
        if k == 130:
            sim.operate_breaker("CB_T1_STATE", close=False)
        changes = sim.step(1.0)
        log.extend(changes)
        before = {f.name for f in w.files}
        for f in w.record(sim.now_ms, changes):
            assert f.name not in before
    last = w.close(sim.now_ms)
    files = SnapshotArchive(tmp_path).files()
    assert files == w.files and last == files[-1]
    assert len(files) == 6  # first partial minute, four full minutes, last partial
    assert files[0].start_ms == T0 and files[-1].end_ms == sim.now_ms + 1
    assert all(a.end_ms == b.start_ms for a, b in zip(files[:-1], files[1:], strict=True))
    assert all(f.end_ms % 60_000 == 0 for f in files[:-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST_NAME, *(f.name for f in files)])
    archive = SnapshotArchive(tmp_path)
    changes_read = []
    n_points = len(sim.points)
    for f in files:
        rows = archive.read(f)
        assert [r.kind for r in rows[:n_points]] == [RowKind.STATE] * n_points
        assert all(r.kind is RowKind.CHANGE and f.start_ms <= r.time_ms < f.end_ms for r in rows[n_points:])
        changes_read.extend(PointValue(r.point, r.value, r.quality, r.time_ms) for r in rows[n_points:])
    assert changes_read == log  # every reported value, exact floats, flags and times
    assert any(v.quality == Quality.QUESTIONABLE | Quality.TIME_INVALID for v in changes_read)
    # the state rows of the last file are the values in force when it opened
    state_rows = archive.read(files[-1])[:n_points]
    in_force = {v.name: v for v in sim.snapshot()}
    for v in log:
        if v.time_ms < files[-1].start_ms:
            in_force[v.name] = v
    first_state = {r.point: PointValue(r.point, r.value, r.quality, r.time_ms) for r in state_rows}
    assert all(first_state[n] == in_force[n] for n in first_state if in_force[n].time_ms < files[-1].start_ms)
    text = (tmp_path / files[1].name).read_text().splitlines()
    assert text[0] == ",".join(COLUMNS)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["format"] == "dscada-iccp-dr" and manifest["interval_s"] == 60.0
    assert [e["rows"] for e in manifest["files"]] == [f.rows for f in files]


def test_retention_restart_and_damage(tmp_path):
    sim = TransmissionSystem(seed=1, start_ms=T0)
    w = SnapshotWriter(tmp_path, source="TRANSCO", interval_s=60.0, retention_s=180.0)
    w.start(sim.snapshot(), sim.now_ms)
    _drive(sim, w, 600)
    files = w.files
    assert len(files) == 3 and files[-1].end_ms - files[0].start_ms == 180_000
    assert len(list(tmp_path.glob("*.csv"))) == 3
    # a restarted writer keeps the listed files and removes what a crash left behind
    (tmp_path / "TRANSCO_orphan.csv").write_text("x")
    (tmp_path / ".manifest.json.tmp").write_text("x")
    w2 = SnapshotWriter(tmp_path, source="TRANSCO", interval_s=60.0, retention_s=180.0)
    assert w2.files == files
    assert not (tmp_path / "TRANSCO_orphan.csv").exists() and not (tmp_path / ".manifest.json.tmp").exists()
    # damage is detected and named
    archive = SnapshotArchive(tmp_path)
    path = tmp_path / files[0].name
    path.write_text(path.read_text().replace("state,", "stat,", 1))
    with pytest.raises(RecoveryError, match="SHA-256 differs"):
        archive.read(files[0])
    (tmp_path / MANIFEST_NAME).write_text("{}")
    with pytest.raises(RecoveryError, match="not a dscada-iccp-dr manifest"):
        archive.files()
    with pytest.raises(RecoveryError, match="source name"):
        SnapshotWriter(tmp_path, source="bad name")
    with pytest.raises(RecoveryError, match="record before start"):
        SnapshotWriter(tmp_path / "new", source="X").record(0, [])


def test_malformed_row_is_named_with_file_and_line(tmp_path):
    import hashlib

    from iccp.recovery import SnapshotFile

    data = ",".join(COLUMNS) + "\nchange,FREQ_SYS,49.99,NOT_A_FLAG,2026-11-27T05:34:00.000Z\n"
    (tmp_path / "X_1.csv").write_text(data)
    entry = SnapshotFile("X_1.csv", 0, 1, 1, hashlib.sha256(data.encode()).hexdigest())
    with pytest.raises(RecoveryError, match=r"X_1.csv:2: unknown quality flag 'NOT_A_FLAG'"):
        SnapshotArchive(tmp_path).read(entry)


# ---------------------------------------------------------------------------------------------------- recovery
def _historian_points(sim: TransmissionSystem) -> list[PointDef]:
    kinds = {SimPointType.REAL: PointKind.ANALOG, SimPointType.STATE: PointKind.DOUBLE}
    return _points([(p.name, kinds[p.type]) for p in sim.points])


def _feed(hist: Historian, ids: dict[str, int], values: list[PointValue]) -> None:
    if values:
        _live(hist, [(ids[v.name], v.value, int(v.quality), v.time_ms) for v in values])


def test_recovery_fills_exactly_the_outage(tmp_path):
    cfg = TransmissionConfig(trip_rate_per_h=30.0)  # breaker trips and recloses inside the outage too
    sim = TransmissionSystem(cfg, seed=21, start_ms=T0)
    ids = {p.name: i for i, p in enumerate(sim.points)}
    pts = _historian_points(sim)
    reference = Historian(tmp_path / "reference.sqlite", pts)  # receives everything: the truth
    receiver = Historian(tmp_path / "receiver.sqlite", pts)  # loses the link for a while
    archive_dir = tmp_path / "dr"
    writer = SnapshotWriter(archive_dir, source="TRANSCO", interval_s=60.0)
    archive = SnapshotArchive(archive_dir)
    outage = (T0 + 125_000, T0 + 437_000)  # link down from 125 s to 437 s: not on file boundaries
    try:
        first = list(sim.snapshot())
        writer.start(first, sim.now_ms)
        _feed(reference, ids, first)
        _feed(receiver, ids, first)
        in_outage = 0
        for _ in range(437):
            changes = sim.step(1.0)
            writer.record(sim.now_ms, changes)
            _feed(reference, ids, list(changes))
            if outage[0] <= sim.now_ms < outage[1]:
                in_outage += len(changes)
            else:
                _feed(receiver, ids, list(changes))
        assert in_outage > 600
        # the link is back at 437 s: the file of the current minute is not written yet
        first_try = recover_gap(archive, receiver, ids, *outage)
        assert not first_try.complete
        assert first_try.missing == ((writer.files[-1].end_ms, outage[1]),)
        assert first_try.inserted == first_try.rows_in_gap > 0 and first_try.unmapped_points == ()
        for _ in range(120):  # live data continues; the writer closes the minute holding the end of the outage
            changes = sim.step(1.0)
            writer.record(sim.now_ms, changes)
            _feed(reference, ids, list(changes))
            _feed(receiver, ids, list(changes))
        second = recover_gap(archive, receiver, ids, *outage)
        assert second.complete
        assert second.already_present == first_try.inserted
        assert first_try.inserted + second.inserted == in_outage
        third = recover_gap(archive, receiver, ids, *outage)
        assert third.inserted == 0 and third.already_present == third.rows_in_gap == in_outage
        # the receiver's history equals the reference: no gap, no duplicate, same values, flags and times
        for pid in range(len(pts)):
            want = reference.query(pid, 0, END).samples
            got = receiver.query(pid, 0, END).samples
            assert got.tobytes() == want.tobytes(), pts[pid].name
        assert receiver.count() == reference.count()
        # unmapped points are reported, not guessed
        partial = recover_gap(archive, receiver, {"FREQ_SYS": ids["FREQ_SYS"]}, *outage)
        assert "TIE1_MW" in partial.unmapped_points and partial.inserted == 0
        with pytest.raises(RecoveryError, match="must be after start"):
            recover_gap(archive, receiver, ids, outage[1], outage[0])
    finally:
        reference.close()
        receiver.close()
