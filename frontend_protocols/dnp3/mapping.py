"""Pure mapping between DNP3 data and the models types: quality flags, time stamps, double-bit states, scaling, the
object headers the master reads and the command objects it writes.

Nothing here imports opendnp3: the adapter turns the library's objects into plain ints/floats first, so this module
is unit-testable and the numbers that cross into ``models`` have one definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from models.points import ControlType, DoubleState, PointDef, PointKind, Quality

# --------------------------------------------------------------------------------------------------- quality

#: Flag octet of DNP3 measurement objects (IEEE 1815 11.9.x); bits 5..7 depend on the object type.
ONLINE = 0x01
RESTART = 0x02
COMM_LOST = 0x04
REMOTE_FORCED = 0x08
LOCAL_FORCED = 0x10
BIT5 = 0x20  # binary/double: CHATTER_FILTER; analog/AO status: OVER_RANGE; counter: ROLLOVER
BIT6 = 0x40  # analog/AO status: REFERENCE_ERR; counter: DISCONTINUITY; double-bit: state bit


class FlagSet(IntEnum):
    """Which meaning bits 5 and 6 of the flag octet have."""

    BINARY = 1  # bit 5 chatter filter; bits 6/7 carry the state
    ANALOG = 2  # bit 5 over-range, bit 6 reference error (analog inputs and analog output status)
    COUNTER = 3  # bit 5 rollover, bit 6 discontinuity


def flag_set(kind: PointKind) -> FlagSet:
    if kind.is_status:
        return FlagSet.BINARY
    if kind is PointKind.COUNTER:
        return FlagSet.COUNTER
    return FlagSet.ANALOG


def quality_from_flags(flags: int, fs: FlagSet) -> Quality:
    """models Quality from a DNP3 flag octet.

    ONLINE missing or RESTART: INVALID (the device says the value is not valid). COMM_LOST: COMM_LOST (the device
    lost its own source, e.g. a downstream IED). REMOTE/LOCAL_FORCED: SUBSTITUTED. CHATTER_FILTER: QUESTIONABLE —
    the state is real but the device is suppressing its changes, so it may be behind the field (BLOCKED is kept for
    blocking by an operator or the device's own block, which DNP3 does not signal). OVER_RANGE: OVERFLOW|INVALID.
    REFERENCE_ERR: QUESTIONABLE|INVALID. Counter ROLLOVER: OVERFLOW; DISCONTINUITY: QUESTIONABLE.
    """
    q = Quality.GOOD
    if not flags & ONLINE or flags & RESTART:
        q |= Quality.INVALID
    if flags & COMM_LOST:
        q |= Quality.COMM_LOST
    if flags & (REMOTE_FORCED | LOCAL_FORCED):
        q |= Quality.SUBSTITUTED
    if fs is FlagSet.BINARY:
        if flags & BIT5:
            q |= Quality.QUESTIONABLE
    elif fs is FlagSet.ANALOG:
        if flags & BIT5:
            q |= Quality.OVERFLOW | Quality.INVALID
        if flags & BIT6:
            q |= Quality.QUESTIONABLE | Quality.INVALID
    else:
        if flags & BIT5:
            q |= Quality.OVERFLOW
        if flags & BIT6:
            q |= Quality.QUESTIONABLE
    return q


def flags_from_quality(q: Quality, fs: FlagSet) -> int:
    """DNP3 flag octet for a simulated value (the inverse of ``quality_from_flags`` where one exists)."""
    flags = ONLINE
    if q & Quality.INVALID and not q & (Quality.OVERFLOW | Quality.QUESTIONABLE):
        flags &= ~ONLINE
    if q & Quality.COMM_LOST:
        flags |= COMM_LOST
    if q & Quality.SUBSTITUTED:
        flags |= LOCAL_FORCED
    if fs is FlagSet.BINARY:
        if q & Quality.QUESTIONABLE:
            flags |= BIT5
    elif fs is FlagSet.ANALOG:
        if q & Quality.OVERFLOW:
            flags |= BIT5
        if q & Quality.QUESTIONABLE:
            flags |= BIT6
    else:
        if q & Quality.OVERFLOW:
            flags |= BIT5
        if q & Quality.QUESTIONABLE:
            flags |= BIT6
    return flags


#: Quality flags a DNP3 device can transmit per point kind (what the simulator accepts in set_value).
SUPPORTED_QUALITY: dict[FlagSet, Quality] = {
    FlagSet.BINARY: Quality.INVALID | Quality.COMM_LOST | Quality.SUBSTITUTED | Quality.QUESTIONABLE,
    FlagSet.ANALOG: Quality.INVALID | Quality.COMM_LOST | Quality.SUBSTITUTED | Quality.QUESTIONABLE
    | Quality.OVERFLOW,
    FlagSet.COUNTER: Quality.INVALID | Quality.COMM_LOST | Quality.SUBSTITUTED | Quality.QUESTIONABLE
    | Quality.OVERFLOW,
}

# --------------------------------------------------------------------------------------------------- time

#: opendnp3 TimestampQuality values.
TS_INVALID = 0
TS_SYNCHRONIZED = 1
TS_UNSYNCHRONIZED = 2


def time_ms(value_ms: int, ts_quality: int) -> tuple[int, Quality]:
    """(UTC epoch ms or -1, extra quality) of a DNP3 time stamp.

    An object without time (static objects, event variations without time) has quality INVALID: -1. A time from a
    device whose clock was never synchronised (IIN1.4 NEED_TIME) is kept but flagged TIME_INVALID.
    """
    if ts_quality == TS_INVALID or value_ms <= 0:
        return -1, Quality.GOOD
    if ts_quality == TS_UNSYNCHRONIZED:
        return int(value_ms), Quality.TIME_INVALID
    return int(value_ms), Quality.GOOD


# --------------------------------------------------------------------------------------------------- values


def double_value(dbit: int) -> tuple[float, Quality]:
    """DoubleBit 0..3 uses the DoubleState codes; INDETERMINATE (3) is a faulty position indication: INVALID."""
    if dbit == DoubleState.INDETERMINATE:
        return float(dbit), Quality.INVALID
    if dbit in (DoubleState.INTERMEDIATE, DoubleState.OFF, DoubleState.ON):
        return float(dbit), Quality.GOOD
    return math.nan, Quality.INVALID


@dataclass(frozen=True, slots=True)
class PointMap:
    """What the adapter needs per configured monitoring object, resolved once from a PointDef."""

    point: int  # PointDef.id
    kind: PointKind
    scale: float
    offset: float
    flag_set: FlagSet

    @classmethod
    def of(cls, p: PointDef) -> PointMap:
        scaled = not p.kind.is_status  # status values are state codes: scaling them would corrupt the state
        return cls(p.id, p.kind, p.scale if scaled else 1.0, p.offset if scaled else 0.0, flag_set(p.kind))

    def convert(self, raw: float, flags: int, ts_value_ms: int, ts_quality: int) -> tuple[float, int, int]:
        """(engineering value, Quality bits, source_time_ms) of one received object."""
        q = quality_from_flags(flags, self.flag_set)
        t, tq = time_ms(ts_value_ms, ts_quality)
        q |= tq
        if self.kind is PointKind.DOUBLE:
            value, vq = double_value(int(raw))
            q |= vq
        elif self.kind is PointKind.SINGLE:
            value = 1.0 if raw else 0.0
        else:
            value = float(raw)
            if not math.isfinite(value):  # NaN/inf from a device is garbage, not a measurement
                return math.nan, int(q | Quality.INVALID), t
            value = value * self.scale + self.offset
        return value, int(q), t


def raw_setpoint(p: PointDef, value: float) -> float:
    """Field value of a set-point commanded in engineering units (inverse of raw*scale+offset)."""
    return (value - p.offset) / p.scale


# --------------------------------------------------------------------------------------------------- objects

#: (group, variation) the master reads per configured point type: static objects in integrity polls, events in
#: event polls. Explicit variations because a class poll returns the outstation's defaults, which for opendnp3
#: outstations are g30v1/g32v1 (integers) and g2v1 (no time).
STATIC_READ: dict[str, tuple[int, int]] = {
    "binary_input": (1, 2),  # with flags
    "double_bit_binary_input": (3, 2),
    "analog_input": (30, 5),  # 32-bit float with flags
    "counter": (20, 1),  # 32-bit with flags
    "analog_output_status": (40, 3),  # 32-bit float with flags
}
EVENT_READ: dict[str, tuple[int, int]] = {
    "binary_input": (2, 2),  # with absolute time
    "double_bit_binary_input": (4, 2),
    "analog_input": (32, 7),  # float with time
    "counter": (22, 5),  # 32-bit with flag and time
    "analog_output_status": (42, 7),  # float with time
}


class CrobCode(IntEnum):
    """(operation type, trip/close code) packed as op | tcc << 6, as in the CROB control code octet."""

    LATCH_ON = 0x03
    LATCH_OFF = 0x04
    PULSE_ON_CLOSE = 0x01 | 0x40
    PULSE_ON_TRIP = 0x01 | 0x80


def crob_for(ctype: ControlType, value: float, point_name: str) -> CrobCode:
    """CROB of a single or double command; raises ValueError naming the point for a value it cannot take.

    Double commands use the trip/close pair (PULSE_ON with TRIP or CLOSE), as breaker and recloser controllers
    expose them; single commands latch on/off.
    """
    if ctype is ControlType.SINGLE:
        if value not in (0, 1):
            raise ValueError(f"single command {point_name}: value {value} is not 0 or 1")
        return CrobCode.LATCH_ON if value else CrobCode.LATCH_OFF
    if ctype is ControlType.DOUBLE:
        if value == DoubleState.ON:
            return CrobCode.PULSE_ON_CLOSE
        if value == DoubleState.OFF:
            return CrobCode.PULSE_ON_TRIP
        raise ValueError(f"double command {point_name}: value {value} is not OFF (1) or ON (2)")
    raise ValueError(f"{point_name}: a {ctype.value} command is an analog output, not a CROB")


def command_value_from_crob(ctype: ControlType, op_type: int, tcc: int) -> float | None:
    """What a received CROB asks of a single or double point (0/1, DoubleState); None if it makes no sense.

    The outstation accepts both conventions: trip/close pair codes and latch on/off."""
    op_type &= 0x0F
    if ctype is ControlType.DOUBLE:
        if tcc == 2:  # TRIP
            return float(DoubleState.OFF)
        if tcc == 1:  # CLOSE
            return float(DoubleState.ON)
        if op_type == 0x03:
            return float(DoubleState.ON)
        if op_type == 0x04:
            return float(DoubleState.OFF)
        return None
    if ctype is ControlType.SINGLE:
        if tcc == 1 or op_type == 0x03 or (op_type == 0x01 and tcc == 0):
            return 1.0
        if tcc == 2 or op_type == 0x04:
            return 0.0
        return None
    return None


# --------------------------------------------------------------------------------------------------- polling

#: Update budgets (detection to RTDB) per link kind: (digital, analog) seconds.
BUDGET_RTU_S = (4.0, 5.0)
BUDGET_FRTU_S = (6.0, 10.0)


def event_poll_period_s(configured_s: float, frtu: bool) -> float:
    """Period of the event poll: the configured one, or a quarter of the tighter budget (a lost poll, its
    response time-out and a second poll still fit): RTU 1.0 s, FRTU 1.5 s."""
    if configured_s > 0:
        return configured_s
    digital, analog = BUDGET_FRTU_S if frtu else BUDGET_RTU_S
    return min(digital, analog) / 4.0


def dnp3_time_write(epoch_ms: int) -> bytes:
    """Object header + data of a WRITE of the absolute time (g50v1, qualifier 0x07, count 1, 48-bit ms)."""
    return bytes((50, 1, 0x07, 1)) + int(epoch_ms).to_bytes(6, "little")
