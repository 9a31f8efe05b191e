"""Topology interlocks for the command service: switching that the live topology says is unsafe is refused.

Registered with ``CommandService.add_interlock`` when the station has a network model. A command on a switch's
position point (or a double command point bound to a switch) is read as close/open and checked against the live
topology (``TopologyService`` look-aheads, nothing is changed):

- closing onto an element marked earthed (an active ``clearance`` tag) or ``faulted``: refused when the close would
  energize it, naming the element and the tag;
- closing that joins two islands fed by different sources: refused naming both sources, unless the switch carries a
  ``parallel_allowed`` tag or is listed in ``parallel_allowed`` (a bus coupler meant for it);
- opening a ``Disconnector`` under load: with a valid current measurement on it, refused above
  ``disconnector_max_current_a``; without one, refused when the opening would de-energize loads or break a closed loop
  (a mesh carries current). A dead disconnector, or one whose far side feeds nothing, may be opened.

Each refusal is a sentence saying why; the command service prefixes the point and audits it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from models.calculated_points import CALCULATED_FRONTEND
from models.commands import ControlAction
from models.measurement_points import Quantity
from models.network import SwitchKind
from models.points import ControlType, DoubleState, PointDef, PointKind, Quality
from scada.rtdb import Rtdb
from scada.tags import Tag, TagKind
from scada.topology_service import SwitchState, TopologyService

__all__ = ["DEFAULT_DISCONNECTOR_MAX_CURRENT_A", "TopologyInterlocks"]

#: Current a disconnector may break: magnetising/charging currents of a few amperes.
DEFAULT_DISCONNECTOR_MAX_CURRENT_A = 2.0
_UNUSABLE = int(Quality.INVALID | Quality.COMM_LOST | Quality.NOT_TOPICAL)
_CURRENT_UNITS = frozenset({"a", "amp", "amps", "ampere"})
_MARKING_KINDS = (TagKind.CLEARANCE, TagKind.FAULTED)


class TagSource(Protocol):
    def active(self, target: str | None = None) -> list[Tag]: ...


class TopologyInterlocks:
    """Callable as a ``scada.commands.Interlock``: None to allow, or the reason for refusing."""

    def __init__(self, topology: TopologyService, rtdb: Rtdb, tags: TagSource | None = None, *,
                 parallel_allowed: Iterable[str] = (),
                 disconnector_max_current_a: float = DEFAULT_DISCONNECTOR_MAX_CURRENT_A) -> None:
        if not disconnector_max_current_a >= 0:
            raise ValueError(f"disconnector_max_current_a must be >= 0, got {disconnector_max_current_a!r}")
        self._topology = topology
        self._rtdb = rtdb
        self._tags = tags
        self._parallel_allowed = frozenset(parallel_allowed)
        self._max_current_a = disconnector_max_current_a
        config = rtdb.config
        # element name/mRID -> ids of current measurements on it (CIM "A" points, or hand-written analogs in A)
        self._current_points: dict[str, list[int]] = {}
        for p in config.points:
            binding = config.binding(p)
            # Field measurements only: a calculated current (state estimate) lags the switching it would judge.
            is_current = (binding.quantity is Quantity.CURRENT_A if binding is not None
                          else p.kind is PointKind.ANALOG and p.units.strip().lower() in _CURRENT_UNITS
                          and p.source.frontend != CALCULATED_FRONTEND)
            if is_current and p.element:
                self._current_points.setdefault(p.element, []).append(p.id)

    def __call__(self, point: PointDef, action: ControlAction, value: float) -> str | None:
        if action is ControlAction.CANCEL:
            return None
        switch = self._switch_of(point)
        if switch is None:
            return None
        close = _closes(point, value)
        if close is None:
            return None
        return self.check(switch.mrid, close=close)

    def check(self, switch: str, *, close: bool) -> str | None:
        """Check operating ``switch`` (name or mRID) now; None when allowed, else why not."""
        return self._check_close(switch) if close else self._check_open(switch)

    # ------------------------------------------------------------------------------------------ close
    def _check_close(self, switch: str) -> str | None:
        effect = self._topology.closing_effect(switch)
        if effect.was_closed:
            return None
        name = effect.switch_name
        if effect.energized_buses:
            live = set(effect.energized_buses)
            for tag in self._markings():
                found = self._topology.element_buses(tag.target)
                if found is None:
                    continue
                step, buses = found
                if live.intersection(buses):
                    what = "earthed (clearance)" if tag.kind is TagKind.CLEARANCE else "faulted"
                    return (f"closing switch {name} would energize {step.kind.value} {step.name}, marked {what} by "
                            f"{tag.operator} (tag {tag.id}: {tag.reason})")
        if effect.parallels_sources and not self._parallel_ok(effect.switch_mrid, name):
            side1 = ", ".join(self._source_name(m) for m in effect.sources_side1)
            side2 = ", ".join(self._source_name(m) for m in effect.sources_side2)
            return (f"closing switch {name} would parallel source {side1} with source {side2}; mark the switch "
                    "parallel_allowed if this transfer is intended")
        return None

    def _markings(self) -> list[Tag]:
        if self._tags is None:
            return []
        return [t for t in self._tags.active() if t.kind in _MARKING_KINDS]

    def _parallel_ok(self, mrid: str, name: str) -> bool:
        if mrid in self._parallel_allowed or name in self._parallel_allowed:
            return True
        if self._tags is None:
            return False
        return any(t.kind is TagKind.PARALLEL_ALLOWED for key in (name, mrid) for t in self._tags.active(key))

    def _source_name(self, mrid: str) -> str:
        for src in self._topology.model.sources:
            if src.mrid == mrid:
                return src.name
        return mrid

    # ------------------------------------------------------------------------------------------ open
    def _check_open(self, switch: str) -> str | None:
        state = self._topology.switch_state(switch)
        if state.kind is not SwitchKind.DISCONNECTOR or not state.closed:
            return None
        measured = self._measured_current_a(state)
        if measured is not None:
            amps, point = measured
            if amps > self._max_current_a:
                return (f"disconnector {state.name} would break load current: {amps:.1f} A measured by {point} "
                        f"(a disconnector may break at most {self._max_current_a:g} A); open a breaker or "
                        "load-break switch first")
            return None
        effect = self._topology.opening_effect(state.mrid)
        if not effect.energized:
            return None
        if effect.deenergized_buses:
            snap = self._topology.snapshot()
            load_bus = np.array([x.bus for x in snap.model.loads], dtype=np.int64)
            loads = np.nonzero(np.isin(load_bus, np.asarray(effect.deenergized_buses, dtype=np.int64)))[0]
            if len(loads):
                return (f"disconnector {state.name} would break load current: opening it de-energizes "
                        f"{len(loads)} load(s) (e.g. {snap.model.loads[int(loads[0])].name}) and no valid current "
                        "measurement shows it unloaded; open a breaker or load-break switch first")
        if effect.breaks_loop:
            return (f"disconnector {state.name} would break a loop current: it closes a ring that stays connected "
                    "through other switches, and no valid current measurement shows it unloaded")
        return None

    def _measured_current_a(self, state: SwitchState) -> tuple[float, str] | None:
        """The largest valid current on the switch (any phase) and its point, None without a usable measurement."""
        ids = self._current_points.get(state.mrid, []) + self._current_points.get(state.name, [])
        if not ids:
            return None
        rows = self._rtdb.snapshot(ids)
        ok = ((rows["quality"] & _UNUSABLE) == 0) & np.isfinite(rows["value"])
        if not ok.any():
            return None
        values = np.abs(rows["value"][ok])
        k = int(np.argmax(values))
        return float(values[k]), self._rtdb.config.points[int(rows["point"][ok][k])].name

    def _switch_of(self, point: PointDef) -> SwitchState | None:
        state = self._topology.switch_of_point(point.id)
        if state is not None:
            return state
        # a pure command point (no status) bound to the switch: a double command opens/closes it
        if point.kind is PointKind.COMMAND and point.control is not None and point.control.type is ControlType.DOUBLE:
            return self._topology.find_switch(point.element) if point.element else None
        return None


def _closes(point: PointDef, value: float) -> bool | None:
    """True for a close command, False for an open, None when the value is neither."""
    ctype = point.control.type if point.control is not None else None
    if ctype is ControlType.DOUBLE:
        if value == DoubleState.ON:
            return True
        if value == DoubleState.OFF:
            return False
        return None
    if ctype is ControlType.SINGLE:
        return bool(value)
    return None
