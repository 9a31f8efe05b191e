"""Point definitions and quality flags of the real-time database."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag, StrEnum


class PointKind(StrEnum):
    SINGLE = "single"  # single-point status (0/1)
    DOUBLE = "double"  # double-point status (IEC 60870-5-101/104 DPI 0..3)
    ANALOG = "analog"  # measured value
    COUNTER = "counter"  # integrated total
    SETPOINT = "setpoint"  # analog output (its value is the last commanded set-point)
    COMMAND = "command"  # pure command without status feedback

    @property
    def is_status(self) -> bool:
        return self in (PointKind.SINGLE, PointKind.DOUBLE)


class DoubleState(IntEnum):
    """IEC 60870-5-101/104 double-point information (DPI)."""

    INTERMEDIATE = 0
    OFF = 1  # open
    ON = 2  # closed
    INDETERMINATE = 3


class Quality(IntFlag):
    """Quality flags held with every point value; GOOD is the empty set."""

    GOOD = 0
    INVALID = 0x0001
    QUESTIONABLE = 0x0002
    NOT_TOPICAL = 0x0004  # stale: not refreshed or confirmed within the update-age limit
    SUBSTITUTED = 0x0008  # manual entry / substituted at the source
    OVERFLOW = 0x0010
    BLOCKED = 0x0020
    COMM_LOST = 0x0040  # the link to the source is down
    TIME_INVALID = 0x0080  # the source timestamp is not trustworthy
    OPERATOR_BLOCKED = 0x0100  # scanning removed by an operator

    def names(self) -> list[str]:
        return [f.name for f in Quality if f and f in self and f.name]


class ControlType(StrEnum):
    """Which command a point accepts; protocol adapters map these to their own types."""

    SINGLE = "single"  # e.g. C_SC_NA_1
    DOUBLE = "double"  # e.g. C_DC_NA_1
    SETPOINT_FLOAT = "setpoint_float"  # e.g. C_SE_NC_1
    SETPOINT_SCALED = "setpoint_scaled"  # e.g. C_SE_NB_1


class ControlMode(StrEnum):
    SELECT_BEFORE_OPERATE = "sbo"
    DIRECT = "direct"
    SBO_ENHANCED = "sbo_enhanced"  # IEC 61850 select-before-operate with enhanced security (select with value)

    @property
    def selects(self) -> bool:
        return self is not ControlMode.DIRECT


class TimeSource(StrEnum):
    """Where a point's timestamps come from, which decides what a change means."""

    FIELD = "field"  # event-driven: every change is reported with the device's own time tag (IEC 104, DNP3, 61850)
    POLL = "poll"  # polled: a change between two polls is not seen; the time is the poll's receive time (Modbus)


class Priority(IntEnum):
    CRITICAL = 1
    HIGH = 2
    MEDIUM = 3
    LOW = 4


@dataclass(frozen=True, slots=True)
class PointSource:
    """Where a point comes from: front end, RTU and the protocol address within it."""

    frontend: str  # protocol of the RTU, e.g. "iec104"
    rtu: str
    common_address: int
    address: int  # IOA (IEC 104), point index (DNP3), register (Modbus); unused (0) for IEC 61850
    type_id: str  # protocol type the RTU reports: "M_DP_TB_1", "double_bit_binary_input", "input_float32", "DPC"
    reference: str = ""  # IEC 61850 object reference under the IED ("LD0/XCBR1.Pos"); empty for other protocols


@dataclass(frozen=True, slots=True)
class ControlDef:
    """How a point is commanded."""

    type: ControlType
    address: int  # IOA / CROB or analog-output index / coil or register of the command object
    mode: ControlMode = ControlMode.SELECT_BEFORE_OPERATE
    timeout_s: float = 10.0  # whole select/execute round trip with the field
    feedback_timeout_s: float = 10.0  # status must follow the command within this time
    reference: str = ""  # IEC 61850 controllable object ("LD0/CSWI1.Pos")


@dataclass(frozen=True, slots=True)
class AnalogLimits:
    """Alarm limits of an analog point in engineering units; None disables a limit."""

    lolo: float | None = None
    lo: float | None = None
    hi: float | None = None
    hihi: float | None = None
    deadband: float = 0.0  # hysteresis: a limit clears only once the value is this far back inside


@dataclass(frozen=True, slots=True)
class StateAlarm:
    """A digital state that raises an alarm, e.g. a breaker OFF (tripped)."""

    value: int
    priority: Priority
    text: str


@dataclass(frozen=True, slots=True)
class PointDef:
    """One configured point; ``id`` is its index in the RTDB arrays and is the same in every process."""

    id: int
    name: str
    kind: PointKind
    source: PointSource
    units: str = ""
    scale: float = 1.0  # engineering value = raw * scale + offset
    offset: float = 0.0
    element: str = ""  # network-model element (mRID or name) the point measures
    terminal: int | None = None
    description: str = ""
    control: ControlDef | None = None
    limits: AnalogLimits | None = None
    state_alarms: tuple[StateAlarm, ...] = ()
    limit_priority: Priority = Priority.MEDIUM
    stale_after_s: float = 0.0  # 0 means: take the default of the point kind
    historian_deadband: float = 0.0  # absolute, engineering units; 0 keeps every change

    @property
    def controllable(self) -> bool:
        return self.control is not None
