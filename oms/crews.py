"""Crews and work: who goes to which outage, and when the customers get their supply back (issue #6).

* ``Crew``: a field crew with its location (lon, lat in degrees), shift, skills, equipment, status and the outage it
  works on. ``WorkItem``: an outage to repair, at the predicted device's bus, with the skill it needs and a priority.
* Needed skill (``required_skill``): power transformers, sources and breakers on a substation bus (a bus of a power
  transformer or a source) need ``substation``; any other device needs ``overhead`` or ``underground`` after the
  construction of the lines next to it (downstream side first, then upstream; a line is a cable when its conductor
  name says XLPE/cable, overhead when it says ACSR/AAAC, else by its shunt susceptance: above 5e-8 S/m, about
  0.16 uF/km at 50 Hz, is a cable); a device with no line near it defaults to ``overhead``. Single lights out
  (meter work) ask for ``meter``.
* Priority (``PriorityWeights``, documented defaults): ``1 + 10 x critical customers + 0.1 x customers affected +
  100 if a hazard (wire down, fire) is reported``: a hazard outranks anything but a huge outage, a critical customer
  (hospital, water works) is worth 100 ordinary ones.
* Assignment (``oms.assignment``): travel time = distance / ``speed_kmh`` (default 30 km/h; haversine on (lon, lat)
  degrees, or Euclidean on a ``CoordinateSystem.PLANAR`` board for models with plane coordinates), a missing
  skill or a crew outside its shift is infeasible; the cost is travel hours minus ``hours_per_point`` x priority.
* Re-optimisation (``CrewBoard.optimise``, run when outages arrive or crews change): on-site crews are never moved;
  available and assigned (not yet left) crews are re-assigned freely; an en-route crew is re-assigned only when a
  waiting outage has at least ``preempt_ratio`` (default 2) times the priority of its own, and then only to such an
  outage (if it has the skill) or back to its own (which then costs it no travel in the optimiser).
* ETR (``RepairTimes``, documented defaults in minutes: fuse 45, sectionaliser 60, recloser 90, switch 60,
  breaker 120, DT 180, power transformer 480, source 240, meter 30): assigned -> time of assignment + travel +
  repair; en route -> time of the report + travel from the crew's position + repair; on site -> arrival + repair;
  restored -> restoration time. An outage waiting for a crew has no ETR (-1).
* ``CrewBoard``: thread-safe, in memory and in SQLite (``scada.sqlite_store``): reopening the file gives back the
  crews, work and assignments. Field status reports move the outage along and return its new stage
  (``crew_assigned``, ``en_route``, ``on_site``, ``restored``). Allowed crew transitions: available <-> off_shift,
  assigned -> en_route -> on_site -> available (work done: the outage is restored); ``assigned`` is set only by
  ``optimise``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

import numpy as np

from models.network import NetworkModel, SwitchKind
from models.topology import is_distribution_transformer
from oms.assignment import haversine_km, solve_assignment
from oms.connectivity import DeviceKind
from oms.errors import OmsError
from scada.errors import StorageError
from scada.sqlite_store import SqliteStore

__all__ = [
    "Assignment",
    "Crew",
    "CrewBoard",
    "CrewError",
    "CrewSkill",
    "CrewStatus",
    "CoordinateSystem",
    "InvalidTransitionError",
    "OutageStage",
    "PriorityWeights",
    "RepairTimes",
    "UnknownCrewError",
    "UnknownWorkError",
    "WorkItem",
    "make_work_item",
    "required_skill",
    "work_item_for_device",
]


class CrewSkill(StrEnum):
    OVERHEAD = "overhead"
    UNDERGROUND = "underground"
    SUBSTATION = "substation"
    METER = "meter"


class CrewStatus(StrEnum):
    AVAILABLE = "available"
    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ON_SITE = "on_site"
    OFF_SHIFT = "off_shift"


class OutageStage(StrEnum):
    """The outage's crew stage; WAITING: no crew (the record stays predicted/confirmed)."""

    WAITING = "waiting"
    CREW_ASSIGNED = "crew_assigned"
    EN_ROUTE = "en_route"
    ON_SITE = "on_site"
    RESTORED = "restored"


