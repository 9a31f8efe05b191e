"""What the live FLISR service records of one run: its state machine, per-step results, and their SQLite store.

A run is created when a protective switch trips (or a plan is submitted) and moves through
``planned -> isolating -> awaiting_approval -> restoring -> completed``, or ends ``failed`` (a step was refused, failed
or not confirmed, or no plan could be made) or ``rejected`` (an operator declined it). ``awaiting_crew`` holds the
sequence at a step that a field crew must operate (a switch without remote control) until
``FlisrService.confirm_manual_step``. Runs are immutable values: every change makes a new one, stored as JSON in
``flisr.sqlite`` so a restarted server lists the past runs.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dms.flisr.plan import (
    FaultLocation,
    FlisrMode,
    FlisrPlan,
    RestorationOption,
    StepPurpose,
    SwitchAction,
    SwitchingStep,
)
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = ["FlisrRun", "FlisrRunStore", "RunPhase", "RunState", "StepResult", "StepStatus", "plan_from_dict",
           "plan_to_dict"]


class RunState(StrEnum):
    PLANNED = "planned"  # plan made; in manual mode nothing runs until approved
    ISOLATING = "isolating"  # isolation steps executing
    AWAITING_APPROVAL = "awaiting_approval"  # isolated; restoration waits for an operator
    AWAITING_CREW = "awaiting_crew"  # a non-telemetered step waits for a field crew's confirmation
    RESTORING = "restoring"  # restoration steps executing
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.REJECTED)


class RunPhase(StrEnum):
    ISOLATION = "isolation"
    RESTORATION = "restoration"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # command confirmed and the topology shows the new state
    ALREADY = "already"  # the switch was already in the target state: nothing sent
    AWAITING_CREW = "awaiting_crew"
    CONFIRMED_BY_CREW = "confirmed_by_crew"
    FAILED = "failed"
    SKIPPED = "skipped"  # not executed because the sequence stopped before it


@dataclass(frozen=True, slots=True)
class StepResult:
    number: int  # the plan step's number
    switch: str
    action: SwitchAction
    purpose: StepPurpose
    telemetered: bool
    status: StepStatus = StepStatus.PENDING
    outcome: str = ""  # one sentence: what happened (command answer, feedback, topology confirmation or why not)
    started_ms: int = -1
    finished_ms: int = -1
    point: str = ""  # the control point used, "" for crew steps


@dataclass(frozen=True, slots=True)
class FlisrRun:
    id: int
    state: RunState
    mode: FlisrMode  # the mode the run was created in
    feeder: str  # feeder name of the tripped device ("" when unknown)
    tripped_switch: str
    picked_up: tuple[str, ...]  # switches whose FPI picked up (as read after the settle window)
    trip_ms: int  # field time tag of the trip (UTC epoch ms)
    created_ms: int
    planned_ms: int = -1
    isolated_ms: int = -1
    restored_ms: int = -1
    finished_ms: int = -1
    plan: FlisrPlan | None = None
    steps: tuple[StepResult, ...] = ()
    error: str = ""  # why the run failed or was rejected
    customers_interrupted: int = 0  # off supply after the trip, from the live topology
    customers_restored: int = 0  # of those, back on supply now (live topology)
    customers_still_off: int = 0
    outage_record_id: int = 0  # 0: no OMS record
    notes: tuple[str, ...] = field(default=())

    @property
    def trip_to_restored_s(self) -> float | None:
        return (self.restored_ms - self.trip_ms) / 1000.0 if self.restored_ms >= 0 and self.trip_ms >= 0 else None


# ------------------------------------------------------------------------------------------------ serialisation


def _build(cls: type, d: dict[str, Any], **convert: Any) -> Any:
    """A dataclass from a dict, tolerating fields added or removed since it was stored."""
    names = {f.name for f in dataclasses.fields(cls)}
    args = {k: v for k, v in d.items() if k in names}
    for k, v in list(args.items()):
        if k in convert:
            args[k] = convert[k](v)
        elif isinstance(v, list):
            args[k] = tuple(v)
    return cls(**args)


def _step(d: dict[str, Any]) -> SwitchingStep:
    return _build(SwitchingStep, d, action=SwitchAction, purpose=StepPurpose)


def plan_to_dict(plan: FlisrPlan) -> dict[str, Any]:
    return dataclasses.asdict(plan)


def plan_from_dict(d: dict[str, Any]) -> FlisrPlan:
    return _build(FlisrPlan, d, fault=lambda x: _build(FaultLocation, x),
                  isolation=lambda xs: tuple(_step(x) for x in xs),
                  restoration=lambda xs: tuple(_step(x) for x in xs),
                  options=lambda xs: tuple(_build(RestorationOption, x) for x in xs))


def run_to_dict(run: FlisrRun) -> dict[str, Any]:
    d = {f.name: getattr(run, f.name) for f in dataclasses.fields(FlisrRun)}
    d["plan"] = None if run.plan is None else plan_to_dict(run.plan)
    d["steps"] = [dataclasses.asdict(s) for s in run.steps]
    return d


def run_from_dict(d: dict[str, Any]) -> FlisrRun:
    return _build(FlisrRun, d, state=RunState, mode=FlisrMode,
                  plan=lambda p: None if p is None else plan_from_dict(p),
                  steps=lambda xs: tuple(_build(StepResult, x, action=SwitchAction, purpose=StepPurpose,
                                                status=StepStatus) for x in xs))


class FlisrRunStore(SqliteStore):
    """Every run, latest version, as JSON keyed by id (ids keep increasing across restarts)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS flisr_runs (
        id INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        tripped_switch TEXT NOT NULL,
        trip_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    """

    def put(self, run: FlisrRun, updated_ms: int) -> None:
        try:
            with self.conn() as c:
                c.execute("INSERT OR REPLACE INTO flisr_runs VALUES (?, ?, ?, ?, ?, ?)",
                          (run.id, run.state.value, run.tripped_switch, run.trip_ms, updated_ms,
                           json.dumps(run_to_dict(run))))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store FLISR run {run.id}: {exc}") from exc

    def load(self, limit: int = 1000) -> list[FlisrRun]:
        """The newest ``limit`` runs, oldest first."""
        try:
            rows = self.conn().execute("SELECT body FROM flisr_runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read FLISR runs: {exc}") from exc
        return [run_from_dict(json.loads(body)) for (body,) in reversed(rows)]

    def last_id(self) -> int:
        try:
            row = self.conn().execute("SELECT MAX(id) FROM flisr_runs").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read FLISR runs: {exc}") from exc
        return int(row[0] or 0)
