"""The TASE.2 (IEC 60870-6-503/802) object model as pure data: types, their MMS type descriptions, and their
encoding to and from open61850 ``IECData`` values. No sockets here. The option enums the station configuration
names (:class:`PointType`, :class:`FlagsLayout`, :class:`StateEncoding`, :class:`Scope`, :class:`ControlKind`) live in
``models.protocols.iccp`` and :class:`DeviceDef` in ``models.iccp_config`` (``models`` never imports ``iccp``); they
are re-exported here with their encodings.

The standards are not available to the project; the model below was cross-checked from several implementations.
Where they disagree, the choice made here is documented and the decoders accept the other reading.

VCC scope
    ``TASE2_Version`` {Major, Minor: Integer16}; ``Supported_Features`` (bit string; bit n-1 = Block n, ASN.1
    numbering: bit 0 is the most significant bit of the first octet). We claim Blocks 1, 2 and 5 (``OUR_FEATURES``)
    and send 12 bits (Blocks 1..9 and 3 spare bits); any length is accepted when decoding.
ICC (bilateral domain) scope
    ``Bilateral_Table_ID`` (visible-string, up to 32), ``Next_DSTransfer_Set`` (ObjectName), ``DSTransferSetNN``
    (:class:`DSTransferSet`), the transfer report members (:class:`TransferReportHeader`), the points and devices.

Data_Flags octet (:class:`DataFlags`), ASN.1 bit numbering (``FlagsLayout.MSB_FIRST``, our default)::

    bit 0 (0x80) state hi      bit 1 (0x40) state lo        -- Data_State only, else 0
    bit 2 (0x20) validity hi   bit 3 (0x10) validity lo     -- VALID 0, HELD 1, SUSPECT 2, NOT_VALID 3
    bit 4 (0x08) source hi     bit 5 (0x04) source lo       -- TELEMETERED 0, CALCULATED 1, ENTERED 2, ESTIMATED 3
    bit 6 (0x02) normal value (1 = abnormal)                bit 7 (0x01) time-stamp quality (1 = invalid)

Disagreement: some implementations (libiec61850's ``tase2`` module among them) treat the octet as an integer with
"bit n" = ``1 << n``: validity at 0x0C, current source at 0x30, normal value 0x40, time-stamp quality 0x80. That is the
bit-reversed octet (``FlagsLayout.LSB_FIRST``); a bilateral table chooses it per peer. DSConditions bit strings
follow the same layout choice.

Data_State: the standard-shaped reading puts the 2-bit state (BETWEEN 0, OFF/TRIPPED 1, ON/CLOSED 2, INVALID 3) in
bits 0-1 of the flags octet, so ``Data_State``/``Data_StateQ`` are one bit string and ``Data_StateQTimeTag`` is
{TimeStamp, Flags} (``StateEncoding.IN_FLAGS``, our default). Other implementations send the state as a separate
integer ``Value`` ({Value, Flags}, {Value, TimeStamp, Flags}: ``StateEncoding.SEPARATE_VALUE``). Decoding accepts both
whatever the encoding chosen; when both a Value and state bits are present, the Value wins.

Time stamps: ``Data_TimeStamp`` is GMTBasedS, an Integer32 of seconds since 1970-01-01 UTC. The ``*QTimeTagExtended``
types (our name for the millisecond variant) carry {GMTBasedS Integer32, Milliseconds Integer16}. A utc-time value is
accepted when decoding.

Device control (Block 5): ``<Device>_SBO`` is read to select and returns a CheckBackID (Integer16); ``<Device>`` is
written to operate: a command (Integer16, 0 = OFF/TRIP/OPEN, 1 = ON/CLOSE), a real set-point (Float32) or a discrete
set-point (Integer16); ``<Device>_TAG`` is {TagFlags bit string(8): bits 0-1 tag class, bit 2 armed; Reason
visible-string(255)}.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag, StrEnum

from open61850.data import (
    BitStringData,
    BoolData,
    FloatData,
    IECData,
    IntData,
    StructureData,
    TimestampData,
    UIntData,
    VisibleStringData,
)
from open61850.mms.types import MmsType, PrimitiveType, StructureType

from iccp.errors import IccpError
from models.iccp_config import DeviceDef
from models.protocols.iccp import IDENTIFIER_RE, ControlKind, FlagsLayout, PointType, Scope, StateEncoding

__all__ = [
    "BILATERAL_TABLE_ID_MMS_TYPE",
    "CHECK_BACK_ID_MMS_TYPE",
    "DS_CONDITIONS_MMS_TYPE",
    "FEATURES_MMS_TYPE",
    "ICC_OBJECTS",
    "IDENTIFIER_RE",
    "NEXT_DS_TRANSFER_SET_MMS_TYPE",
    "VCC_OBJECTS",
    "OUR_FEATURES",
    "OUR_VERSION",
    "Block",
    "ControlKind",
    "CurrentSource",
    "DSConditions",
    "DSTransferSet",
    "DataFlags",
    "DeviceDef",
    "FlagsLayout",
    "ObjectName",
    "PointType",
    "PointValue",
    "Scope",
    "State",
    "StateEncoding",
    "TagClass",
    "TagValue",
    "Tase2DecodeError",
    "Tase2Error",
    "Tase2Version",
    "TransferReportHeader",
    "Validity",
    "control_mms_type",
    "decode_bilateral_table_id",
    "decode_command",
    "decode_conditions",
    "decode_features",
    "decode_flags",
    "decode_point",
    "encode_bilateral_table_id",
    "encode_command",
    "encode_conditions",
    "encode_features",
    "encode_flags",
    "encode_point",
    "point_mms_type",
    "transfer_set_name",
]


class Tase2Error(IccpError):
    """A TASE.2 object-model problem (a value that does not fit its type, an unknown name)."""


class Tase2DecodeError(Tase2Error):
    """An MMS value that does not decode as the TASE.2 type expected; names the object and the problem."""


# --------------------------------------------------------------------------------------------------- primitives
_INT8 = PrimitiveType("integer", 8)
_INT16 = PrimitiveType("integer", 16)
_INT32 = PrimitiveType("integer", 32)
_UINT8 = PrimitiveType("unsigned", 8)
_FLOAT32 = PrimitiveType("float", 32)
_BOOL = PrimitiveType("boolean")
_FLAGS = PrimitiveType("bit-string", 8)
_IDENT = PrimitiveType("visible-string", -32)
_GMT_S = _INT32
_TIME_EXT = StructureType([("GMTBasedS", _INT32), ("Milliseconds", _INT16)])
_INT16_RANGE = (-32768, 32767)
_INT32_RANGE = (-(2**31), 2**31 - 1)


def _int_of(name: str, what: str, d: IECData) -> int:
    if isinstance(d, IntData | UIntData):
        return d.value
    raise Tase2DecodeError(f"{name}: {what} must be an integer, got {d!r}")


def _bool_of(name: str, what: str, d: IECData) -> bool:
    if isinstance(d, BoolData):
        return d.value
    raise Tase2DecodeError(f"{name}: {what} must be a boolean, got {d!r}")


def _str_of(name: str, what: str, d: IECData) -> str:
    if isinstance(d, VisibleStringData):
        return d.value
    raise Tase2DecodeError(f"{name}: {what} must be a visible-string, got {d!r}")


def _members(name: str, what: str, d: IECData, count: int | tuple[int, ...]) -> list[IECData]:
    counts = (count,) if isinstance(count, int) else count
    if not isinstance(d, StructureData) or len(d.members) not in counts:
        want = " or ".join(map(str, counts))
        raise Tase2DecodeError(f"{name}: {what} must be a structure of {want} members, got {d!r}")
    return d.members


def _ranged(name: str, what: str, value: int, bounds: tuple[int, int]) -> int:
    if not bounds[0] <= value <= bounds[1]:
        raise Tase2Error(f"{name}: {what} {value} out of range {bounds[0]}..{bounds[1]}")
    return value


def _ident(name: str, what: str, value: str) -> str:
    if not IDENTIFIER_RE.fullmatch(value):
        raise Tase2Error(f"{name}: {what} {value!r} is not an MMS identifier (letter or _, then letters, digits, _ "
                         "or $; at most 32 characters)")
    return value


# --------------------------------------------------------------------------------------------------- bit strings
def _bits_to_data(bits: int, size: int, layout: FlagsLayout) -> BitStringData:
    """``bits``: bit n set = named bit n. Returns a bit string of ``size`` bits."""
    n_octets = (size + 7) // 8
    raw = 0
    for n in range(size):
        if bits >> n & 1:
            if layout is FlagsLayout.MSB_FIRST:
                raw |= 1 << (n_octets * 8 - 1 - n)
            else:  # bit n of octet k at 1 << (n % 8)
                raw |= 1 << ((n_octets - 1 - n // 8) * 8 + n % 8)
    unused = n_octets * 8 - size if layout is FlagsLayout.MSB_FIRST else 0
    return BitStringData(raw.to_bytes(n_octets, "big"), unused)


def _bits_from_data(name: str, what: str, d: IECData, layout: FlagsLayout) -> int:
    if not isinstance(d, BitStringData):
        raise Tase2DecodeError(f"{name}: {what} must be a bit-string, got {d!r}")
    out = 0
    for k, octet in enumerate(d.value):
        for b in range(8):
            if octet >> b & 1:
                n = k * 8 + (7 - b if layout is FlagsLayout.MSB_FIRST else b)
                out |= 1 << n
    return out


# --------------------------------------------------------------------------------------------------- VCC objects
class Block(IntEnum):
    """TASE.2 conformance blocks; ``Supported_Features`` bit ``block - 1``."""

    BASIC = 1
    RBE = 2
    BLOCKED_TRANSFERS = 3
    INFORMATION_MESSAGES = 4
    DEVICE_CONTROL = 5
    PROGRAMS = 6
    EVENTS = 7
    ACCOUNTS = 8
    TIME_SERIES = 9


FEATURES_SIZE_BITS = 12
OUR_FEATURES: frozenset[Block] = frozenset({Block.BASIC, Block.RBE, Block.DEVICE_CONTROL})
FEATURES_MMS_TYPE: MmsType = PrimitiveType("bit-string", FEATURES_SIZE_BITS)


def encode_features(blocks: frozenset[Block] | set[Block] = OUR_FEATURES) -> BitStringData:
    return _bits_to_data(sum(1 << (b - 1) for b in blocks), FEATURES_SIZE_BITS, FlagsLayout.MSB_FIRST)


def decode_features(d: IECData) -> frozenset[Block]:
    bits = _bits_from_data("Supported_Features", "value", d, FlagsLayout.MSB_FIRST)
    return frozenset(b for b in Block if bits >> (b - 1) & 1)


@dataclass(frozen=True, slots=True)
class Tase2Version:
    """``TASE2_Version``; 2000.8 names the 2000/2002 edition of IEC 60870-6-503 (1996.8 the first)."""

    major: int = 2000
    minor: int = 8

    MMS_TYPE = StructureType([("Major", _INT16), ("Minor", _INT16)])

    def encode(self) -> StructureData:
        _ranged("TASE2_Version", "Major", self.major, _INT16_RANGE)
        _ranged("TASE2_Version", "Minor", self.minor, _INT16_RANGE)
        return StructureData([IntData(self.major), IntData(self.minor)])

    @classmethod
    def decode(cls, d: IECData) -> Tase2Version:
        major, minor = _members("TASE2_Version", "value", d, 2)
        return cls(_int_of("TASE2_Version", "Major", major), _int_of("TASE2_Version", "Minor", minor))


OUR_VERSION = Tase2Version()

BILATERAL_TABLE_ID_MMS_TYPE: MmsType = _IDENT


def encode_bilateral_table_id(table_id: str) -> VisibleStringData:
    if not table_id or len(table_id) > 32 or not table_id.isascii():
        raise Tase2Error(f"Bilateral_Table_ID {table_id!r}: must be 1..32 ASCII characters")
    return VisibleStringData(table_id)


def decode_bilateral_table_id(d: IECData) -> str:
    return _str_of("Bilateral_Table_ID", "value", d)


# --------------------------------------------------------------------------------------------------- ObjectName
@dataclass(frozen=True, slots=True)
class ObjectName:
    """TASE.2 ObjectName {Scope, DomainName, Name}; ``domain`` is empty in VCC scope."""

    scope: Scope
    domain: str
    name: str

    MMS_TYPE = StructureType([("Scope", _UINT8), ("DomainName", _IDENT), ("Name", _IDENT)])

    def __post_init__(self) -> None:
        _ident("ObjectName", "Name", self.name)
        if self.scope is Scope.ICC:
            _ident("ObjectName", "DomainName", self.domain)
        elif self.domain:
            raise Tase2Error(f"ObjectName {self.name!r}: a VCC-scope name has no domain (got {self.domain!r})")

    def __str__(self) -> str:
        return f"{self.domain}/{self.name}" if self.scope is Scope.ICC else f"VCC/{self.name}"

    def encode(self) -> StructureData:
        return StructureData([UIntData(int(self.scope)), VisibleStringData(self.domain), VisibleStringData(self.name)])

    @classmethod
    def decode(cls, d: IECData, what: str = "ObjectName") -> ObjectName:
        scope, domain, name = _members(what, "value", d, 3)
        raw_scope = _int_of(what, "Scope", scope)
        try:
            sc = Scope(raw_scope)
        except ValueError:
            raise Tase2DecodeError(f"{what}: Scope {raw_scope} is neither VCC (0) nor ICC (1)") from None
        try:
            return cls(sc, _str_of(what, "DomainName", domain), _str_of(what, "Name", name))
        except Tase2DecodeError:
            raise
        except Tase2Error as exc:
            raise Tase2DecodeError(f"{what}: {exc}") from None


NEXT_DS_TRANSFER_SET_MMS_TYPE: MmsType = ObjectName.MMS_TYPE


# --------------------------------------------------------------------------------------------------- Data_Flags
class Validity(IntEnum):
    VALID = 0
    HELD = 1
    SUSPECT = 2
    NOT_VALID = 3


class CurrentSource(IntEnum):
    TELEMETERED = 0
    CALCULATED = 1
    ENTERED = 2
    ESTIMATED = 3


class State(IntEnum):
    """Data_State values; equal to ``models.points.DoubleState`` (INTERMEDIATE, OFF, ON, INDETERMINATE)."""

    BETWEEN = 0
    OFF = 1  # tripped / open
    ON = 2  # closed
    INVALID = 3


@dataclass(frozen=True, slots=True)
class DataFlags:
    """The quality part of Data_Flags (the state bits are not quality: they travel with the value)."""

    validity: Validity = Validity.VALID
    source: CurrentSource = CurrentSource.TELEMETERED
    abnormal: bool = False  # NormalValue bit: the value is off its normal state / outside its normal range
    time_invalid: bool = False  # TimeStampQuality bit


# named bit numbers (ASN.1 numbering)
_STATE_HI, _STATE_LO, _VAL_HI, _VAL_LO, _SRC_HI, _SRC_LO, _NORMAL, _TSQ = range(8)


def encode_flags(flags: DataFlags, state: int = 0, layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> BitStringData:
    """The Data_Flags octet; ``state`` (0..3) fills bits 0-1 (Data_State in flags), 0 for other types."""
    if not 0 <= state <= 3:
        raise Tase2Error(f"Data_Flags: state {state} out of range 0..3")
    bits = ((state >> 1 & 1) << _STATE_HI | (state & 1) << _STATE_LO
            | (flags.validity >> 1 & 1) << _VAL_HI | (flags.validity & 1) << _VAL_LO
            | (flags.source >> 1 & 1) << _SRC_HI | (flags.source & 1) << _SRC_LO
            | int(flags.abnormal) << _NORMAL | int(flags.time_invalid) << _TSQ)
    return _bits_to_data(bits, 8, layout)


def decode_flags(d: IECData, layout: FlagsLayout = FlagsLayout.MSB_FIRST, name: str = "Data_Flags"
                 ) -> tuple[DataFlags, int]:
    """``(flags, state bits)`` of a Data_Flags bit string (bits beyond the first octet are ignored)."""
    bits = _bits_from_data(name, "Flags", d, layout)

    def pair(hi: int, lo: int) -> int:
        return (bits >> hi & 1) << 1 | bits >> lo & 1

    flags = DataFlags(Validity(pair(_VAL_HI, _VAL_LO)), CurrentSource(pair(_SRC_HI, _SRC_LO)),
                      bool(bits >> _NORMAL & 1), bool(bits >> _TSQ & 1))
    return flags, pair(_STATE_HI, _STATE_LO)


# --------------------------------------------------------------------------------------------------- point values
class _Base(StrEnum):
    REAL = "Real"
    STATE = "State"
    DISCRETE = "Discrete"


@dataclass(frozen=True, slots=True)
class PointValue:
    """One TASE.2 point value: ``value`` is a float (Real), a :class:`State` 0..3 (State) or an int (Discrete);
    ``time_ms`` is UTC epoch ms (None: the type carries no time)."""

    value: float
    flags: DataFlags = DataFlags()
    time_ms: int | None = None


def _value_mms_type(base: str) -> MmsType:
    return {_Base.REAL: _FLOAT32, _Base.STATE: _INT8, _Base.DISCRETE: _INT32}[base]


def point_mms_type(point_type: PointType, state: StateEncoding = StateEncoding.IN_FLAGS) -> MmsType:
    """The MMS type description of a point type (what GetVariableAccessAttributes answers)."""
    in_flags = point_type.is_state and state is StateEncoding.IN_FLAGS
    if not point_type.has_flags:
        return _FLAGS if in_flags else _value_mms_type(point_type.base)
    if not point_type.has_time:
        return _FLAGS if in_flags else StructureType([("Value", _value_mms_type(point_type.base)), ("Flags", _FLAGS)])
    ts = ("TimeStamp", _TIME_EXT if point_type.extended else _GMT_S)
    comps: list[tuple[str, MmsType]] = [] if in_flags else [("Value", _value_mms_type(point_type.base))]
    return StructureType([*comps, ts, ("Flags", _FLAGS)])


def _encode_time(time_ms: int | None, extended: bool) -> IECData:
    ms = time_ms if time_ms is not None and time_ms >= 0 else 0
    secs = _ranged("TimeStamp", "GMTBasedS", ms // 1000, _INT32_RANGE)
    if extended:
        return StructureData([IntData(secs), IntData(ms % 1000)])
    return IntData(secs)


def _decode_time(name: str, d: IECData) -> int:
    if isinstance(d, IntData | UIntData):
        return d.value * 1000
    if isinstance(d, StructureData) and len(d.members) == 2:
        secs = _int_of(name, "TimeStamp.GMTBasedS", d.members[0])
        ms = _int_of(name, "TimeStamp.Milliseconds", d.members[1])
        if not 0 <= ms <= 999:
            raise Tase2DecodeError(f"{name}: TimeStamp.Milliseconds {ms} out of range 0..999")
        return secs * 1000 + ms
    if isinstance(d, TimestampData):  # a utc-time, seen from MMS servers built for IEC 61850
        return round(d.value.timestamp() * 1000)
    raise Tase2DecodeError(f"{name}: TimeStamp must be GMTBasedS (integer), {{GMTBasedS, Milliseconds}} or utc-time, "
                           f"got {d!r}")


def _encode_value(name: str, base: str, value: float) -> IECData:
    if base == _Base.REAL:
        return FloatData(float(value))
    if base == _Base.STATE:
        return IntData(_state(name, value))
    if value != int(value):
        raise Tase2Error(f"{name}: Data_Discrete needs an integer, got {value!r}")
    return IntData(_ranged(name, "Data_Discrete", int(value), _INT32_RANGE))


def _state(name: str, value: float) -> int:
    if value not in (0, 1, 2, 3):
        raise Tase2Error(f"{name}: a Data_State is 0..3 (BETWEEN, OFF, ON, INVALID), got {value!r}")
    return int(value)


def _decode_value(name: str, base: str, d: IECData) -> float:
    if base == _Base.REAL:
        if isinstance(d, FloatData):
            return d.value
        if isinstance(d, IntData | UIntData):  # lenient: an integer where a float was expected
            return float(d.value)
        raise Tase2DecodeError(f"{name}: Value must be floating-point, got {d!r}")
    if base == _Base.STATE and isinstance(d, BoolData):
        return State.ON if d.value else State.OFF
    v = _int_of(name, "Value", d)
    if base == _Base.STATE and not 0 <= v <= 3:
        raise Tase2DecodeError(f"{name}: Data_State Value {v} out of range 0..3")
    return v


def encode_point(point_type: PointType, pv: PointValue, *, name: str = "point",
                 layout: FlagsLayout = FlagsLayout.MSB_FIRST, state: StateEncoding = StateEncoding.IN_FLAGS
                 ) -> IECData:
    """The MMS value of a point, shaped as :func:`point_mms_type` describes it."""
    in_flags = point_type.is_state and state is StateEncoding.IN_FLAGS
    st = _state(name, pv.value) if in_flags else 0
    flags = encode_flags(pv.flags if point_type.has_flags else DataFlags(), st, layout)
    if not point_type.has_flags:
        return flags if in_flags else _encode_value(name, point_type.base, pv.value)
    members: list[IECData] = [] if in_flags else [_encode_value(name, point_type.base, pv.value)]
    if point_type.has_time:
        members.append(_encode_time(pv.time_ms, point_type.extended))
    elif in_flags:
        return flags
    return StructureData([*members, flags])


def decode_point(point_type: PointType, d: IECData, *, name: str = "point",
                 layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> PointValue:
    """Decode a point value of ``point_type`` in either Data_State reading; raises :class:`Tase2DecodeError`."""
    base = point_type.base
    if not point_type.has_flags:
        if point_type.is_state and isinstance(d, BitStringData):
            return PointValue(decode_flags(d, layout, name)[1])
        return PointValue(_decode_value(name, base, d))
    if point_type.is_state and isinstance(d, BitStringData):  # StateQ with the state in the flags
        if point_type.has_time:
            raise Tase2DecodeError(f"{name}: {point_type.value} needs a time stamp, got a bare bit-string")
        flags, st = decode_flags(d, layout, name)
        return PointValue(st, flags)
    if not point_type.has_time:
        value, fl = _members(name, point_type.value, d, 2)
        return PointValue(_decode_value(name, base, value), decode_flags(fl, layout, name)[0])
    counts = (2, 3) if point_type.is_state else (3,)
    members = _members(name, point_type.value, d, counts)
    flags, st = decode_flags(members[-1], layout, name)
    time_ms = _decode_time(name, members[-2])
    value = _decode_value(name, base, members[0]) if len(members) == 3 else st
    return PointValue(value, flags, time_ms)


# --------------------------------------------------------------------------------------------------- transfer sets
class DSConditions(IntFlag):
    """DSConditionsRequested / DSConditions_Detected bits (bit n = named bit n)."""

    NONE = 0
    INTERVAL = 1 << 0  # IntervalTimeOut
    INTEGRITY = 1 << 1  # IntegrityTimeOut
    CHANGE = 1 << 2  # ObjectChange
    OPERATOR_REQUEST = 1 << 3
    EXTERNAL = 1 << 4  # OtherExternalEvent


DS_CONDITIONS_SIZE_BITS = 5
DS_CONDITIONS_MMS_TYPE: MmsType = PrimitiveType("bit-string", DS_CONDITIONS_SIZE_BITS)


def encode_conditions(c: DSConditions, layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> BitStringData:
    return _bits_to_data(int(c), DS_CONDITIONS_SIZE_BITS, layout)


def decode_conditions(d: IECData, layout: FlagsLayout = FlagsLayout.MSB_FIRST, name: str = "DSConditions"
                      ) -> DSConditions:
    return DSConditions(_bits_from_data(name, "value", d, layout) & 0x1F)


@dataclass(frozen=True, slots=True)
class DSTransferSet:
    """A DSTransferSetNN in the ICC domain; times in seconds (TASE.2 carries whole seconds). ``status`` True means
    enabled (the client writes the whole structure, Status last, to start the transfer set)."""

    data_set: ObjectName
    start_time_s: int = 0  # GMTBasedS; 0: now
    interval_s: int = 0
    tle_s: int = 0  # time-limit for execution
    buffer_time_s: int = 0
    integrity_check_s: int = 0
    conditions: DSConditions = DSConditions.INTERVAL
    block_data: bool = False
    critical: bool = False
    rbe: bool = False
    all_changes_reported: bool = False
    status: bool = False
    event_code_requested: int = 0

    MMS_TYPE = StructureType([
        ("DataSetName", ObjectName.MMS_TYPE), ("StartTime", _GMT_S), ("Interval", _INT32), ("TLE", _INT32),
        ("BufferTime", _INT32), ("IntegrityCheck", _INT32), ("DSConditionsRequested", DS_CONDITIONS_MMS_TYPE),
        ("BlockData", _BOOL), ("Critical", _BOOL), ("RBE", _BOOL), ("AllChangesReported", _BOOL), ("Status", _BOOL),
        ("EventCodeRequested", _INT16),
    ])
    COMPONENTS = tuple(n for n, _ in MMS_TYPE.components)

    def __post_init__(self) -> None:
        for what, v in (("StartTime", self.start_time_s), ("Interval", self.interval_s), ("TLE", self.tle_s),
                        ("BufferTime", self.buffer_time_s), ("IntegrityCheck", self.integrity_check_s)):
            _ranged("DSTransferSet", what, v, (0, _INT32_RANGE[1]))
        _ranged("DSTransferSet", "EventCodeRequested", self.event_code_requested, _INT16_RANGE)

    def encode(self, layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> StructureData:
        return StructureData([
            self.data_set.encode(), IntData(self.start_time_s), IntData(self.interval_s), IntData(self.tle_s),
            IntData(self.buffer_time_s), IntData(self.integrity_check_s), encode_conditions(self.conditions, layout),
            BoolData(self.block_data), BoolData(self.critical), BoolData(self.rbe),
            BoolData(self.all_changes_reported), BoolData(self.status), IntData(self.event_code_requested),
        ])

    @classmethod
    def decode(cls, d: IECData, layout: FlagsLayout = FlagsLayout.MSB_FIRST, name: str = "DSTransferSet"
               ) -> DSTransferSet:
        m = _members(name, "value", d, len(cls.COMPONENTS))
        ints = [_int_of(name, cls.COMPONENTS[i], m[i]) for i in range(1, 6)]
        bools = [_bool_of(name, cls.COMPONENTS[i], m[i]) for i in range(7, 12)]
        try:
            return cls(ObjectName.decode(m[0], f"{name}.DataSetName"), *ints,
                       decode_conditions(m[6], layout, f"{name}.DSConditionsRequested"), *bools,
                       _int_of(name, "EventCodeRequested", m[12]))
        except Tase2DecodeError:
            raise
        except Tase2Error as exc:
            raise Tase2DecodeError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class TransferReportHeader:
    """The transfer-report members a data set may carry before its points: ``Transfer_Set_Name``,
    ``Transfer_Set_Time_Stamp`` (GMTBasedS), ``DSConditions_Detected``, ``Event_Code_Detected`` (Integer16)."""

    transfer_set: ObjectName
    time_s: int
    conditions: DSConditions
    event_code: int = 0

    NAMES = ("Transfer_Set_Name", "Transfer_Set_Time_Stamp", "DSConditions_Detected", "Event_Code_Detected")
    MMS_TYPES = dict(zip(NAMES, (ObjectName.MMS_TYPE, _GMT_S, DS_CONDITIONS_MMS_TYPE, _INT16),
                                             strict=True))

    def encode(self, layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> dict[str, IECData]:
        _ranged("Event_Code_Detected", "value", self.event_code, _INT16_RANGE)
        return {"Transfer_Set_Name": self.transfer_set.encode(),
                "Transfer_Set_Time_Stamp": IntData(_ranged("Transfer_Set_Time_Stamp", "value", self.time_s,
                                                           _INT32_RANGE)),
                "DSConditions_Detected": encode_conditions(self.conditions, layout),
                "Event_Code_Detected": IntData(self.event_code)}

    @classmethod
    def decode(cls, members: dict[str, IECData], layout: FlagsLayout = FlagsLayout.MSB_FIRST
               ) -> TransferReportHeader:
        """From the header members found in a report (a missing optional member takes its default)."""
        if "Transfer_Set_Name" not in members:
            raise Tase2DecodeError("transfer report: no Transfer_Set_Name member")
        ts = members.get("Transfer_Set_Time_Stamp")
        cond = members.get("DSConditions_Detected")
        code = members.get("Event_Code_Detected")
        return cls(ObjectName.decode(members["Transfer_Set_Name"], "Transfer_Set_Name"),
                   _int_of("Transfer_Set_Time_Stamp", "value", ts) if ts is not None else 0,
                   decode_conditions(cond, layout, "DSConditions_Detected") if cond is not None else DSConditions.NONE,
                   _int_of("Event_Code_Detected", "value", code) if code is not None else 0)


# --------------------------------------------------------------------------------------------------- device control
CHECK_BACK_ID_MMS_TYPE: MmsType = _INT16
_CONTROL_MMS_TYPES: dict[ControlKind, MmsType] = {
    ControlKind.COMMAND: _INT16, ControlKind.SETPOINT_REAL: _FLOAT32, ControlKind.SETPOINT_DISCRETE: _INT16}


def control_mms_type(kind: ControlKind) -> MmsType:
    """The MMS type of ``<Device>`` (what a write to operate it takes)."""
    return _CONTROL_MMS_TYPES[kind]


class TagClass(IntEnum):
    NONE = 0
    OPEN_AND_CLOSE_INHIBIT = 1
    CLOSE_ONLY_INHIBIT = 2
    INVALID = 3


@dataclass(frozen=True, slots=True)
class TagValue:
    """``<Device>_TAG`` {TagFlags, Reason}; TagFlags bits 0-1 the tag class, bit 2 ``armed`` (selected)."""

    tag: TagClass = TagClass.NONE
    armed: bool = False
    reason: str = ""

    MMS_TYPE = StructureType([("TagFlags", _FLAGS), ("Reason", PrimitiveType("visible-string", -255))])

    def encode(self, layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> StructureData:
        if len(self.reason) > 255 or not self.reason.isascii():
            raise Tase2Error(f"Tag reason {self.reason[:40]!r}...: must be at most 255 ASCII characters")
        bits = (self.tag >> 1 & 1) | (self.tag & 1) << 1 | int(self.armed) << 2
        return StructureData([_bits_to_data(bits, 8, layout), VisibleStringData(self.reason)])

    @classmethod
    def decode(cls, d: IECData, layout: FlagsLayout = FlagsLayout.MSB_FIRST, name: str = "Tag") -> TagValue:
        flags, reason = _members(name, "value", d, 2)
        bits = _bits_from_data(name, "TagFlags", flags, layout)
        return cls(TagClass((bits & 1) << 1 | bits >> 1 & 1), bool(bits >> 2 & 1), _str_of(name, "Reason", reason))


def encode_command(kind: ControlKind, value: float, name: str = "device") -> IECData:
    if kind is ControlKind.SETPOINT_REAL:
        return FloatData(float(value))
    if value != int(value):
        raise Tase2Error(f"{name}: a {kind.value} takes an integer, got {value!r}")
    if kind is ControlKind.COMMAND and value not in (0, 1):
        raise Tase2Error(f"{name}: a command is 0 (OFF/TRIP) or 1 (ON/CLOSE), got {value!r}")
    return IntData(_ranged(name, kind.value, int(value), _INT16_RANGE))


def decode_command(kind: ControlKind, d: IECData, name: str = "device") -> float:
    if kind is ControlKind.SETPOINT_REAL:
        return _decode_value(name, _Base.REAL, d)
    v = _int_of(name, kind.value, d)
    if kind is ControlKind.COMMAND and v not in (0, 1):
        raise Tase2DecodeError(f"{name}: command value {v} is neither 0 (OFF/TRIP) nor 1 (ON/CLOSE)")
    if not _INT16_RANGE[0] <= v <= _INT16_RANGE[1]:
        raise Tase2DecodeError(f"{name}: {kind.value} {v} out of range {_INT16_RANGE[0]}..{_INT16_RANGE[1]}")
    return v


# --------------------------------------------------------------------------------------------------- object registry
#: The standard objects a TASE.2 server shows in VCC scope and in each bilateral ICC domain, with their types.
VCC_OBJECTS: dict[str, MmsType] = {"TASE2_Version": Tase2Version.MMS_TYPE, "Supported_Features": FEATURES_MMS_TYPE}
ICC_OBJECTS: dict[str, MmsType] = {"Bilateral_Table_ID": BILATERAL_TABLE_ID_MMS_TYPE,
                                   "Next_DSTransfer_Set": NEXT_DS_TRANSFER_SET_MMS_TYPE}


def transfer_set_name(n: int) -> str:
    """``DSTransferSet01`` ... (two digits at least); ``Next_DSTransfer_Set`` hands these out."""
    if n < 1:
        raise Tase2Error(f"transfer set number must be >= 1, got {n}")
    return f"DSTransferSet{n:02d}"