class CrewError(OmsError):
    """Bad crew or work input."""


class UnknownCrewError(CrewError):
    pass


class UnknownWorkError(CrewError):
    pass


class InvalidTransitionError(CrewError):
    pass


# Field reports a crew may send, per present status (ASSIGNED comes only from the optimiser).
_TRANSITIONS: Mapping[CrewStatus, frozenset[CrewStatus]] = MappingProxyType({
    CrewStatus.AVAILABLE: frozenset({CrewStatus.OFF_SHIFT}),
    CrewStatus.OFF_SHIFT: frozenset({CrewStatus.AVAILABLE}),
    CrewStatus.ASSIGNED: frozenset({CrewStatus.EN_ROUTE}),
    CrewStatus.EN_ROUTE: frozenset({CrewStatus.ON_SITE}),
    CrewStatus.ON_SITE: frozenset({CrewStatus.AVAILABLE}),
})


class CoordinateSystem(StrEnum):
    """How locations are read: LONLAT, (lon, lat) in degrees (haversine distance); PLANAR, (x, y) in a plane
    (Euclidean distance, units of ``planar_unit_m`` metres: IEEE 123's CIM coordinates are not geographic)."""

    LONLAT = "lonlat"
    PLANAR = "planar"


def _check_location(what: str, location: tuple[float, float],
                    coordinates: CoordinateSystem = CoordinateSystem.PLANAR) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in location)
    except (TypeError, ValueError):
        raise CrewError(f"{what}: location must be two numbers (lon, lat) or (x, y) (got {location!r})") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise CrewError(f"{what}: location ({x}, {y}) is not finite")
    if coordinates is CoordinateSystem.LONLAT and not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):
        raise CrewError(f"{what}: location (lon {x}, lat {y}) is outside -180..180 / -90..90 degrees")
    return x, y


@dataclass(frozen=True, slots=True)
class Crew:
    id: str
    name: str
    location: tuple[float, float]  # (lon, lat) degrees, or (x, y) on a PLANAR board
    shift_start_ms: int  # UTC epoch ms
    shift_end_ms: int
    skills: frozenset[CrewSkill]
    equipment: tuple[str, ...] = ()
    status: CrewStatus = CrewStatus.AVAILABLE
    outage_id: str = ""  # the work item it is assigned to / works on, "" when none
    updated_ms: int = -1

    def __post_init__(self) -> None:
        if not self.id:
            raise CrewError("crew: id must not be empty")
        object.__setattr__(self, "location", _check_location(f"crew {self.id!r}", self.location))
        if self.shift_end_ms <= self.shift_start_ms:
            raise CrewError(f"crew {self.id!r}: shift ends ({self.shift_end_ms}) before it starts "
                            f"({self.shift_start_ms})")
        try:
            object.__setattr__(self, "skills", frozenset(CrewSkill(s) for s in self.skills))
            object.__setattr__(self, "status", CrewStatus(self.status))
        except ValueError as exc:
            raise CrewError(f"crew {self.id!r}: {exc} (skills: {', '.join(CrewSkill)}; statuses: "
                            f"{', '.join(CrewStatus)})") from None
        object.__setattr__(self, "equipment", tuple(self.equipment))
        busy = self.status in (CrewStatus.ASSIGNED, CrewStatus.EN_ROUTE, CrewStatus.ON_SITE)
        if busy != bool(self.outage_id):
            raise CrewError(f"crew {self.id!r}: status {self.status.value} "
                            f"{'needs' if busy else 'cannot have'} an outage (got {self.outage_id!r})")

    def on_shift(self, now_ms: int) -> bool:
        return self.shift_start_ms <= now_ms < self.shift_end_ms


