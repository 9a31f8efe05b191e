"""DNP3 flag/time/value mapping and command objects (pure, no library)."""

from __future__ import annotations

import math

import pytest

from frontend_protocols.dnp3.mapping import (
    CrobCode,
    FlagSet,
    PointMap,
    command_value_from_crob,
    crob_for,
    dnp3_time_write,
    event_poll_period_s,
    flags_from_quality,
    quality_from_flags,
    time_ms,
)
from models.points import ControlType, DoubleState, PointDef, PointKind, PointSource, Quality

ONLINE = 0x01


@pytest.mark.parametrize(("flags", "fs", "expected"), [
    (ONLINE, FlagSet.BINARY, Quality.GOOD),
    (0x00, FlagSet.BINARY, Quality.INVALID),  # ONLINE missing
    (ONLINE | 0x02, FlagSet.ANALOG, Quality.INVALID),  # RESTART
    (ONLINE | 0x04, FlagSet.ANALOG, Quality.COMM_LOST),
    (ONLINE | 0x08, FlagSet.BINARY, Quality.SUBSTITUTED),  # REMOTE_FORCED
    (ONLINE | 0x10, FlagSet.COUNTER, Quality.SUBSTITUTED),  # LOCAL_FORCED
    (ONLINE | 0x20, FlagSet.BINARY, Quality.QUESTIONABLE),  # CHATTER_FILTER
    (ONLINE | 0x20, FlagSet.ANALOG, Quality.OVERFLOW | Quality.INVALID),  # OVER_RANGE
    (ONLINE | 0x40, FlagSet.ANALOG, Quality.QUESTIONABLE | Quality.INVALID),  # REFERENCE_ERR
    (ONLINE | 0x20, FlagSet.COUNTER, Quality.OVERFLOW),  # ROLLOVER
    (ONLINE | 0x40, FlagSet.COUNTER, Quality.QUESTIONABLE),  # DISCONTINUITY
    (ONLINE | 0x80, FlagSet.BINARY, Quality.GOOD),  # the state bit is no quality
    (ONLINE | 0x40 | 0x80, FlagSet.BINARY, Quality.GOOD),  # double-bit state bits
])
def test_quality_from_flags(flags: int, fs: FlagSet, expected: Quality) -> None:
    assert quality_from_flags(flags, fs) == expected


@pytest.mark.parametrize("q", [Quality.GOOD, Quality.INVALID, Quality.SUBSTITUTED, Quality.COMM_LOST,
                               Quality.QUESTIONABLE])
def test_flags_round_trip_binary(q: Quality) -> None:
    assert quality_from_flags(flags_from_quality(q, FlagSet.BINARY), FlagSet.BINARY) == q


def test_flags_round_trip_analog_overflow() -> None:
    q = Quality.OVERFLOW | Quality.INVALID
    assert quality_from_flags(flags_from_quality(q, FlagSet.ANALOG), FlagSet.ANALOG) == q


def test_time_quality() -> None:
    assert time_ms(1_700_000_000_123, 1) == (1_700_000_000_123, Quality.GOOD)
    assert time_ms(1_700_000_000_123, 2) == (1_700_000_000_123, Quality.TIME_INVALID)  # unsynchronised clock
    assert time_ms(0, 1) == (-1, Quality.GOOD)  # event variation without time
    assert time_ms(1_700_000_000_123, 0) == (-1, Quality.GOOD)  # static object


def _point(kind: PointKind, type_id: str, scale: float = 1.0, offset: float = 0.0) -> PointDef:
    return PointDef(7, "P", kind, PointSource("dnp3", "R", 10, 3, type_id), scale=scale, offset=offset)


def test_point_map_conversions() -> None:
    analog = PointMap.of(_point(PointKind.ANALOG, "analog_input", 0.1, 5.0))
    assert analog.convert(1234.5, ONLINE, 1_700_000_000_000, 1) == (pytest.approx(128.45), 0, 1_700_000_000_000)
    value, q, _ = analog.convert(math.inf, ONLINE, 0, 0)
    assert math.isnan(value) and q & Quality.INVALID
    double = PointMap.of(_point(PointKind.DOUBLE, "double_bit_binary_input", 10.0))  # scale ignored for states
    assert double.convert(2, ONLINE, 0, 0)[:2] == (float(DoubleState.ON), 0)
    assert double.convert(3, ONLINE, 0, 0)[1] & Quality.INVALID  # indeterminate position
    single = PointMap.of(_point(PointKind.SINGLE, "binary_input"))
    assert single.convert(1, 0x00, 0, 0)[:2] == (1.0, int(Quality.INVALID))


def test_crob_codes_both_ways() -> None:
    assert crob_for(ControlType.DOUBLE, DoubleState.ON, "CB") is CrobCode.PULSE_ON_CLOSE
    assert crob_for(ControlType.DOUBLE, DoubleState.OFF, "CB") is CrobCode.PULSE_ON_TRIP
    assert crob_for(ControlType.SINGLE, 1, "F") is CrobCode.LATCH_ON
    with pytest.raises(ValueError, match="CB"):
        crob_for(ControlType.DOUBLE, 0, "CB")
    for code, ctype, value in ((CrobCode.PULSE_ON_CLOSE, ControlType.DOUBLE, DoubleState.ON),
                               (CrobCode.PULSE_ON_TRIP, ControlType.DOUBLE, DoubleState.OFF),
                               (CrobCode.LATCH_ON, ControlType.SINGLE, 1.0),
                               (CrobCode.LATCH_OFF, ControlType.SINGLE, 0.0)):
        assert command_value_from_crob(ctype, code & 0x0F, code >> 6) == value
    assert command_value_from_crob(ControlType.DOUBLE, 0x03, 0) == DoubleState.ON  # latch convention accepted
    assert command_value_from_crob(ControlType.DOUBLE, 0x01, 0) is None  # a bare pulse says nothing


def test_poll_period_and_time_write() -> None:
    assert event_poll_period_s(0, frtu=False) == 1.0
    assert event_poll_period_s(0, frtu=True) == 1.5
    assert event_poll_period_s(2.5, frtu=True) == 2.5
    data = dnp3_time_write(0x0102030405)
    assert data[:4] == bytes((50, 1, 0x07, 1)) and int.from_bytes(data[4:], "little") == 0x0102030405
