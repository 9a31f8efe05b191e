"""IEC 61850 quality and time tag <-> models Quality, both ways: the bit layout against libiec61850's own constants
and encoders, every detail flag, the validity values, TimeQuality -> TIME_INVALID, and the client's decoding of an
FC-filtered data object (``PointMap.row``) built with the library."""

from __future__ import annotations

import itertools

import pyiec61850.pyiec61850 as iec
import pytest

from frontend_protocols.iec61850.master import PointMap
from models.points import PointKind, Quality
from models.protocols import iec61850 as m

DETAIL = [  # (61850 bit, libiec61850 constant, models flag)
    (m.Q_OVERFLOW, "QUALITY_DETAIL_OVERFLOW", Quality.OVERFLOW),
    (m.Q_OUT_OF_RANGE, "QUALITY_DETAIL_OUT_OF_RANGE", Quality.QUESTIONABLE),
    (m.Q_BAD_REFERENCE, "QUALITY_DETAIL_BAD_REFERENCE", Quality.QUESTIONABLE),
    (m.Q_OSCILLATORY, "QUALITY_DETAIL_OSCILLATORY", Quality.QUESTIONABLE),
    (m.Q_FAILURE, "QUALITY_DETAIL_FAILURE", Quality.INVALID),
    (m.Q_OLD_DATA, "QUALITY_DETAIL_OLD_DATA", Quality.NOT_TOPICAL),
    (m.Q_INCONSISTENT, "QUALITY_DETAIL_INCONSISTENT", Quality.QUESTIONABLE),
    (m.Q_INACCURATE, "QUALITY_DETAIL_INACCURATE", Quality.QUESTIONABLE),
    (m.Q_SUBSTITUTED, "QUALITY_SOURCE_SUBSTITUTED", Quality.SUBSTITUTED),
    (m.Q_TEST, "QUALITY_TEST", Quality.QUESTIONABLE),
    (m.Q_OPERATOR_BLOCKED, "QUALITY_OPERATOR_BLOCKED", Quality.BLOCKED),
]


def test_bit_layout_is_libiec61850s() -> None:
    for bit, name, _ in DETAIL:
        assert bit == getattr(iec, name), name
    assert (m.Q_VALIDITY_RESERVED, m.Q_VALIDITY_INVALID, m.Q_VALIDITY_QUESTIONABLE) == (
        iec.QUALITY_VALIDITY_RESERVED, iec.QUALITY_VALIDITY_INVALID, iec.QUALITY_VALIDITY_QUESTIONABLE)


@pytest.mark.parametrize(("bit", "name", "flag"), DETAIL, ids=[d[1] for d in DETAIL])
def test_each_detail_flag_from_61850(bit: int, name: str, flag: Quality) -> None:
    assert m.quality_from_61850(bit) == flag
    assert m.quality_from_61850(bit | m.Q_VALIDITY_QUESTIONABLE) == flag | Quality.QUESTIONABLE


def test_validity_from_61850() -> None:
    assert m.quality_from_61850(0) == Quality.GOOD
    assert m.quality_from_61850(m.Q_VALIDITY_INVALID) == Quality.INVALID
    assert m.quality_from_61850(m.Q_VALIDITY_QUESTIONABLE) == Quality.QUESTIONABLE
    assert m.quality_from_61850(m.Q_VALIDITY_RESERVED) == Quality.INVALID  # undefined by the standard: unusable
    assert m.quality_from_61850(iec.QUALITY_DERIVED) == Quality.GOOD  # a computed value is still good


def test_time_quality_to_time_invalid() -> None:
    assert m.quality_from_61850(0, m.TQ_CLOCK_NOT_SYNCHRONIZED) == Quality.TIME_INVALID
    assert m.quality_from_61850(0, m.TQ_CLOCK_FAILURE) == Quality.TIME_INVALID
    assert m.quality_from_61850(m.Q_OLD_DATA, m.TQ_CLOCK_FAILURE) == Quality.NOT_TOPICAL | Quality.TIME_INVALID
    assert m.quality_from_61850(0, 0x80) == Quality.GOOD  # leap second known
    assert m.quality_from_61850(0, 0x0A) == Quality.GOOD  # time accuracy (10 bits) says nothing about validity
    # the octet as libiec61850 encodes it in a Timestamp (what the simulator writes)
    for setter, flag in ((iec.Timestamp_setClockNotSynchronized, m.TQ_CLOCK_NOT_SYNCHRONIZED),
                         (iec.Timestamp_setClockFailure, m.TQ_CLOCK_FAILURE)):
        ts = iec.Timestamp_create()
        iec.Timestamp_clearFlags(ts)
        iec.Timestamp_setTimeInMilliseconds(ts, 1_700_000_000_123)
        setter(ts, True)
        utc = iec.Timestamp_toMmsValue(ts, iec.MmsValue_newUtcTime(0))
        tq = int(iec.MmsValue_getUtcTimeQuality(utc))
        assert tq & flag and m.quality_from_61850(0, tq) == Quality.TIME_INVALID
        assert iec.MmsValue_getUtcTimeInMs(utc) == 1_700_000_000_123
        iec.MmsValue_delete(utc)
        iec.Timestamp_destroy(ts)