@dataclass(frozen=True, slots=True)
class PriorityWeights:
    base: float = 1.0
    per_critical_customer: float = 10.0
    per_customer: float = 0.1
    hazard: float = 100.0

    def __post_init__(self) -> None:
        for name in ("base", "per_critical_customer", "per_customer", "hazard"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise CrewError(f"priority weights: {name} must be finite and >= 0 (got {getattr(self, name)})")

    def score(self, *, critical_customers: int, customers_affected: int, hazard: bool) -> float:
        return (self.base + self.per_critical_customer * critical_customers + self.per_customer * customers_affected
                + (self.hazard if hazard else 0.0))


_DEFAULT_REPAIR_MIN = {
    "fuse": 45.0, "sectionaliser": 60.0, "recloser": 90.0, "switch": 60.0, "breaker": 120.0, "dt": 180.0,
    "transformer": 480.0, "source": 240.0, "meter": 30.0,
}


@dataclass(frozen=True, slots=True)
class RepairTimes:
    """Repair time in minutes by device kind (``DeviceKind`` values, plus ``meter`` for single lights out)."""

    minutes: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(dict(_DEFAULT_REPAIR_MIN)))

    def __post_init__(self) -> None:
        table = {str(k): float(v) for k, v in self.minutes.items()}
        missing = sorted(set(_DEFAULT_REPAIR_MIN) - set(table))
        if missing:
            raise CrewError(f"repair times: no entry for {', '.join(missing)}")
        bad = sorted(k for k, v in table.items() if not (math.isfinite(v) and v > 0))
        if bad:
            raise CrewError(f"repair times: minutes must be > 0 for {', '.join(bad)}")
        object.__setattr__(self, "minutes", MappingProxyType(table))

    def repair_s(self, device_kind: str) -> float:
        try:
            return self.minutes[str(device_kind)] * 60.0
        except KeyError:
            raise CrewError(f"repair times: unknown device kind {device_kind!r} (known: "
                            f"{', '.join(sorted(self.minutes))})") from None


@dataclass(frozen=True, slots=True)
class WorkItem:
    outage_id: str  # the outage record id (or prediction id) as text
    device: str
    device_kind: str  # DeviceKind value, or "meter"
    location: tuple[float, float]  # the device's bus (x, y) = (lon, lat) degrees, or planar model coordinates
    skill: CrewSkill
    customers_affected: int
    critical_customers: int
    hazard: bool
    priority: float
    created_ms: int


def make_work_item(outage_id: str | int, *, device: str, device_kind: str, location: tuple[float, float],
                   skill: CrewSkill | str, customers_affected: int, critical_customers: int = 0,
                   hazard: bool = False, created_ms: int = 0,
                   weights: PriorityWeights | None = None) -> WorkItem:
    outage_id = str(outage_id)
    if not outage_id:
        raise CrewError("work item: outage id must not be empty")
    if customers_affected < 0 or critical_customers < 0 or critical_customers > max(customers_affected, 0):
        raise CrewError(f"work item {outage_id}: need 0 <= critical customers ({critical_customers}) <= customers "
                        f"affected ({customers_affected})")
    if str(device_kind) not in _DEFAULT_REPAIR_MIN:
        raise CrewError(f"work item {outage_id}: unknown device kind {device_kind!r}")
    try:
        skill = CrewSkill(skill)
    except ValueError:
        raise CrewError(f"work item {outage_id}: unknown skill {skill!r} (known: {', '.join(CrewSkill)})") from None
    loc = _check_location(f"work item {outage_id}", location)
    w = weights or PriorityWeights()
    prio = w.score(critical_customers=critical_customers, customers_affected=customers_affected, hazard=hazard)
    return WorkItem(outage_id, device, str(device_kind), loc, skill, int(customers_affected),
                    int(critical_customers), bool(hazard), prio, int(created_ms))


# ------------------------------------------------------------------------------------------- skills from the model

_CABLE_WORDS = ("XLPE", "CABLE", "PILC", "UG-", "UNDERGROUND")
_OVERHEAD_WORDS = ("ACSR", "AAAC", "AAC", "OVERHEAD", "OH-")
CABLE_MIN_B_S_PER_M = 5e-8


def _is_cable(line) -> bool:  # noqa: ANN001 - models.network.LineSegment
    text = f"{line.impedance_name} {line.name}".upper()
    if any(w in text for w in _CABLE_WORDS):
        return True
    if any(w in text for w in _OVERHEAD_WORDS):
        return False
    b = np.asarray(line.b_s_per_m, dtype=float)
    diag = np.diag(b) if b.ndim == 2 else b.ravel()
    return bool(diag.size and np.nanmean(np.abs(diag)) > CABLE_MIN_B_S_PER_M)


