"""What an engineer may change in a study case, as records: applied in order to the snapshot they start from.

Edits are data (frozen records with the operator and time) so a study can be saved, reloaded and shown as its edit
history. Applying one returns a new NetworkState (and, for measurement edits, new measurement overrides); the
snapshot itself is never changed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from dms.network_state import NetworkState
from dms.study.errors import StudyError
from models.points import Quality

__all__ = ["EditKind", "MeasurementOverride", "StudyEdit", "apply_edit"]


class EditKind(StrEnum):
    SWITCH = "switch"  # element = switch, value = 1 closed / 0 open
    LOAD = "load"  # element = load, value = P W, value2 = Q var
    SCALE_LOADS = "scale_loads"  # element = feeder name or "" for all, value = factor
    TAP = "tap"  # element = tap changer, value = step
    CAPACITOR = "capacitor"  # element = capacitor, value = sections in service
    LINE_OUT = "line_out"  # element = line segment taken out of service (topology edit)
    MEASUREMENT = "measurement"  # element = point name, value = value, value2 = quality bits (NaN: good)


@dataclass(frozen=True, slots=True)
class StudyEdit:
    kind: EditKind
    element: str
    value: float
    value2: float = math.nan
    operator: str = ""
    time_ms: int = 0

    def text(self) -> str:
        if self.kind is EditKind.SWITCH:
            return f"{self.element} {'closed' if self.value else 'opened'}"
        if self.kind is EditKind.LOAD:
            return f"load {self.element} set to {self.value / 1e3:.1f} kW, {self.value2 / 1e3:.1f} kvar"
        if self.kind is EditKind.SCALE_LOADS:
            return f"loads of {self.element or 'every feeder'} scaled by {self.value:g}"
        if self.kind is EditKind.TAP:
            return f"tap changer {self.element} to step {self.value:g}"
        if self.kind is EditKind.CAPACITOR:
            return f"capacitor {self.element} to {self.value:g} section(s)"
        if self.kind is EditKind.LINE_OUT:
            return f"line {self.element} out of service"
        quality = "" if math.isnan(self.value2) else f" quality {'|'.join(Quality(int(self.value2)).names()) or 'GOOD'}"
        return f"measurement {self.element} = {self.value:g}{quality}"


@dataclass(frozen=True, slots=True)
class MeasurementOverride:
    point: int
    value: float
    quality: int


def apply_edit(state: NetworkState, edit: StudyEdit) -> NetworkState:
    """The state after one edit (measurement edits leave the network state unchanged)."""
    k = edit.kind
    if k is EditKind.SWITCH:
        return state.with_switches({edit.element: bool(edit.value)})
    if k is EditKind.LOAD:
        q = edit.value2 if math.isfinite(edit.value2) else state.load_q_var[state.index_of("load", edit.element)]
        return state.with_load(edit.element, edit.value, float(q))
    if k is EditKind.SCALE_LOADS:
        if not edit.value >= 0:
            raise StudyError(f"load scale factor must be >= 0, not {edit.value:g}")
        if not edit.element:
            return state.scaled_loads(edit.value)
        feeder = next((f for f in state.base.feeders if edit.element in (f.name, f.mrid)), None)
        if feeder is None:
            raise StudyError(f"network {state.base.name!r} has no feeder named {edit.element!r}")
        factor = np.array([edit.value if ld.feeder_mrid == feeder.mrid else 1.0 for ld in state.base.loads])
        return state.scaled_loads(factor)
    if k is EditKind.TAP:
        return state.with_taps({edit.element: edit.value})
    if k is EditKind.CAPACITOR:
        return state.with_capacitors({edit.element: edit.value})
    if k is EditKind.LINE_OUT:
        state.index_of("line", edit.element)  # named error when unknown
        lines = tuple(ln for ln in state.base.lines if edit.element not in (ln.name, ln.mrid))
        return state.replace(base=dataclasses.replace(state.base, lines=lines))
    return state
