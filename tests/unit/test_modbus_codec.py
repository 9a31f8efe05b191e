"""Modbus value codec: register layout per type and word order, engineering scaling, quality, command words."""

from __future__ import annotations

import math
import struct

import pytest

from frontend_protocols.modbus.codec import Decoded, command_words, decode_read, readback_matches
from frontend_protocols.modbus.register_map import PointSlot, ReadRequest
from models.config import ConfigError, parse_station_config
from models.points import ControlDef, ControlType, PointDef, PointKind, PointSource, Quality
from models.protocols.modbus import DataType, Table, WordOrder, decode_registers, encode_registers


def pt(kind: PointKind, type_id: str, *, scale: float = 1.0, offset: float = 0.0, pid: int = 1) -> PointDef:
    return PointDef(id=pid, name=f"P{pid}", kind=kind, source=PointSource("modbus", "M", 1, 0, type_id),
                    scale=scale, offset=offset)


@pytest.mark.parametrize(
    ("dtype", "raw", "big"),
    [
        (DataType.INT16, -2, [0xFFFE]),
        (DataType.UINT16, 65535, [0xFFFF]),
        (DataType.INT32, -70000, [0xFFFE, 0xEE90]),
        (DataType.UINT32, 0x12345678, [0x1234, 0x5678]),
        (DataType.FLOAT32, 1.5, [0x3FC0, 0x0000]),
    ],
)
def test_word_orders(dtype: DataType, raw: float, big: list[int]) -> None:
    assert encode_registers(dtype, WordOrder.BIG, raw) == big
    assert encode_registers(dtype, WordOrder.LITTLE, raw) == big[::-1]
    assert decode_registers(dtype, WordOrder.BIG, big) == raw
    assert decode_registers(dtype, WordOrder.LITTLE, big[::-1]) == raw


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="outside the int16 range"):
        encode_registers(DataType.INT16, WordOrder.BIG, 40000)
    with pytest.raises(ValueError, match="outside the uint32 range"):
        encode_registers(DataType.UINT32, WordOrder.BIG, -1)
    with pytest.raises(ValueError, match="cannot be encoded"):
        encode_registers(DataType.INT32, WordOrder.BIG, math.nan)
    with pytest.raises(ValueError, match="takes 2 registers"):
        decode_registers(DataType.FLOAT32, WordOrder.BIG, [1])
    assert math.isnan(decode_registers(DataType.FLOAT32, WordOrder.BIG, encode_registers(
        DataType.FLOAT32, WordOrder.BIG, math.nan)))


def test_decode_read_scales_and_flags() -> None:
    v = pt(PointKind.ANALOG, "input_int16", scale=0.1, offset=5.0, pid=1)
    f = pt(PointKind.ANALOG, "input_float32", pid=2)
    d = pt(PointKind.DOUBLE, "input_uint16", pid=3)
    s = pt(PointKind.SINGLE, "input_uint16", pid=4)
    req = ReadRequest(Table.INPUT, 100, 6, (PointSlot(v, 0, DataType.INT16), PointSlot(f, 1, DataType.FLOAT32),
                                            PointSlot(d, 4, DataType.UINT16), PointSlot(s, 5, DataType.UINT16)))
    words = [0xFFFE] + encode_registers(DataType.FLOAT32, WordOrder.LITTLE, 230.5) + [0, 2, 1]
    rows = decode_read(req, WordOrder.LITTLE, words)
    assert rows == [Decoded(1, pytest.approx(4.8), Quality.GOOD), Decoded(2, 230.5, Quality.GOOD),
                    Decoded(3, 2.0, Quality.GOOD), Decoded(4, 1.0, Quality.GOOD)]
    # NaN/inf floats, a DPI of 7, a single point of 2: INVALID
    bad = [0] + list(struct.unpack(">HH", struct.pack(">f", math.inf)))[::-1] + [0, 7, 2]
    rows = decode_read(req, WordOrder.LITTLE, bad)
    assert [r.quality for r in rows] == [Quality.GOOD, Quality.INVALID, Quality.INVALID, Quality.INVALID]
    assert math.isnan(rows[1].value)