def test_quality_to_61850_round_trips_every_combination() -> None:
    sendable = [Quality.INVALID, Quality.QUESTIONABLE, Quality.OVERFLOW, Quality.NOT_TOPICAL, Quality.SUBSTITUTED,
                Quality.BLOCKED]
    for n in range(len(sendable) + 1):
        for combo in itertools.combinations(sendable, n):
            q = Quality.GOOD
            for f in combo:
                q |= f
            back = m.quality_from_61850(m.quality_to_61850(q))
            # 61850 validity holds one of good/invalid/questionable: invalid wins
            want = q & ~Quality.QUESTIONABLE if q & Quality.INVALID else q
            assert back == want, (q, back)
    assert m.quality_to_61850(Quality.TIME_INVALID) == 0  # it goes in the time tag, not in q
    assert m.SUPPORTED_QUALITY & Quality.TIME_INVALID
    # the int as libiec61850 puts it on the wire (a 13-bit string) reads back as the same int
    q = m.quality_to_61850(Quality.QUESTIONABLE | Quality.SUBSTITUTED | Quality.BLOCKED)
    mms = _quality(q)
    assert iec.MmsValue_getBitStringSize(mms) == 13
    assert iec.Quality_fromMmsValue(mms) == q
    iec.MmsValue_delete(mms)


def _quality(q: int) -> object:
    bits = iec.MmsValue_newBitString(13)
    iec.MmsValue_setBitStringFromInteger(bits, q)
    return bits


def _dbpos(state: int) -> object:
    bits = iec.MmsValue_newBitString(2)
    iec.MmsValue_setBitStringBit(bits, 0, bool(state & 2))  # first bit ON
    iec.MmsValue_setBitStringBit(bits, 1, bool(state & 1))  # second bit OFF
    return bits


def _utc(ms: int, *, not_synchronised: bool = False) -> object:
    utc = iec.MmsValue_newUtcTimeByMsTime(ms)
    iec.MmsValue_setUtcTimeQuality(utc, m.TQ_CLOCK_NOT_SYNCHRONIZED if not_synchronised else 0)
    return utc


def _struct(*elements: object) -> object:
    s = iec.MmsValue_createEmptyStructure(len(elements))
    for i, e in enumerate(elements):
        iec.MmsValue_setElement(s, i, e)
    return s


def test_client_decodes_value_quality_and_time() -> None:
    """A DPC read with FC ST (stVal, q, t) and an MV with FC MX (mag.f, q, t) as the MMS client gets them."""
    dpc = _struct(_dbpos(1), _quality(m.Q_VALIDITY_INVALID | m.Q_OLD_DATA),
                  _utc(1_700_000_000_500, not_synchronised=True))
    value, q, t_ms = PointMap(0, PointKind.DOUBLE, 0, 1, 2, 1.0, 0.0).row(dpc)
    assert value == 1.0  # DoubleState.OFF
    assert q == Quality.INVALID | Quality.NOT_TOPICAL | Quality.TIME_INVALID
    assert t_ms == 1_700_000_000_500
    iec.MmsValue_delete(dpc)

    mag = _struct(iec.MmsValue_newFloat(200.0))
    mv = _struct(mag, _quality(0), _utc(0))
    value, q, t_ms = PointMap(7, PointKind.ANALOG, 0, 1, 2, 0.5, 1.0).row(mv)
    assert value == pytest.approx(101.0)  # raw * scale + offset
    assert q == Quality.GOOD
    assert t_ms == -1  # no time tag (epoch 0) is "none"
    iec.MmsValue_delete(mv)
