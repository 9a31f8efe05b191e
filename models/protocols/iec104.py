"""IEC 60870-5-104 addressing: information object addresses (IOA) under the RTU's common address."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from models.measurement_points import DerivedPoint
from models.points import ControlType, PointDef, PointKind
from models.protocols import SETPOINT_CONTROL, DerivedAddress, OptionReader

MONITOR_TYPES: dict[PointKind, frozenset[str]] = {
    PointKind.SINGLE: frozenset({"M_SP_NA_1", "M_SP_TB_1"}),
    PointKind.DOUBLE: frozenset({"M_DP_NA_1", "M_DP_TB_1"}),
    PointKind.ANALOG: frozenset({"M_ME_NA_1", "M_ME_NB_1", "M_ME_NC_1", "M_ME_TD_1", "M_ME_TE_1", "M_ME_TF_1"}),
    PointKind.COUNTER: frozenset({"M_IT_NA_1", "M_IT_TB_1"}),
    PointKind.SETPOINT: frozenset({"M_ME_NC_1", "M_ME_TF_1", "M_ME_NB_1", "M_ME_TE_1"}),
    PointKind.COMMAND: frozenset({""}),
}
ADDRESS_RANGE = (1, 16_777_215)


@dataclass(frozen=True, slots=True)
class Options:
    """IEC 104 has no protocol table: its timers (t1, t3) are RTU fields."""


def parse_options(r: OptionReader) -> Options:
    r.finish()
    return Options()


def address_keys(p: PointDef) -> list[Hashable]:
    keys: list[Hashable] = [] if p.kind is PointKind.COMMAND else [("ioa", p.source.address)]
    if p.control is not None:
        keys.append(("ioa", p.control.address))
    return keys


def assign_derived(points: Sequence[DerivedPoint]) -> list[DerivedAddress]:
    return [DerivedAddress(d.type_id, d.address, control_address=d.control_address, **SETPOINT_CONTROL)
            if d.kind == PointKind.SETPOINT.value else
            DerivedAddress(d.type_id, d.address, control_address=d.control_address, control_type=ControlType.DOUBLE)
            for d in points]
