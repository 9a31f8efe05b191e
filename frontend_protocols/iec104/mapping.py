"""Pure mapping between IEC 60870-5-104 data and the models types: quality bits, cause of transmission, time tags,
engineering scaling, type identifiers.

Nothing here imports c104: the adapter turns the library's objects into plain ints/floats first, so this module is
unit-testable and the numbers that cross into ``models`` have one definition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from models.points import ControlType, PointDef, PointKind
from models.updates import Cause

# --------------------------------------------------------------------------------------------------- quality

#: Quality descriptor (QDS) bits of IEC 60870-5-101/104 monitoring objects (c104.Quality uses the same values).
QDS_OV = 0x01  # overflow
QDS_EI = 0x08  # elapsed time invalid (protection events)
QDS_BL = 0x10  # blocked
QDS_SB = 0x20  # substituted
QDS_NT = 0x40  # not topical
QDS_IV = 0x80  # invalid

#: Binary counter reading (BCR) flags of integrated totals (c104.BinaryCounterQuality uses the same values).
BCR_CA = 0x20  # counter adjusted since the last reading
BCR_CY = 0x40  # carry: the counter overflowed in the period
BCR_IV = 0x80  # invalid

_QDS_TO_QUALITY: tuple[tuple[int, int], ...] = (
    (QDS_IV, 0x0001),  # Quality.INVALID
    (QDS_NT, 0x0004),  # Quality.NOT_TOPICAL
    (QDS_SB, 0x0008),  # Quality.SUBSTITUTED
    (QDS_OV, 0x0010),  # Quality.OVERFLOW
    (QDS_BL, 0x0020),  # Quality.BLOCKED
    (QDS_EI, 0x0080),  # Quality.TIME_INVALID: the relay's elapsed time is not trustworthy
)

_BCR_TO_QUALITY: tuple[tuple[int, int], ...] = (
    (BCR_IV, 0x0001),  # Quality.INVALID
    (BCR_CY, 0x0010),  # Quality.OVERFLOW
    (BCR_CA, 0x0002),  # Quality.QUESTIONABLE: adjusted counters do not integrate the period correctly
)

TIME_INVALID = 0x0080  # models.points.Quality.TIME_INVALID


def quality_from_iec(bits: int, *, counter: bool = False, time_invalid: bool = False) -> int:
    """models Quality flags (as int) from a QDS byte, or from the BCR flags of an integrated total."""
    table = _BCR_TO_QUALITY if counter else _QDS_TO_QUALITY
    q = 0
    for iec_bit, flag in table:
        if bits & iec_bit:
            q |= flag
    if time_invalid:  # IV bit of the CP56Time2a time tag
        q |= TIME_INVALID
    return q


# --------------------------------------------------------------------------------------------------- cause

COT_PERIODIC = 1
COT_BACKGROUND = 2
COT_SPONTANEOUS = 3
COT_REQUEST = 5
COT_RETURN_REMOTE = 11
COT_RETURN_LOCAL = 12
COT_INTERROGATED_FIRST = 20  # station interrogation; 21..36 are groups 1..16
COT_COUNTER_LAST = 41  # 37 general counter request, 38..41 counter groups 1..4


def cause_from_cot(cot: int) -> Cause:
    """models Cause from an IEC 104 cause of transmission; unknown causes count as spontaneous (a real change)."""
    if cot == COT_PERIODIC:
        return Cause.PERIODIC
    if cot == COT_BACKGROUND:
        return Cause.BACKGROUND
    if cot == COT_RETURN_REMOTE:
        return Cause.RETURN_REMOTE
    if cot == COT_RETURN_LOCAL:
        return Cause.RETURN_LOCAL
    if cot == COT_REQUEST or COT_INTERROGATED_FIRST <= cot <= COT_COUNTER_LAST:
        return Cause.INTERROGATED
    return Cause.SPONTANEOUS


# --------------------------------------------------------------------------------------------------- time


def time_tag_ms(recorded_at: datetime | None) -> int:
    """UTC epoch ms of a CP56Time2a time tag; c104 gives a naive datetime in UTC, or None when the type has none."""
    if recorded_at is None:
        return -1
    if recorded_at.tzinfo is None:
        recorded_at = recorded_at.replace(tzinfo=UTC)
    return round(recorded_at.timestamp() * 1000)


_APCI_LEN = 6  # start byte, length, 4 control octets
_ASDU_HEADER_LEN = 6  # type, VSQ, COT, originator, 2-octet common address (IEC 104 default sizes, as c104 uses)
_IOA_LEN = 3
_CP56_LEN = 7
_CP56_IV = 0x80  # in the minutes octet (third octet) of CP56Time2a


#: Length of the information element after the IOA of each monitoring type the adapter maps (IEC 60870-5-101 7.3.1).
_ELEMENT_LEN: dict[int, int] = {
    1: 1, 2: 4, 3: 1, 4: 4,  # M_SP_NA_1, M_SP_TA_1, M_DP_NA_1, M_DP_TA_1
    9: 3, 10: 6, 11: 3, 12: 6, 13: 5, 14: 8,  # M_ME_NA/TA, M_ME_NB/TB, M_ME_NC/TC
    15: 5, 16: 8, 21: 2,  # M_IT_NA_1, M_IT_TA_1, M_ME_ND_1
    30: 8, 31: 8, 34: 10, 35: 10, 36: 12, 37: 12,  # M_SP_TB, M_DP_TB, M_ME_TD, M_ME_TE, M_ME_TF, M_IT_TB
}


def asdu_size_ok(apdu: bytes) -> bool:
    """False when a monitoring ASDU's length disagrees with the object count its VSQ announces.

    lib60870 decodes the objects that fit and drops the rest, so the values of a malformed ASDU would otherwise pass
    as good. Types without an entry in the table are not judged (True).
    """
    asdu = apdu[_APCI_LEN:] if apdu[:1] == b"\x68" else apdu
    if len(asdu) < _ASDU_HEADER_LEN:
        return False
    elem = _ELEMENT_LEN.get(asdu[0])
    if elem is None:
        return True
    n = asdu[1] & 0x7F
    body = len(asdu) - _ASDU_HEADER_LEN
    expected = _IOA_LEN + n * elem if asdu[1] & 0x80 else n * (_IOA_LEN + elem)
    return n > 0 and body == expected


def cp56_invalid(apdu: bytes, ioa: int) -> bool:
    """True when the CP56Time2a time tag of object ``ioa`` in a time-tagged ASDU has its IV bit set.

    c104 2.2.1 turns the time tag into a plain datetime and drops the IV bit, so it is read from the raw APDU
    (``IncomingMessage.raw``). The tag is the last 7 octets of each element for every M_xx_Tx_1 type, so the element
    size follows from the length and the object count without a per-type table. Unparseable input gives False.
    """
    asdu = apdu[_APCI_LEN:] if apdu[:1] == b"\x68" else apdu
    if len(asdu) <= _ASDU_HEADER_LEN:
        return False
    n = asdu[1] & 0x7F
    sequence = bool(asdu[1] & 0x80)
    body = asdu[_ASDU_HEADER_LEN:]
    if n == 0:
        return False
    end = -1
    if sequence:  # one IOA, then n elements at consecutive addresses
        elem = (len(body) - _IOA_LEN) // n
        k = ioa - int.from_bytes(body[:_IOA_LEN], "little")
        if 0 <= k < n and elem >= _CP56_LEN:
            end = _IOA_LEN + (k + 1) * elem
    else:
        size = len(body) // n
        for k in range(n):
            off = k * size
            if int.from_bytes(body[off : off + _IOA_LEN], "little") == ioa:
                end = off + size
                break
        if size < _IOA_LEN + _CP56_LEN:
            end = -1
    if end < 0 or end > len(body):
        return False
    return bool(body[end - _CP56_LEN + 2] & _CP56_IV)


# --------------------------------------------------------------------------------------------------- types

_KIND_BY_PREFIX: dict[str, PointKind] = {
    "M_SP": PointKind.SINGLE,
    "M_DP": PointKind.DOUBLE,
    "M_ME": PointKind.ANALOG,
    "M_IT": PointKind.COUNTER,
}

#: c104/IEC type name of the command object for each configured control type.
COMMAND_TYPE: dict[ControlType, str] = {
    ControlType.SINGLE: "C_SC_NA_1",
    ControlType.DOUBLE: "C_DC_NA_1",
    ControlType.SETPOINT_FLOAT: "C_SE_NC_1",
    ControlType.SETPOINT_SCALED: "C_SE_NB_1",
}


def kind_of_type(type_id: str) -> PointKind:
    """Point kind a monitoring type identifier reports, e.g. M_DP_TB_1 -> DOUBLE."""
    kind = _KIND_BY_PREFIX.get(type_id[:4])
    if kind is None or not type_id.endswith("_1"):
        raise ValueError(f"IEC 104 type {type_id!r} is not a supported monitoring type")
    return kind


def has_time_tag(type_id: str) -> bool:
    """True for the time-tagged variants (M_xx_Tx_1): they carry a CP56Time2a (or CP24 for _TA_)."""
    return len(type_id) == 9 and type_id[5] == "T"


def is_counter_type(type_id: str) -> bool:
    return type_id.startswith("M_IT")


# --------------------------------------------------------------------------------------------------- scaling


@dataclass(frozen=True, slots=True)
class PointMap:
    """What the adapter needs per configured monitoring object, resolved once from a PointDef."""

    point: int  # PointDef.id
    ioa: int
    scale: float
    offset: float
    counter: bool  # quality comes as BCR flags
    timed: bool  # carries a CP56Time2a whose IV bit must be read from the raw APDU

    @classmethod
    def of(cls, p: PointDef) -> PointMap:
        # Status values are state codes (0/1, DPI 0..3): scaling them would corrupt the state.
        scaled = not p.kind.is_status
        return cls(
            point=p.id,
            ioa=p.source.address,
            scale=p.scale if scaled else 1.0,
            offset=p.offset if scaled else 0.0,
            counter=is_counter_type(p.source.type_id),
            timed=has_time_tag(p.source.type_id),
        )

    def engineering(self, raw: float) -> float:
        return raw * self.scale + self.offset


def raw_setpoint(p: PointDef, value: float) -> float:
    """Field value of a set-point commanded in engineering units (inverse of raw*scale+offset)."""
    return (value - p.offset) / p.scale


def epoch_ms_now() -> int:
    return time.time_ns() // 1_000_000