def test_decode_bits() -> None:
    a, b = pt(PointKind.SINGLE, "discrete_input", pid=1), pt(PointKind.SINGLE, "discrete_input", pid=2)
    req = ReadRequest(Table.DISCRETE_INPUT, 10, 9, (PointSlot(a, 0, DataType.BIT), PointSlot(b, 8, DataType.BIT)))
    rows = decode_read(req, WordOrder.BIG, [True] + [False] * 7 + [True] + [False] * 7)  # padded to bytes
    assert [(r.point, r.value, r.quality) for r in rows] == [(1, 1.0, Quality.GOOD), (2, 1.0, Quality.GOOD)]


def test_command_words() -> None:
    p = pt(PointKind.SETPOINT, "holding_float32", scale=0.5, offset=1.0)
    assert command_words(p, ControlType.SINGLE, 1, WordOrder.BIG) is True
    assert command_words(p, ControlType.DOUBLE, 2, WordOrder.BIG) == [2]
    assert command_words(p, ControlType.SETPOINT_FLOAT, 4.0, WordOrder.BIG) == encode_registers(
        DataType.FLOAT32, WordOrder.BIG, 6.0)
    assert command_words(p, ControlType.SETPOINT_SCALED, -9.0, WordOrder.BIG) == [0xFFEC]  # raw -20
    with pytest.raises(ValueError, match="not OFF"):
        command_words(p, ControlType.DOUBLE, 3, WordOrder.BIG)
    with pytest.raises(ValueError, match="int16 range"):
        command_words(p, ControlType.SETPOINT_SCALED, 1e6, WordOrder.BIG)


def test_readback_matches() -> None:
    p = pt(PointKind.SETPOINT, "holding_int16", scale=0.1)
    assert readback_matches(p, ControlType.SETPOINT_SCALED, 12.34, Decoded(1, 12.3, Quality.GOOD))
    assert not readback_matches(p, ControlType.SETPOINT_SCALED, 12.34, Decoded(1, 12.5, Quality.GOOD))
    f = pt(PointKind.SETPOINT, "holding_float32")
    assert readback_matches(f, ControlType.SETPOINT_FLOAT, 0.1, Decoded(1, float(struct.unpack(
        ">f", struct.pack(">f", 0.1))[0]), Quality.GOOD))
    assert not readback_matches(f, ControlType.SETPOINT_FLOAT, 0.1, Decoded(1, 0.11, Quality.GOOD))
    d = pt(PointKind.DOUBLE, "input_uint16")
    d = PointDef(d.id, d.name, d.kind, d.source, control=ControlDef(ControlType.DOUBLE, 5))
    assert readback_matches(d, ControlType.DOUBLE, 2, Decoded(1, 2.0, Quality.GOOD))
    assert not readback_matches(d, ControlType.DOUBLE, 2, Decoded(1, 2.0, Quality.INVALID))


def test_options_parse() -> None:
    base = """
[station]
name = "t"
[[rtus]]
name = "M"
protocol = "modbus"
common_address = 3
addresses = ["127.0.0.1:1502"]
"""
    cfg = parse_station_config(base + 'modbus = { word_order = "little", connections = 2, max_gap_registers = 0 }\n')
    opts = cfg.rtus[0].modbus
    assert opts.word_order is WordOrder.LITTLE and opts.connections == 2 and opts.max_gap_registers == 0
    with pytest.raises(ConfigError, match="max_gap_registers"):
        parse_station_config(base + "modbus = { max_gap_registers = 500 }\n")
    with pytest.raises(ConfigError, match="word_order"):
        parse_station_config(base + 'modbus = { word_order = "middle" }\n')
