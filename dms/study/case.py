"""One study case: a snapshot of the network state, the RTDB and the estimate, the engineer's edits, and the runs made
on it. Nothing here holds a command path: a study cannot reach the field by construction.

Thread safety: every method takes the case's own lock, so two engineers (or two gRPC calls) on one case serialise
while different cases run in parallel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from dms.network_state import NetworkState
from dms.study.edits import EditKind, MeasurementOverride, StudyEdit, apply_edit
from dms.study.errors import StudyError
from models.timebase import now_ms

__all__ = ["RunKind", "StudyCase", "StudyRun"]

_MAX_RUNS_KEPT = 50


class RunKind(StrEnum):
    POWER_FLOW = "power_flow"
    STATE_ESTIMATION = "state_estimation"
    FLISR = "flisr"
    RECONFIGURATION = "reconfiguration"
    VOLT_VAR = "volt_var"


@dataclass(frozen=True, slots=True, eq=False)
class StudyRun:
    number: int
    kind: RunKind
    parameters: str  # what was asked, as text ("fault on F2-C04", "objective losses")
    time_ms: int
    elapsed_ms: float
    ok: bool
    summary: str
    result: Any  # the application's own result object (FlowCheck, FlisrPlan, ...)


class StudyCase:
    def __init__(self, study_id: int, name: str, owner: str, snapshot: NetworkState, measurements: np.ndarray,
                 *, estimate: Any = None, created_ms: int | None = None, point_ids: dict[str, int] | None = None,
                 held_switches: frozenset[str] = frozenset()) -> None:
        self.id = study_id
        self.name = name
        self.owner = owner
        self.created_ms = now_ms() if created_ms is None else created_ms
        self.snapshot = snapshot.replace(label=f"study {study_id} ({name})")
        self.measurements = measurements.copy()  # the RTDB at the snapshot (CHANGE_DTYPE rows), read-only here
        self.measurements.setflags(write=False)
        self.estimate = estimate  # the live estimate at the snapshot, if the estimator had one
        # switches tagged or bounding a faulted/earthed section at the snapshot: optimisations leave them alone
        self.held_switches = held_switches
        self._point_ids = point_ids or {}
        self._lock = threading.RLock()
        self._edits: list[StudyEdit] = []
        self._state = self.snapshot
        self._overrides: dict[int, MeasurementOverride] = {}
        self._runs: list[StudyRun] = []
        self._run_numbers = 0

    # ------------------------------------------------------------------------------------------ edits
    @property
    def state(self) -> NetworkState:
        with self._lock:
            return self._state

    @property
    def edits(self) -> tuple[StudyEdit, ...]:
        with self._lock:
            return tuple(self._edits)

    @property
    def overrides(self) -> dict[int, MeasurementOverride]:
        with self._lock:
            return dict(self._overrides)

    def edit(self, edit: StudyEdit) -> NetworkState:
        """Apply one edit (a named error leaves the case as it was) and keep it in the history."""
        with self._lock:
            state, overrides = self._apply(self._state, dict(self._overrides), edit)
            self._state, self._overrides = state, overrides
            self._edits.append(edit)
            return state

    def undo(self) -> StudyEdit:
        with self._lock:
            if not self._edits:
                raise StudyError(f"study {self.id} ({self.name}) has no edit to undo")
            last = self._edits[-1]
            self._replay(self._edits[:-1])
            return last

    def reset(self) -> None:
        with self._lock:
            self._replay([])

    def _replay(self, edits: list[StudyEdit]) -> None:
        state, overrides = self.snapshot, {}
        for e in edits:
            state, overrides = self._apply(state, overrides, e)
        self._state, self._overrides, self._edits = state, overrides, list(edits)

    def _apply(self, state: NetworkState, overrides: dict[int, MeasurementOverride], edit: StudyEdit
               ) -> tuple[NetworkState, dict[int, MeasurementOverride]]:
        if edit.kind is EditKind.MEASUREMENT:
            pid = self._point_ids.get(edit.element)
            if pid is None:
                raise StudyError(f"study {self.id}: no point named {edit.element!r}")
            quality = 0 if np.isnan(edit.value2) else int(edit.value2)
            overrides[pid] = MeasurementOverride(pid, edit.value, quality)
            return state, overrides
        return apply_edit(state, edit).replace(label=self.snapshot.label), overrides

    def measurement_values(self) -> np.ndarray:
        """The snapshot's RTDB rows with the study's measurement edits applied."""
        with self._lock:
            rows = self.measurements.copy()
            for o in self._overrides.values():
                rows["value"][o.point] = o.value
                rows["quality"][o.point] = o.quality
            return rows

    # ------------------------------------------------------------------------------------------ runs
    def run(self, kind: RunKind, parameters: str, fn: Callable[[StudyCase], tuple[bool, str, Any]]) -> StudyRun:
        """Run an application on the case; ``fn`` returns (ok, summary, result). Kept in the case's run list."""
        with self._lock:
            started = time.perf_counter()
            ok, summary, result = fn(self)
            self._run_numbers += 1
            run = StudyRun(self._run_numbers, kind, parameters, now_ms(), (time.perf_counter() - started) * 1e3,
                           ok, summary, result)
            self._runs.append(run)
            del self._runs[:-_MAX_RUNS_KEPT]
            return run

    @property
    def runs(self) -> tuple[StudyRun, ...]:
        with self._lock:
            return tuple(self._runs)
