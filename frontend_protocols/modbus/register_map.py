"""The scan plan of one Modbus device: which reads, in which scan group, at which period.

Pure data and arithmetic (no pymodbus), so the planner is unit-tested on its own.

- Scan groups: status points (single, double) form the digital group, measured values (analog, counter, set-point)
  the analog group. Their periods come from the update budgets of the device class (RTU: digital 4 s, analog 5 s;
  FRTU: 6 s and 10 s), or from the ``digital_scan_s``/``analog_scan_s`` options.
- Coalescing: per group and table, the points sorted by address are merged greedily into the fewest legal reads: a
  read holds at most 125 registers or 2000 bits, always whole points (a 32-bit value never straddles two reads), and
  may read through a gap of unconfigured addresses when the gap is no longer than ``max_gap_registers`` (bits: 16
  per register). Greedy merging is optimal here: every read starts at the first point not yet covered and extends
  as far as the limits allow, so no plan with fewer reads exists for the same limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from frontend_protocols.errors import FrontendError
from models.config import RtuConfig
from models.points import PointDef, PointKind
from models.protocols.modbus import (
    ADDRESS_RANGE,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    DataType,
    RegisterType,
    Table,
)

#: Update budgets (change in the field -> value in the RTDB), seconds.
DIGITAL_BUDGET_S = 4.0
ANALOG_BUDGET_S = 5.0
FRTU_DIGITAL_BUDGET_S = 6.0
FRTU_ANALOG_BUDGET_S = 10.0
#: A change is seen at the next scan at the latest, then waits for that scan's own duration and the adapter's
#: flush: scanning at half the budget leaves the other half for a slow or retried scan.
SCAN_BUDGET_SHARE = 0.5
BITS_PER_REGISTER = 16

#: Function code of the read of each table.
READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}


class ModbusPlanError(FrontendError):
    """A Modbus register map cannot be planned (a point that does not fit the address space)."""


class ScanGroupKind(StrEnum):
    DIGITAL = "digital"
    ANALOG = "analog"


def group_of(kind: PointKind) -> ScanGroupKind | None:
    """The scan group of a point kind; None for pure command points (nothing to read)."""
    if kind.is_status:
        return ScanGroupKind.DIGITAL
    if kind in (PointKind.ANALOG, PointKind.COUNTER, PointKind.SETPOINT):
        return ScanGroupKind.ANALOG
    return None


@dataclass(frozen=True, slots=True)
class PointSlot:
    """One point inside a read: ``offset`` registers (or bits) after the read's first address."""

    point: PointDef
    offset: int
    dtype: DataType

    @property
    def width(self) -> int:
        return self.dtype.registers


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: Table
    start: int
    count: int  # registers, or bits for coils and discrete inputs
    points: tuple[PointSlot, ...]

    @property
    def function_code(self) -> int:
        return READ_FUNCTION[self.table]

    @property
    def is_bits(self) -> bool:
        return self.table in (Table.COIL, Table.DISCRETE_INPUT)

    def describe(self) -> str:
        return f"{self.table.value} {self.start}..{self.start + self.count - 1} ({len(self.points)} points)"


@dataclass(frozen=True, slots=True)
class ScanGroup:
    kind: ScanGroupKind
    period_s: float
    requests: tuple[ReadRequest, ...]


@dataclass(frozen=True, slots=True)
class ScanPlan:
    rtu: str
    groups: tuple[ScanGroup, ...]  # only groups with at least one read

    @property
    def requests(self) -> tuple[ReadRequest, ...]:
        return tuple(r for g in self.groups for r in g.requests)

    @property
    def requests_per_s(self) -> float:
        """Average read rate the plan asks of the device."""
        return sum(len(g.requests) / g.period_s for g in self.groups)


@dataclass(frozen=True, slots=True)
class Span:
    """A point's cells in one table, input of ``coalesce``."""

    start: int
    width: int
    slot_dtype: DataType
    point: PointDef

    @property
    def end(self) -> int:  # exclusive
        return self.start + self.width


