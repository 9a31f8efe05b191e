"""Modbus TCP addressing: typed register maps under the device's unit id (the RTU's common_address).

Point types (``type``): ``coil``, ``discrete_input`` (bits), or ``<table>_<dtype>`` with table ``holding`` or
``input`` and dtype ``int16``, ``uint16``, ``int32``, ``uint32``, ``float32``; ``address`` is the 0-based protocol
address of the (first) register. 32-bit values take two registers in the RTU's ``word_order``. Controls: a single
command writes a coil, a double command writes the DPI (1 open, 2 close) into a holding register, a set-point writes a
holding register (float32 for ``setpoint_float``, int16 for ``setpoint_scaled``). A control may write the register
the point itself reads back from.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from models.measurement_points import DerivedPoint, Quantity
from models.points import ControlType, PointDef, PointKind
from models.protocols import DerivedAddress, OptionReader


class Table(StrEnum):
    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"


class DataType(StrEnum):
    BIT = "bit"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"

    @property
    def registers(self) -> int:
        return 2 if self in (DataType.INT32, DataType.UINT32, DataType.FLOAT32) else 1


class WordOrder(StrEnum):
    BIG = "big"  # high word first (Modbus convention for most meters)
    LITTLE = "little"  # low word first ("word swapped")


_REGISTER_TYPES = [DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.FLOAT32]


def _types(tables: Sequence[str], dtypes: Sequence[DataType]) -> frozenset[str]:
    return frozenset(f"{t}_{d.value}" for t in tables for d in dtypes)


MONITOR_TYPES: dict[PointKind, frozenset[str]] = {
    PointKind.SINGLE: frozenset({"coil", "discrete_input"}) | _types(("holding", "input"), [DataType.UINT16]),
    PointKind.DOUBLE: _types(("holding", "input"), [DataType.UINT16]),
    PointKind.ANALOG: _types(("holding", "input"), _REGISTER_TYPES),
    PointKind.COUNTER: _types(("holding", "input"), [DataType.UINT16, DataType.UINT32, DataType.INT32]),
    PointKind.SETPOINT: _types(("holding",), _REGISTER_TYPES),
    PointKind.COMMAND: frozenset({""}),
}
ADDRESS_RANGE = (0, 65_535)
UNIT_ID_RANGE = (1, 247)


@dataclass(frozen=True, slots=True)
class RegisterType:
    """A point's ``type`` parsed: which table and how the value is encoded."""

    table: Table
    dtype: DataType

    @classmethod
    def parse(cls, type_id: str) -> RegisterType:
        if type_id in ("coil", "discrete_input"):
            return cls(Table(type_id), DataType.BIT)
        table, _, dtype = type_id.partition("_")
        return cls(Table(table), DataType(dtype))

    @property
    def width(self) -> int:
        """Registers (or bits) the value occupies."""
        return self.dtype.registers


def control_register(ctype: ControlType) -> RegisterType:
    return {
        ControlType.SINGLE: RegisterType(Table.COIL, DataType.BIT),
        ControlType.DOUBLE: RegisterType(Table.HOLDING, DataType.UINT16),
        ControlType.SETPOINT_FLOAT: RegisterType(Table.HOLDING, DataType.FLOAT32),
        ControlType.SETPOINT_SCALED: RegisterType(Table.HOLDING, DataType.INT16),
    }[ctype]


@dataclass(frozen=True, slots=True)
class Options:
    word_order: WordOrder = WordOrder.BIG
    connections: int = 1  # parallel TCP connections to the device when one cannot keep the scan periods
    request_timeout_s: float = 1.0
    # Scan periods; 0 derives them from the update budgets (digital 4 s / analog 5 s, FRTU 6 s / 10 s).
    digital_scan_s: float = 0.0
    analog_scan_s: float = 0.0


def parse_options(r: OptionReader) -> Options:
    raw = r.get("word_order", str, "big")
    try:
        order = WordOrder(raw)
    except ValueError:
        raise r.fail("word_order", f"unknown value {raw!r} (expected big or little)") from None
    conns = r.get("connections", int, 1)
    assert isinstance(conns, int)
    if not 1 <= conns <= 16:
        raise r.fail("connections", f"must be 1..16, got {conns}")
    opts = Options(
        word_order=order,
        connections=conns,
        request_timeout_s=r.positive("request_timeout_s", 1.0),
        digital_scan_s=r.positive("digital_scan_s", 0.0, allow_zero=True),
        analog_scan_s=r.positive("analog_scan_s", 0.0, allow_zero=True),
    )
    r.finish()
    return opts


def _cells(rt: RegisterType, address: int) -> list[Hashable]:
    return [(rt.table.value, address + k) for k in range(rt.width)]


def address_keys(p: PointDef) -> list[Hashable]:
    keys: list[Hashable] = [] if p.kind is PointKind.COMMAND else _cells(RegisterType.parse(p.source.type_id),
                                                                       p.source.address)
    if p.control is not None:
        keys += [k for k in _cells(control_register(p.control.type), p.control.address) if k not in keys]
    return keys


#: Register map of a derived device: discrete inputs from 0 (single), input registers from 0 (double, DPI),
#: input float32 from 1000 (analogs), holding registers from 0 (double commands).
ANALOG_BASE = 1000


def assign_derived(points: Sequence[DerivedPoint]) -> list[DerivedAddress]:
    n = {"discrete_input": 0, "input_uint16": 0, "analog": 0, "holding": 0}
    out = []
    for d in points:
        ctl = None
        if d.kind == "single":
            t, a = "discrete_input", n["discrete_input"]
            n["discrete_input"] += 1
        elif d.kind == "double":
            t, a = "input_uint16", n["input_uint16"]
            n["input_uint16"] += 1
            if d.control_address is not None:
                ctl = n["holding"]
                n["holding"] += 1
        else:
            dtype = "int16" if d.binding.quantity is Quantity.TAP_POSITION else "float32"
            t, a = f"input_{dtype}", ANALOG_BASE + 2 * n["analog"]
            n["analog"] += 1
        out.append(DerivedAddress(t, a, control_address=ctl))
    return out