def _construction(model: NetworkModel, start: int, skip_switch: str) -> CrewSkill | None:
    """Majority construction of the nearest lines from ``start`` over switches (not ``skip_switch``), <= 3 hops."""
    seen = {start}
    level = {start}
    for _hop in range(4):
        lines = [ln for ln in model.lines if ln.from_bus in level or ln.to_bus in level]
        if lines:
            cables = sum(_is_cable(ln) for ln in lines)
            return CrewSkill.UNDERGROUND if cables > len(lines) - cables else CrewSkill.OVERHEAD
        nxt = set()
        for sw in model.switches:
            if sw.mrid == skip_switch:
                continue
            if sw.from_bus in level:
                nxt.add(sw.to_bus)
            if sw.to_bus in level:
                nxt.add(sw.from_bus)
        level = nxt - seen
        seen |= level
        if not level:
            return None
    return None


def _find_element(model: NetworkModel, device: str):  # noqa: ANN202 - a Switch, Transformer or EnergySource
    for coll in (model.switches, model.transformers, model.sources):
        for el in coll:
            if device in (el.name, el.mrid):
                return el
    raise CrewError(f"device {device!r} is not a switch, transformer or source of model {model.name!r}")


def _substation_buses(model: NetworkModel) -> frozenset[int]:
    src = frozenset(s.bus for s in model.sources)
    buses = set(src)
    for t in model.transformers:
        if not is_distribution_transformer(model, t, src):
            buses.update(w.bus for w in t.windings)
    return frozenset(buses)


def required_skill(model: NetworkModel, device: str) -> CrewSkill:
    """The skill a repair of ``device`` (switch, transformer or source name/mRID) needs; see the module doc."""
    el = _find_element(model, device)
    if el in model.sources:
        return CrewSkill.SUBSTATION
    if el in model.transformers:
        if not is_distribution_transformer(model, el, frozenset(s.bus for s in model.sources)):
            return CrewSkill.SUBSTATION
        buses = [w.bus for w in el.windings]
        return _construction(model, buses[0], "") or CrewSkill.OVERHEAD
    if el.kind is SwitchKind.BREAKER and {el.from_bus, el.to_bus} & _substation_buses(model):
        return CrewSkill.SUBSTATION
    for start in (el.to_bus, el.from_bus):
        found = _construction(model, start, el.mrid)
        if found is not None:
            return found
    return CrewSkill.OVERHEAD


def _element_location(model: NetworkModel, device: str) -> tuple[float, float]:
    el = _find_element(model, device)
    if el in model.sources:
        buses = [el.bus]
    elif el in model.transformers:
        buses = [w.bus for w in el.windings]
    else:
        buses = [el.from_bus, el.to_bus]
    for b in buses:
        bus = model.buses[b]
        if math.isfinite(bus.x) and math.isfinite(bus.y):
            return float(bus.x), float(bus.y)
    raise CrewError(f"device {device!r} of model {model.name!r}: its buses have no coordinates (no crew can be "
                    "routed to it)")


def work_item_for_device(model: NetworkModel, outage_id: str | int, device: str, device_kind: DeviceKind | str, *,
                         customers_affected: int, critical_customers: int = 0, hazard: bool = False,
                         created_ms: int = 0, weights: PriorityWeights | None = None) -> WorkItem:
    """A work item at a predicted device (``Prediction.device``/``device_kind``) of ``model``."""
    return make_work_item(outage_id, device=device, device_kind=str(DeviceKind(device_kind)),
                          location=_element_location(model, device), skill=required_skill(model, device),
                          customers_affected=customers_affected, critical_customers=critical_customers,
                          hazard=hazard, created_ms=created_ms, weights=weights)


# ------------------------------------------------------------------------------------------------------ the board

@dataclass(frozen=True, slots=True)
class Assignment:
    outage_id: str
    crew_id: str
    stage: OutageStage
    assigned_ms: int
    stage_ms: int  # when the present stage began
    travel_s: float  # from the crew's position at the last stage change
    repair_s: float
    etr_ms: int


