"""Modbus TCP addressing: typed register maps under the device's unit id (the RTU's common_address).

Point types (``type``): ``coil``, ``discrete_input`` (bits), or ``<table>_<dtype>`` with table ``holding`` or
``input`` and dtype ``int16``, ``uint16``, ``int32``, ``uint32``, ``float32``; ``address`` is the 0-based protocol
address of the (first) register. 32-bit values take two registers in the RTU's ``word_order``. Controls: a single
command writes a coil, a double command writes the DPI (1 open, 2 close) into a holding register, a set-point writes a
holding register (float32 for ``setpoint_float``, int16 for ``setpoint_scaled``). A control may write the register
the point itself reads back from.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from models.measurement_points import DerivedPoint, Quantity
from models.points import ControlType, PointDef, PointKind
from models.protocols import SETPOINT_CONTROL, DerivedAddress, OptionReader


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
MAX_READ_REGISTERS = 125  # Modbus application protocol v1.1b3: read holding/input registers, 1..125
MAX_READ_BITS = 2000  # read coils / discrete inputs, 1..2000
MAX_WRITE_REGISTERS = 123  # write multiple registers, 1..123


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
    # Longest run of unconfigured registers a read may cover to save a request (bits: 16 per register). 10 registers
    # cost about as many bytes as the headers of one more request; 0 for devices that refuse reads across holes.
    max_gap_registers: int = 10


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
    gap = r.get("max_gap_registers", int, 10)
    assert isinstance(gap, int)
    if not 0 <= gap <= MAX_READ_REGISTERS:
        raise r.fail("max_gap_registers", f"must be 0..{MAX_READ_REGISTERS}, got {gap}")
    opts = Options(
        word_order=order,
        connections=conns,
        request_timeout_s=r.positive("request_timeout_s", 1.0),
        digital_scan_s=r.positive("digital_scan_s", 0.0, allow_zero=True),
        analog_scan_s=r.positive("analog_scan_s", 0.0, allow_zero=True),
        max_gap_registers=gap,
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
#: input float32 from 1000 (analogs), holding registers from 0 (double commands), holding int16 from 30000
#: (set-points: the master writes the register the point reads back).
ANALOG_BASE = 1000
SETPOINT_BASE = 30_000


def assign_derived(points: Sequence[DerivedPoint]) -> list[DerivedAddress]:
    n = {"discrete_input": 0, "input_uint16": 0, "analog": 0, "holding": 0, "setpoint": 0}
    out = []
    for d in points:
        ctl = None
        if d.kind == "setpoint":
            a = SETPOINT_BASE + n["setpoint"]
            n["setpoint"] += 1
            out.append(DerivedAddress("holding_int16", a, control_address=a, **SETPOINT_CONTROL))
            continue
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


# --------------------------------------------------------------------------------------------------- codec
# Shared by the master (frontend_protocols.modbus) and the simulator (rtu_sim.outstation_modbus): one definition of
# how a raw value sits in 16-bit registers.

_STRUCT = {DataType.INT16: "h", DataType.UINT16: "H", DataType.INT32: "i", DataType.UINT32: "I",
           DataType.FLOAT32: "f"}
_INT_RANGE = {DataType.INT16: (-32768, 32767), DataType.UINT16: (0, 65535), DataType.INT32: (-2**31, 2**31 - 1),
              DataType.UINT32: (0, 2**32 - 1)}


def encode_registers(dtype: DataType, order: WordOrder, raw: float) -> list[int]:
    """The registers holding ``raw`` (rounded for integer types); ValueError when it does not fit the type."""
    if dtype is DataType.BIT:
        raise ValueError("a bit is not held in registers")
    if dtype is DataType.FLOAT32:
        data = struct.pack(">f", raw)  # NaN and inf are legal float32 values (meters use NaN for "invalid")
    else:
        if not math.isfinite(raw):
            raise ValueError(f"{raw} cannot be encoded as {dtype.value}")
        n = round(raw)
        lo, hi = _INT_RANGE[dtype]
        if not lo <= n <= hi:
            raise ValueError(f"{raw} is outside the {dtype.value} range {lo}..{hi}")
        data = struct.pack(">" + _STRUCT[dtype], n)
    words = [int.from_bytes(data[k:k + 2], "big") for k in range(0, len(data), 2)]
    return words[::-1] if order is WordOrder.LITTLE else words


def decode_registers(dtype: DataType, order: WordOrder, words: Sequence[int]) -> float:
    """The raw value held in ``words`` (exactly ``dtype.registers`` of them, each 0..65535)."""
    if dtype is DataType.BIT:
        raise ValueError("a bit is not held in registers")
    if len(words) != dtype.registers:
        raise ValueError(f"{dtype.value} takes {dtype.registers} registers, got {len(words)}")
    seq = list(words)[::-1] if order is WordOrder.LITTLE else list(words)
    data = b"".join(int(w).to_bytes(2, "big") for w in seq)
    return float(struct.unpack(">" + _STRUCT[dtype], data)[0])
