"""IEC 61850 addressing: data objects named by reference under the IED, ``LDinst/LNname.DOname[.subDO]``
(``LD0/XCBR1.Pos``, ``LD0/MMXU1.A.phsA``); the IED name prefixes the logical device on the wire (``IED1LD0/...``).

Point types (``type``) are common data classes: SPS/SPC (single), DPS/DPC (double), MV/CMV/INS (analog), BCR
(counter), APC (set-point). Controls name their controllable object in ``control.reference`` (often the point's own
DPC/SPC/APC) with ``mode`` ``direct``, ``sbo`` (SBO with normal security) or ``sbo_enhanced``. ``address`` is unused.

The IED's SCL (``iec61850 = { scl = "ied.cid" }``) is the authority for what it offers; without one the project
generates the SCL from the point list (``models.scl``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from models.measurement_points import DerivedPoint, Quantity
from models.points import ControlType, PointDef, PointKind, Quality
from models.protocols import SETPOINT_CONTROL, DerivedAddress, OptionReader

MONITOR_TYPES: dict[PointKind, frozenset[str]] = {
    PointKind.SINGLE: frozenset({"SPS", "SPC"}),
    PointKind.DOUBLE: frozenset({"DPS", "DPC"}),
    PointKind.ANALOG: frozenset({"MV", "CMV", "INS"}),
    PointKind.COUNTER: frozenset({"BCR"}),
    PointKind.SETPOINT: frozenset({"APC"}),
    PointKind.COMMAND: frozenset({""}),
}
REFERENCE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}/[A-Za-z][A-Za-z0-9_]{0,63}(\.[A-Za-z][A-Za-z0-9_]{0,63})+")
IED_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Options:
    ied_name: str = ""  # empty: the RTU name without its non-alphanumeric characters
    scl: str = ""  # path of the IED's SCL (ICD/CID/SCD), relative to the configuration file; empty: generated
    buffered_reports: bool = True  # BRCB (entry IDs resumed after reconnect) rather than URCB
    integrity_period_s: float = 0.0  # report integrity period; 0 uses the RTU's gi_period_s


def parse_options(r: OptionReader) -> Options:
    ied = r.get("ied_name", str, "")
    assert isinstance(ied, str)
    if ied and not IED_NAME_RE.fullmatch(ied):
        raise r.fail("ied_name", f"{ied!r} is not an IEC 61850 IED name (letter, then letters, digits, _)")
    opts = Options(
        ied_name=ied,
        scl=str(r.get("scl", str, "")),
        buffered_reports=bool(r.get("buffered_reports", bool, True)),
        integrity_period_s=r.positive("integrity_period_s", 0.0, allow_zero=True),
    )
    r.finish()
    return opts


def default_ied_name(rtu_name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "", rtu_name)
    return name if name and name[0].isalpha() else f"IED{name}"


def address_keys(p: PointDef) -> list[Hashable]:
    keys: list[Hashable] = [] if p.kind is PointKind.COMMAND else [("ref", p.source.reference)]
    if p.control is not None:
        keys.append(("ctl", p.control.reference))
    return keys


_DO_OF = {Quantity.VOLTAGE_KV: "PhV", Quantity.CURRENT_A: "A", Quantity.P_KW: "W", Quantity.Q_KVAR: "VAr"}
_PROTECTIVE = frozenset({"Breaker", "Recloser"})


def assign_derived(points: Sequence[DerivedPoint]) -> list[DerivedAddress]:
    """References for the derived points of one IED, all in logical device ``LD0``.

    A breaker or recloser position is ``XCBRn.Pos``, any other switch ``XSWIn.Pos`` (a DPC when it has a command,
    else a DPS), a fault passage indicator ``GGIO1.Indk`` (SPS), a tap position ``YLTCn.TapPos`` (INS), and the
    analogs of one element terminal go to one ``MMXUn`` (PhV, A, W, VAr per phase, CMV)."""
    ln_of: dict[tuple[str, str], str] = {}
    count: dict[str, int] = defaultdict(int)

    def ln(cls: str, key: str) -> str:
        if (cls, key) not in ln_of:
            count[cls] += 1
            ln_of[(cls, key)] = f"{cls}{count[cls]}"
        return ln_of[(cls, key)]

    out = []
    ind = 0
    for d in points:
        b = d.binding
        q = b.quantity
        if q is Quantity.FAULT_INDICATOR:
            ind += 1
            out.append(DerivedAddress("SPS", 0, f"LD0/GGIO1.Ind{ind}"))
        elif q is Quantity.SWITCH_POSITION:
            cls = "XCBR" if b.element_class in _PROTECTIVE else "XSWI"
            ref = f"LD0/{ln(cls, b.element_mrid)}.Pos"
            if d.control_address is not None:
                out.append(DerivedAddress("DPC", 0, ref, control_address=0, control_reference=ref,
                                          control_type=ControlType.DOUBLE))
            else:
                out.append(DerivedAddress("DPS", 0, ref))
        elif q is Quantity.TAP_POSITION:
            out.append(DerivedAddress("INS", 0, f"LD0/{ln('YLTC', b.tap_changer_mrid or b.element_mrid)}.TapPos"))
        elif q is Quantity.TAP_SETPOINT:
            ref = f"LD0/{ln('YLTC', b.tap_changer_mrid or b.element_mrid)}.TapSet"
            out.append(DerivedAddress("APC", 0, ref, control_address=0, control_reference=ref, **SETPOINT_CONTROL))
        else:
            mmxu = ln("MMXU", f"{b.element_mrid}:{b.terminal}")
            phase = {1: "A", 2: "B", 4: "C"}.get(int(b.phase), "A")
            out.append(DerivedAddress("CMV", 0, f"LD0/{mmxu}.{_DO_OF[q]}.phs{phase}"))
    return out


# --------------------------------------------------------------------------------------------------- quality
# IEC 61850-7-3 quality as libiec61850 holds it in an int (validity in the two lowest bits, then the detail bits).

Q_VALIDITY_MASK = 0x0003
Q_VALIDITY_RESERVED = 0x0001
Q_VALIDITY_INVALID = 0x0002
Q_VALIDITY_QUESTIONABLE = 0x0003
Q_OVERFLOW = 0x0004
Q_OUT_OF_RANGE = 0x0008
Q_BAD_REFERENCE = 0x0010
Q_OSCILLATORY = 0x0020
Q_FAILURE = 0x0040
Q_OLD_DATA = 0x0080
Q_INCONSISTENT = 0x0100
Q_INACCURATE = 0x0200
Q_SUBSTITUTED = 0x0400
Q_TEST = 0x0800
Q_OPERATOR_BLOCKED = 0x1000
#: TimeQuality octet of a UtcTime: a clock failure or an unsynchronised clock makes the time tag untrustworthy.
TQ_CLOCK_FAILURE = 0x40
TQ_CLOCK_NOT_SYNCHRONIZED = 0x20

_DETAIL_TO_QUALITY: tuple[tuple[int, Quality], ...] = (
    (Q_OVERFLOW, Quality.OVERFLOW),
    (Q_OUT_OF_RANGE, Quality.QUESTIONABLE),
    (Q_BAD_REFERENCE, Quality.QUESTIONABLE),
    (Q_OSCILLATORY, Quality.QUESTIONABLE),
    (Q_FAILURE, Quality.INVALID),
    (Q_OLD_DATA, Quality.NOT_TOPICAL),
    (Q_INCONSISTENT, Quality.QUESTIONABLE),
    (Q_INACCURATE, Quality.QUESTIONABLE),
    (Q_SUBSTITUTED, Quality.SUBSTITUTED),
    (Q_TEST, Quality.QUESTIONABLE),  # test data must not be taken as process data at face value
    (Q_OPERATOR_BLOCKED, Quality.BLOCKED),
)

#: What the simulator can send: every flag maps to one 61850 bit.
SUPPORTED_QUALITY = (Quality.INVALID | Quality.QUESTIONABLE | Quality.OVERFLOW | Quality.NOT_TOPICAL
                     | Quality.SUBSTITUTED | Quality.BLOCKED | Quality.TIME_INVALID)


def quality_from_61850(q: int, time_quality: int = 0) -> int:
    """models Quality bits (as int) from a 61850 quality and the TimeQuality octet of its time tag."""
    out = Quality.GOOD
    validity = q & Q_VALIDITY_MASK
    if validity in (Q_VALIDITY_INVALID, Q_VALIDITY_RESERVED):  # a validity the standard does not define: unusable
        out |= Quality.INVALID
    elif validity == Q_VALIDITY_QUESTIONABLE:
        out |= Quality.QUESTIONABLE
    for bit, flag in _DETAIL_TO_QUALITY:
        if q & bit:
            out |= flag
    if time_quality & (TQ_CLOCK_FAILURE | TQ_CLOCK_NOT_SYNCHRONIZED):
        out |= Quality.TIME_INVALID
    return int(out)


def quality_to_61850(quality: Quality) -> int:
    """61850 quality int for models Quality bits (TIME_INVALID goes in the time tag, not here)."""
    q = 0
    if quality & Quality.INVALID:
        q |= Q_VALIDITY_INVALID
    elif quality & Quality.QUESTIONABLE:
        q |= Q_VALIDITY_QUESTIONABLE
    for ours, bit in ((Quality.OVERFLOW, Q_OVERFLOW), (Quality.NOT_TOPICAL, Q_OLD_DATA),
                      (Quality.SUBSTITUTED, Q_SUBSTITUTED), (Quality.BLOCKED, Q_OPERATOR_BLOCKED)):
        if quality & ours:
            q |= bit
    return q


#: Primary attribute of each common data class: the point's value.
VALUE_ATTRIBUTE = {"SPS": "stVal", "SPC": "stVal", "DPS": "stVal", "DPC": "stVal", "INS": "stVal", "BCR": "actVal",
                   "MV": "mag", "CMV": "cVal", "APC": "mxVal"}
#: Functional constraint of the value, quality and time of each common data class.
VALUE_FC = {"SPS": "ST", "SPC": "ST", "DPS": "ST", "DPC": "ST", "INS": "ST", "BCR": "ST", "MV": "MX", "CMV": "MX",
            "APC": "MX"}
#: The common data classes of an IED's data object that a point of each ``type`` may read: a status point may
#: monitor a controllable object (an SPS view of an SPC), an INS point any integer status (ENS, INC).
DO_CDC_OF_TYPE: dict[str, frozenset[str]] = {
    "SPS": frozenset({"SPS", "SPC"}), "SPC": frozenset({"SPC"}), "DPS": frozenset({"DPS", "DPC"}),
    "DPC": frozenset({"DPC"}), "INS": frozenset({"INS", "ENS", "INC"}), "BCR": frozenset({"BCR"}),
    "MV": frozenset({"MV"}), "CMV": frozenset({"CMV"}), "APC": frozenset({"APC"}),
}
#: The controllable common data class each control type operates (the client builds ctlVal for it).
CONTROL_CDC: dict[ControlType, str] = {ControlType.SINGLE: "SPC", ControlType.DOUBLE: "DPC",
                                       ControlType.SETPOINT_FLOAT: "APC", ControlType.SETPOINT_SCALED: "APC"}