class _CrewDb(SqliteStore):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS crews (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS work_items (outage_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS assignments (outage_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
    """


def _crew_doc(c: Crew) -> str:
    d = asdict(c)
    d["skills"] = sorted(s.value for s in c.skills)
    d["status"] = c.status.value
    return json.dumps(d)


def _crew_load(doc: str) -> Crew:
    d = json.loads(doc)
    d["location"] = tuple(d["location"])
    d["skills"] = frozenset(d["skills"])
    d["equipment"] = tuple(d["equipment"])
    return Crew(**d)


def _item_load(doc: str) -> WorkItem:
    d = json.loads(doc)
    d["location"] = tuple(d["location"])
    d["skill"] = CrewSkill(d["skill"])
    return WorkItem(**d)


def _assignment_load(doc: str) -> Assignment:
    d = json.loads(doc)
    d["stage"] = OutageStage(d["stage"])
    return Assignment(**d)


StageCallback = Callable[[str, OutageStage, int], None]


class CrewBoard:
    """Crews, work items and assignments; every method is thread-safe and writes through to ``path``.

    ``on_stage(outage_id, stage, time_ms)`` is called (under the board's lock: keep it short, do not call back into
    the board) whenever an outage changes stage, so the OMS can move its record along.
    """

    def __init__(self, path: str | Path, *, speed_kmh: float = 30.0, hours_per_point: float = 1.0,
                 preempt_ratio: float = 2.0, repair: RepairTimes | None = None,
                 coordinates: CoordinateSystem = CoordinateSystem.LONLAT, planar_unit_m: float = 1.0,
                 on_stage: StageCallback | None = None) -> None:
        if not (math.isfinite(speed_kmh) and speed_kmh > 0):
            raise CrewError(f"crew board: speed_kmh must be > 0 (got {speed_kmh})")
        if preempt_ratio < 1:
            raise CrewError(f"crew board: preempt_ratio must be >= 1 (got {preempt_ratio})")
        if not (math.isfinite(planar_unit_m) and planar_unit_m > 0):
            raise CrewError(f"crew board: planar_unit_m must be > 0 (got {planar_unit_m})")
        self.speed_kmh = float(speed_kmh)
        self.coordinates = CoordinateSystem(coordinates)
        self.planar_unit_m = float(planar_unit_m)
        self.hours_per_point = float(hours_per_point)
        self.preempt_ratio = float(preempt_ratio)
        self.repair = repair or RepairTimes()
        self.on_stage = on_stage
        self._lock = threading.RLock()
        self._db = _CrewDb(path)
        try:
            conn = self._db.conn()
            self._crews = {r[0]: _crew_load(r[1]) for r in conn.execute("SELECT id, doc FROM crews ORDER BY id")}
            self._items = {r[0]: _item_load(r[1]) for r in conn.execute("SELECT outage_id, doc FROM work_items "
                                                                        "ORDER BY outage_id")}
            self._assign = {r[0]: _assignment_load(r[1]) for r in conn.execute("SELECT outage_id, doc FROM "
                                                                               "assignments ORDER BY outage_id")}
        except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            raise StorageError(f"{path}: cannot load the crew board: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # ----------------------------------------------------------------------------------------- crews and work

    def add_crew(self, crew: Crew) -> Crew:
        with self._lock:
            if crew.id in self._crews:
                raise CrewError(f"crew {crew.id!r} already exists (use update_crew)")
            _check_location(f"crew {crew.id!r}", crew.location, self.coordinates)
            if crew.status not in (CrewStatus.AVAILABLE, CrewStatus.OFF_SHIFT):
                raise CrewError(f"crew {crew.id!r}: a new crew is available or off_shift (got {crew.status.value})")
            self._crews[crew.id] = crew
            self._save(crews=(crew,))
            return crew

    def update_crew(self, crew_id: str, *, name: str | None = None, location: tuple[float, float] | None = None,
                    shift_start_ms: int | None = None, shift_end_ms: int | None = None,
                    skills: Iterable[CrewSkill | str] | None = None,
                    equipment: Iterable[str] | None = None) -> Crew:
        """Change a crew's data (status goes through ``report_status``); effective at the next ``optimise``."""
        with self._lock:
            old = self.crew(crew_id)
            changes: dict = {k: v for k, v in (("name", name), ("location", location),
                                                ("shift_start_ms", shift_start_ms), ("shift_end_ms", shift_end_ms))
                             if v is not None}
            if skills is not None:
                changes["skills"] = frozenset(skills)
            if equipment is not None:
                changes["equipment"] = tuple(equipment)
            crew = replace(old, **changes)
            _check_location(f"crew {crew.id!r}", crew.location, self.coordinates)
            self._crews[crew_id] = crew
            self._save(crews=(crew,))
            return crew

    def crew(self, crew_id: str) -> Crew:
        with self._lock:
            try:
                return self._crews[crew_id]
            except KeyError:
                raise UnknownCrewError(f"no crew {crew_id!r} on the board (crews: "
                                       f"{', '.join(sorted(self._crews)) or 'none'})") from None

    def crews(self) -> list[Crew]:
        with self._lock:
            return sorted(self._crews.values(), key=lambda c: c.id)

    def add_work(self, item: WorkItem) -> None:
        """A new outage to repair; call ``optimise`` to (re-)assign."""
        with self._lock:
            if item.outage_id in self._items:
                raise CrewError(f"outage {item.outage_id!r} already has a work item")
            _check_location(f"work item {item.outage_id}", item.location, self.coordinates)
            self._items[item.outage_id] = item
            self._save(items=(item,))

    def remove_work(self, outage_id: str, time_ms: int) -> None:
        """The outage went away without a crew (restored remotely, merged): its crew, unless on site, is freed."""
        with self._lock:
            self._item(outage_id)
            a = self._assign.get(outage_id)
            if a is not None and a.stage is not OutageStage.RESTORED:
                crew = self._crews[a.crew_id]
                if crew.status is CrewStatus.ON_SITE:
                    raise CrewError(f"outage {outage_id!r}: crew {crew.id!r} is on site; it reports the end of the "
                                    "work")
                self._crews[crew.id] = replace(crew, status=CrewStatus.AVAILABLE, outage_id="", updated_ms=time_ms)
                self._save(crews=(self._crews[crew.id],))
            del self._items[outage_id]
            self._assign.pop(outage_id, None)
            self._delete(outage_id)

    def waiting(self) -> list[WorkItem]:
        """Outages without a crew, highest priority first."""
        with self._lock:
            return sorted((i for k, i in self._items.items() if k not in self._assign),
                          key=lambda i: (-i.priority, i.outage_id))

    def assignments(self, *, include_restored: bool = False) -> list[Assignment]:
        with self._lock:
            return sorted((a for a in self._assign.values()
                           if include_restored or a.stage is not OutageStage.RESTORED), key=lambda a: a.outage_id)

    def stage(self, outage_id: str) -> OutageStage:
        with self._lock:
            self._item(outage_id)
            a = self._assign.get(outage_id)
            return a.stage if a is not None else OutageStage.WAITING

    def etr_ms(self, outage_id: str) -> int:
        """Estimated time of restoration (UTC epoch ms); -1 while the outage waits for a crew."""
        with self._lock:
            self._item(outage_id)
            a = self._assign.get(outage_id)
            return a.etr_ms if a is not None else -1

    # ------------------------------------------------------------------------------------------- optimisation

    def distance_km(self, ax: np.ndarray | float, ay: np.ndarray | float, bx: np.ndarray | float,
                    by: np.ndarray | float) -> np.ndarray:
        if self.coordinates is CoordinateSystem.LONLAT:
            return haversine_km(ax, ay, bx, by)
        return np.hypot(np.asarray(bx) - ax, np.asarray(by) - ay) * (self.planar_unit_m / 1000.0)

    def travel_s(self, origin: tuple[float, float], destination: tuple[float, float]) -> float:
        km = float(self.distance_km(origin[0], origin[1], destination[0], destination[1]))
        return km / self.speed_kmh * 3600.0

    def optimise(self, now_ms: int) -> list[Assignment]:
        """(Re-)assign crews to outages under the rules of the module doc; returns the active assignments."""
        with self._lock:
            for crew in list(self._crews.values()):
                if crew.status is CrewStatus.ASSIGNED and not crew.on_shift(now_ms):
                    self._release(crew, now_ms)  # the shift ended before it left: its outage goes back
            active = {k: a for k, a in self._assign.items() if a.stage is not OutageStage.RESTORED}
            waiting_prio = [i.priority for k, i in self._items.items() if k not in self._assign]
            pool_crews: list[Crew] = []
            allowed_min: list[float] = []  # per pool crew: lowest priority it may take (other than its own item)
            for crew in sorted(self._crews.values(), key=lambda c: c.id):
                if crew.status in (CrewStatus.AVAILABLE, CrewStatus.ASSIGNED) and crew.on_shift(now_ms):
                    pool_crews.append(crew)
                    allowed_min.append(-math.inf)
                elif crew.status is CrewStatus.EN_ROUTE:
                    bar = self.preempt_ratio * self._items[crew.outage_id].priority
                    if any(p >= bar for p in waiting_prio):
                        pool_crews.append(crew)
                        allowed_min.append(bar)
            pool_ids = {c.id for c in pool_crews}
            held = {k for k, a in active.items() if a.crew_id not in pool_ids}
            items = sorted((i for k, i in self._items.items()
                            if k not in held and (k not in self._assign or k in active)), key=lambda i: i.outage_id)
            if not pool_crews or not items:
                return self.assignments()
            crew_loc = np.asarray([c.location for c in pool_crews], dtype=float)
            item_loc = np.asarray([i.location for i in items], dtype=float)
            km = self.distance_km(crew_loc[:, None, 0], crew_loc[:, None, 1], item_loc[None, :, 0],
                                  item_loc[None, :, 1])
            travel_h = km / self.speed_kmh
            # An en-route crew is already on its way: its own outage costs it no further travel in the optimiser,
            # so it keeps it unless the preemption rule gives it a much more important one.
            for r, c in enumerate(pool_crews):
                if c.status is CrewStatus.EN_ROUTE:
                    travel_h[r, [k for k, i in enumerate(items) if i.outage_id == c.outage_id]] = 0.0
            prio = np.asarray([i.priority for i in items], dtype=float)
            feasible = np.asarray([[i.skill in c.skills and (i.outage_id == c.outage_id or i.priority >= low)
                                    for i in items] for c, low in zip(pool_crews, allowed_min, strict=True)],
                                  dtype=bool)
            sol = solve_assignment(travel_h, feasible, prio, hours_per_point=self.hours_per_point)
            chosen = {pool_crews[r].id: items[c] for r, c in sol.pairs}
            # Crews losing or changing their outage first, so the outage's old assignment is gone before a new one.
            for crew in pool_crews:
                new = chosen.get(crew.id)
                if crew.outage_id and (new is None or new.outage_id != crew.outage_id):
                    self._release(crew, now_ms)
            for crew in pool_crews:
                new = chosen.get(crew.id)
                if new is None or new.outage_id == crew.outage_id:
                    continue
                crew = self._crews[crew.id]
                travel = self.travel_s(crew.location, new.location)
                repair = self.repair.repair_s(new.device_kind)
                a = Assignment(new.outage_id, crew.id, OutageStage.CREW_ASSIGNED, now_ms, now_ms, travel, repair,
                               now_ms + round((travel + repair) * 1000))
                crew = replace(crew, status=CrewStatus.ASSIGNED, outage_id=new.outage_id, updated_ms=now_ms)
                self._crews[crew.id] = crew
                self._assign[new.outage_id] = a
                self._save(crews=(crew,), assignments=(a,))
                self._emit(new.outage_id, OutageStage.CREW_ASSIGNED, now_ms)
            return self.assignments()

    def _release(self, crew: Crew, now_ms: int) -> None:
        outage = crew.outage_id
        crew = replace(crew, status=CrewStatus.AVAILABLE, outage_id="", updated_ms=now_ms)
        self._crews[crew.id] = crew
        self._assign.pop(outage, None)
        self._save(crews=(crew,))
        self._delete(outage, item=False)
        self._emit(outage, OutageStage.WAITING, now_ms)

    # ------------------------------------------------------------------------------------------ field reports

    def report_status(self, crew_id: str, status: CrewStatus | str, time_ms: int, *,
                      location: tuple[float, float] | None = None) -> OutageStage | None:
        """A status report from the field; returns the outage's new stage (None when the crew has no outage:
        available <-> off_shift). ``location``: the crew's position when it reports (default: the last known)."""
        with self._lock:
            crew = self.crew(crew_id)
            try:
                new = CrewStatus(status)
            except ValueError:
                raise InvalidTransitionError(f"crew {crew_id!r}: unknown status {status!r} (known: "
                                             f"{', '.join(CrewStatus)})") from None
            allowed = _TRANSITIONS[crew.status]
            if new not in allowed:
                raise InvalidTransitionError(
                    f"crew {crew_id!r}: cannot go from {crew.status.value} to {new.value} (allowed: "
                    f"{', '.join(sorted(s.value for s in allowed)) or 'none'})")
            if location is not None:
                crew = replace(crew, location=_check_location(f"crew {crew_id!r}", location, self.coordinates))
            if not crew.outage_id:
                crew = replace(crew, status=new, updated_ms=time_ms)
                self._crews[crew_id] = crew
                self._save(crews=(crew,))
                return None
            item = self._items[crew.outage_id]
            a = self._assign[crew.outage_id]
            if time_ms < a.stage_ms:
                raise InvalidTransitionError(f"crew {crew_id!r}: report at {time_ms} is before the present stage "
                                             f"({a.stage.value}) began at {a.stage_ms}")
            if new is CrewStatus.EN_ROUTE:
                travel = self.travel_s(crew.location, item.location)
                a = replace(a, stage=OutageStage.EN_ROUTE, stage_ms=time_ms, travel_s=travel,
                            etr_ms=time_ms + round((travel + a.repair_s) * 1000))
                crew = replace(crew, status=new, updated_ms=time_ms)
            elif new is CrewStatus.ON_SITE:
                a = replace(a, stage=OutageStage.ON_SITE, stage_ms=time_ms,
                            etr_ms=time_ms + round(a.repair_s * 1000))
                crew = replace(crew, status=new, location=item.location, updated_ms=time_ms)
            else:  # on site -> available: the repair is done
                a = replace(a, stage=OutageStage.RESTORED, stage_ms=time_ms, etr_ms=time_ms)
                crew = replace(crew, status=new, outage_id="", location=item.location, updated_ms=time_ms)
            self._crews[crew_id] = crew
            self._assign[item.outage_id] = a
            self._save(crews=(crew,), assignments=(a,))
            self._emit(item.outage_id, a.stage, time_ms)
            return a.stage

    # ------------------------------------------------------------------------------------------------ helpers

    def _item(self, outage_id: str) -> WorkItem:
        try:
            return self._items[outage_id]
        except KeyError:
            raise UnknownWorkError(f"no work item for outage {outage_id!r} on the board") from None

    def _emit(self, outage_id: str, stage: OutageStage, time_ms: int) -> None:
        if self.on_stage is not None:
            self.on_stage(outage_id, stage, time_ms)

    def _save(self, *, crews: Iterable[Crew] = (), items: Iterable[WorkItem] = (),
              assignments: Iterable[Assignment] = ()) -> None:
        try:
            with self._db.conn() as c:
                c.executemany("INSERT OR REPLACE INTO crews (id, doc) VALUES (?, ?)",
                              [(x.id, _crew_doc(x)) for x in crews])
                c.executemany("INSERT OR REPLACE INTO work_items (outage_id, doc) VALUES (?, ?)",
                              [(x.outage_id, json.dumps(asdict(x))) for x in items])
                c.executemany("INSERT OR REPLACE INTO assignments (outage_id, doc) VALUES (?, ?)",
                              [(x.outage_id, json.dumps(asdict(x))) for x in assignments])
        except sqlite3.Error as exc:
            raise StorageError(f"{self._db.path}: cannot store the crew board: {exc}") from exc

    def _delete(self, outage_id: str, *, item: bool = True) -> None:
        try:
            with self._db.conn() as c:
                c.execute("DELETE FROM assignments WHERE outage_id = ?", (outage_id,))
                if item:
                    c.execute("DELETE FROM work_items WHERE outage_id = ?", (outage_id,))
        except sqlite3.Error as exc:
            raise StorageError(f"{self._db.path}: cannot store the crew board: {exc}") from exc
