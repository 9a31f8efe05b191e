"""Open study cases: snapshots of real time an engineer edits and runs applications on, several at once.

A case is opened from the live state (``LiveStateSource``), the RTDB and the latest estimate; its snapshot and its
edits are stored (SQLite, ``studies.sqlite`` in the data folder) so an open study survives a server restart, as long
as the network model is still the one it was taken on (same name and element counts; otherwise it is reported and
left closed).
"""

from __future__ import annotations

import io
import json
import logging
import math
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dms.network_state import NetworkState
from dms.study.case import StudyCase
from dms.study.edits import EditKind, StudyEdit
from dms.study.errors import StudyError, UnknownStudyError
from models.network import NetworkModel
from models.timebase import now_ms
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["StudyManager", "StudyStore"]

log = logging.getLogger(__name__)

DEFAULT_MAX_OPEN = 16
_STATE_ARRAYS = ("switch_closed", "load_p_w", "load_q_var", "tap_step", "capacitor_sections", "der_p_w", "der_q_var")


def _model_key(model: NetworkModel) -> str:
    return json.dumps({"name": model.name, **model.counts()}, sort_keys=True)


class StudyStore(SqliteStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS studies (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        closed_ms INTEGER,
        model_key TEXT NOT NULL,
        frequency_hz REAL NOT NULL,
        snapshot BLOB NOT NULL,     -- npz: the NetworkState arrays and the RTDB rows
        edits TEXT NOT NULL         -- JSON list of StudyEdit records
    );
    """

    def next_id(self) -> int:
        row = self.conn().execute("SELECT COALESCE(MAX(id), 0) FROM studies").fetchone()
        return int(row[0]) + 1

    def save(self, case: StudyCase) -> None:
        buf = io.BytesIO()
        np.savez(buf, measurements=case.measurements,
                 **{k: getattr(case.snapshot, k) for k in _STATE_ARRAYS})
        edits = json.dumps([{**asdict(e), "kind": e.kind.value,
                             "value2": None if math.isnan(e.value2) else e.value2} for e in case.edits])
        try:
            with self.conn() as c:
                c.execute("INSERT OR REPLACE INTO studies VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)",
                          (case.id, case.name, case.owner, case.created_ms, _model_key(case.snapshot.base),
                           case.snapshot.frequency_hz, buf.getvalue(), edits))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot save study {case.id} ({case.name}): {exc}") from exc

    def mark_closed(self, study_id: int) -> None:
        try:
            with self.conn() as c:
                c.execute("UPDATE studies SET closed_ms = ? WHERE id = ?", (now_ms(), study_id))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot close study {study_id}: {exc}") from exc

    def open_rows(self) -> list[tuple]:
        return self.conn().execute(
            "SELECT id, name, owner, created_ms, model_key, frequency_hz, snapshot, edits FROM studies "
            "WHERE closed_ms IS NULL ORDER BY id").fetchall()


class StudyManager:
    """Opens, lists and closes study cases. ``live`` gives the present NetworkState, ``rtdb_rows`` the RTDB
    snapshot, ``estimate`` the latest live estimate (or None)."""

    def __init__(self, live: Callable[[], NetworkState], rtdb_rows: Callable[[], np.ndarray], *,
                 point_ids: dict[str, int] | None = None, estimate: Callable[[], Any] | None = None,
                 store: StudyStore | None = None, max_open: int = DEFAULT_MAX_OPEN,
                 held: Callable[[], frozenset[str]] | None = None) -> None:
        self._live = live
        self._rtdb_rows = rtdb_rows
        self._point_ids = point_ids or {}
        self._estimate = estimate
        self._held = held or frozenset
        self._store = store
        self._max_open = max_open
        self._lock = threading.Lock()
        self._cases: dict[int, StudyCase] = {}
        self._next_id = store.next_id() if store is not None else 1
        self.restore_notes: list[str] = []
        if store is not None:
            self._restore()

    def _restore(self) -> None:
        assert self._store is not None
        live = self._live()
        for sid, name, owner, created, key, freq, blob, edits in self._store.open_rows():
            if key != _model_key(live.base):
                note = (f"study {sid} ({name}) was taken on another network model; it stays closed")
                self.restore_notes.append(note)
                log.warning(note)
                continue
            data = np.load(io.BytesIO(blob))
            snapshot = NetworkState(live.base, *(data[k] for k in _STATE_ARRAYS), frequency_hz=float(freq))
            case = StudyCase(int(sid), name, owner, snapshot, data["measurements"], created_ms=int(created),
                             point_ids=self._point_ids, held_switches=self._held())
            for raw in json.loads(edits):
                raw["kind"] = EditKind(raw["kind"])
                raw["value2"] = math.nan if raw["value2"] is None else raw["value2"]
                case.edit(StudyEdit(**raw))
            self._cases[case.id] = case

    # ------------------------------------------------------------------------------------------ cases
    def open(self, name: str, owner: str) -> StudyCase:
        name = name.strip() or "study"
        with self._lock:
            if len(self._cases) >= self._max_open:
                raise StudyError(f"{len(self._cases)} studies are open (the limit is {self._max_open}); close one "
                                 "first")
            sid = self._next_id
            self._next_id += 1
        case = StudyCase(sid, name, owner, self._live(), self._rtdb_rows(), point_ids=self._point_ids,
                         estimate=self._estimate() if self._estimate is not None else None,
                         held_switches=self._held())
        with self._lock:
            self._cases[sid] = case
        self.save(case)
        return case

    def get(self, study_id: int) -> StudyCase:
        with self._lock:
            case = self._cases.get(study_id)
        if case is None:
            raise UnknownStudyError(f"no open study {study_id}")
        return case

    def list(self) -> tuple[StudyCase, ...]:
        with self._lock:
            return tuple(self._cases.values())

    def close(self, study_id: int) -> StudyCase:
        with self._lock:
            case = self._cases.pop(study_id, None)
        if case is None:
            raise UnknownStudyError(f"no open study {study_id}")
        if self._store is not None:
            self._store.mark_closed(study_id)
        return case

    def save(self, case: StudyCase) -> None:
        """Persist the case's snapshot and edit history (after every edit)."""
        if self._store is not None:
            self._store.save(case)

    def live_state(self) -> NetworkState:
        return self._live()


def open_store(data_dir: str | Path) -> StudyStore:
    return StudyStore(Path(data_dir) / "studies.sqlite")
