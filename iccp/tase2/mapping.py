"""RTDB point value + quality + time <-> TASE.2 point value + Data_Flags, both ways.

RTDB -> TASE.2 (what our server publishes), validity by precedence NOT_VALID > HELD > SUSPECT > VALID:

    INVALID, COMM_LOST                        -> NOT_VALID
    BLOCKED, OPERATOR_BLOCKED                 -> HELD       (scanning removed: the value is held, not refreshed)
    QUESTIONABLE, NOT_TOPICAL (stale), OVERFLOW -> SUSPECT
    current source: SUBSTITUTED (manual entry) -> ENTERED; a point of the state estimator (``DMS-SE``) -> ESTIMATED;
                    any other calculated point -> CALCULATED; else TELEMETERED
    TIME_INVALID, or no source time           -> time-stamp quality invalid
    normal value: abnormal when a status point is in one of its alarm states or an analog is outside lo..hi

TASE.2 -> RTDB (what our client imports): NOT_VALID -> INVALID, HELD -> NOT_TOPICAL (the source no longer refreshes
it), SUSPECT -> QUESTIONABLE, ENTERED -> SUBSTITUTED, time-stamp invalid -> TIME_INVALID; CALCULATED/ESTIMATED and
the normal-value bit have no RTDB flag (the RTDB runs its own alarm limits). A Data_State INVALID/BETWEEN on a single
point has no 0/1 value: the last value is kept and the row is INVALID.

Values: a double point is the TASE.2 state itself (``DoubleState`` == ``State``); a single point 0/1 maps to OFF/ON;
analog, counter and set-point values are Real or Discrete (rounded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from iccp.tase2.model import CurrentSource, DataFlags, PointType, PointValue, State, Tase2Error, Validity
from models.calculated_points import CALCULATED_FRONTEND, SE_SOURCE
from models.points import PointDef, PointKind, Quality
from models.protocols.iccp import value_fits

__all__ = ["RtdbValue", "flags_from_quality", "from_tase2", "quality_from_flags", "to_tase2", "value_fits"]

_NOT_VALID = Quality.INVALID | Quality.COMM_LOST
_HELD = Quality.BLOCKED | Quality.OPERATOR_BLOCKED
_SUSPECT = Quality.QUESTIONABLE | Quality.NOT_TOPICAL | Quality.OVERFLOW

@dataclass(frozen=True, slots=True)
class RtdbValue:
    """A value as the RTDB holds it (``models.updates.UPDATE_DTYPE`` columns); ``source_time_ms`` -1: no time."""

    value: float
    quality: Quality
    source_time_ms: int


def _abnormal(point: PointDef, value: float) -> bool:
    if point.kind.is_status:
        return any(a.value == value for a in point.state_alarms)
    lim = point.limits
    if lim is None or math.isnan(value):
        return False
    lo = lim.lo if lim.lo is not None else lim.lolo
    hi = lim.hi if lim.hi is not None else lim.hihi
    return (lo is not None and value < lo) or (hi is not None and value > hi)


def flags_from_quality(point: PointDef, quality: int, value: float, has_time: bool = True) -> DataFlags:
    q = Quality(int(quality))  # RTDB rows hold numpy integers
    if q & _NOT_VALID:
        validity = Validity.NOT_VALID
    elif q & _HELD:
        validity = Validity.HELD
    elif q & _SUSPECT:
        validity = Validity.SUSPECT
    else:
        validity = Validity.VALID
    if q & Quality.SUBSTITUTED:
        source = CurrentSource.ENTERED
    elif point.source.frontend == CALCULATED_FRONTEND:
        source = CurrentSource.ESTIMATED if point.source.rtu == SE_SOURCE else CurrentSource.CALCULATED
    else:
        source = CurrentSource.TELEMETERED
    return DataFlags(validity, source, _abnormal(point, value), bool(q & Quality.TIME_INVALID) or not has_time)


def quality_from_flags(flags: DataFlags) -> Quality:
    q = Quality.GOOD
    q |= {Validity.VALID: Quality.GOOD, Validity.HELD: Quality.NOT_TOPICAL, Validity.SUSPECT: Quality.QUESTIONABLE,
          Validity.NOT_VALID: Quality.INVALID}[flags.validity]
    if flags.source is CurrentSource.ENTERED:
        q |= Quality.SUBSTITUTED
    if flags.time_invalid:
        q |= Quality.TIME_INVALID
    return q


def to_tase2(point: PointDef, point_type: PointType, value: float, quality: int, source_time_ms: int,
             now_ms: int) -> PointValue:
    """The TASE.2 value of an RTDB point. Without a source time (-1) the time stamp is ``now_ms`` and marked invalid."""
    if not value_fits(point.kind, point_type):
        raise Tase2Error(f"point {point.name!r}: a {point.kind.value} point cannot be sent as {point_type.value}")
    value, source_time_ms = float(value), int(source_time_ms)  # RTDB rows hold numpy scalars
    has_time = source_time_ms >= 0
    flags = flags_from_quality(point, quality, value, has_time)
    if point_type.is_state:
        if point.kind is PointKind.SINGLE:
            out: float = State.ON if value else State.OFF
        else:
            out = int(value) if value in (0, 1, 2, 3) else State.INVALID
        if math.isnan(value):
            out, flags = State.INVALID, DataFlags(Validity.NOT_VALID, flags.source, flags.abnormal, flags.time_invalid)
    elif point_type.base == "Discrete":
        if math.isnan(value) or math.isinf(value):
            out, flags = 0, DataFlags(Validity.NOT_VALID, flags.source, flags.abnormal, flags.time_invalid)
        else:
            out = max(-(2**31), min(2**31 - 1, round(value)))
    else:
        out = float(value)
    return PointValue(out, flags if point_type.has_flags else DataFlags(),
                      (source_time_ms if has_time else now_ms) if point_type.has_time else None)


def from_tase2(point: PointDef, point_type: PointType, pv: PointValue, last_value: float = math.nan) -> RtdbValue:
    """The RTDB row of a received TASE.2 value; ``last_value`` is kept when a single point's state has no 0/1."""
    if not value_fits(point.kind, point_type):
        raise Tase2Error(f"point {point.name!r}: a {point.kind.value} point cannot be fed from {point_type.value}")
    quality = quality_from_flags(pv.flags) if point_type.has_flags else Quality.GOOD
    value = float(pv.value)
    if point_type.is_state and point.kind is PointKind.SINGLE:
        if pv.value == State.ON:
            value = 1.0
        elif pv.value == State.OFF:
            value = 0.0
        else:
            value, quality = last_value, quality | Quality.INVALID
    time_ms = pv.time_ms if pv.time_ms is not None else -1
    return RtdbValue(value, quality, time_ms)