def scan_periods(rtu: RtuConfig) -> dict[ScanGroupKind, float]:
    """Scan period of each group: the option when set, else the share of the device class's budget."""
    digital_budget = FRTU_DIGITAL_BUDGET_S if rtu.frtu else DIGITAL_BUDGET_S
    analog_budget = FRTU_ANALOG_BUDGET_S if rtu.frtu else ANALOG_BUDGET_S
    opts = rtu.modbus
    return {
        ScanGroupKind.DIGITAL: opts.digital_scan_s or digital_budget * SCAN_BUDGET_SHARE,
        ScanGroupKind.ANALOG: opts.analog_scan_s or analog_budget * SCAN_BUDGET_SHARE,
    }


def coalesce(table: Table, spans: Sequence[Span], max_gap_registers: int) -> list[ReadRequest]:
    """The fewest reads covering ``spans`` of one table within the protocol limits (see the module docstring)."""
    bits = table in (Table.COIL, Table.DISCRETE_INPUT)
    limit = MAX_READ_BITS if bits else MAX_READ_REGISTERS
    max_gap = max_gap_registers * BITS_PER_REGISTER if bits else max_gap_registers
    out: list[ReadRequest] = []
    start = end = 0
    members: list[Span] = []

    def close() -> None:
        slots = tuple(PointSlot(m.point, m.start - start, m.slot_dtype) for m in members)
        out.append(ReadRequest(table, start, end - start, slots))

    for sp in sorted(spans, key=lambda x: (x.start, x.point.id)):
        if sp.width > limit:  # cannot happen with the defined types; guards a future 64-bit type
            raise ModbusPlanError(f"point {sp.point.name!r} is wider ({sp.width}) than one read ({limit})")
        if members and sp.start - end <= max_gap and max(end, sp.end) - start <= limit:
            members.append(sp)
            end = max(end, sp.end)
            continue
        if members:
            close()
        members, start, end = [sp], sp.start, sp.end
    if members:
        close()
    return out


def plan_scan(rtu: RtuConfig, points: Sequence[PointDef]) -> ScanPlan:
    """The scan plan of one device from its configured points."""
    periods = scan_periods(rtu)
    by_group: dict[ScanGroupKind, dict[Table, list[Span]]] = {g: {} for g in ScanGroupKind}
    for p in points:
        group = group_of(p.kind)
        if group is None or not p.source.type_id:
            continue
        try:
            rt = RegisterType.parse(p.source.type_id)
        except ValueError:
            raise ModbusPlanError(f"point {p.name!r}: {p.source.type_id!r} is not a Modbus point type") from None
        if p.source.address + rt.width - 1 > ADDRESS_RANGE[1]:
            raise ModbusPlanError(f"point {p.name!r}: {rt.dtype.value} at {p.source.address} runs past the last "
                                  f"address {ADDRESS_RANGE[1]}")
        by_group[group].setdefault(rt.table, []).append(Span(p.source.address, rt.width, rt.dtype, p))
    groups = []
    for g in ScanGroupKind:
        reqs = [r for table in Table if table in by_group[g]
                for r in coalesce(table, by_group[g][table], rtu.modbus.max_gap_registers)]
        if reqs:
            groups.append(ScanGroup(g, periods[g], tuple(reqs)))
    return ScanPlan(rtu.name, tuple(groups))


__all__ = [
    "ANALOG_BUDGET_S",
    "DIGITAL_BUDGET_S",
    "FRTU_ANALOG_BUDGET_S",
    "FRTU_DIGITAL_BUDGET_S",
    "ModbusPlanError",
    "PointSlot",
    "ReadRequest",
    "ScanGroup",
    "ScanGroupKind",
    "ScanPlan",
    "Span",
    "coalesce",
    "group_of",
    "plan_scan",
    "scan_periods",
]
