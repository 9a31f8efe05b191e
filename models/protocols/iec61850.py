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
from models.points import ControlType, PointDef, PointKind
from models.protocols import DerivedAddress, OptionReader

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
        else:
            mmxu = ln("MMXU", f"{b.element_mrid}:{b.terminal}")
            phase = {1: "A", 2: "B", 4: "C"}.get(int(b.phase), "A")
            out.append(DerivedAddress("CMV", 0, f"LD0/{mmxu}.{_DO_OF[q]}.phs{phase}"))
    return out
