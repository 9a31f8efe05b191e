"""Registers and bits of one read -> (point, engineering value, quality) rows, and command values -> registers.

Modbus carries no quality and no time: a value is GOOD unless it cannot be a measurement (NaN or infinite float32,
which meters use for "no value"), a status register holds a state its kind does not have (a DPI above 3, a single
point other than 0/1), or the read failed. The raw word layout is ``models.protocols.modbus.decode_registers``,
shared with the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from frontend_protocols.modbus.register_map import PointSlot, ReadRequest
from models.points import ControlType, DoubleState, PointDef, PointKind, Quality
from models.protocols.modbus import DataType, WordOrder, control_register, decode_registers, encode_registers


@dataclass(frozen=True, slots=True)
class Decoded:
    point: int
    value: float  # engineering units; NaN when INVALID without a usable value
    quality: Quality


def decode_slot(slot: PointSlot, order: WordOrder, words: Sequence[int] | None, bit: bool | None) -> Decoded:
    """One point of a read: ``words`` (its registers) for register types, ``bit`` for coils/discrete inputs."""
    p = slot.point
    if slot.dtype is DataType.BIT:
        raw = 1.0 if bit else 0.0
    else:
        assert words is not None
        raw = decode_registers(slot.dtype, order, words)
    if not math.isfinite(raw):
        return Decoded(p.id, math.nan, Quality.INVALID)
    if p.kind is PointKind.DOUBLE:
        # DPI 0..3 as the register value; anything else is not a double-point state
        return Decoded(p.id, raw, Quality.GOOD) if raw in (0, 1, 2, 3) else Decoded(p.id, raw, Quality.INVALID)
    if p.kind is PointKind.SINGLE:
        return Decoded(p.id, raw, Quality.GOOD) if raw in (0, 1) else Decoded(p.id, raw, Quality.INVALID)
    return Decoded(p.id, raw * p.scale + p.offset, Quality.GOOD)


def decode_read(req: ReadRequest, order: WordOrder, values: Sequence[int] | Sequence[bool]) -> list[Decoded]:
    """Every point of a read from its registers (``req.count`` of them) or bits (at least ``req.count``)."""
    out = []
    for slot in req.points:
        if req.is_bits:
            out.append(decode_slot(slot, order, None, bool(values[slot.offset])))
        else:
            words = [int(w) for w in values[slot.offset:slot.offset + slot.width]]
            out.append(decode_slot(slot, order, words, None))
    return out


def invalid_rows(req: ReadRequest) -> list[Decoded]:
    """The read failed (exception response, malformed answer): its points are INVALID, value unknown."""
    return [Decoded(s.point.id, math.nan, Quality.INVALID) for s in req.points]


def command_words(point: PointDef, ctype: ControlType, value: float, order: WordOrder) -> list[int] | bool:
    """What a command writes: a coil state (bool) or the registers; ValueError naming the point otherwise."""
    if ctype is ControlType.SINGLE:
        if value not in (0, 1):
            raise ValueError(f"single command {point.name}: value {value} is not 0 or 1")
        return bool(value)
    if ctype is ControlType.DOUBLE:
        if value not in (DoubleState.OFF, DoubleState.ON):
            raise ValueError(f"double command {point.name}: value {value} is not OFF (1) or ON (2)")
        return [int(value)]
    if not math.isfinite(value):
        raise ValueError(f"set-point {point.name}: value {value} is not a number")
    raw = (value - point.offset) / point.scale
    try:
        return encode_registers(control_register(ctype).dtype, order, raw)
    except ValueError as exc:
        raise ValueError(f"set-point {point.name}: raw value {raw:g}: {exc}") from None


def readback_matches(point: PointDef, ctype: ControlType, commanded: float, read: Decoded) -> bool:
    """Whether the point's value read after a command shows the command done."""
    if read.quality & Quality.INVALID:
        return False
    if ctype in (ControlType.SINGLE, ControlType.DOUBLE):
        return read.value == commanded
    # set-point: equal within the resolution of the written and the read-back encodings (an integer register
    # rounds to one raw step = scale; a float32 keeps about 7 significant digits)
    integer = control_register(ctype).dtype is not DataType.FLOAT32 or not point.source.type_id.endswith("float32")
    tol = max(1e-6 * max(1.0, abs(commanded)), 0.5 * abs(point.scale) if integer else 0.0)
    return abs(read.value - commanded) <= tol


__all__ = ["Decoded", "command_words", "decode_read", "decode_slot", "invalid_rows", "readback_matches"]
